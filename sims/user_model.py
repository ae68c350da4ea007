"""Reduced models from a user's own Python file: `icldyn run|sweep|check path/to/model.py`.

The file (docs/user-models.md) imports the public API of `reduced_models` and defines
- HYPER: {name: default} hyper-parameters (int, float or str), the run's config keys;
- reduced_model(hyper) -> ReducedModel, hyper holding every HYPER key and `seed`;
- start(hyper) -> {state block name: value}, the default start;
and may define NAME, DESCRIPTION, RUN ({engine key: default}) and
limit(hyper) -> {observable, "loss" or "flow_eigenvalues": closed-form value at the
stationary point the flow reaches}, which `icldyn check` compares with the engine.

The engine gives it the flow ("ode" trajectory of its observables, in gradient-flow
time of the lift's metric), the stationary point the flow reaches (Newton from the
last state) with its flow eigenvalues, HDF5 v1 output, the run figure, the
conformance checks and sweeps. Any fault of the file or of its functions is a
UsageError naming the path (exit status 2).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys

import numpy as np
import torch

from dynamics.config import Key, Schema
from dynamics.errors import UsageError
from reduced_models.base import (
    ReducedModel,
    flow_eigenvalues,
    integrate_flow,
    stationary_point,
)
from reduced_models.conformance import gradient_error, metric_error, worst_loss_increase

from .experiment import CheckRow, Experiment, RunResult

REQUIRED = ("HYPER", "reduced_model", "start")
ENGINE_KEYS = (
    Key("t_max", "float", 100.0, "gradient-flow time to reach", low=0.0, low_open=True),
    Key("records", "int", 150, "recorded times: t = 0, then log-spaced from t_max 1e-4 to t_max",
        low=2, high=100_000),
    Key("rtol", "float", 1e-9, "ODE relative tolerance", low=0.0, low_open=True),
    Key("atol", "float", 1e-11, "ODE absolute tolerance", low=0.0, low_open=True),
    Key("seed", "int", 0, "random seed, passed to reduced_model and start as hyper['seed']",
        low=0),
)
_TYPES = {bool: None, int: "int", float: "float", str: "str"}
NEWTON_TOL = 1e-12  # max |gradient| at which Newton's iterate counts as stationary


def flow_times(t_max: float, records: int) -> np.ndarray:
    """(records,) output times: 0, then log-spaced from t_max / 10^4 to t_max."""
    return np.concatenate([[0.0], np.geomspace(t_max * 1e-4, t_max, records - 1)])


@functools.lru_cache(maxsize=16)
def _module(full: str, mtime: float, path: str):
    """Execute the file at absolute path full once per (full, modification time); errors
    name it as the user wrote it (path)."""
    name = "icldyn_user_" + hashlib.sha1(full.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, full)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise UsageError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - any fault of the user's code is bad input
        del sys.modules[name]
        raise UsageError(f"{path}: {_describe(exc)}") from None
    return module


def _describe(exc: BaseException) -> str:
    text = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load(path: str) -> UserModelExperiment:
    """The experiment of a reduced-model file; UsageError naming the path if it is missing,
    unreadable, has a syntax error or lacks a required name."""
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path}: not readable")
    full = os.path.abspath(path)
    return UserModelExperiment(path, _module(full, os.path.getmtime(full), path))


class UserModelExperiment(Experiment):
    """The flow of a user's reduced model, with the engine's analysis around it."""

    def __init__(self, path: str, module):
        self.path = path
        missing = [n for n in REQUIRED if not hasattr(module, n)]
        if missing:
            raise UsageError(f"{path}: defines no {missing[0]!r} (a reduced-model file "
                             f"defines {', '.join(REQUIRED)}; see docs/user-models.md)")
        self.module = module
        self.name = str(getattr(module, "NAME", os.path.splitext(os.path.basename(path))[0]))
        self.description = str(getattr(module, "DESCRIPTION", f"reduced model from {path}"))
        self.schema = Schema(self._keys())
        try:
            self.schema.config_class  # noqa: B018 - its keys must be attribute names
        except ValueError as exc:
            raise UsageError(f"{path}: HYPER: {exc}") from None
        with open(path, "rb") as fh:
            self.source_sha256 = hashlib.sha256(fh.read()).hexdigest()
        self._models: dict[tuple, ReducedModel] = {}

    def _keys(self) -> tuple[Key, ...]:
        hyper, run = self.module.HYPER, getattr(self.module, "RUN", {})
        if not isinstance(hyper, dict) or not isinstance(run, dict):
            raise UsageError(f"{self.path}: HYPER and RUN must be dicts {{name: default}}")
        engine = {k.name: k for k in ENGINE_KEYS}
        keys = []
        for name, default in hyper.items():
            kind = _TYPES.get(type(default))
            if not isinstance(name, str) or kind is None:
                raise UsageError(f"{self.path}: HYPER[{name!r}]: the default must be an int, "
                                 f"a float or a str, got {default!r}")
            if name in engine:
                raise UsageError(f"{self.path}: HYPER[{name!r}]: {name!r} is an engine key "
                                 f"({', '.join(engine)})")
            keys.append(Key(name, kind, default, f"hyper-parameter of {self.name}"))
        for name, default in run.items():
            if name not in engine or name == "seed":
                raise UsageError(f"{self.path}: RUN[{name!r}]: not an engine key "
                                 f"(one of {', '.join(k for k in engine if k != 'seed')})")
            key = engine[name]
            engine[name] = Key(key.name, key.type, key.parse(default), key.doc, low=key.low,
                               high=key.high, low_open=key.low_open)
        return (*keys, *engine.values())

    def _call(self, what: str, *args):
        try:
            return getattr(self.module, what)(*args)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - any fault of the user's code is bad input
            raise UsageError(f"{self.path}: {what} raised {_describe(exc)}") from None

    def hyper(self, config: dict) -> dict:
        """The dict reduced_model and start receive: every HYPER key and seed."""
        return {**{k: config[k] for k in self.module.HYPER}, "seed": config["seed"]}

    def model(self, config: dict) -> tuple[ReducedModel, dict, torch.Tensor]:
        """(reduced model, its run-time hyper-parameters, start state (P,)) of config."""
        hyper = self.hyper(config)
        key = tuple(sorted(hyper.items()))
        model = self._models.get(key) or self._call("reduced_model", hyper)
        if not isinstance(model, ReducedModel):
            raise UsageError(f"{self.path}: reduced_model returned {type(model).__name__}, "
                             "not a ReducedModel")
        unknown = [h for h in model.hyper if h not in self.module.HYPER]
        if unknown:
            raise UsageError(f"{self.path}: the model's hyper-parameter {unknown[0]!r} "
                             "is not a key of HYPER")
        self._models[key] = model  # symbolic differentiation once per hyper-parameters
        values = self._call("start", hyper)
        try:
            state0 = model.manifold.pack(values)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise UsageError(f"{self.path}: start returned no valid state "
                             f"({_describe(exc)})") from None
        if state0.shape != (model.manifold.dim,):
            raise UsageError(f"{self.path}: start gives {tuple(state0.shape)} values, "
                             f"the state has {model.manifold.dim}")
        return model, {h: float(config[h]) for h in model.hyper}, state0

    def flow(self, model: ReducedModel, hyper: dict, state0: torch.Tensor,
             config: dict) -> tuple:
        """("ode" Trajectory of the observables, last state (P,)) of the flow from state0."""
        states = {}

        def observe(weights):
            states["rows"] = model.manifold.project(weights)
            return model.observe(states["rows"])

        t = flow_times(config["t_max"], config["records"])
        (traj,) = integrate_flow(model, state0, t, hyper, observe, rtol=config["rtol"],
                                 atol=config["atol"])
        traj.attrs["model"] = f"{model.description} (reduced model from {os.path.basename(self.path)})"
        return traj, states["rows"][len(traj.t) - 1]

    def stationary(self, model: ReducedModel, hyper: dict, guess: torch.Tensor) -> dict:
        """Newton's stationary point from guess (P,), its loss, observables and flow
        eigenvalues (ascending; stability: 'stable' all < 0, 'neutral' the largest ~ 0,
        'unstable' one > 0)."""
        point, converged = stationary_point(model, guess, hyper, tol=NEWTON_TOL)
        eig = flow_eigenvalues(model, point, hyper)
        scale = 1e-8 * max(1.0, float(np.abs(eig).max()))
        stability = ("unstable" if eig.max() > scale else
                     "neutral" if eig.max() >= -scale else "stable")
        return {
            "converged": bool(converged),
            "state": {k: v.tolist() for k, v in model.manifold.unpack(point).items()},
            "observables": {k: v[0].tolist() for k, v in model.observe(point[None]).items()},
            "loss": float(model.loss(point[None], hyper)[0]),
            "flow_eigenvalues": eig.tolist(),
            "stability": stability,
            "point": point,
        }

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        if not ode:
            raise UsageError(f"--no-ode: {self.path} is a reduced model; its flow is the run")
        model, hyper, state0 = self.model(config)
        traj, last = self.flow(model, hyper, state0, config)
        found = self.stationary(model, hyper, last)
        point = found.pop("point").numpy()
        summary = {"ode": traj.summary(), "stationary": found,
                   "source": os.path.basename(self.path), "source_sha256": self.source_sha256}
        extra = {"stationary": {"state": point,
                                "flow_eigenvalues": np.asarray(found["flow_eigenvalues"])}}
        return RunResult({"ode": traj}, summary, extra)

    def check(self, config: dict) -> list[CheckRow]:
        """The conformance checks at the default start, the stationary point the flow
        reaches, and the file's closed forms (limit) against it."""
        model, hyper, state0 = self.model(config)
        gen = torch.Generator().manual_seed(config["seed"])
        points = state0 + 0.3 * torch.randn((4, state0.shape[0]), generator=gen,
                                            dtype=torch.float64)
        exact = "autograd" if model.symbolic else "central differences"
        t = flow_times(config["t_max"], config["records"])
        rows = [
            CheckRow(f"gradient = {exact} of the loss", 0.0,
                     gradient_error(model, points, hyper), 1e-10 if model.symbolic else 1e-6,
                     "largest relative error at 4 points near the start"),
            CheckRow("metric = J^T J of the lift", 0.0, metric_error(model, state0), 1e-12,
                     "J: autograd Jacobian of the numeric lift at the start"),
            CheckRow("project(lift(state)) = state", 0.0, float(
                (model.manifold.project(model.manifold.lift(points)) - points).abs().max()),
                1e-10, "largest absolute error at 4 points"),
            CheckRow("loss never increases along the flow", 0.0,
                     max(0.0, worst_loss_increase(model, state0, hyper, t)), 1e-10,
                     "largest relative increase between recorded times"),
        ]
        _, last = self.flow(model, hyper, state0, config)
        found = self.stationary(model, hyper, last)
        grad = float(model.gradient(found["point"][None], hyper).abs().max())
        rows.append(CheckRow("stationary point reached: |gradient|", 0.0, grad, 1e-9,
                             f"Newton from the flow at t = {config['t_max']:g}; "
                             f"{found['stability']}"))
        if hasattr(self.module, "limit"):
            rows += self._limit_rows(self._call("limit", self.hyper(config)), found)
        return rows

    def _limit_rows(self, expected: dict, found: dict) -> list[CheckRow]:
        measured = {**found["observables"], "loss": found["loss"],
                    "flow_eigenvalues": found["flow_eigenvalues"]}
        rows = []
        for name, value in expected.items():
            if name not in measured:
                raise UsageError(f"{self.path}: limit names {name!r}, which is neither an "
                                 "observable nor 'loss' or 'flow_eigenvalues'")
            want = np.asarray(value, dtype=np.float64).ravel()
            got = np.asarray(measured[name], dtype=np.float64).ravel()
            if want.shape != got.shape:
                raise UsageError(f"{self.path}: limit[{name!r}] has {want.size} values, "
                                 f"the engine measures {got.size}")
            for i, (w, g) in enumerate(zip(want, got)):
                label = name if want.size == 1 else f"{name}[{i}]"
                rows.append(CheckRow(f"limit {label}", float(w), float(g),
                                     1e-8 * max(1.0, abs(float(w))),
                                     "closed form of the file against the stationary point"))
        return rows

    def sweep_hooks(self):
        """Sweep metrics of this model (sims.sweeps.TrajectoryHooks over its observables)."""
        from dynamics.sweep import Task

        from .sweeps import TrajectoryHooks

        experiment = self

        class Hooks(TrajectoryHooks):
            def __init__(self):
                # one extra dimension per axis of each observable, named <observable>_<axis>
                shapes = experiment.shapes(experiment.schema.defaults())
                self.params = {k: tuple(f"{k}_{i}" for i in range(len(s)))
                               for k, s in shapes.items()}

            def trajectories(self, ode: bool, sgd: bool) -> tuple[str, ...]:
                return ("ode",)

            def extents(self, config: dict) -> dict[str, int]:
                return {f"{k}_{i}": n for k, s in experiment.shapes(config).items()
                        for i, n in enumerate(s)}

            def tasks(self, sweep):
                if not sweep.ode:
                    raise UsageError(f"--no-ode: {experiment.path} is a reduced model; "
                                     "its flow is the sweep")
                path = os.path.abspath(experiment.path)
                return [Task(run_point, (path, i, cfg), (i,)) for i, cfg in sweep.points()]

        return Hooks()

    def shapes(self, config: dict) -> dict[str, tuple[int, ...]]:
        """Observable name -> its shape, for config."""
        model = self.model(config)[0]
        return {k: v.shape for k, v in model.observable_exprs.items()}


def run_point(path: str, index: int, config: dict) -> list:
    """Sweep task body: the model's run at one point -> [(index, metrics)]."""
    torch.set_num_threads(int(os.environ.get("ICLDYN_THREADS", "1")))
    experiment = load(path)
    hooks = experiment.sweep_hooks()
    result = experiment.run(config)
    return [(index, hooks.measure(result.trajectories, config, True, False))]
