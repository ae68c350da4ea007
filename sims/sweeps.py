"""Per-experiment sweep hooks: what a point of a grid reports, and how the grid is cut into tasks.

A hook declares its metrics (dynamics.sweep_store.Metric) and phase
classifier, measures them from a run's trajectories, and cuts the grid into
dynamics.sweep.Task objects. The default is one task per point (`run_point`:
the experiment's own run); linreg ODE-only sweeps instead integrate whole
groups of symbolic-flow points as one batched ODE (`run_linreg_flow_batch`).
Adding an experiment's sweep is one hook object in HOOKS.

Every point uses the base seed: points of a grid share their random numbers
(common random numbers), so differences across the grid are not sampling
noise. Sweep the key `seed` for replicas.
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np
import torch

from dynamics.compare import escape_time
from dynamics.errors import UsageError
from dynamics.sweep import Metric, Sweep, Task, parse_grid, run_sweep
from dynamics.sweep_plots import plot_sweep
from dynamics.times import record_times
from dynamics.trajectory import Trajectory
from reduced_models import linreg as theory
from reduced_models.base import integrate_flow
from reduced_models.markov import candidate_sets, set_label

from . import registry
from .experiment import comparisons, generator, seeds
from .linreg.multitask import classify_heads
from .linreg.network import SoftmaxAttentionRegressor, project

NAN = float("nan")


def run_point(experiment: str, index: int, config: dict, ode: bool, sgd: bool) -> list:
    """Task body: the experiment's run at one point -> [(index, metrics)]."""
    torch.set_num_threads(int(os.environ.get("ICLDYN_THREADS", "1")))
    result = registry.get(experiment).run(config, ode=ode, sgd=sgd)
    return [(index, HOOKS[experiment].measure(result.trajectories, config, ode, sgd))]


class TrajectoryHooks:
    """Metrics read from the trajectories of a run, per trajectory name:
    <traj>_loss_final, <traj>_escape_time, <traj>_phase and <traj>_<param>_final
    for each reduced parameter; plus, per compared pair (a, b),
    <a>_vs_<b>_gap (pointwise), _path_gap and _escape_shift (dynamics.compare).

    Subclasses set `params` (reduced parameter name -> its extra dimensions),
    `phases` (labels) and implement `phase(traj)` and `extents(config)`.
    """

    params: ClassVar[dict[str, tuple[str, ...]]] = {}
    phases: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()

    def trajectories(self, ode: bool, sgd: bool) -> tuple[str, ...]:
        raise NotImplementedError

    def phase(self, traj: Trajectory, config: dict) -> int:
        raise NotImplementedError

    def extents(self, config: dict) -> dict[str, int]:
        return {}

    def phase_metric(self, ode: bool, sgd: bool) -> str | None:
        names = self.trajectories(ode, sgd)
        return f"{'sgd' if 'sgd' in names else names[0]}_phase" if self.phases else None

    def sweep_metrics(self, sweep: Sweep) -> list[Metric]:
        """The metrics of a sweep; by default `metrics`, whatever the grid."""
        return self.metrics(sweep.ode, sweep.sgd)

    def _pairs(self, ode: bool, sgd: bool) -> list[tuple[str, str]]:
        names = self.trajectories(ode, sgd)
        return [(a, b) for a, b in self.pairs if a in names and b in names]

    def metrics(self, ode: bool, sgd: bool) -> list[Metric]:
        out = []
        for n in self.trajectories(ode, sgd):
            out += [
                Metric(f"{n}_loss_final", f"{n}: loss at the last recorded time"),
                Metric(f"{n}_escape_time", f"{n}: gradient-flow time at which the loss has "
                       "made half of its total drop (NaN: no plateau escape by t_max)"),
            ]
            out += [Metric(f"{n}_{p}_final", f"{n}: {p} at the last recorded time", dims=dims)
                    for p, dims in self.params.items()]
            if self.phases:
                out.append(Metric(f"{n}_phase", f"{n}: phase ({', '.join(self.phases)})",
                                  phases=self.phases))
        for a, b in self._pairs(ode, sgd):
            out += [
                Metric(f"{a}_vs_{b}_gap", f"max over time of |{a} - {b}| / max |{b}|, "
                       "largest over parameters", log=True),
                Metric(f"{a}_vs_{b}_path_gap", f"Hausdorff distance of the {a} and {b} paths "
                       f"in parameter space, relative to max |{b}|", log=True),
                Metric(f"{a}_vs_{b}_escape_shift", f"|escape time {a} - {b}| / escape time {b}",
                       log=True),
            ]
        return out

    def measure(self, trajs: dict[str, Trajectory], config: dict, ode: bool, sgd: bool) -> dict:
        """{metric: float or list} at one point, from its trajectories."""
        out = {}
        for n in self.trajectories(ode, sgd):
            traj = trajs[n]
            t_escape = escape_time(traj)
            out[f"{n}_loss_final"] = float(traj.loss[-1])
            out[f"{n}_escape_time"] = NAN if t_escape is None else t_escape
            for p in self.params:
                out[f"{n}_{p}_final"] = traj.params[p][-1].tolist()
            if self.phases:
                out[f"{n}_phase"] = float(self.phase(traj, config))
        for name, cmp in comparisons(trajs, self._pairs(ode, sgd)).items():
            out[f"{name}_gap"] = cmp["pointwise"]["max"]
            out[f"{name}_path_gap"] = cmp["path"]
            out[f"{name}_escape_shift"] = NAN if cmp["escape_shift"] is None else cmp["escape_shift"]
        return out

    def tasks(self, sweep: Sweep) -> list[Task]:
        """One task per point (the experiment's run)."""
        return [Task(run_point, (sweep.experiment, i, cfg, sweep.ode, sweep.sgd), (i,))
                for i, cfg in sweep.points()]


