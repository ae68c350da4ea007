"""Closed-form risks of reduced_models.linreg_theory against Monte Carlo of the predictors."""

import math

import pytest
import torch

from reduced_models.linreg_theory import (
    bayes_risk_proportional,
    debiased_gd_optimal_step,
    debiased_gd_risk,
    debiased_gd_risk_at_step,
    debiased_gd_risk_proportional,
    large_L_loss,
    plain_gd_optimal_step,
    plain_gd_risk,
    plain_gd_risk_at_step,
    single_head_large_L_optimum,
    single_head_risk_approx,
)
from sims.linreg.estimators import (
    dgd_direction,
    dgd_predict,
    gd_direction,
    gd_predict,
    mc_risk,
    ridge_coefficients,
    ridge_predict,
    softmax_predict,
)
from sims.linreg.task import sample_regression

torch.set_num_threads(1)

MAIN = (5, 40, 0.1)
OTHER = (10, 20, 0.5)
POINTS = [pytest.param(MAIN, id="d5-L40-s0.1"), pytest.param(OTHER, id="d10-L20-s0.5")]
N_SAMPLES = {MAIN: 200_000, OTHER: 100_000}
Z = 4.0  # standard errors allowed between a Monte-Carlo mean and an exact value

# d * (finite-d Bayes risk - proportional limit), measured by a 2e5-draw Monte Carlo of the
# posterior trace sigma2 (1 + tr (X^T X + sigma2 d I)^-1): 0.002 (xi=1/8, sigma2=0.1),
# 0.058 (xi=1/2, 0.1), 0.082 (xi=1/2, 0.5), 0.078 (xi=1/2, 0.25), 0.031 (xi=1/4, 0.5).
BAYES_FINITE_SIZE = 0.1


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_matches(exact: float, mean: float, stderr: float, slack: float = 0.0) -> None:
    assert abs(mean - exact) <= Z * stderr + slack, (mean, stderr, exact)


def test_main_setting_values_quoted_in_theory():
    assert bayes_risk_proportional(*MAIN) == pytest.approx(0.114, abs=5e-4)
    assert debiased_gd_risk_proportional(*MAIN) == pytest.approx(0.221, abs=5e-4)
    assert plain_gd_risk(*MAIN) == pytest.approx(0.240, abs=5e-4)
    assert single_head_risk_approx(*MAIN) == pytest.approx(0.372, abs=5e-4)


def test_closed_forms_at_main_setting():
    c = 5 + 1 + 5 * 0.1
    assert plain_gd_risk(*MAIN) == pytest.approx(0.1 + c / (40 + c), rel=1e-14)
    assert plain_gd_optimal_step(*MAIN) == pytest.approx(1 / (1 + c / 40), rel=1e-14)
    assert debiased_gd_risk(*MAIN) == pytest.approx(0.1 + c / (39 + c), rel=1e-14)
    assert debiased_gd_optimal_step(*MAIN) == pytest.approx(40 / (40 + 5 * 1.1), rel=1e-14)


@pytest.mark.parametrize("d, L, sigma2", [MAIN, OTHER, (200, 1600, 0.1)])
def test_finite_debiased_gd_exceeds_limit_by_one_over_L(d, L, sigma2):
    offset = debiased_gd_risk(d, L, sigma2) - debiased_gd_risk_proportional(d, L, sigma2)
    assert offset == pytest.approx(1 / (L + d * (1 + sigma2)), rel=1e-10)


@pytest.mark.parametrize("point", POINTS)
def test_plain_gd_risk_matches_monte_carlo(point):
    d, L, sigma2 = point
    eta = plain_gd_optimal_step(d, L, sigma2)
    mean, stderr = mc_risk(
        lambda b: gd_predict(b, eta), d, L, sigma2, N_SAMPLES[point], _generator(1)
    )
    _assert_matches(plain_gd_risk(d, L, sigma2), mean, stderr)


@pytest.mark.parametrize("point", POINTS)
def test_debiased_gd_risk_matches_monte_carlo(point):
    d, L, sigma2 = point
    eta = debiased_gd_optimal_step(d, L, sigma2)
    mean, stderr = mc_risk(
        lambda b: dgd_predict(b, eta), d, L, sigma2, N_SAMPLES[point], _generator(2)
    )
    _assert_matches(debiased_gd_risk(d, L, sigma2), mean, stderr)


