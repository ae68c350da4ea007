"""Sweep hooks of the induction system: the winning parent set over a grid."""

from __future__ import annotations

import os

import torch

from dynamics.sweep import Metric, Sweep, Task
from reduced_models.markov import candidate_sets, set_label

from ..sweeps import TrajectoryHooks
from .experiment import shape_of
from .selection import final_winner, winning_sets


class InductionHooks(TrajectoryHooks):
    """induction: which candidate parent set wins (sims/induction/selection.py).

    Per point: `mi_S_star`, the modified chi-square MI's winner S* (the phase; labels: every
    candidate set of offsets of any grid point, "1,2" style), `mi_standard_S_star`, the
    standard (power-1) criterion's winner, and `mi_margin`, I(S*) minus the runner-up's I;
    per trajectory T (ode: the symbolic three-stage flow, sgd: the simplified network, each
    through the run's schedule) `T_S_star`, the set with the largest final p named by the
    offsets its heads copy at the end, `T_p_star_final`, that p, `T_a_final` and
    `T_loss_final`.
    """

    def trajectories(self, ode: bool, sgd: bool) -> tuple[str, ...]:
        return tuple(name for name, on in (("ode", ode), ("sgd", sgd)) if on)

    @staticmethod
    def labels(sweep: Sweep) -> tuple[str, ...]:
        """Every candidate set of offsets over the grid, by size then lexicographically."""
        sets = {s for _, cfg in sweep.points()
                for s in candidate_sets(shape_of(cfg).span, cfg["degree"])}
        return tuple(set_label(s) for s in sorted(sets, key=lambda s: (len(s), s)))

    def phase_metric(self, ode: bool, sgd: bool) -> str | None:
        return "mi_S_star"

    def sweep_metrics(self, sweep: Sweep) -> list[Metric]:
        labels = self.labels(sweep)
        out = [Metric("mi_S_star", "winning set S* of the modified chi-square MI",
                      phases=labels),
               Metric("mi_standard_S_star", "winning set of the standard (power-1) "
                      "chi-square MI", phases=labels),
               Metric("mi_margin", "I(S*) - I(runner-up), modified chi-square MI")]
        for n in self.trajectories(sweep.ode, sweep.sgd):
            out += [Metric(f"{n}_S_star", f"{n}: set of largest final p, named by the offsets "
                           "its heads copy at the end", phases=labels),
                    Metric(f"{n}_p_star_final", f"{n}: final p of that set"),
                    Metric(f"{n}_a_final", f"{n}: classifier a at the last record"),
                    Metric(f"{n}_loss_final", f"{n}: loss at the last record")]
        return out

    def tasks(self, sweep: Sweep) -> list[Task]:
        labels = self.labels(sweep)
        return [Task(run_induction_point, (i, cfg, sweep.ode, sweep.sgd, labels), (i,))
                for i, cfg in sweep.points()]


def run_induction_point(index: int, config: dict, ode: bool, sgd: bool,
                        labels: tuple[str, ...]) -> list:
    """Task body: the winning sets at one induction point -> [(index, metrics)]."""
    torch.set_num_threads(int(os.environ.get("ICLDYN_THREADS", "1")))
    result = winning_sets(config, ode, sgd)
    out = {"mi_S_star": float(labels.index(set_label(result["mi"]))),
           "mi_standard_S_star": float(labels.index(set_label(result["mi_standard"]))),
           "mi_margin": result["mi_margin"]}
    for name, traj in result["trajectories"].items():
        offsets, p_final = final_winner(traj, result["sets"])
        out[f"{name}_S_star"] = float(labels.index(set_label(offsets)))
        out[f"{name}_p_star_final"] = p_final
        out[f"{name}_a_final"] = float(traj.params["a"][-1])
        out[f"{name}_loss_final"] = float(traj.loss[-1])
    return [(index, out)]
