"""Sweep hooks of the sparse system: sparse-flow (agreement of flow and SGD) and sparse-risk
(the winning estimator per point)."""

from __future__ import annotations

import os

import numpy as np
import torch

from dynamics.sweep import Metric, Sweep, Task
from dynamics.trajectory import Trajectory

from .. import registry
from ..sweeps import NAN, TrajectoryHooks


class SparseFlowHooks(TrajectoryHooks):
    """sparse-flow: the losses and escape times of `population` and `sgd` and their gaps
    (pointwise, path, escape shift over alpha, eta_x, eta_u), plus `sgd_off_manifold_final`
    and `sgd_off_manifold_max` (|W - lift(projection)| / |W| on the extended manifold)."""

    pairs = (("sgd", "population"),)

    def trajectories(self, ode: bool, sgd: bool) -> tuple[str, ...]:
        return tuple(name for name, on in (("population", ode), ("sgd", sgd)) if on)

    def metrics(self, ode: bool, sgd: bool) -> list[Metric]:
        out = super().metrics(ode, sgd)
        if sgd:
            out += [Metric("sgd_off_manifold_final", "|W - lift(projection)| / |W| of the SGD "
                           "stack at t_max (extended manifold)", log=True),
                    Metric("sgd_off_manifold_max", "largest |W - lift(projection)| / |W| over "
                           "the SGD records", log=True)]
        return out

    def measure(self, trajs: dict[str, Trajectory], config: dict, ode: bool, sgd: bool) -> dict:
        out = super().measure(trajs, config, ode, sgd)
        if sgd:
            off = trajs["sgd"].params["off_manifold"]
            out["sgd_off_manifold_final"] = float(off[-1]) if len(off) else NAN
            out["sgd_off_manifold_max"] = float(off.max()) if len(off) else NAN
        return out


# Estimators a sparse-risk sweep reports, and the families whose winner is its phase.
SPARSE_RISK_ESTIMATORS = ("ols", "ridge", "ridge_bayes", "gd", "pto", "pto_fixed", "pto_split",
                          "pto_reduced", "lasso", "averaging")
SPARSE_GD_FAMILY = ("gd", "pto_fixed", "pto_split", "pto_reduced")


class SparseRiskHooks(TrajectoryHooks):
    """sparse-risk: at the largest n of n_test of each point (sweep n_test=V1,V2,... for one n
    per point), `risk_<estimator>` (mean risk), `winner` (the estimator of lowest mean risk,
    the phase), `winner_gd_family` (lowest among the fixed-step GD-type predictors a
    linear-attention stack computes: gd, pto_fixed, pto_split, pto_reduced) and
    `z_<variant>_vs_gd` (paired z of pto_split and pto_reduced against gd; negative: below)."""

    def phase_metric(self, ode: bool, sgd: bool) -> str | None:
        return "winner"

    def sweep_metrics(self, sweep: Sweep) -> list[Metric]:
        out = [Metric(f"risk_{name}", f"mean risk of {name} at the largest n_test (noise "
                      "included)", log=True) for name in SPARSE_RISK_ESTIMATORS]
        out += [Metric("winner", "estimator of lowest mean risk", phases=SPARSE_RISK_ESTIMATORS),
                Metric("winner_gd_family", "lowest mean risk among gd, pto_fixed, pto_split, "
                       "pto_reduced", phases=SPARSE_GD_FAMILY)]
        out += [Metric(f"z_{name}_vs_gd", f"paired z of risk {name} - risk gd (negative: "
                       f"{name} lower)") for name in ("pto_split", "pto_reduced")]
        return out

    def tasks(self, sweep: Sweep) -> list[Task]:
        return [Task(run_sparse_risk_point, (i, cfg), (i,)) for i, cfg in sweep.points()]


def run_sparse_risk_point(index: int, config: dict) -> list:
    """Task body: the sparse-risk run at one point -> [(index, metrics)]."""
    torch.set_num_threads(int(os.environ.get("ICLDYN_THREADS", "1")))
    summary = registry.get("sparse-risk").run(config).summary
    risks = {name: summary["risk"][name][-1] for name in SPARSE_RISK_ESTIMATORS}
    out = {f"risk_{name}": value for name, value in risks.items()}
    finite = {name: v for name, v in risks.items() if np.isfinite(v)}
    out["winner"] = float(SPARSE_RISK_ESTIMATORS.index(min(finite, key=finite.get)))
    family = {name: risks[name] for name in SPARSE_GD_FAMILY}
    out["winner_gd_family"] = float(SPARSE_GD_FAMILY.index(min(family, key=family.get)))
    for name in ("pto_split", "pto_reduced"):
        out[f"z_{name}_vs_gd"] = summary["orderings"][f"{name}_below_gd"]["z"][-1]
    return [(index, out)]
