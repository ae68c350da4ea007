"""What an experiment is: a config schema and a run that returns trajectories."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dynamics.compare import compare
from dynamics.config import Schema
from dynamics.errors import UsageError
from dynamics.memory import check_memory
from dynamics.status import Status
from dynamics.tables import results
from dynamics.trajectory import Trajectory


@dataclass
class RunResult:
    """The outcome of one run.

    - trajectories: name -> Trajectory ("ode", "population", "sgd", ...)
    - summary: JSON-able figures (the --json output adds file and run id)
    - extra: further datasets to store, group -> {dataset: array}
    - axes: per extra group, its 1-D datasets that label the others' dimensions, in
      dimension order, e.g. {"risk": ("L_test",)} (stored as HDF5 dimension scales,
      dynamics.store.attach_axes)
    """

    trajectories: dict[str, Trajectory]
    summary: dict
    extra: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    axes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        """Complete only when every trajectory is; else the first failure's status."""
        bad = self.failures()
        return bad[0]["status"] if bad else Status.COMPLETE

    def failures(self) -> list[dict]:
        """[{trajectory, status, t}] of each trajectory that diverged or stalled, t its
        time of failure (Trajectory.failed_at)."""
        return [{"trajectory": name, "status": str(tr.status), "t": tr.failed_at()}
                for name, tr in self.trajectories.items() if tr.status != Status.COMPLETE]


@dataclass
class CheckRow:
    """One theory check: a prediction against a measurement.

    passed = |measured - expected| <= tolerance (tolerance absolute, e.g. a few
    Monte-Carlo standard errors plus the known approximation error).
    """

    name: str
    expected: float
    measured: float
    tolerance: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return bool(abs(self.measured - self.expected) <= self.tolerance)

    def as_dict(self) -> dict:
        return {"name": self.name, "expected": self.expected, "measured": self.measured,
                "tolerance": self.tolerance, "passed": self.passed, "detail": self.detail}


class Experiment:
    """Base class. Subclasses set name and schema (those of its declaration in the
    system's package, sims.system.ExperimentInfo) and implement run.

    run(config, ode=..., sgd=...) -> RunResult, with config already validated by
    the schema; validate(config) does checks that involve several keys;
    memory(config) estimates the peak memory of a run; admit(config), what the
    CLI calls before any work, applies both. Theory checks (`icldyn check`) are
    declared by the system (sims.system.System.checks).
    """

    name: str = ""
    schema: Schema
    # headline figures of a run's summary (dynamics.tables.Headline / Records), shown first
    headlines: tuple = ()

    def validate(self, config: dict) -> None:
        """Cross-key checks; raise UsageError naming the key."""

    def memory(self, config: dict) -> dict[str, float]:
        """Estimated peak memory of a run of config: named terms in bytes, each a product
        over the largest tensors alive at once; their sum is the estimate. Pure arithmetic
        on the config (it runs before anything is allocated). {}: no estimate."""
        return {}

    def admit(self, config: dict) -> None:
        """Everything a config must pass before any work: the memory guard
        (dynamics.memory.check_memory, first: validate may build lists from sizes),
        then validate. UsageError naming the key."""
        check_memory(self.memory, config, self.schema.defaults())
        self.validate(config)

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        raise NotImplementedError

    def tables(self, summary: dict, config) -> list[str]:
        """The results tables of a run (dynamics.tables), from its summary and config."""
        adam = dict(config).get("optimizer") == "adam"
        return results(summary, self.headlines, "nominal t = lr x step" if adam else "t")

    def plot(self, path: str, run_id: str, out: str | None = None) -> str:
        """Figure(s) of a stored run; returns the main PNG path. Subclasses may add panels."""
        from dynamics.plots import plot_run  # matplotlib loads only when a figure is drawn

        return plot_run(path, run_id, out)


# Pieces of the memory estimates (Experiment.memory), in bytes.
F64 = 8
RUNTIME = 2**29  # the interpreter with torch, sympy and h5py loaded (measured ~0.4 GiB)


def lift_bytes(weights: int, state_dim: int) -> int:
    """Building a Manifold of `weights` lifted entries over a state of state_dim: the
    sympy expressions (~256 B each, measured ~155) and the Jacobian as a sympy matrix
    and in float64 (~32 B per entry, measured ~21)."""
    return 256 * weights + 32 * weights * state_dim


def seeds(seed: int, n: int) -> list[int]:
    """n independent 63-bit seeds derived from one seed (numpy SeedSequence)."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n, dtype=np.uint64) >> 1]


def check_device(name: str) -> None:
    """UsageError naming the key 'device' unless torch can use that device here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"key 'device': {name!r} is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"key 'device': {name!r} requested but CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"key 'device': {name!r} is not supported (cpu or cuda)")


def generator(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def comparisons(trajs: dict[str, Trajectory], pairs: list[tuple[str, str]]) -> dict:
    """compare(a, b) for each (a, b) present, keyed "a_vs_b" (b is the reference)."""
    return {
        f"{a}_vs_{b}": compare(trajs[a], trajs[b])
        for a, b in pairs
        if a in trajs and b in trajs and len(trajs[a].t) > 1 and len(trajs[b].t) > 1
    }
