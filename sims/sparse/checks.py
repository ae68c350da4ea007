"""Theory checks of the sparse system: the rows of `icldyn check sparse`.

Every row puts a prediction against a measurement of the same quantity
(docs/sparse-theory.md lists them with measured values):

- closed-form risks for Gaussian design x ~ N(0, I_d) and the sparse prior
  (E beta beta^T = (s/d) I), risk = sigma2 + |beta_hat - beta|^2 per prompt
  (query integrated out), against Monte Carlo within Z standard errors:
  OLS through the inverse-Wishart mean (n > d + 1) and the minimum-norm
  interpolant (n < d - 1); k-step GD (k <= 2) through the Wishart moments
  E tr S^m, m <= 4; ridge in the proportional limit (Marchenko-Pastur),
  against the Richardson extrapolation of Monte Carlo at (k d, k n),
  k = 1, 2, 4 (s fixed);
- the exact construction: the linear-attention stack at the lifted weights
  equals the reduced predictor (the (alpha, eta) manifold, the extended
  manifold at a random point, and pto_fixed with one head per coordinate),
  to round-off;
- orderings of tuned estimators at n = d by paired z on common trials
  (`sparse-risk`): Lasso below Bayes ridge, the normalised-step PTO below GD
  and above Lasso. (GD below pto_fixed is not a row: pto_fixed's risk is so
  heavy-tailed that its paired z at d = 16 was -2.0, mean difference -1.04 +-
  0.52, although its mean is far above GD's.)
"""

from __future__ import annotations

import math

import torch
from numpy.polynomial import polynomial as P

from reduced_models import sparse as theory

from ..experiment import CheckRow, generator, seeds
from . import estimators as est
from .network import LinearAttentionStack, TransformerShape, tokens
from .risk_experiment import ordering
from .task import sample_sparse

Z = 4.0  # standard errors allowed between a Monte-Carlo estimate and its closed form
ORDER_Z = 3.0  # an ordering holds when its paired z is beyond this
SAMPLES = 40_000  # prompts of an exact finite-n risk row
SIZES = (1, 2, 4)  # (k d, k n) of the proportional-limit extrapolation
RICHARDSON = (1 / 3, -2.0, 8 / 3)  # weights of f(k = 1, 2, 4) giving the quadratic fit in 1/k at 0
LIMIT_SAMPLES = {1: 40_000, 2: 20_000, 4: 10_000}
GD_STEP, GD_STEPS = 0.3, 2  # the k-step GD row
CONSTRUCTION_TOL = 1e-10
ORDER_TRIALS, ORDER_TUNE, ORDER_K, ORDER_HEADS = 4000, 1000, 10, 4


def sparse_checks(config: dict) -> list[CheckRow]:
    """All rows at the config's d, s, sigma2 and seed."""
    d, s, sigma2, seed = config["d"], config["s"], config["sigma2"], config["seed"]
    risk_seed, limit_seed, build_seed, order_seed = seeds(seed, 4)
    return (risk_rows(d, s, sigma2, risk_seed)
            + [ridge_limit_row(d, s, sigma2, limit_seed)]
            + construction_rows(d, build_seed)
            + ordering_rows(d, s, sigma2, order_seed))


# ---------------------------------------------------------------------------
# Closed forms


def wishart_trace_moments(d: int, n: int) -> list[float]:
    """E tr S^m for m = 0..4, S = X^T X / n, X (n, d) with N(0, 1) entries.

    E tr W^m for W = X^T X (standard Wishart moments, e.g. Hanlon, Stanley, Stembridge
    1992): nd, nd(n + d + 1), nd(n^2 + d^2 + 3nd + 3n + 3d + 4),
    nd(n^3 + d^3 + 6n^2 d + 6nd^2 + 6n^2 + 6d^2 + 17nd + 21n + 21d + 20).
    """
    w = [d, n * d, n * d * (n + d + 1),
         n * d * (n**2 + d**2 + 3 * n * d + 3 * n + 3 * d + 4),
         n * d * (n**3 + d**3 + 6 * n**2 * d + 6 * n * d**2 + 6 * n**2 + 6 * d**2
                  + 17 * n * d + 21 * n + 21 * d + 20)]
    return [value / n**m for m, value in enumerate(w)]


