"""Recording schedules: log-spaced output times (plateaus and slow drifts need them)."""

from __future__ import annotations

import numpy as np


def log_steps(n_steps: int, n_records: int) -> np.ndarray:
    """Distinct integer steps 0 <= s <= n_steps, log-spaced, always with 0, 1 and n_steps.

    Returns (T,) int64 with T <= n_records + 1 (fewer when the early steps collide).
    """
    if n_steps <= 0:
        return np.zeros(1, dtype=np.int64)
    grid = np.logspace(0.0, np.log10(n_steps), max(n_records, 2))
    steps = np.unique(np.concatenate([[0], np.rint(grid).astype(np.int64), [n_steps]]))
    return steps


def record_times(t_max: float, lr: float, n_records: int) -> tuple[np.ndarray, np.ndarray]:
    """Common output grid of a flow and of SGD with step size lr.

    Returns (t, steps): steps = log_steps(round(t_max / lr)), t = lr * steps, so that
    ODE output times are exactly the times at which SGD is recorded.
    """
    steps = log_steps(round(t_max / lr), n_records)
    return lr * steps.astype(np.float64), steps
