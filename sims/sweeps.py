"""Per-experiment sweep hooks: what a point of a grid reports, and how the grid is cut into tasks.

A hook declares its metrics (dynamics.sweep_store.Metric) and phase
classifier, measures them from a run's trajectories, and cuts the grid into
dynamics.sweep.Task objects. The default is one task per point (`run_point`:
the experiment's own run); linreg ODE-only sweeps instead integrate whole
groups of symbolic-flow points as one batched ODE (`run_linreg_flow_batch`).
A system names its hooks in its declaration (sims.system.System.hooks); an
experiment without them is swept with `GenericHooks`.

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
from dynamics.progress import STATUS
from dynamics.sweep import Metric, Sweep, Task, parse_grid, run_sweep
from dynamics.sweep_plots import plot_sweep
from dynamics.trajectory import Trajectory

from . import registry
from .experiment import comparisons

NAN = float("nan")


def run_point(experiment: str, index: int, config: dict, ode: bool, sgd: bool) -> list:
    """Task body: the experiment's run at one point -> [(index, metrics)]."""
    torch.set_num_threads(int(os.environ.get("ICLDYN_THREADS", "1")))
    result = registry.get(experiment).run(config, ode=ode, sgd=sgd)
    return [(index, registry.hooks(experiment).measure(result.trajectories, config, ode, sgd))]


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


class GenericHooks(TrajectoryHooks):
    """The sweep of an experiment whose system declares no hooks of its own.

    Its metrics are those of the run at the first grid point, which is computed
    first (and stored as that point's result; a resumed sweep computes it again
    to learn them): for each trajectory <traj>_loss_final and <traj>_escape_time,
    for each comparison of the summary its gaps (TrajectoryHooks), and every other
    number of the summary, nested keys joined by "_" (booleans as 0/1, None as
    NaN; the wall-clock "seconds" and echoes of config keys left out). A list of numbers in the summary is
    one metric along a list-valued config key of the same length (the first such
    key in schema order: e.g. one risk per n_test); other lists are left out.
    """

    def __init__(self, experiment: str):
        self.experiment = experiment
        self._first: tuple[int, dict, object] | None = None  # (index, config, RunResult)

    def _first_run(self, sweep: Sweep):
        if self._first is None:
            index, config = sweep.points()[0]
            result = registry.get(self.experiment).run(config, ode=sweep.ode, sgd=sweep.sgd)
            self._first = (index, config, result)
        return self._first

    def _list_keys(self, config: dict) -> list[str]:
        schema = registry.info(self.experiment).schema
        return [k.name for k in schema.keys if k.type in ("ints", "floats")]

    def _numbers(self, summary: dict, config: dict, names: tuple[str, ...]) -> dict:
        """{metric: (value, dims)} of the summary's numbers (see the class docstring)."""
        lengths = {}
        for key in self._list_keys(config):
            lengths.setdefault(len(config[key]), key)
        out = {}

        def walk(prefix: str, value) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}_{k}" if prefix else str(k), v)
            elif isinstance(value, (list, tuple)):
                if value and all(_number(v) for v in value) and len(value) in lengths:
                    out[prefix] = ([_float(v) for v in value], (lengths[len(value)],))
            elif _number(value):
                out[prefix] = (_float(value), ())

        for key, value in summary.items():
            if key not in names and key not in ("comparison", "seconds"):
                walk(key, value)
        return {k: v for k, v in out.items() if k not in config}  # not the config's echo

    def trajectories(self, ode: bool, sgd: bool) -> tuple[str, ...]:
        return tuple(self._first[2].trajectories) if self._first else ()

    def sweep_metrics(self, sweep: Sweep) -> list[Metric]:
        _, config, result = self._first_run(sweep)
        self.pairs = _compared(result)
        out = self.metrics(sweep.ode, sweep.sgd)
        taken = {m.name for m in out}
        out += [Metric(name, f"summary {name.replace('_', ' ')}", dims=dims)
                for name, (_, dims) in self._numbers(result.summary, config,
                                                     self.trajectories(True, True)).items()
                if name not in taken]
        return out

    def extents(self, config: dict) -> dict[str, int]:
        return {key: len(config[key]) for key in self._list_keys(config)}

    def measure_result(self, result, config: dict, ode: bool, sgd: bool,
                       declared: tuple[tuple[str, tuple[str, ...]], ...]) -> dict:
        """{metric: value} of one point for exactly the declared (metric, dims): NaN where
        the run at this point does not give it, or gives a list along another key."""
        self.pairs = _compared(result)
        found = self.measure(result.trajectories, config, ode, sgd) if all(
            n in result.trajectories for n in self.trajectories(ode, sgd)) else {}
        numbers = self._numbers(result.summary, config, tuple(result.trajectories))
        out = {}
        for name, dims in declared:
            if name in numbers:
                value, found_dims = numbers[name]
                out[name] = value if found_dims == dims else NAN
            else:
                out[name] = found.get(name, NAN)
        return out

    def tasks(self, sweep: Sweep) -> list[Task]:
        """The first point from the run that named the metrics; one task per other point."""
        index, config, result = self._first_run(sweep)
        declared = tuple((m.name, m.dims) for m in self.sweep_metrics(sweep))
        first = [(index, self.measure_result(result, config, sweep.ode, sweep.sgd, declared))]
        return [Task(_computed, (first,), (index,))] + [
            Task(run_generic_point, (sweep.experiment, i, cfg, sweep.ode, sweep.sgd, declared),
                 (i,))
            for i, cfg in sweep.points() if i != index]


