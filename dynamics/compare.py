"""Comparison of two trajectories: pointwise in common time, as paths, and by escape time.

A long plateau turns tiny rate differences into a shift of the escape time,
and then a pointwise gap on the steep part says little about the dynamics;
the path gap (time removed) and the escape times separate the two effects.
"""

from __future__ import annotations

import numpy as np

from .trajectory import Trajectory


def _common(a: Trajectory, b: Trajectory) -> tuple[np.ndarray, dict, dict]:
    """a's and b's parameters on b's times inside both ranges (a linearly interpolated)."""
    t_hi = min(a.t[-1], b.t[-1])
    keep = b.t <= t_hi * (1 + 1e-12)
    t = b.t[keep]
    pa, pb = {}, {}
    for name in a.params.keys() & b.params.keys():
        va = a.params[name].reshape(len(a.t), -1)
        pa[name] = np.stack([np.interp(t, a.t, col) for col in va.T], axis=1)
        pb[name] = b.params[name].reshape(len(b.t), -1)[keep]
    return t, pa, pb


def pointwise_gap(a: Trajectory, b: Trajectory) -> dict[str, float]:
    """Per parameter: max over common times of |a - b| / max |b| (b is the reference).

    The entry "max" is the largest over parameters.
    """
    _, pa, pb = _common(a, b)
    gaps = {}
    for name in sorted(pa):
        scale = np.abs(pb[name]).max()
        gaps[name] = float(np.abs(pa[name] - pb[name]).max() / scale) if scale > 0 else 0.0
    gaps["max"] = max(gaps.values(), default=0.0)
    return gaps


def _point_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """(N,) distance of each of N points (N, D) to the polyline through line (M, D)."""
    if len(line) == 1:
        return np.linalg.norm(points - line[0], axis=1)
    start, seg = line[:-1], np.diff(line, axis=0)
    rel = points[:, None, :] - start[None]
    length2 = (seg**2).sum(axis=1)
    frac = np.clip((rel * seg[None]).sum(axis=2) / np.where(length2 > 0, length2, 1.0), 0, 1)
    nearest = start[None] + frac[..., None] * seg[None]
    return np.linalg.norm(points[:, None, :] - nearest, axis=2).min(axis=1)


def path_gap(a: Trajectory, b: Trajectory) -> float:
    """Symmetric Hausdorff distance between the two paths in parameter space, time removed.

    Each parameter is scaled by max |b| of that parameter, so the gap is relative,
    like the pointwise gap. Only the common time range counts.
    """
    _, pa, pb = _common(a, b)
    cols_a, cols_b = [], []
    for name in sorted(pa):
        scale = np.abs(pb[name]).max() or 1.0
        cols_a.append(pa[name] / scale)
        cols_b.append(pb[name] / scale)
    xa, xb = np.concatenate(cols_a, axis=1), np.concatenate(cols_b, axis=1)
    return float(max(_point_to_polyline(xa, xb).max(), _point_to_polyline(xb, xa).max()))


def escape_time(traj: Trajectory, min_drop: float = 0.2) -> float | None:
    """Time at which the loss has made half of its total drop (log-time interpolation).

    The loss is smoothed by a running median of 5 records (SGD losses are
    minibatch estimates). None when the loss falls by less than min_drop of
    its initial value (no plateau to escape from).
    """
    if len(traj.t) < 3:
        return None
    loss = _running_median(traj.loss, 5)
    start, end = loss[0], loss.min()
    if start <= 0 or (start - end) < min_drop * start:
        return None
    level = start - 0.5 * (start - end)
    i = int(np.argmax(loss <= level))
    if i == 0:
        return float(traj.t[0])
    t0, t1 = traj.t[i - 1], traj.t[i]
    f = (loss[i - 1] - level) / (loss[i - 1] - loss[i])
    if t0 > 0:
        return float(np.exp(np.log(t0) + f * (np.log(t1) - np.log(t0))))
    return float(t0 + f * (t1 - t0))


def _running_median(x: np.ndarray, width: int) -> np.ndarray:
    half = width // 2
    padded = np.pad(x, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    return np.median(windows, axis=1)


def compare(a: Trajectory, b: Trajectory) -> dict:
    """Full comparison of a against the reference b (JSON-able).

    Keys: pointwise (per parameter and max), path, escape_time {a, b}, and
    escape_shift = |t_a - t_b| / t_b when both escape.
    """
    ta, tb = escape_time(a), escape_time(b)
    return {
        "pointwise": pointwise_gap(a, b),
        "path": path_gap(a, b),
        "escape_time": {"a": ta, "b": tb},
        "escape_shift": abs(ta - tb) / tb if ta is not None and tb else None,
    }
