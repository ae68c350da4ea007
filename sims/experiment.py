"""What an experiment is: a config schema and a run that returns trajectories."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dynamics.compare import compare
from dynamics.config import Schema
from dynamics.trajectory import Trajectory


@dataclass
class RunResult:
    """The outcome of one run.

    - trajectories: name -> Trajectory ("ode", "population", "sgd", ...)
    - summary: JSON-able figures (the --json output adds file and run id)
    - extra: further datasets to store, group -> {dataset: array}
    """

    trajectories: dict[str, Trajectory]
    summary: dict
    extra: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def status(self) -> str:
        bad = [tr.status for tr in self.trajectories.values() if tr.status != "complete"]
        return bad[0] if bad else "complete"


class Experiment:
    """Base class. Subclasses set name, description, schema and implement run.

    run(config, ode=..., sgd=...) -> RunResult, with config already validated by
    the schema; validate(config) does checks that involve several keys.
    """

    name: str = ""
    description: str = ""
    schema: Schema

    def validate(self, config: dict) -> None:
        """Cross-key checks; raise UsageError naming the key."""

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        raise NotImplementedError


def seeds(seed: int, n: int) -> list[int]:
    """n independent 63-bit seeds derived from one seed (numpy SeedSequence)."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n, dtype=np.uint64) >> 1]


def generator(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def comparisons(trajs: dict[str, Trajectory], pairs: list[tuple[str, str]]) -> dict:
    """compare(a, b) for each (a, b) present, keyed "a_vs_b" (b is the reference)."""
    return {
        f"{a}_vs_{b}": compare(trajs[a], trajs[b])
        for a, b in pairs
        if a in trajs and b in trajs and len(trajs[a].t) > 1 and len(trajs[b].t) > 1
    }