def _compared(result) -> tuple[tuple[str, str], ...]:
    """The (a, b) pairs a run compared ("a_vs_b" in its summary's comparison)."""
    return tuple(tuple(name.split("_vs_", 1)) for name in result.summary.get("comparison", {}))


def _number(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, np.number))


def _float(value) -> float:
    return NAN if value is None else float(value)


def _computed(records: list) -> list:
    """Task body: records computed before the sweep started."""
    return records


def run_generic_point(experiment: str, index: int, config: dict, ode: bool, sgd: bool,
                      declared: tuple) -> list:
    """Task body: the experiment's run at one point -> [(index, metrics)] (GenericHooks)."""
    torch.set_num_threads(int(os.environ.get("ICLDYN_THREADS", "1")))
    result = registry.get(experiment).run(config, ode=ode, sgd=sgd)
    hooks = GenericHooks(experiment)
    hooks._first = (index, config, result)
    return [(index, hooks.measure_result(result, config, ode, sgd, declared))]

def hooks_of(exp) -> TrajectoryHooks:
    """The sweep hooks of an experiment: its own (a reduced model from a file) or its
    system's (sims.registry.hooks)."""
    own = getattr(exp, "sweep_hooks", None)
    return own() if own is not None else registry.hooks(exp.name)


def plan(exp, config: dict, grid: list[str], ode: bool, sgd: bool) -> Sweep:
    """Validate a whole sweep before any work: grid values by the schema, every
    point by the experiment's memory estimate and cross-key checks (Experiment.admit).
    Raises UsageError naming the key."""
    if not grid:
        raise UsageError("--grid: give at least one KEY=V1,V2,...")
    if not ode and not sgd:
        raise UsageError("--no-ode and --no-sgd together leave nothing to compute")
    axes = parse_grid(exp.schema, grid)
    sweep = Sweep(exp.name, dict(config), tuple(axes), ode, sgd)
    STATUS.set(f"sweep {exp.name}: checking {sweep.size} points")
    for _, point in sweep.points():
        exp.admit(point)
    return sweep


def sweep(exp, config: dict, grid: list[str], out: str, *, ode: bool = True, sgd: bool = True,
          workers: int | None = None, scheduler: str | None = None, plot: bool = True) -> dict:
    """Run (or resume) a sweep of exp into out; returns the --json report."""
    from dynamics import store

    spec = plan(exp, config, grid, ode, sgd)
    store.check_writable(out)
    hooks = hooks_of(exp)
    metrics = hooks.sweep_metrics(spec)
    extents: dict[str, int] = {}
    for _, point in spec.points():
        for dim, size in hooks.extents(point).items():
            extents[dim] = max(extents.get(dim, 0), size)
    report = run_sweep(out, spec, metrics, hooks.tasks(spec), extents,
                       hooks.phase_metric(ode, sgd), workers=workers, scheduler=scheduler)
    report["experiment"] = exp.name
    if plot:
        report["plots"] = plot_sweep(out, report["sweep_id"])
    return report