def gd_risk(d: int, n: int, s: int, sigma2: float, eta: float, k: int) -> float:
    """Exact risk of k GD steps of size eta from 0 (k <= 2).

    beta_hat - beta = -(I - eta S)^k beta + [I - (I - eta S)^k] S^-1 X^T eps / n, so the
    risk is sigma2 + (s/d) E tr (I - eta S)^(2k) + (sigma2/n) E tr q(S), q(x) =
    [1 - (1 - eta x)^k]^2 / x, both polynomials in S of degree <= 2k.
    """
    if k > 2:
        raise ValueError("the Wishart moments here reach E tr S^4: k <= 2")
    mu = wishart_trace_moments(d, n)
    step = P.polypow([1.0, -eta], k)
    bias = P.polypow(step, 2)
    noise = P.polydiv(P.polypow(P.polysub([1.0], step), 2), [0.0, 1.0])[0]
    return (sigma2 + s / d * sum(c * mu[m] for m, c in enumerate(bias))
            + sigma2 / n * sum(c * mu[m] for m, c in enumerate(noise)))


def ols_risk(d: int, n: int, s: int, sigma2: float) -> float:
    """Exact risk of minimum-norm least squares, |n - d| >= 2.

    n > d + 1: sigma2 (1 + E tr (X^T X)^-1) = sigma2 (1 + d / (n - d - 1)) (inverse-Wishart
    mean); n < d - 1: the projection loses (s/d)(d - n) of |beta|^2 and the noise adds
    sigma2 E tr (X X^T)^-1 = sigma2 n / (d - n - 1).
    """
    if n > d + 1:
        return sigma2 * (1 + d / (n - d - 1))
    if n < d - 1:
        return sigma2 + s / d * (d - n) + sigma2 * n / (d - n - 1)
    raise ValueError("the expected OLS risk is infinite for |n - d| <= 1")


def ridge_risk_limit(d: int, n: int, s: int, sigma2: float, lam: float) -> float:
    """Risk of ridge argmin |y - Xb|^2 + lam |b|^2 as d, n -> infinity at gamma = d / n, with
    E|beta|^2 = s and l = lam / n fixed: sigma2 + s l^2 (-m') + sigma2 gamma (m + l m'),
    m(l) the Marchenko-Pastur Stieltjes transform, gamma l m^2 + (1 - gamma + l) m = 1."""
    gamma, ell = d / n, lam / n
    b = 1 - gamma + ell
    m = (-b + math.sqrt(b * b + 4 * gamma * ell)) / (2 * gamma * ell)
    dm = -(gamma * m * m + m) / (2 * gamma * ell * m + b)
    return sigma2 + s * ell**2 * (-dm) + sigma2 * gamma * (m + ell * dm)


# ---------------------------------------------------------------------------
# Rows


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), values.std().item() / math.sqrt(values.numel())


def _row(name: str, expected: float, measured: tuple[float, float], detail: str) -> CheckRow:
    mean, stderr = measured
    return CheckRow(name, expected, mean, Z * stderr,
                    f"{detail}; Monte Carlo +- {stderr:.2g} (1 se), tolerance {Z:g} se")


def _risks(estimator, d: int, n: int, s: int, sigma2: float, count: int,
           gen: torch.Generator) -> torch.Tensor:
    batch = sample_sparse(count, n, d, s, sigma2, gen)
    return est.risk(estimator(batch.x, batch.y), batch.beta, sigma2)


