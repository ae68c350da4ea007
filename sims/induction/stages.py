"""Figures of the three stages measured on one trajectory (selector, copier, classifier)."""

from __future__ import annotations

import numpy as np
import torch

from dynamics.trajectory import Trajectory
from reduced_models.markov import parse_label, set_label


def selector_clock(traj: Trajectory) -> np.ndarray:
    """(T,) tau(t) = int_0^t 4 a / |C|^2 dt' (trapezoid).

    For small a the replicator dynamics give d log(p_S*/p_S)/dtau = D_S* - D_S,
    the difference of first-order gains (-> I(S*) - I(S)); see docs/induction.md.
    """
    rate = 4 * traj.params["a"] / traj.params["c_norm"] ** 2
    return np.concatenate([[0.0], np.cumsum(np.diff(traj.t) * (rate[1:] + rate[:-1]) / 2)])


def half_time(t: np.ndarray, x: np.ndarray) -> float | None:
    """First time at which x has made half of its change x[-1] - x[0] (linear between
    records); None if it does not change."""
    change = x[-1] - x[0]
    if not np.isfinite(change) or change == 0:
        return None
    fraction = (x - x[0]) / change
    i = int(np.argmax(fraction >= 0.5))
    if i == 0:
        return float(t[0])
    f0, f1 = fraction[i - 1], fraction[i]
    return float(t[i - 1] + (0.5 - f0) / (f1 - f0) * (t[i] - t[i - 1]))


def reach_time(t: np.ndarray, x: np.ndarray, limit: float, fraction: float = 0.9) -> float | None:
    """First time at which x has covered `fraction` of the way from x[0] to its limiting
    value `limit` (linear between records); None if it does not within the records. It
    does not depend on how long the run is, unlike `half_time`."""
    gap = limit - x[0]
    if not np.isfinite(gap) or gap == 0:
        return None
    progress = (x - x[0]) / gap
    above = np.flatnonzero(progress >= fraction)
    if not len(above):
        return None
    i = int(above[0])
    if i == 0:
        return float(t[0])
    f0, f1 = progress[i - 1], progress[i]
    return float(t[i - 1] + (fraction - f0) / (f1 - f0) * (t[i] - t[i - 1]))


def _order(times: dict) -> list[str]:
    known = sorted((t, name) for name, t in times.items() if t is not None)
    return [name for _, name in known]


