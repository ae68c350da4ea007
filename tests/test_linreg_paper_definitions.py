"""The paper's definitions beside the engine's: fixed-step GD risks, the fixed single head,
and the paper's ODE (unit metric) beside the SGD-matched one."""

import numpy as np
import pytest
import torch

from dynamics.errors import UsageError
from reduced_models import linreg as theory
from reduced_models.linreg_theory import debiased_gd_risk_at_step, plain_gd_risk_at_step
from sims.experiment import generator
from sims.linreg.estimators import risk_curves
from sims.registry import get

D, S2, Z = 5, 0.1, 4.0
OMEGA, MU = [0.13, -0.13], [3.45, -3.45]
ETA = 2 * 0.13 * 3.45  # the paper's step 2 omega mu of the +- pair


@pytest.fixture(scope="module")
def curves():
    estimators = {"gd_fixed": {"eta": ETA}, "dgd_fixed": {"eta": ETA},
                  "single_head_fixed": {"L": 40}, "single_head": None}
    return risk_curves([10, 40, 100], D, S2, estimators, 20_000, generator(3))


@pytest.mark.parametrize("name, exact", [("gd_fixed", plain_gd_risk_at_step),
                                         ("dgd_fixed", debiased_gd_risk_at_step)])
def test_fixed_step_risks_match_their_closed_forms(curves, name, exact):
    for i, L in enumerate(curves["L_test"]):
        risk, se = curves["risk"][name][i], curves["stderr"][name][i]
        assert abs(risk - exact(D, L, S2, ETA)) < Z * se


def test_fixed_single_head_is_the_L40_head_at_every_length(curves):
    """Same prompts, same predictor at L = 40; elsewhere the re-tuned head differs."""
    fixed, tuned = curves["risk"]["single_head_fixed"], curves["risk"]["single_head"]
    assert fixed[1] == tuned[1]
    assert fixed[0] != tuned[0] and fixed[2] != tuned[2]


def test_linreg_risk_reports_the_paper_estimators():
    exp = get("linreg-risk")
    config = exp.schema.resolve({"samples": 2000, "L_test": [10, 40]})
    summary = exp.run(config).summary
    assert summary["fixed_step"] == pytest.approx(ETA, rel=1e-12)
    assert {"gd_fixed", "dgd_fixed", "single_head_fixed"} <= set(summary["risk"])
    assert summary["theory"]["gd_fixed"][0] == pytest.approx(plain_gd_risk_at_step(
        D, 10, S2, ETA), rel=1e-12)


def test_unit_metric_is_the_plain_gradient_flow():
    """metric=unit: d theta/dt = -grad Lt (autograd of the compiled loss); the lift metric of
    merged weights is diag(d, 1) per head (KQ_h = omega_h I_d), so there omega moves d times
    slower and mu alike."""
    lift, unit = theory.symbolic_model(D, 2), theory.symbolic_model(D, 2, metric="unit")
    x = torch.tensor([[0.3, -0.2, 1.1, -0.9]], dtype=torch.float64)
    hyper = {"L": 40.0, "sigma2": S2}
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(unit.loss(leaf, hyper).sum(), leaf)
    rhs_unit, rhs_lift = unit.rhs(hyper)(x), lift.rhs(hyper)(x)
    assert torch.allclose(rhs_unit, -grad, rtol=1e-12, atol=1e-14)
    assert torch.allclose(rhs_lift[0, :2], rhs_unit[0, :2] / D, rtol=1e-12)
    assert torch.allclose(rhs_lift[0, 2:], rhs_unit[0, 2:], rtol=1e-12)


def test_unit_metric_run_and_its_bad_input():
    """metric=unit changes the ode only: the population flow is the same."""
    exp = get("linreg")
    runs = {}
    for metric in ("lift", "unit"):
        config = exp.schema.resolve({"metric": metric, "t_max": 2.0, "records": 10,
                                     "mc_samples": 500})
        exp.validate(config)
        runs[metric] = exp.run(config, sgd=False).trajectories
    assert np.array_equal(runs["lift"]["population"].params["mu"],
                          runs["unit"]["population"].params["mu"])
    omega = {m: np.abs(runs[m]["ode"].params["omega"][-1] - runs[m]["ode"].params["omega"][0])
             for m in runs}
    assert (omega["unit"] > 2 * omega["lift"]).all()
    with pytest.raises(UsageError, match="metric"):
        exp.validate(exp.schema.resolve({"metric": "unit", "param": "factored"}))