LINREG_PHASES = ("plateau", "single", "pair", "failed")


class LinregHooks(TrajectoryHooks):
    """linreg: final omega, mu per head; phases
    - plateau: the loss has not made 20% of a drop by t_max (no escape yet);
    - single: escaped, the active heads (|mu_h| >= active_fraction x the largest,
      default 0.1) share one sign
      (one effective head, THEORY.md A.3, H = 1);
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
        "population_rtol"))
    BATCHED_VALUES: ClassVar[dict[str, str]] = {"ode_start": "init", "covariance": "identity"}
    # Keys that change the ODE or its output grid: points differing in them go to
    # separate batches. L and sigma2 enter as batched hyper-parameters, init,
    # init_scale and seed through the start state; the rest is SGD-only.
    STRUCTURAL = ("d", "heads", "param", "t_max", "lr", "records", "rtol", "atol", "device")
    MAX_BATCH = 256

    def trajectories(self, ode: bool, sgd: bool) -> tuple[str, ...]:
        if ode and sgd:
            return ("ode", "population", "sgd")
        return ("ode",) if ode else ("sgd",)

    def extents(self, config: dict) -> dict[str, int]:
        return {"head": config["heads"]}

    def phase(self, traj: Trajectory, config: dict) -> int:
        if traj.status != "complete" or not np.isfinite(traj.loss).all():
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
    """(P,) start state of a linreg run, as LinregExperiment.run builds it."""
    d, H, param = config["d"], config["heads"], config["param"]
    manifold = theory.symbolic_model(d, H, param).manifold
    if config["init"] == "symmetric":
        return manifold.pack(theory.symmetric_start(d, H, config["init_scale"], param))
    net = SoftmaxAttentionRegressor(d, H, param, dtype=getattr(torch, config["sgd_dtype"]))
    net.init_normal(config["init_scale"], generator(seeds(config["seed"], 4)[0]))
    return manifold.project(net.weights()).detach()


def linreg_flow_batch(configs: list[dict]) -> list[Trajectory]:
    """The symbolic Lt flows of many linreg configs as ONE batched integration.

    All configs share the STRUCTURAL keys; L and sigma2 enter as (B,) float64
    hyper-parameter tensors, the start states as rows of the (B, P) state.
    Returns one "ode" Trajectory per config (gradient-flow time t = lr x step grid).
    """
    first = configs[0]
    model = theory.symbolic_model(first["d"], first["heads"], first["param"])
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
    hooks = HOOKS["linreg"]
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
        if traj.status != "complete" or not np.isfinite(traj.loss).all():
            return MULTITASK_PHASES.index("failed")
        layout = classify_heads(traj.params["omega"][-1], traj.params["mu"][-1],
                                config["active_fraction"])["layout"]
        return MULTITASK_PHASES.index(layout)


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
        sets = {s for _, cfg in sweep.points() for s in candidate_sets(cfg["window"], cfg["degree"])}
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
    from .induction.selection import final_winner, winning_sets

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


HOOKS: dict[str, TrajectoryHooks] = {"linreg": LinregHooks(), "linreg-multitask": MultitaskHooks(),
                                     "induction": InductionHooks()}


def hooks_for(experiment: str) -> TrajectoryHooks:
    try:
        return HOOKS[experiment]
    except KeyError:
        raise UsageError(f"experiment {experiment!r} has no sweep metrics yet "
                         f"(sweepable: {', '.join(sorted(HOOKS))})") from None


def plan(exp, config: dict, grid: list[str], ode: bool, sgd: bool) -> Sweep:
    """Validate a whole sweep before any work: grid values by the schema, every
    point by the experiment's memory estimate and cross-key checks (Experiment.admit).
    Raises UsageError naming the key."""
    if not grid:
        raise UsageError("--grid: give at least one KEY=V1,V2,...")
    if not ode and not sgd:
        raise UsageError("--no-ode and --no-sgd together leave nothing to compute")
    hooks_for(exp.name)
    axes = parse_grid(exp.schema, grid)
    sweep = Sweep(exp.name, config, tuple(axes), ode, sgd)
    for _, point in sweep.points():
        exp.admit(point)
    return sweep


def sweep(exp, config: dict, grid: list[str], out: str, *, ode: bool = True, sgd: bool = True,
          workers: int | None = None, scheduler: str | None = None, plot: bool = True) -> dict:
    """Run (or resume) a sweep of exp into out; returns the --json report."""
    from dynamics import store

    spec = plan(exp, config, grid, ode, sgd)
    store.check_writable(out)
    hooks = hooks_for(exp.name)
    extents: dict[str, int] = {}
    for _, point in spec.points():
        for dim, size in hooks.extents(point).items():
            extents[dim] = max(extents.get(dim, 0), size)
    report = run_sweep(out, spec, hooks.sweep_metrics(spec), hooks.tasks(spec), extents,
                       hooks.phase_metric(ode, sgd), workers=workers, scheduler=scheduler)
    report["experiment"] = exp.name
    if plot:
        report["plots"] = plot_sweep(out, report["sweep_id"])
    return report