def stage_times(traj: Trajectory, i_star: int, s_star: tuple[int, ...], a_optimum: float,
                own_index: np.ndarray) -> dict:
    """When each stage happens, two ways.

    Half-change times (depend on the horizon t_max): the time at which each stage has made
    half of its change over the run: selector p_S*, copier the largest |w - w(0)| over the
    heads of S* (heads named by the offset they start on), classifier a; "order" sorts them.
    90% times (`reach_90`, horizon-independent): the time at which each stage has covered
    90% of the way to its limiting value: p_S* -> 1; for the copier the smallest over the
    heads of S* of softmax(w_h) on the head's own offset (`own_index`) -> 1; a -> the
    limiting model's optimum a_optimum. None: not reached by the end of the run
    ("order_90" lists the reached stages in time order).
    """
    w = traj.params["w"]
    heads = [h - 1 for h in s_star if h <= w.shape[1]]
    move = np.abs(w[:, heads] - w[0, heads]).max(axis=(1, 2)) if heads else np.zeros(len(w))
    times = {"selector": half_time(traj.t, traj.params["p"][:, i_star]),
             "copier": half_time(traj.t, move),
             "classifier": half_time(traj.t, traj.params["a"])}
    own = (np.stack([_softmax(w[:, h])[:, own_index[h]] for h in heads], 1).min(1)
           if heads else np.zeros(len(w)))
    reach = {"selector": reach_time(traj.t, traj.params["p"][:, i_star], 1.0),
             "copier": reach_time(traj.t, own, 1.0) if heads else None,
             "classifier": reach_time(traj.t, traj.params["a"], a_optimum)}
    return {**times, "order": _order(times), "reach_90": reach, "order_90": _order(reach)}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def stage_figures(traj: Trajectory, labels: list[str], s_star: tuple[int, ...],
                  mi: dict[str, float], gains: dict | None, a_optimum: float,
                  own_index: np.ndarray) -> dict:
    """JSON-able stage figures of a trajectory with params w (T,H,M), p (T,n_sets), a, c_norm.

    - selector: first t with p_S* > 0.9, min p_S* after it, and per losing set S the
      fitted slope of log(p_S*/p_S) against tau up to that time (or the whole run),
      beside I(S*) - I(S) and the sharp gain difference G(S*) - G(S)
    - copier: per head the largest change of its logits, and the ratio of the largest
      change outside S* to the smallest inside
    - classifier: final a against the limiting model's optimum
    - stage_times: `stage_times` (own_index: (H,) index of each head's own offset)
    """
    out: dict = {"classifier": {"a_final": float(traj.params["a"][-1]), "a_optimum": a_optimum,
                                "ratio": float(traj.params["a"][-1] / a_optimum)}}
    w = traj.params["w"]
    moves = np.abs(w - w[0]).max(axis=2)[-1]
    inside = [h for h in range(1, w.shape[1] + 1) if h in s_star]
    outside = [h for h in range(1, w.shape[1] + 1) if h not in s_star]
    out["copier"] = {"move": {str(h): float(moves[h - 1]) for h in range(1, w.shape[1] + 1)}}
    if inside and outside:
        out["copier"]["outside_over_inside"] = float(
            max(moves[h - 1] for h in outside) / max(min(moves[h - 1] for h in inside), 1e-300))
    star = set_label(s_star)
    if star not in labels:
        return out
    p = traj.params["p"]
    i_star = labels.index(star)
    above = np.flatnonzero(p[:, i_star] > 0.9)
    t_win = float(traj.t[above[0]]) if len(above) else None
    end = max(int(above[0]) if len(above) else len(traj.t) - 1, 3)
    tau = selector_clock(traj)[: end + 1]
    slopes = {}
    for i, label in enumerate(labels):
        if i == i_star:
            continue
        log_ratio = np.log(p[: end + 1, i_star] / p[: end + 1, i])
        entry = {"slope": float(np.polyfit(tau, log_ratio, 1)[0]),
                 "mi_difference": mi[star] - mi[label] if label in mi else None}
        if gains is not None:
            # the empty set's kernel term is constant: it moves no attention, its gain is 0
            entry["gain_difference"] = gains[s_star] - gains.get(parse_label(label), 0.0)
        slopes[label] = entry
    out["stage_times"] = stage_times(traj, i_star, s_star, a_optimum, own_index)
    out["selector"] = {
        "t_p_star_above_0.9": t_win,
        "p_star_min_after": float(p[above[0]:, i_star].min()) if len(above) else None,
        "p_star_final": float(p[-1, i_star]),
        "log_ratio_slopes": slopes,
        "c_norm_change": float(traj.params["c_norm"][-1] / traj.params["c_norm"][0] - 1),
    }
    return out


def edge_of_stability(traj: Trajectory, drift, until: float = np.inf) -> dict:
    """How far SGD's |C| follows the edge-of-stability bound |C|^2 >= lr max_T (g_T - g_bar)
    (reduced_models.induction.SgdSelectorDrift, whose lr, sample and manifold it uses).

    Per record up to time `until` (the end of the last stage that trains C) kappa =
    2 lr max_T (g_T - g_bar) / |C|^2 (g = dLoss/dp of the population sample at the
    trajectory's w, p, a): a step is stable along every losing C_T while kappa < 2. Returns
    kappa's maximum and last value, the last |C|^2 and the bound's largest value (what
    |C|^2 must have reached to stay stable).
    """
    kappas, bounds = [], []
    last = int(np.flatnonzero(traj.t <= until * (1 + 1e-12))[-1])
    with torch.no_grad():
        for i in range(last + 1):
            c = np.sqrt(traj.params["p"][i]) * traj.params["c_norm"][i]
            state = drift.manifold.pack({"w": traj.params["w"][i], "C": c,
                                         "a": traj.params["a"][i:i + 1]})
            _, excess = drift.per_sequence_gradients(state[None])
            bound = drift.lr * float(excess.max())
            bounds.append(bound)
            kappas.append(2 * bound / traj.params["c_norm"][i] ** 2)
    return {"kappa_max": float(max(kappas)), "kappa_final": kappas[-1],
            "c_norm2_final": float(traj.params["c_norm"][last] ** 2),
            "c_norm2_bound": float(max(bounds))}
