"""What a system declares: its experiments, sweep hooks, theory checks and conformance cases.

A system is one package under sims/ whose __init__ defines `SYSTEM = System(...)`;
sims.registry finds it there. The declaration is light (no torch, no sympy):
schemas and descriptions are data, and everything heavy is named by a reference
"module:attribute", imported only when it is used. So `icldyn --help`, `icldyn
list` and `icldyn run EXP --help` answer without loading the numerical stack.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from dynamics.config import Schema


def load(ref: str) -> Any:
    """The object a reference "package.module:attribute" names (imports the module)."""
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class ExperimentInfo:
    """One experiment as the CLI sees it before anything runs.

    - name: what `icldyn run NAME` takes
    - description: one line for `icldyn list`
    - schema: its config keys (dynamics.config.Schema)
    - implementation: "module:Class" of its sims.experiment.Experiment subclass
    """

    name: str
    description: str
    schema: Schema
    implementation: str


@dataclass(frozen=True)
class System:
    """Everything the engine needs to know about one system.

    - name: the system (its package under sims/ and, by convention, its module in
      reduced_models/)
    - experiments: its experiments
    - hooks: experiment name -> "module:attribute" of its sweep hooks (an object with
      the sims.sweeps.TrajectoryHooks interface); an experiment without an entry is
      swept with the generic hooks (sims.sweeps.GenericHooks)
    - checks: experiment name -> "module:function", function(config) -> list of
      sims.experiment.CheckRow (what `icldyn check NAME` prints)
    - conformance: "module:function" yielding (id, reduced model, hyper, start state)
      for the conformance suite (reduced_models/conformance.py)
    """

    name: str
    experiments: tuple[ExperimentInfo, ...]
    hooks: dict[str, str] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    conformance: str | None = None

    def __post_init__(self):
        names = {e.name for e in self.experiments}
        for kind, table in (("hooks", self.hooks), ("checks", self.checks)):
            unknown = set(table) - names
            if unknown:
                raise ValueError(f"system {self.name!r}: {kind} for unknown experiment(s) "
                                 f"{sorted(unknown)}")