@pytest.mark.parametrize(
    "predict, optimal_step, risk_at_step",
    [
        (gd_predict, plain_gd_optimal_step, plain_gd_risk_at_step),
        (dgd_predict, debiased_gd_optimal_step, debiased_gd_risk_at_step),
    ],
    ids=["gd", "dgd"],
)
def test_optimal_step_is_optimal(predict, optimal_step, risk_at_step):
    d, L, sigma2 = MAIN
    batch = sample_regression(100_000, L, d, sigma2, _generator(3), dtype=torch.float64)
    unit_step = predict(batch, 1.0)
    eta_star = optimal_step(d, L, sigma2)

    def squared_error(eta):
        return (eta * unit_step - batch.yq) ** 2

    for factor in (0.8, 1.2):
        # Paired differences on the same prompts: their error is far below that of each risk.
        excess = squared_error(factor * eta_star) - squared_error(eta_star)
        mean, stderr = excess.mean().item(), excess.std().item() / excess.numel() ** 0.5
        exact = risk_at_step(d, L, sigma2, factor * eta_star) - risk_at_step(d, L, sigma2, eta_star)
        assert mean > Z * stderr
        _assert_matches(exact, mean, stderr)

    # The Monte-Carlo risk is quadratic in eta, minimal at E[p y_q] / E[p^2] (p: unit-step output).
    curvature = (unit_step**2).mean()
    eta_mc = ((unit_step * batch.yq).mean() / curvature).item()
    linearised = (unit_step * batch.yq - eta_star * unit_step**2) / curvature
    _assert_matches(eta_star, eta_mc, linearised.std().item() / linearised.numel() ** 0.5)


@pytest.mark.parametrize("point", POINTS)
def test_bayes_risk_proportional_against_ridge_at_small_d(point):
    d, L, sigma2 = point
    mean, stderr = mc_risk(
        lambda b: ridge_predict(b, sigma2 * d), d, L, sigma2, N_SAMPLES[point], _generator(4)
    )
    _assert_matches(bayes_risk_proportional(d, L, sigma2), mean, stderr, BAYES_FINITE_SIZE / d)


