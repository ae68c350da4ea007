"""Shared benchmark helpers: side-by-side timing, machine facts, result files.

Every benchmark times the engine and a baseline in interleaved repetitions in the
same process (so machine load affects both alike), reports the median of the
per-repetition ratios with their quartiles (spread.py), and writes
benchmarks/results/<name>.json. A target counts as met on the conservative
quartile. Memory is measured on separate, untimed calls (`memory`).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable
from importlib import metadata

import torch
from spread import METHOD, spread, target_met

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
REPEATS = 7  # interleaved repetitions of a side-by-side timing, unless a benchmark says
SCHEMA = 2  # result files: 2 adds the spread (ratio_q1, ratio_q3, ratios, ...) to every case


MEMORY_METHOD = ("rss_mb: growth of the process's peak resident set (Linux VmHWM, reset "
                 "before the call through /proc/self/clear_refs) over the resident set at the "
                 "start of one untimed call: every allocation, torch tensors included; "
                 "python_mb: peak of the Python-heap allocations traced by tracemalloc during "
                 "that call (numpy buffers included, torch tensor storage not)")


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{model}, {os.cpu_count()} cores, {platform.system()} "
            f"(torch threads: {torch.get_num_threads()})")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "torchdiffeq", "sympy", "numpy", "icl-dynamics"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def timed(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median seconds of fn over `repeats` calls, after a warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = REPEATS
                ) -> dict[str, list[float]]:
    """Seconds of each call of each fn: one warm-up call of each, then `repeats` rounds
    calling every fn once, the order rotated by one each round (two fns alternate which
    goes first)."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def side_by_side(engine: Callable[[], object], baseline: Callable[[], object],
                 repeats: int = REPEATS) -> dict:
    """A case's timing fields (spread.spread: medians, ranges, per-repetition ratios and
    their quartiles) of engine against baseline over `repeats` interleaved repetitions."""
    times = interleaved({"engine": engine, "baseline": baseline}, repeats)
    return spread(times["engine"], times["baseline"])


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def memory(fn: Callable[[], object]) -> dict:
    """Peak memory of one call of fn (MB; see MEMORY_METHOD). rss_mb is None where the
    kernel does not let the peak be reset."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        start = _status_kb("VmRSS")
    except OSError:
        start = None
    tracemalloc.start()
    try:
        fn()
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rss = None if start is None else (_status_kb("VmHWM") - start) / 1024
    return {"rss_mb": None if rss is None else round(rss, 1),
            "python_mb": round(python_peak / 2**20, 2)}


def write(name: str, baseline: str, cases: list[dict], target: float | None, target_case: str,
          notes: str = "", higher_is_better: bool = True) -> dict:
    """Write results/<name>.json. Each case carries the timing fields of spread.spread
    ("engine_s", "baseline_s", "ratio", "ratio_q1", "ratio_q3", "ratios", ...) and its
    own extras; the headline is target_case, whose target is met on the conservative
    quartile (q1 when higher is better, q3 when lower is better). Another case may carry
    its own "target" (and "higher_is_better", default True); each case with a target
    gets its "met" the same way."""
    for c in cases:
        if "ratios" not in c:
            raise ValueError(f"{name}: case {c['case']!r} has no per-repetition ratios")
    headline = next(c for c in cases if c["case"] == target_case)
    if target is not None:
        headline.update(target=target, higher_is_better=higher_is_better)
    for c in cases:
        if c.get("target") is not None:
            c["met"] = target_met(c["ratios"], c["target"], c.get("higher_is_better", True))
    result = {
        "schema": SCHEMA, "name": name, "baseline": baseline, "ratio": headline["ratio"],
        "ratio_q1": headline["ratio_q1"], "ratio_q3": headline["ratio_q3"],
        "repeats": headline["repeats"], "target": target, "target_case": target_case,
        "higher_is_better": higher_is_better,
        "met_by": "q1 >= target" if higher_is_better else "q3 <= target",
        "met": None if target is None else target_met(headline["ratios"], target,
                                                      higher_is_better),
        "method": METHOD, "cases": cases, "machine": machine(), "versions": versions(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_mb": round(peak_rss_mb(), 1), "memory_method": MEMORY_METHOD, "notes": notes,
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    return result


TIMING = ("case", "engine_s", "baseline_s", "ratio", "ratio_q1", "ratio_q3", "repeats", "ratios",
          "engine_s_range", "baseline_s_range", "target", "higher_is_better", "met")


def print_table(result: dict) -> None:
    print(f"\n{result['name']}: engine vs {result['baseline']}")
    for c in result["cases"]:
        extra = "  ".join(f"{k}={v}" for k, v in c.items() if k not in TIMING)
        print(f"  {c['case']:<28} engine {c['engine_s']:.4g}s  baseline {c['baseline_s']:.4g}s  "
              f"ratio {c['ratio']:.2f}x [{c['ratio_q1']:.2f}, {c['ratio_q3']:.2f}] "
              f"({c['repeats']} reps)  {extra}")
    if result["target"] is not None:
        print(f"  target {result['target']}x on {result['target_case']} "
              f"({result['met_by']}): {'met' if result['met'] else 'NOT met'}; "
              f"peak RSS {result['peak_rss_mb']} MB")
