"""Memory guard: a config whose estimated peak memory exceeds the limit is refused before any work.

An experiment estimates the peak memory of a config as named terms in bytes,
each a product over the largest tensors that can be alive at the same time
(autograd copies included); the estimate is their sum, so it errs on the
high side. The limit is the environment variable ICLDYN_MEMORY_LIMIT (GiB),
or else the memory available now (MemAvailable of /proc/meminfo), or else the
physical memory. A refused config gets one UsageError naming the key that
makes it large: the key whose return to its default value lowers the
estimate most (or, when no key set away from its default does, the integer
key whose doubling raises it most).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from .errors import UsageError

GIB = 2**30
ENV = "ICLDYN_MEMORY_LIMIT"
Estimate = Callable[[dict], Mapping[str, float]]


def memory_limit() -> tuple[float, str]:
    """(limit in bytes, where it comes from)."""
    text = os.environ.get(ENV)
    if text is not None:
        try:
            gib = float(text)
        except ValueError:
            gib = math.nan
        if not (math.isfinite(gib) and gib > 0):
            raise UsageError(f"{ENV}: expected a positive number of GiB, got {text!r}")
        return gib * GIB, ENV
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024, f"available memory; {ENV} overrides"
    except OSError:
        pass
    try:
        return (float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")),
                f"physical memory; {ENV} overrides")
    except (ValueError, OSError, AttributeError):
        return math.inf, "no limit known"


def total(terms: Mapping[str, float]) -> float:
    """The estimate in bytes: the sum of the terms (inf if it overflows a float)."""
    try:
        return float(sum(terms.values()))
    except OverflowError:
        return math.inf


def dominant_key(estimate: Estimate, config: dict, defaults: dict) -> str:
    """The key that makes the estimate large (see the module docstring)."""
    best, lowest = None, total(estimate(config))
    for key, value in config.items():
        if key in defaults and defaults[key] is not None and value != defaults[key]:
            trial = total(estimate({**config, key: defaults[key]}))
            if trial < lowest:
                best, lowest = key, trial
    if best is not None:
        return best
    growth = {key: total(estimate({**config, key: 2 * value}))
              for key, value in config.items()
              if isinstance(value, int) and not isinstance(value, bool)}
    return max(growth, key=growth.get) if growth else next(iter(config))


def check_memory(estimate: Estimate, config: dict, defaults: dict) -> None:
    """UsageError naming the dominant key when the estimate of config exceeds the limit."""
    terms = estimate(config)
    if not terms:
        return
    need = total(terms)
    limit, source = memory_limit()
    if need <= limit:
        return
    key = dominant_key(estimate, config, defaults)
    largest = max(terms, key=terms.get)
    raise UsageError(f"key '{key}': {key} = {_show(config[key])} needs ~{need / GIB:.3g} GiB "
                     f"(largest term: {largest}), more than the limit {limit / GIB:.3g} GiB "
                     f"({source})")


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)
