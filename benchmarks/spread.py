"""The spread of a side-by-side timing and when a target counts as met (pure functions).

A benchmark times the engine and its baseline in interleaved repetitions; repetition i
gives one ratio baseline_i / engine_i (higher: the engine is faster). The reported ratio
is the median of those ratios, its spread their lower and upper quartiles. A target is
met on the conservative side of the spread: for a ratio where higher is better (every
engine-against-baseline ratio), when the lower quartile reaches it; for a quantity where
lower is better (say a run's time over a floor), when the upper quartile stays within it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

QUARTILES = ("linear interpolation between order statistics (as numpy.percentile by default "
             "and statistics.quantiles with method='inclusive')")
METHOD = ("each repetition times the engine and the baseline back to back, in alternating "
          "order; ratio = median over the repetitions of baseline time / engine time, [q1, q3] "
          "= their lower and upper quartiles, by " + QUARTILES + "; a target on a "
          "higher-is-better ratio is met when q1 reaches it, on a lower-is-better one when q3 "
          "stays within it")


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(lower quartile, median, upper quartile) of values (one value or more)."""
    if not values:
        raise ValueError("quartiles of no values")
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def ratios(engine_s: Sequence[float], baseline_s: Sequence[float]) -> list[float]:
    """Per-repetition ratios baseline / engine of paired times (seconds, same length)."""
    if len(engine_s) != len(baseline_s) or not engine_s:
        raise ValueError(f"paired times need equal, nonzero lengths "
                         f"({len(engine_s)} engine, {len(baseline_s)} baseline)")
    if min(engine_s) <= 0 or min(baseline_s) <= 0:
        raise ValueError("times must be positive")
    return [b / e for e, b in zip(engine_s, baseline_s, strict=True)]


def target_met(values: Sequence[float], target: float, higher_is_better: bool = True) -> bool:
    """Whether the conservative quartile of values meets target: q1 >= target when higher
    is better, q3 <= target when lower is better."""
    q1, _, q3 = quartiles(values)
    return q1 >= target if higher_is_better else q3 <= target


def spread(engine_s: Sequence[float], baseline_s: Sequence[float]) -> dict:
    """The JSON fields of one case from paired per-repetition times (seconds): medians and
    ranges of each side, per-repetition ratios, their median and quartiles."""
    per_rep = ratios(engine_s, baseline_s)
    q1, median, q3 = quartiles(per_rep)
    return {"engine_s": statistics.median(engine_s), "baseline_s": statistics.median(baseline_s),
            "ratio": median, "ratio_q1": q1, "ratio_q3": q3, "repeats": len(per_rep),
            "ratios": per_rep, "engine_s_range": [min(engine_s), max(engine_s)],
            "baseline_s_range": [min(baseline_s), max(baseline_s)]}
