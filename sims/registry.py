"""Every system, found by its package: a package under sims/ whose __init__ defines
`SYSTEM` (sims.system.System). Adding a system adds a package; nothing here changes.

Listing experiments and their schemas imports only the packages' light
declarations; an experiment's implementation (torch, sympy) is imported the
first time it is asked for (`get`).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterator, Mapping

from dynamics.errors import UsageError

from .system import ExperimentInfo, System, load


@functools.cache
def systems() -> dict[str, System]:
    """name -> System of every package under sims/ that declares one, by name."""
    import sims

    found = {}
    for module in sorted(pkgutil.iter_modules(sims.__path__), key=lambda m: m.name):
        if not module.ispkg:
            continue
        system = getattr(importlib.import_module(f"sims.{module.name}"), "SYSTEM", None)
        if isinstance(system, System):
            if system.name in found:
                raise ValueError(f"two packages declare the system {system.name!r}")
            found[system.name] = system
    return found


@functools.cache
def experiments() -> dict[str, ExperimentInfo]:
    """name -> ExperimentInfo of every experiment of every system, sorted by name."""
    out = {}
    for system in systems().values():
        for info in system.experiments:
            if info.name in out:
                raise ValueError(f"experiment {info.name!r} is declared twice")
            out[info.name] = info
    return dict(sorted(out.items()))


def info(name: str) -> ExperimentInfo:
    """The declaration of experiment `name`; UsageError naming it if unknown."""
    try:
        return experiments()[name]
    except KeyError:
        raise UsageError(
            f"unknown experiment {name!r} (known: {', '.join(experiments())})"
        ) from None


def system_of(name: str) -> System:
    """The system that declares experiment `name`."""
    info(name)
    return next(s for s in systems().values() if any(e.name == name for e in s.experiments))


@functools.cache
def get(name: str):
    """The experiment `name` (its sims.experiment.Experiment implementation, imported now)."""
    return load(info(name).implementation)()


class _Experiments(Mapping):
    """name -> Experiment, each implementation imported when first looked up."""

    def __getitem__(self, name: str):
        if name not in experiments():
            raise KeyError(name)
        return get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(experiments())

    def __len__(self) -> int:
        return len(experiments())


EXPERIMENTS: Mapping = _Experiments()


def hooks(name: str):
    """The sweep hooks of experiment `name`: its system's, or the generic ones."""
    ref = system_of(name).hooks.get(name)
    if ref is not None:
        return load(ref)()
    from .sweeps import GenericHooks

    return GenericHooks(name)


def checks(name: str):
    """function(config) -> [CheckRow] of experiment `name`; UsageError if it has none."""
    ref = system_of(name).checks.get(name)
    if ref is None:
        raise UsageError(f"experiment {name!r} has no theory checks")
    return load(ref)


def conformance_cases():
    """Every system's (id, reduced model, hyper, start state) for the conformance suite."""
    for system in systems().values():
        if system.conformance is not None:
            yield from load(system.conformance)()
