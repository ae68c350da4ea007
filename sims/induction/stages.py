"""Figures of the three stages measured on one trajectory (selector, copier, classifier)."""

from __future__ import annotations

import numpy as np

from dynamics.trajectory import Trajectory
from reduced_models.markov import parse_label, set_label


def selector_clock(traj: Trajectory) -> np.ndarray:
    """(T,) tau(t) = int_0^t 4 a / |C|^2 dt' (trapezoid).

    For small a the replicator dynamics give d log(p_S*/p_S)/dtau = D_S* - D_S,
    the difference of first-order gains (-> I(S*) - I(S)); see docs/induction.md.
    """
    rate = 4 * traj.params["a"] / traj.params["c_norm"] ** 2
    return np.concatenate([[0.0], np.cumsum(np.diff(traj.t) * (rate[1:] + rate[:-1]) / 2)])


def stage_figures(traj: Trajectory, labels: list[str], s_star: tuple[int, ...],
                  mi: dict[str, float], gains: dict | None, a_optimum: float) -> dict:
    """JSON-able stage figures of a trajectory with params w (T,H,M), p (T,n_sets), a, c_norm.

    - selector: first t with p_S* > 0.9, min p_S* after it, and per losing set S the
      fitted slope of log(p_S*/p_S) against tau up to that time (or the whole run),
      beside I(S*) - I(S) and the sharp gain difference G(S*) - G(S)
    - copier: per head the largest change of its logits, and the ratio of the largest
      change outside S* to the smallest inside
    - classifier: final a against the limiting model's optimum
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
            entry["gain_difference"] = gains[s_star] - gains[parse_label(label)]
        slopes[label] = entry
    out["selector"] = {
        "t_p_star_above_0.9": t_win,
        "p_star_min_after": float(p[above[0]:, i_star].min()) if len(above) else None,
        "p_star_final": float(p[-1, i_star]),
        "log_ratio_slopes": slopes,
        "c_norm_change": float(traj.params["c_norm"][-1] / traj.params["c_norm"][0] - 1),
    }
    return out
