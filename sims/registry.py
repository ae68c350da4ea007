"""Experiments by name. A new system registers here; nothing else changes."""

from __future__ import annotations

from dynamics.errors import UsageError

from .experiment import Experiment
from .induction.experiment import InductionExperiment
from .linreg.experiment import LinregExperiment
from .linreg.length_experiment import LinregLengthExperiment
from .linreg.multitask_experiment import MultitaskExperiment
from .linreg.risk_experiment import LinregRiskExperiment
from .sparse.experiment import SparseExperiment
from .sparse.flow_experiment import SparseFlowExperiment
from .sparse.risk_experiment import SparseRiskExperiment

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (LinregExperiment(), LinregRiskExperiment(), LinregLengthExperiment(),
              MultitaskExperiment(), SparseExperiment(), SparseRiskExperiment(),
              SparseFlowExperiment(), InductionExperiment())
}


def get(name: str) -> Experiment:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise UsageError(
            f"unknown experiment {name!r} (known: {', '.join(sorted(EXPERIMENTS))})"
        ) from None
