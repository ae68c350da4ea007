"""The sparse system: multi-layer multi-head attention on in-context sparse regression."""

from ..system import ExperimentInfo, System
from . import config

SYSTEM = System(
    name="sparse",
    experiments=(
        ExperimentInfo("sparse", "multi-head transformers on sparse regression: head "
                       "importance, pruning, probes", config.SPARSE,
                       "sims.sparse.experiment:SparseExperiment"),
        ExperimentInfo("sparse-risk", "risks of OLS, ridge, GD, preprocess-then-optimize (and "
                       "its transformer-implementable variants), Lasso on sparse regression",
                       config.RISK,
                       "sims.sparse.risk_experiment:SparseRiskExperiment"),
        ExperimentInfo("sparse-flow", "preprocess-then-optimize reduced flow on the extended "
                       "manifold vs SGD on the linear-attention stack", config.FLOW,
                       "sims.sparse.flow_experiment:SparseFlowExperiment"),
        ExperimentInfo("sparse-rates", "excess risks of the sparse-regression estimators over n "
                       "at several d: fitted rates", config.RATES,
                       "sims.sparse.risk_experiment:SparseRatesExperiment"),
    ),
    hooks={"sparse-flow": "sims.sparse.sweep:SparseFlowHooks",
           "sparse-risk": "sims.sparse.sweep:SparseRiskHooks"},
    checks={"sparse": "sims.sparse.checks:sparse_checks"},
    conformance="reduced_models.sparse:conformance_cases",
)