def _conditional_risks(coefficients, d, L, sigma2, n_prompts, generator):
    """(mean, stderr) of |beta_hat - beta|^2 + sigma2: the risk with x_q and y_q integrated out."""
    risks = []
    for _ in range(n_prompts // 64):
        batch = sample_regression(64, L, d, sigma2, generator, dtype=torch.float64)
        risks.append(((coefficients(batch) - batch.beta) ** 2).sum(-1) + sigma2)
    risks = torch.cat(risks)
    return risks.mean().item(), risks.std().item() / risks.numel() ** 0.5


@pytest.mark.parametrize("d, L", [(100, 200), (100, 800)])
def test_proportional_limits_at_large_d(d, L):
    sigma2 = 0.1
    generator = _generator(5)
    mean, stderr = _conditional_risks(
        lambda b: ridge_coefficients(b, sigma2 * d), d, L, sigma2, 256, generator
    )
    _assert_matches(bayes_risk_proportional(d, L, sigma2), mean, stderr, BAYES_FINITE_SIZE / d)

    # Finite-size offset of optimal one-step GD: below 1 / (L + d (1 + sigma2)) (exact forms).
    gd_offset = 1 / (L + d * (1 + sigma2))
    eta = plain_gd_optimal_step(d, L, sigma2)
    mean, stderr = _conditional_risks(lambda b: eta * gd_direction(b), d, L, sigma2, 256, generator)
    _assert_matches(debiased_gd_risk_proportional(d, L, sigma2), mean, stderr, gd_offset)
    eta = debiased_gd_optimal_step(d, L, sigma2)
    mean, stderr = _conditional_risks(
        lambda b: eta * dgd_direction(b), d, L, sigma2, 256, generator
    )
    _assert_matches(debiased_gd_risk_proportional(d, L, sigma2), mean, stderr, gd_offset)


# Lt replaces |x_q|^2 / d by 1 and the softmax normaliser by its mean; both errors are O(1/d)
# at fixed xi and raise the risk. A variance-reduced Monte Carlo at xi = 1/8, sigma2 = 0.1 gave
# d * (true - approx) = 0.18, 0.22, 0.27, 0.27, 0.34 (+-0.08) at d = 5, 10, 20, 40, 80.
SINGLE_HEAD_GAP_TIMES_D = 0.4


@pytest.mark.parametrize(
    "point, n_samples",
    [pytest.param(MAIN, 200_000, id="d5-L40"), pytest.param((20, 160, 0.1), 40_000, id="d20-L160")],
)
def test_single_head_approx_against_softmax_predictor(point, n_samples):
    d, L, sigma2 = point
    omega, mu = single_head_large_L_optimum(d, L, sigma2)
    omega_t = torch.tensor([omega], dtype=torch.float64)
    mu_t = torch.tensor([mu], dtype=torch.float64)
    mean, stderr = mc_risk(
        lambda b: softmax_predict(b, omega_t, mu_t),
        d,
        L,
        sigma2,
        n_samples,
        _generator(6),
        chunk=4000,
    )
    gap = mean - single_head_risk_approx(d, L, sigma2)
    assert -Z * stderr < gap < SINGLE_HEAD_GAP_TIMES_D / d + Z * stderr


def _large_L_loss_by_sums(omega, mu, d, L, sigma2):
    H = len(omega)
    value = 1 + sigma2 - 2 * sum(m * w for m, w in zip(mu, omega))
    for h in range(H):
        for k in range(H):
            entry = omega[h] * omega[k] + (1 + sigma2) / L * math.exp(d * omega[h] * omega[k])
            value += mu[h] * entry * mu[k]
    return value


def test_large_L_loss_matches_elementwise_sums():
    generator = _generator(7)
    for H in (1, 2, 4):
        omega = 0.5 * torch.randn(H, generator=generator, dtype=torch.float64)
        mu = 2.0 * torch.randn(H, generator=generator, dtype=torch.float64)
        expected = _large_L_loss_by_sums(omega.tolist(), mu.tolist(), 5, 40, 0.1)
        assert large_L_loss(omega, mu, 5, 40, 0.1).item() == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("point", POINTS)
def test_single_head_optimum_is_stationary_point_of_large_L_loss(point):
    d, L, sigma2 = point
    omega, mu = single_head_large_L_optimum(d, L, sigma2)
    omega_t = torch.tensor([omega], dtype=torch.float64, requires_grad=True)
    mu_t = torch.tensor([mu], dtype=torch.float64, requires_grad=True)
    loss = large_L_loss(omega_t, mu_t, d, L, sigma2)
    loss.backward()
    assert loss.item() == pytest.approx(single_head_risk_approx(d, L, sigma2), rel=1e-13)
    assert omega_t.grad.abs().item() < 1e-12 and mu_t.grad.abs().item() < 1e-12
    hessian = torch.autograd.functional.hessian(
        lambda w, m: large_L_loss(w, m, d, L, sigma2), (omega_t.detach(), mu_t.detach())
    )
    matrix = torch.tensor([[hessian[i][j].item() for j in range(2)] for i in range(2)])
    assert torch.linalg.eigvalsh(matrix).min() > 0


@pytest.mark.parametrize("point", POINTS)
def test_large_L_loss_of_opposite_pair_tends_to_debiased_gd(point):
    d, L, sigma2 = point
    omega = 1e-3
    # The pair acts as debiased GD with step 2 omega mu (docs/theory/linreg.md, section 3), optimal at the finite-L step.
    mu = debiased_gd_optimal_step(d, L, sigma2) / (2 * omega)
    loss = large_L_loss(
        torch.tensor([omega, -omega], dtype=torch.float64),
        torch.tensor([mu, -mu], dtype=torch.float64),
        d,
        L,
        sigma2,
    )
    assert loss.item() == pytest.approx(debiased_gd_risk_proportional(d, L, sigma2), abs=1e-9)
