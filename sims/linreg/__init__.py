"""The linreg system: softmax attention on in-context linear regression."""

from ..system import ExperimentInfo, System
from . import config

SYSTEM = System(
    name="linreg",
    experiments=(
        ExperimentInfo("linreg", "multi-head softmax attention on in-context linear regression "
                       "(omega, mu flows vs SGD)", config.LINREG,
                       "sims.linreg.experiment:LinregExperiment"),
        ExperimentInfo("linreg-risk", "Monte-Carlo risks of softmax, GD, debiased GD and ridge "
                       "predictors over test lengths", config.RISK,
                       "sims.linreg.risk_experiment:LinregRiskExperiment"),
        ExperimentInfo("linreg-length", "length generalisation: softmax (per H) and linear "
                       "attention trained at L, risks over test lengths", config.LENGTH,
                       "sims.linreg.length_experiment:LinregLengthExperiment"),
        ExperimentInfo("linreg-multitask", "multi-task in-context linear regression: which "
                       "heads serve which task (split vs superposition)", config.MULTITASK,
                       "sims.linreg.multitask_experiment:MultitaskExperiment"),
    ),
    hooks={"linreg": "sims.linreg.sweep:LinregHooks",
           "linreg-multitask": "sims.linreg.sweep:MultitaskHooks"},
    checks={"linreg": "sims.linreg.checks:linreg_checks"},
    conformance="reduced_models.linreg:conformance_cases",
)
