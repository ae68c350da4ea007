"""The induction system: two-layer attention on in-context n-gram Markov chains."""

from ..system import ExperimentInfo, System
from . import config

SYSTEM = System(
    name="induction",
    experiments=(
        ExperimentInfo("induction", "induction heads on n-gram Markov chains: "
                       "copier/selector/classifier (symbolic three-stage model, population "
                       "flow with and without SGD's growth of |C|, SGD on the simplified and "
                       "the full network)", config.INDUCTION,
                       "sims.induction.experiment:InductionExperiment"),
    ),
    hooks={"induction": "sims.induction.sweep:InductionHooks"},
    checks={"induction": "sims.induction.checks:induction_checks"},
    conformance="reduced_models.induction:conformance_cases",
)
