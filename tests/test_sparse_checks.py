"""`icldyn check sparse`: closed forms against Monte Carlo, the construction, orderings; and
wrong formulas fail their rows."""

import json
import math

import torch

from sims.cli import main
from sims.sparse import checks
from sims.sparse import estimators as est
from sims.sparse.task import sample_sparse

torch.set_num_threads(1)

D, S, SIGMA2 = 8, 2, 0.25


def test_one_step_gd_risk_by_hand():
    """k = 1: sigma2 + (s/d)(d - 2 eta d + eta^2 d (d + n + 1)/n) + sigma2 eta^2 d / n."""
    d, n, eta = 7, 11, 0.2
    by_hand = SIGMA2 + S / d * (d - 2 * eta * d + eta**2 * d * (d + n + 1) / n) \
        + SIGMA2 * eta**2 * d / n
    assert math.isclose(checks.gd_risk(d, n, S, SIGMA2, eta, 1), by_hand, rel_tol=1e-13)


def test_two_step_gd_risk_against_a_large_monte_carlo():
    gen = torch.Generator().manual_seed(3)
    batch = sample_sparse(60_000, 10, D, S, SIGMA2, gen)
    risks = est.risk(est.gd(batch.x, batch.y, 0.25, 2), batch.beta, SIGMA2)
    mean, se = risks.mean().item(), risks.std().item() / 60_000**0.5
    assert abs(mean - checks.gd_risk(D, 10, S, SIGMA2, 0.25, 2)) < 4 * se


def test_ridge_limit_is_the_bayes_risk_without_noise_limit():
    """Independent limit: gamma -> 0 (n >> d) leaves sigma2 + d sigma2 / n-type terms -> sigma2;
    lam -> 0 with n > d gives the OLS limit sigma2 (1 + gamma / (1 - gamma))."""
    assert math.isclose(checks.ridge_risk_limit(10, 10**7, S, SIGMA2, 1.0), SIGMA2, rel_tol=1e-5)
    gamma = 0.25
    ols_limit = SIGMA2 * (1 + gamma / (1 - gamma))
    assert math.isclose(checks.ridge_risk_limit(100, 400, S, SIGMA2, 1e-8), ols_limit,
                        rel_tol=1e-6)


def test_rows_pass_and_wrong_formulas_fail_only_their_rows(monkeypatch):
    rows = checks.risk_rows(D, S, SIGMA2, seed=5, samples=20_000)
    assert len(rows) == 4 and all(r.passed for r in rows), [r.as_dict() for r in rows]

    # the population moments E tr S^m = d (S taken as I): both GD rows fail, OLS rows pass
    monkeypatch.setattr(checks, "wishart_trace_moments", lambda d, n: [float(d)] * 5)
    wrong = checks.risk_rows(D, S, SIGMA2, seed=5, samples=20_000)
    assert [r.passed for r in wrong] == [True, True, False, False]
    monkeypatch.undo()
    # E tr W^-1 = I / (n - d) instead of I / (n - d - 1): the n > d + 1 OLS row fails
    monkeypatch.setattr(checks, "ols_risk", lambda d, n, s, sigma2: sigma2 * (1 + d / (n - d))
                        if n > d else sigma2 + s / d * (d - n) + sigma2 * n / (d - n))
    wrong = checks.risk_rows(D, S, SIGMA2, seed=5, samples=20_000)
    assert not wrong[0].passed and wrong[2].passed and wrong[3].passed


def test_ridge_row_passes_and_fails_with_a_wrong_transform(monkeypatch):
    assert checks.ridge_limit_row(D, S, SIGMA2, seed=2, scale=0.5).passed
    right = checks.ridge_risk_limit
    monkeypatch.setattr(checks, "ridge_risk_limit",
                        lambda d, n, s, sigma2, lam: right(d, n, s, sigma2, 2 * lam))
    assert not checks.ridge_limit_row(D, S, SIGMA2, seed=2, scale=0.5).passed


def test_construction_rows_pass_and_a_wrong_predictor_fails(monkeypatch):
    assert all(r.passed and r.measured < 1e-10 for r in checks.construction_rows(D, seed=1))
    right = checks.theory.extended_estimate
    monkeypatch.setattr(checks.theory, "extended_estimate",
                        lambda sample, a, ex, eu: right(sample, a, ex, eu.transpose(-1, -2)))
    rows = checks.construction_rows(D, seed=1)
    assert [r.passed for r in rows] == [True, False, True]


def test_cli_check_sparse_json(capsys):
    code = main(["check", "sparse", "--set", "d=8", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == (0 if payload["passed"] else 1)
    assert len(payload["rows"]) >= 6
    exact = [r for r in payload["rows"] if "ordering" not in r["name"]]
    assert any("construction" in r["name"] for r in exact)
    assert all(r["passed"] for r in exact), [r for r in exact if not r["passed"]]
    assert any("ordering" in r["name"] for r in payload["rows"])
