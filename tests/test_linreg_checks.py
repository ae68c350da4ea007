"""`icldyn check linreg`: theory against measurement, and wrong formulas fail."""

import json
import math

import numpy as np
import pytest
import torch

from reduced_models import linreg as theory
from reduced_models.linreg_theory import (
    bayes_risk_proportional,
    debiased_gd_risk,
    plain_gd_optimal_step,
    single_head_large_L_optimum,
)
from sims.cli import main
from sims.experiment import generator
from sims.linreg import checks
from sims.linreg.estimators import gd_predict, mc_risk, ridge_predict, softmax_predict

D, L, S2 = 5, 40, 0.1
HYPER = {"L": float(L), "sigma2": S2}


def _failed(rows) -> set[str]:
    return {r.name for r in rows if not r.passed}


def test_check_linreg_passes_with_its_own_sample_sizes(capsys):
    code = main(["check", "linreg", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["experiment"] == "linreg" and payload["passed"]
    rows = payload["rows"]
    assert len({r["name"] for r in rows}) == len(rows) == 19
    for r in rows:
        assert r["passed"] and abs(r["measured"] - r["expected"]) <= r["tolerance"]
        assert set(r) == {"name", "expected", "measured", "tolerance", "passed", "detail"}
    # the Monte-Carlo rows have tolerances of a few standard errors, not loose bounds
    by_name = {r["name"]: r for r in rows}
    assert by_name["plain GD risk at its optimal step (finite L)"]["tolerance"] < 0.003
    assert by_name["Bayes risk (ridge, lambda = sigma2 d), proportional limit"]["tolerance"] < 0.001


def test_wrong_risk_formulas_fail_and_only_their_rows(monkeypatch):
    wrong = {
        # c = d + d sigma2, the "+1" of E[W^2] forgotten
        "plain_gd_risk": lambda d, L, s2: s2 + (d + d * s2) / (L + d + d * s2),
        # the noise floor counted twice
        "debiased_gd_risk": lambda d, L, s2: debiased_gd_risk(d, L, s2) + s2,
        "bayes_risk_proportional": lambda d, L, s2: 1.05 * bayes_risk_proportional(d, L, s2),
        # the finite-L value in place of the proportional limit
        "debiased_gd_risk_proportional": debiased_gd_risk,
        # the factor e of the single-head variance term forgotten
        "single_head_risk_approx": lambda d, L, s2: s2 + d / L * (1 + s2) / (1 + d / L * (1 + s2)),
    }
    for name, fn in wrong.items():
        monkeypatch.setattr(checks, name, fn)
    rows = checks.risk_rows(D, L, S2, seed=11, sample_scale=0.25)
    assert _failed(rows) == {
        "plain GD risk at its optimal step (finite L)",
        "debiased GD risk at its optimal step (finite L)",
        "Bayes risk (ridge, lambda = sigma2 d), proportional limit",
        "optimal one-step GD risk, proportional limit",
        "optimal debiased GD risk, proportional limit",
        "single head at its large-L optimum, proportional limit",
    }


def test_a_wrong_optimal_step_fails_its_risk_and_slope_rows(monkeypatch):
    monkeypatch.setattr(checks, "plain_gd_optimal_step",
                        lambda d, L, s2: 1.1 * plain_gd_optimal_step(d, L, s2))
    rows = checks.risk_rows(D, L, S2, seed=12, sample_scale=0.25)
    assert {"plain GD risk at its optimal step (finite L)",
            "plain GD optimal step: d risk / d eta = 0"} <= _failed(rows)
    assert "debiased GD optimal step: d risk / d eta = 0" not in _failed(rows)


def test_cli_exits_1_when_a_formula_is_wrong(monkeypatch, capsys):
    monkeypatch.setattr(checks, "SAMPLES", {1: 20_000, 2: 4_000, 4: 1_000})
    monkeypatch.setattr(checks, "SINGLE_HEAD_SAMPLES", {1: 2_000, 2: 4_000, 4: 3_000})
    monkeypatch.setattr(checks.theory, "pair_asymptote",
                        lambda d, L, s2: 1.02 / (2 * (1 + d / L * (1 + s2))))
    code = main(["check", "linreg"])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL  pair: omega_h mu_h" in out and out.rstrip().endswith("FAILED")
    # 4 heads: sum omega mu is compared with twice the (wrong) pair asymptote, 2% off
    assert [line[6:30] for line in out.splitlines() if line.startswith("FAIL")] == [
        "pair: omega_h mu_h -> 1/", "4 heads: sum omega_h mu_"]


@pytest.mark.parametrize("argv, fragment", [
    (["--set", "L=1"], "key 'L'"),
    (["--set", "sigma2=0"], "key 'sigma2'"),
    (["--set", "covariance=toeplitz"], "key 'covariance'"),
])
def test_bad_check_input_exits_2(capsys, argv, fragment):
    code = main(["check", "linreg", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and fragment in err and err.count("\n") == 1


def test_one_head_eigenvalues_match_a_finite_difference_jacobian():
    for d, L, s2 in ((5, 40, 0.1), (3, 12, 0.7)):
        model = theory.symbolic_model(d, 1)
        hyper = {"L": float(L), "sigma2": s2}
        point = torch.tensor(single_head_large_L_optimum(d, L, s2), dtype=torch.float64)
        rhs, h = model.rhs(hyper), 1e-6
        columns = [(rhs((point + h * e)[None])[0] - rhs((point - h * e)[None])[0]) / (2 * h)
                   for e in torch.eye(2, dtype=torch.float64)]
        jacobian = torch.stack(columns, dim=1).numpy()
        numeric = np.sort(np.linalg.eigvals(jacobian).real)
        assert np.allclose(numeric, checks.one_head_flow_eigenvalues(d, L, s2), rtol=1e-6)
        assert (numeric < 0).all()


def test_pair_valley_point_minimises_the_loss_in_mu():
    model = theory.symbolic_model(D, 2)
    point = checks.pair_valley_point(model, 0.2, HYPER)
    assert point[2] == pytest.approx(-point[3].item(), rel=1e-12) and point[2] > 0
    assert model.gradient(point[None], HYPER)[0, 2:].abs().max() < 1e-12
    for shift in ([0.01, 0.0], [0.0, -0.01], [0.01, 0.01]):
        moved = point.clone()
        moved[2:] += torch.tensor(shift, dtype=torch.float64)
        assert model.loss(moved[None], HYPER) > model.loss(point[None], HYPER)


def test_zero_sum_and_omega_spread_on_constructed_heads():
    assert checks.zero_sum(np.array([1.0, -1.0, 2.0, -2.0])) == 0.0
    assert checks.zero_sum(np.array([1.0, 1.0])) == 1.0
    assert checks.zero_sum(np.array([[3.0, -1.0]]))[0] == pytest.approx(0.5)
    equal = checks.omega_spread(np.array([0.2, -0.2, 0.2]), np.array([1.0, -2.0, 3.0]))
    assert equal == pytest.approx(0.0, abs=1e-15)
    # a dummy head (|mu| below 0.1 of the largest) does not count
    dummy = checks.omega_spread(np.array([0.2, -0.2, 0.9]), np.array([1.0, -1.0, 0.05]))
    assert dummy == pytest.approx(0.0, abs=1e-15)
    # |omega| = 0.1 and 0.3 with equal weights: mean 0.2, mean absolute deviation 0.1
    assert checks.omega_spread(np.array([0.1, -0.3]), np.array([1.0, -1.0])) == pytest.approx(0.5)


def test_richardson_extrapolation_is_exact_for_quadratics_in_1_over_k():
    values = [(0.3 + 0.5 / k - 0.2 / k**2, 0.01) for k in checks.SIZES]
    mean, stderr = checks._extrapolate(values)
    assert mean == pytest.approx(0.3, abs=1e-14)
    assert stderr == pytest.approx(0.01 * math.sqrt(1 / 9 + 4 + 64 / 9), rel=1e-12)


def _agree(a, b):
    """Two (mean, stderr) estimates agree within 4 combined standard errors."""
    return abs(a[0] - b[0]) <= 4 * math.hypot(a[1], b[1])


def test_integrated_risks_agree_with_plain_monte_carlo():
    # Integrating the query (or beta and the noise) out must not change the mean.
    samples = checks.coefficient_risk_samples(D, L, S2, 40_000, generator(21))
    plain = {
        "gd": mc_risk(lambda b: gd_predict(b, plain_gd_optimal_step(D, L, S2)), D, L, S2, 40_000,
                      generator(22)),
        "ridge": mc_risk(lambda b: ridge_predict(b, S2 * D), D, L, S2, 40_000, generator(23)),
    }
    for name, estimate in plain.items():
        assert _agree(checks.mean_and_stderr(samples[name]), estimate)
        # and it lowers the standard error
        assert checks.mean_and_stderr(samples[name])[1] < estimate[1] / 2
    omega, mu = [0.13, -0.13], [3.45, -3.45]
    integrated = checks.softmax_risk(omega, mu, D, L, S2, 32_000, generator(24))
    direct = mc_risk(lambda b: softmax_predict(b, torch.tensor(omega, dtype=torch.float64),
                                               torch.tensor(mu, dtype=torch.float64)),
                     D, L, S2, 40_000, generator(25))
    assert _agree(integrated, direct)
