"""Closed-form risks for in-context linear regression (docs/linreg-theory.md).

Setting of He, Pan, Chen, Yang, arXiv 2503.12734: x_1..x_L, x_q ~ N(0, I_d),
beta ~ N(0, I_d / d), labels y = beta.x + eps with eps ~ N(0, sigma2).
Every risk is the mean squared error against the noisy query label y_q, so it
contains the noise floor sigma2 once. xi = d / L.

One-step gradient descent predictors y_hat = eta g.x_q have the risk
R(eta) = 1 + sigma2 - 2 eta b + eta^2 a with b = E[g.beta], a = E|g|^2
(x_q is independent of g, beta and isotropic), so the optimal step is b / a
and the optimal risk is 1 + sigma2 - b^2 / a. The moments follow from the
Wishart identity E[W^2] = n (n + d + 1) I for W ~ Wishart_d(I, n):
- plain GD, g = (1/L) X^T y: b = 1, a = (L + c) / L,
- debiased GD, g = (1/L) X^T C y with C = I - 11^T / L the centring matrix:
  X^T C X ~ Wishart_d(I, L - 1), so b = (L - 1) / L, a = (L - 1)(L - 1 + c) / L^2,
where c = d + 1 + d sigma2 (the d + 1 from E[W^2], d sigma2 from the noise).
"""

from __future__ import annotations

import math

import torch


def _aspect_ratio(d: int, L: int) -> float:
    """xi = d / L."""
    return d / L


def _gd_excess_constant(d: int, sigma2: float) -> float:
    """c = d + 1 + d sigma2 in the second moment of the one-step GD direction."""
    return d + 1 + d * sigma2


def _quadratic_risk(a: float, b: float, sigma2: float, eta: float) -> float:
    """1 + sigma2 - 2 eta b + eta^2 a: risk of y_hat = eta g.x_q with b = E[g.beta], a = E|g|^2."""
    return 1.0 + sigma2 - 2.0 * eta * b + eta**2 * a


def _plain_gd_moments(d: int, L: int, sigma2: float) -> tuple[float, float]:
    """(a, b) = (E|g|^2, E[g.beta]) for g = (1/L) sum_l y_l x_l."""
    return (L + _gd_excess_constant(d, sigma2)) / L, 1.0


def _debiased_gd_moments(d: int, L: int, sigma2: float) -> tuple[float, float]:
    """(a, b) = (E|g|^2, E[g.beta]) for g = (1/L) sum_l y_l (x_l - x_bar)."""
    n = L - 1
    return n * (n + _gd_excess_constant(d, sigma2)) / L**2, n / L


def bayes_risk_proportional(d: int, L: int, sigma2: float) -> float:
    """Bayes risk (ridge with lambda = sigma2 d) as d, L -> infinity with xi = d / L fixed.

    The posterior mean is ridge with lambda = sigma2 d and the risk is
    sigma2 + sigma2 E tr (X^T X + sigma2 d I)^-1 -> sigma2 + sigma2 xi m(-sigma2 xi),
    m the Marchenko-Pastur Stieltjes transform at ratio xi, which gives
    (1/2)[sigma2 + (xi - 1)/xi + sqrt(4 sigma2 + (sigma2 + (1 - xi)/xi)^2)].
    Finite-d values exceed this by O(1/d).
    """
    xi = _aspect_ratio(d, L)
    return 0.5 * (sigma2 + (xi - 1) / xi + math.sqrt(4 * sigma2 + (sigma2 + (1 - xi) / xi) ** 2))


def debiased_gd_risk_proportional(d: int, L: int, sigma2: float) -> float:
    """Optimal one-step (plain or debiased) GD risk as d, L -> infinity with xi = d / L fixed.

    sigma2 + xi (1 + sigma2) / (1 + xi (1 + sigma2)); equals debiased_gd_risk minus
    1 / (L + d (1 + sigma2)).
    """
    k = _aspect_ratio(d, L) * (1 + sigma2)
    return sigma2 + k / (1 + k)


