"""Sweep hooks of the linreg system: linreg (batched ODE-only grids) and linreg-multitask."""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np
import torch

from dynamics.compare import escape_time
from dynamics.status import Status
from dynamics.sweep import Sweep, Task
from dynamics.times import record_times
from dynamics.trajectory import Trajectory
from reduced_models import linreg as theory
from reduced_models.base import integrate_flow

from ..sweeps import TrajectoryHooks
from .experiment import Setup
from .multitask import classify_heads
from .network import project

LINREG_PHASES = ("plateau", "single", "pair", "failed")


class LinregHooks(TrajectoryHooks):
    """linreg: final omega, mu per head; phases
    - plateau: the loss has not made 20% of a drop by t_max (no escape yet);
    - single: escaped, the active heads (|mu_h| >= active_fraction x the largest,
      default 0.1) share one sign
      (one effective head, as H = 1);
    - pair: escaped with active heads of both signs (the +- pair, debiased GD);
    - failed: the flow or the network diverged or stalled.
    ODE-only sweeps report the symbolic Lt flow ("ode"), batched; sweeps with
    SGD run each point in full and report ode, population, sgd and their gaps.
    """

    params: ClassVar[dict[str, tuple[str, ...]]] = {"omega": ("head",), "mu": ("head",)}
    phases = LINREG_PHASES
    pairs = (("sgd", "population"), ("sgd", "ode"), ("ode", "population"))

    # Keys the batched path understands, and the values it needs of some; a config
    # with any other key (a newer schema) or value runs point by point, always right.
    BATCHED_KEYS = frozenset((
        "d", "L", "sigma2", "heads", "init", "init_scale", "param", "optimizer", "lr", "batch",
        "t_max", "mc_samples", "eval_samples", "records", "rtol", "atol", "sgd_dtype", "device",
        "seed", "ode_start", "pattern_threshold", "active_fraction", "covariance", "rho",
        "population_rtol", "checkpoint_every", "metric"))
    BATCHED_VALUES: ClassVar[dict[str, str]] = {"ode_start": "init", "covariance": "identity"}
    # Keys that change the ODE or its output grid: points differing in them go to
    # separate batches. L and sigma2 enter as batched hyper-parameters, init,
    # init_scale and seed through the start state; the rest is SGD-only.
    STRUCTURAL = ("d", "heads", "param", "metric", "t_max", "lr", "records", "rtol", "atol",
                  "device")
    MAX_BATCH = 256

    def trajectories(self, ode: bool, sgd: bool) -> tuple[str, ...]:
        if ode and sgd:
            return ("ode", "population", "sgd")
        return ("ode",) if ode else ("sgd",)

    def extents(self, config: dict) -> dict[str, int]:
        return {"head": config["heads"]}

    def phase(self, traj: Trajectory, config: dict) -> int:
        if traj.status != Status.COMPLETE or not np.isfinite(traj.loss).all():
            return LINREG_PHASES.index("failed")
        if escape_time(traj) is None:
            return LINREG_PHASES.index("plateau")
        mu = traj.params["mu"][-1]
        active = np.abs(mu) >= config.get("active_fraction", 0.1) * np.abs(mu).max()
        signs = np.sign(mu[active])
        both = (signs > 0).any() and (signs < 0).any()
        return LINREG_PHASES.index("pair" if both else "single")

    def tasks(self, sweep: Sweep) -> list[Task]:
        """ODE-only: groups of equal structural keys, at most MAX_BATCH points each,
        one batched integration per group (chunks fixed by the grid alone)."""
        points = sweep.points()
        if not sweep.ode or sweep.sgd or not all(self._batchable(cfg) for _, cfg in points):
            return super().tasks(sweep)
        groups: dict[tuple, list] = {}
        for i, cfg in points:
            groups.setdefault(tuple(cfg[k] for k in self.STRUCTURAL), []).append((i, cfg))
        out = []
        for points in groups.values():
            for start in range(0, len(points), self.MAX_BATCH):
                chunk = points[start:start + self.MAX_BATCH]
                out.append(Task(run_linreg_flow_batch, (chunk,), tuple(i for i, _ in chunk)))
        return out

    def _batchable(self, config: dict) -> bool:
        return (set(config) <= self.BATCHED_KEYS
                and all(config.get(k, v) == v for k, v in self.BATCHED_VALUES.items()))


def linreg_start(config: dict) -> torch.Tensor:
    """(P,) start state of a linreg run: that of its `Setup`, the run's own."""
    return Setup(config).state0.cpu()


def linreg_flow_batch(configs: list[dict]) -> list[Trajectory]:
    """The symbolic Lt flows of many linreg configs as ONE batched integration.

    All configs share the STRUCTURAL keys; L and sigma2 enter as (B,) float64
    hyper-parameter tensors, the start states as rows of the (B, P) state.
    Returns one "ode" Trajectory per config (gradient-flow time t = lr x step grid).
    """
    first = configs[0]
    model = theory.symbolic_model(first["d"], first["heads"], first["param"], first["metric"])
    device = first["device"]
    state0 = torch.stack([linreg_start(c) for c in configs]).to(device)
    hyper = {k: torch.tensor([float(c[k]) for c in configs], dtype=torch.float64, device=device)
             for k in ("L", "sigma2")}
    t, _ = record_times(first["t_max"], first["lr"], first["records"])
    return integrate_flow(model, state0, t, hyper, project, rtol=first["rtol"], atol=first["atol"])


def run_linreg_flow_batch(points: list[tuple[int, dict]]) -> list:
    """Task body: [(index, config)] -> [(index, metrics)] from one batched integration."""
    torch.set_num_threads(int(os.environ.get("ICLDYN_THREADS", "1")))
    trajs = linreg_flow_batch([cfg for _, cfg in points])
    hooks = LinregHooks()
    return [(i, hooks.measure({"ode": tr}, cfg, True, False)) for (i, cfg), tr in zip(points, trajs)]


MULTITASK_PHASES = ("split", "superposition", "partial", "failed")


class MultitaskHooks(TrajectoryHooks):
    """linreg-multitask (network only): final omega_hk, mu_hk per head and task; phase
    from sims.linreg.multitask.classify_heads at the last record (split: each task
    its own +- heads; superposition: a head serves several tasks; partial: some task
    lacks a +- pair), or failed when training diverged."""

    params: ClassVar[dict[str, tuple[str, ...]]] = {
        "omega": ("head", "task"), "mu": ("head", "task")}
    phases = MULTITASK_PHASES

    def trajectories(self, ode: bool, sgd: bool) -> tuple[str, ...]:
        return ("sgd",)

    def extents(self, config: dict) -> dict[str, int]:
        return {"head": config["heads"], "task": config["tasks"]}

    def phase(self, traj: Trajectory, config: dict) -> int:
        if traj.status != Status.COMPLETE or not np.isfinite(traj.loss).all():
            return MULTITASK_PHASES.index("failed")
        layout = classify_heads(traj.params["omega"][-1], traj.params["mu"][-1],
                                config["active_fraction"])["layout"]
        return MULTITASK_PHASES.index(layout)
