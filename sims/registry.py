"""Experiments by name. A new system registers here; nothing else changes."""

from __future__ import annotations

from dynamics.errors import UsageError

from .experiment import Experiment
from .linreg.experiment import LinregExperiment

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (LinregExperiment(),)}


def get(name: str) -> Experiment:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise UsageError(
            f"unknown experiment {name!r} (known: {', '.join(sorted(EXPERIMENTS))})"
        ) from None