def risk_rows(d: int, s: int, sigma2: float, seed: int, samples: int = SAMPLES) -> list[CheckRow]:
    """OLS on both sides of n = d and k-step GD at n = d, exact finite-n closed forms."""
    gen = generator(seed)
    n_over, n_under = 2 * d + 2, max(1, d // 2 - 1)
    rows = [_row(f"OLS risk, n = {n_over} > d + 1", ols_risk(d, n_over, s, sigma2),
                 _mean_se(_risks(est.ols, d, n_over, s, sigma2, samples, gen)),
                 "sigma2 (1 + d / (n - d - 1)), inverse-Wishart mean")]
    if n_under < d - 1:
        rows.append(_row(f"OLS (min-norm) risk, n = {n_under} < d - 1",
                         ols_risk(d, n_under, s, sigma2),
                         _mean_se(_risks(est.ols, d, n_under, s, sigma2, samples, gen)),
                         "sigma2 + (s/d)(d - n) + sigma2 n / (d - n - 1)"))
    for k in (1, GD_STEPS):
        rows.append(_row(f"{k}-step GD risk, eta = {GD_STEP}, n = d",
                         gd_risk(d, d, s, sigma2, GD_STEP, k),
                         _mean_se(_risks(lambda x, y, k=k: est.gd(x, y, GD_STEP, k), d, d, s,
                                         sigma2, samples, gen)),
                         "Wishart moments E tr S^m, m <= 2k"))
    return rows


def ridge_limit_row(d: int, s: int, sigma2: float, seed: int, scale: float = 1.0) -> CheckRow:
    """Bayes ridge (lam = sigma2 d / s) at n = 2d in the proportional limit."""
    streams = seeds(seed, len(SIZES))
    lam_per_n = est.bayes_ridge_lambda(d, s, sigma2) / (2 * d)  # lam / n, fixed along k
    values = []
    for k, stream in zip(SIZES, streams):
        dk, nk = k * d, 2 * k * d
        risks = _risks(lambda x, y, nk=nk: est.ridge(x, y, lam_per_n * nk), dk, nk, s, sigma2,
                       max(100, int(scale * LIMIT_SAMPLES[k])), generator(stream))
        values.append(_mean_se(risks))
    mean = sum(c * m for c, (m, _) in zip(RICHARDSON, values))
    stderr = math.sqrt(sum((c * e) ** 2 for c, (_, e) in zip(RICHARDSON, values)))
    return _row("ridge risk (lam = sigma2 d / s), proportional limit, n = 2d",
                ridge_risk_limit(d, 2 * d, s, sigma2, lam_per_n * 2 * d), (mean, stderr),
                f"Marchenko-Pastur; extrapolated from (k d, 2 k d), k = 1, 2, 4, s = {s} "
                f"(at k = 1: {values[0][0]:.4g})")


def construction_rows(d: int, seed: int) -> list[CheckRow]:
    """max |network - reduced predictor| over prompts at lifted weights (expected 0)."""
    gen = generator(seed)
    batch = sample_sparse(64, d, d, min(3, d), 0.25, gen)
    sample = theory.PromptSample(batch.x, batch.y, batch.beta, 0.25)
    layers, heads = 3, min(4, d)

    def gap(net_weights, shape, beta_hat) -> float:
        net = LinearAttentionStack(shape)
        net.load(net_weights)
        with torch.no_grad():
            return (net(tokens(batch)) - (batch.xq * beta_hat).sum(-1)).abs().max().item()

    shape = TransformerShape(d, layers, heads)
    small = theory.manifold(d, layers, heads)
    state = torch.linspace(0.2, 0.6, small.dim, dtype=torch.float64)
    reduced = sample.estimate(state[None, :heads], state[None, heads:])[0]
    big = theory.extended_manifold(d, layers, heads)
    theta = 0.3 * torch.randn(big.dim, generator=gen, dtype=torch.float64)
    obs = big.unpack(theta[None])
    extended = theory.extended_estimate(sample, obs["alpha"], obs["eta_x"], obs["eta_u"])[0]
    fixed = est.pto_fixed(batch.x, batch.y, 0.2, layers - 1)
    cases = [
        ("construction: stack at the (alpha, eta) lift = reduced predictor",
         gap(small.lift(state), shape, reduced)),
        ("construction: stack at a random extended-manifold point = its predictor",
         gap(big.lift(theta), shape, extended)),
        (f"construction: stack with d = {d} layer-1 heads = pto_fixed",
         gap(theory.per_coordinate_weights(d, layers, 0.0, 0.2), TransformerShape(d, layers, d),
             fixed)),
    ]
    return [CheckRow(name, 0.0, value, CONSTRUCTION_TOL,
                     f"max over 64 prompts (n = d = {d}) of |y_hat(network) - x_q.beta_hat|")
            for name, value in cases]


def ordering_rows(d: int, s: int, sigma2: float, seed: int,
                  trials: int = ORDER_TRIALS, tune_trials: int = ORDER_TUNE) -> list[CheckRow]:
    """Paired orderings of tuned estimators at n = d: measured is the shortfall
    max(0, z + ORDER_Z) of the paired z of risk[better] - risk[worse] (0: it holds)."""
    samples = est.risk_samples(d, s, sigma2, [d], ORDER_K, trials, tune_trials,
                               generator(seed), min(ORDER_HEADS, d))
    rows = []
    for better, worse in (("lasso", "ridge_bayes"), ("pto", "gd"), ("lasso", "pto")):
        result = ordering(samples, better, worse)
        z = result["z"][0]
        rows.append(CheckRow(
            f"ordering at n = d: {better} below {worse}", 0.0, max(0.0, z + ORDER_Z), 0.0,
            f"paired z = {z:.3g} (difference {result['diff'][0]:.4g} +- "
            f"{result['stderr'][0]:.2g}) on {trials} common trials, tuned on {tune_trials}; "
            f"holds when z <= -{ORDER_Z:g}"))
    return rows