def plain_gd_risk_at_step(d: int, L: int, sigma2: float, eta: float) -> float:
    """Exact risk of y_hat = eta (1/L) sum_l y_l x_l.x_q at finite d, L."""
    a, b = _plain_gd_moments(d, L, sigma2)
    return _quadratic_risk(a, b, sigma2, eta)


def plain_gd_optimal_step(d: int, L: int, sigma2: float) -> float:
    """1 / (1 + (d + 1 + d sigma2) / L)."""
    a, b = _plain_gd_moments(d, L, sigma2)
    return b / a


def plain_gd_risk(d: int, L: int, sigma2: float) -> float:
    """Exact risk at the optimal step: sigma2 + c / (L + c), c = d + 1 + d sigma2."""
    return plain_gd_risk_at_step(d, L, sigma2, plain_gd_optimal_step(d, L, sigma2))


def debiased_gd_risk_at_step(d: int, L: int, sigma2: float, eta: float) -> float:
    """Exact risk of y_hat = eta (1/L) sum_l y_l (x_l - x_bar).x_q at finite d, L >= 2."""
    a, b = _debiased_gd_moments(d, L, sigma2)
    return _quadratic_risk(a, b, sigma2, eta)


def debiased_gd_optimal_step(d: int, L: int, sigma2: float) -> float:
    """L / (L + d (1 + sigma2)); matches the +- pair limit 2 omega mu (docs/theory/linreg.md, section 5)."""
    a, b = _debiased_gd_moments(d, L, sigma2)
    return b / a


def debiased_gd_risk(d: int, L: int, sigma2: float) -> float:
    """Exact risk at the optimal step: sigma2 + c / (L - 1 + c), c = d + 1 + d sigma2."""
    return debiased_gd_risk_at_step(d, L, sigma2, debiased_gd_optimal_step(d, L, sigma2))


def single_head_large_L_optimum(d: int, L: int, sigma2: float) -> tuple[float, float]:
    """(omega, mu) minimising large_L_loss for H = 1.

    omega = 1 / sqrt(d), mu = sqrt(d) / (1 + e (1 + sigma2) d / L).

    For fixed omega the loss is quadratic in mu; eliminating mu leaves
    1 + sigma2 - 1 / (1 + (1 + sigma2) exp(d omega^2) / (L omega^2)), minimal at omega^2 = 1 / d.
    Only omega up to sign is determined: (-omega, -mu) has the same loss.
    """
    omega = 1 / math.sqrt(d)
    mu = math.sqrt(d) / (1 + math.e * (1 + sigma2) * d / L)
    return omega, mu


def single_head_risk_approx(d: int, L: int, sigma2: float) -> float:
    """large_L_loss at the single-head optimum.

    sigma2 + e xi (1 + sigma2) / (1 + e xi (1 + sigma2)).

    Approximate: the true risk of the single-head softmax predictor at that point
    is larger by O(1/d) at fixed xi.
    """
    k = math.e * _aspect_ratio(d, L) * (1 + sigma2)
    return sigma2 + k / (1 + k)


def large_L_loss(
    omega: torch.Tensor, mu: torch.Tensor, d: int, L: int, sigma2: float
) -> torch.Tensor:
    """Reduced large-L loss Lt(omega, mu) (docs/theory/linreg.md, section 4; from the paper's authors), a 0-d tensor.

    omega, mu: (H,). Lt = 1 + sigma2 - 2 mu.omega
    + mu^T [omega omega^T + ((1 + sigma2) / L) exp.(d omega omega^T)] mu, exp. element-wise.
    Differentiable in omega and mu.
    """
    outer = torch.outer(omega, omega)
    kernel = outer + (1 + sigma2) / L * torch.exp(d * outer)
    return 1 + sigma2 - 2 * torch.dot(mu, omega) + mu @ kernel @ mu
