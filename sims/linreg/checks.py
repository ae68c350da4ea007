"""Theory checks of the linreg system: the rows of `icldyn check linreg` (docs/linreg-theory.md).

Every row puts a closed form against a measurement of the same quantity
(docs/linreg-theory.md lists them with measured values):

- risks (docs/linreg-theory.md): Monte-Carlo risks of the predictors themselves. Each draw
  integrates out what can be integrated exactly given the prompt, which
  lowers the variance without changing the mean: for the coefficient
  predictors (GD, debiased GD, ridge: y_hat = beta_hat.x_q) the query,
  risk = |beta_hat - beta|^2 + sigma2; for the softmax head beta and all
  label noise (reduced_models.linreg.CovariateSample). Sample counts
  (SAMPLES, SINGLE_HEAD_SAMPLES) are for d L = 200 and shrink as 1/(d L).
  Exact finite-L formulas are checked at (d, L) within 4 standard errors.
  Proportional-limit formulas
  (d, L -> infinity at fixed xi = d/L) are checked against the Richardson
  extrapolation to 1/k -> 0 of measurements at (k d, k L), k = 1, 2, 4 (exact
  for corrections up to O(1/k^2); the standard error is propagated).
- the symbolic large-L flow (docs/theory/linreg.md, sections 4-5): the one-head stationary point found by
  Newton's method from the end of a flow, its loss and the eigenvalues of the
  flow Jacobian -G^-1 H (closed forms derived below); the +- pair's omega mu
  asymptote and loss infimum on the valley floor; zero-sum and homogeneity of
  a 4-head flow from random starts.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dynamics.errors import UsageError
from dynamics.ode import integrate
from reduced_models import linreg as theory
from reduced_models.base import flow_eigenvalues, stationary_point
from reduced_models.linreg_theory import (
    bayes_risk_proportional,
    debiased_gd_optimal_step,
    debiased_gd_risk,
    debiased_gd_risk_proportional,
    plain_gd_optimal_step,
    plain_gd_risk,
    single_head_large_L_optimum,
    single_head_risk_approx,
)

from ..experiment import CheckRow, generator, seeds
from .estimators import dgd_direction, gd_direction, ridge_coefficients
from .network import active_heads
from .task import sample_regression

Z = 4.0  # standard errors allowed between a Monte-Carlo estimate and its closed form
SIZES = (1, 2, 4)  # (k d, k L) of the proportional-limit extrapolation
RICHARDSON = (1 / 3, -2.0, 8 / 3)  # weights of f(k = 1, 2, 4) giving the quadratic fit in 1/k at 0
SAMPLES = {1: 100_000, 2: 40_000, 4: 20_000}  # prompts per size at d L = 200 (defaults)
SINGLE_HEAD_SAMPLES = {1: 20_000, 2: 40_000, 4: 30_000}
BATCH_MEANS = 16  # the softmax risk's standard error comes from this many batch means
CHUNK_FLOATS = 4_000_000  # covariate entries drawn at once (32 MB in float64)
START_SCALE = 0.05  # symmetric start of the one-head flow
ONE_HEAD_T = 200.0  # flow time after which Newton's method takes over
PAIR_OMEGA = 1e-3  # valley point standing in for the omega -> 0 limit (error O(omega^4))
PAIR_STABILITY_OMEGA = 0.13  # the trained H = 2 network's |omega| (reported in the paper)
MULTI_HEADS, MULTI_STARTS, MULTI_T = 4, 4, 1000.0
ZERO_SUM_ALLOWANCE, HOMOGENEITY_ALLOWANCE, PRODUCT_ALLOWANCE = 0.01, 0.05, 0.01


def linreg_checks(config: dict) -> list[CheckRow]:
    """All rows at the config's d, L, sigma2 and seed (ODE tolerances rtol, atol)."""
    if config.get("covariance", "identity") != "identity":
        raise UsageError("key 'covariance': the theory checks are for isotropic covariates")
    if config["L"] < 2:
        raise UsageError("key 'L': the theory checks need L >= 2 (debiased GD centres the context)")
    if config["sigma2"] <= 0:
        raise UsageError("key 'sigma2': the theory checks need sigma2 > 0 "
                         "(Bayes ridge, lambda = sigma2 d)")
    d, L, sigma2, seed = config["d"], config["L"], config["sigma2"], config["seed"]
    solver = {"rtol": config["rtol"], "atol": config["atol"]}
    risk_seed, flow_seed = seeds(seed, 2)
    return (risk_rows(d, L, sigma2, risk_seed)
            + one_head_rows(d, L, sigma2, solver)
            + pair_rows(d, L, sigma2)
            + multihead_rows(d, L, sigma2, flow_seed, solver))


# ---------------------------------------------------------------------------
# Risks


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean of i.i.d. values (n,) and its standard error."""
    return values.mean().item(), values.std().item() / math.sqrt(values.numel())


def _chunks(n: int, L: int, d: int) -> list[int]:
    """Prompt counts summing to n, each drawing at most CHUNK_FLOATS covariates."""
    size = max(1, CHUNK_FLOATS // ((L + 1) * d))
    return [min(size, n - start) for start in range(0, n, size)]


def coefficient_risk_samples(d: int, L: int, sigma2: float, n: int,
                             gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-prompt risks of the coefficient predictors, the query integrated out, each (n,).

    - gd, dgd: one (debiased) GD step at its optimal finite-L step eta*;
      risk |eta* g - beta|^2 + sigma2
    - gd_slope, dgd_slope: d risk / d eta at eta*, 2 g.(eta* g - beta) (zero in
      expectation when eta* is optimal)
    - ridge: lambda = sigma2 d (the Bayes posterior mean); risk |beta_hat - beta|^2 + sigma2
    """
    steps = {"gd": plain_gd_optimal_step(d, L, sigma2),
             "dgd": debiased_gd_optimal_step(d, L, sigma2)}
    directions = {"gd": gd_direction, "dgd": dgd_direction}
    out = {name: [] for name in ("gd", "dgd", "gd_slope", "dgd_slope", "ridge")}
    for size in _chunks(n, L, d):
        batch = sample_regression(size, L, d, sigma2, gen, dtype=torch.float64)
        for name, direction in directions.items():
            g = direction(batch)
            residual = steps[name] * g - batch.beta
            out[name].append((residual**2).sum(-1) + sigma2)
            out[f"{name}_slope"].append(2 * (g * residual).sum(-1))
        residual = ridge_coefficients(batch, sigma2 * d) - batch.beta
        out["ridge"].append((residual**2).sum(-1) + sigma2)
    return {name: torch.cat(parts) for name, parts in out.items()}


def softmax_risk(omega, mu, d: int, L: int, sigma2: float, n: int,
                 gen: torch.Generator) -> tuple[float, float]:
    """(mean, stderr) of the risk of the reduced softmax predictor at omega, mu (H,), beta and
    the label noise integrated out (CovariateSample), from BATCH_MEANS batch means of
    n / BATCH_MEANS prompts."""
    omega_t = torch.as_tensor(omega, dtype=torch.float64).reshape(1, -1)
    mu_t = torch.as_tensor(mu, dtype=torch.float64).reshape(1, -1)
    per_batch = max(1, n // BATCH_MEANS)
    means = []
    for _ in range(BATCH_MEANS):
        parts = [theory.CovariateSample(size, L, d, gen).loss(omega_t, mu_t, sigma2) * size
                 for size in _chunks(per_batch, L, d)]
        means.append(sum(parts) / per_batch)
    return mean_and_stderr(torch.cat(means))


def _sample_count(base: int, d: int, L: int) -> int:
    """base prompts at d L = 200, fewer for larger problems (cost ~ n d L), at least 2000."""
    return max(2000, int(base * min(1.0, 200 / (d * L))))


def _row(name: str, expected: float, measured: tuple[float, float], detail: str) -> CheckRow:
    mean, stderr = measured
    return CheckRow(name, expected, mean, Z * stderr,
                    f"{detail}; Monte Carlo +- {stderr:.2g} (1 se), tolerance {Z:g} se")


def _extrapolate(values: list[tuple[float, float]]) -> tuple[float, float]:
    """Richardson extrapolation of (mean, stderr) at k = 1, 2, 4 to 1/k = 0."""
    mean = sum(c * m for c, (m, _) in zip(RICHARDSON, values))
    stderr = math.sqrt(sum((c * s) ** 2 for c, (_, s) in zip(RICHARDSON, values)))
    return mean, stderr


def risk_rows(d: int, L: int, sigma2: float, seed: int,
              sample_scale: float = 1.0) -> list[CheckRow]:
    """Closed-form risks of A.5 against Monte-Carlo risks of the same predictors.

    sample_scale multiplies every sample count (tests use fewer prompts).
    """
    streams = seeds(seed, 2 * len(SIZES))
    linear, head = {}, {}
    for i, k in enumerate(SIZES):
        n = max(BATCH_MEANS, int(sample_scale * _sample_count(SAMPLES[k], d, L)))
        samples = coefficient_risk_samples(k * d, k * L, sigma2, n, generator(streams[2 * i]))
        linear[k] = {name: mean_and_stderr(v) for name, v in samples.items()}
        n_head = max(BATCH_MEANS, int(sample_scale * _sample_count(SINGLE_HEAD_SAMPLES[k], d, L)))
        head[k] = softmax_risk(*single_head_large_L_optimum(k * d, k * L, sigma2), k * d, k * L,
                               sigma2, n_head, generator(streams[2 * i + 1]))
    limit = f"proportional limit at xi = {d / L:.4g}, extrapolated from (k d, k L), k = 1, 2, 4"
    return [
        _row("plain GD risk at its optimal step (finite L)", plain_gd_risk(d, L, sigma2),
             linear[1]["gd"], f"exact at d={d}, L={L}: sigma2 + c/(L + c), c = d + 1 + d sigma2"),
        _row("debiased GD risk at its optimal step (finite L)", debiased_gd_risk(d, L, sigma2),
             linear[1]["dgd"], f"exact at d={d}, L={L}: sigma2 + c/(L - 1 + c)"),
        _row("plain GD optimal step: d risk / d eta = 0", 0.0, linear[1]["gd_slope"],
             f"eta* = {plain_gd_optimal_step(d, L, sigma2):.6g}"),
        _row("debiased GD optimal step: d risk / d eta = 0", 0.0, linear[1]["dgd_slope"],
             f"eta* = {debiased_gd_optimal_step(d, L, sigma2):.6g}"),
        _row("Bayes risk (ridge, lambda = sigma2 d), proportional limit",
             bayes_risk_proportional(d, L, sigma2),
             _extrapolate([linear[k]["ridge"] for k in SIZES]), limit),
        _row("optimal one-step GD risk, proportional limit",
             debiased_gd_risk_proportional(d, L, sigma2),
             _extrapolate([linear[k]["gd"] for k in SIZES]), f"plain GD; {limit}"),
        _row("optimal debiased GD risk, proportional limit",
             debiased_gd_risk_proportional(d, L, sigma2),
             _extrapolate([linear[k]["dgd"] for k in SIZES]), f"debiased GD; {limit}"),
        _row("single head at its large-L optimum, proportional limit",
             single_head_risk_approx(d, L, sigma2), _extrapolate([head[k] for k in SIZES]),
             f"omega = 1/sqrt(kd), mu = sqrt(kd)/(1 + e xi (1+sigma2)); {limit} (at k = 1 the "
             f"risk is {head[1][0]:.4g}: the formula's O(1/d) error)"),
    ]


# ---------------------------------------------------------------------------
# The symbolic flow of Lt


def one_head_flow_eigenvalues(d: int, L: int, sigma2: float) -> np.ndarray:
    """Closed-form eigenvalues (ascending) of the flow Jacobian -G^-1 H at the one-head optimum.

    With a = (1+sigma2)/L, u = a e d, D = 1 + u, at omega = 1/sqrt(d),
    mu = sqrt(d)/D the Hessian of Lt (no factor 1/2) is
    H = [[mu^2 (2 + 6u), 2], [2, 2D/d]] in (omega, mu); the metric of the
    merged lift is G = diag(d, 1). The eigenvalues of -G^-1 H are those of
    -G^-1/2 H G^-1/2 = -[[(2 + 6u)/D^2, 2/sqrt(d)], [2/sqrt(d), 2D/d]], whose
    determinant 8u/(d D) > 0: the optimum is stable.
    """
    u = (1 + sigma2) / L * math.e * d
    D = 1 + u
    m = np.array([[(2 + 6 * u) / D**2, 2 / math.sqrt(d)], [2 / math.sqrt(d), 2 * D / d]])
    return np.sort(-np.linalg.eigvalsh(m))


def one_head_rows(d: int, L: int, sigma2: float, solver: dict) -> list[CheckRow]:
    """The one-head stationary point: reached by the flow, refined by Newton's method."""
    model = theory.symbolic_model(d, 1)
    hyper = {"L": float(L), "sigma2": sigma2}
    start = model.manifold.pack(theory.symmetric_start(d, 1, START_SCALE, "merged"))
    sol = integrate(model.rhs(hyper), start, np.array([0.0, ONE_HEAD_T]), **solver)
    point, converged = stationary_point(model, sol.y[-1, 0], hyper)
    omega, mu = point.tolist()
    omega_star, mu_star = single_head_large_L_optimum(d, L, sigma2)
    where = (f"Newton from the flow at t = {ONE_HEAD_T:g} "
             f"({'converged' if converged else 'NOT converged'})")
    measured_eig = flow_eigenvalues(model, point, hyper)
    expected_eig = one_head_flow_eigenvalues(d, L, sigma2)
    loss = model.loss(point[None], hyper).item()
    return [
        CheckRow("one head: stationary omega = 1/sqrt(d)", omega_star, omega, 1e-9 * omega_star,
                 where),
        CheckRow("one head: stationary mu = sqrt(d)/(1 + e(1+sigma2)d/L)", mu_star, mu,
                 1e-9 * mu_star, where),
        CheckRow("one head: Lt at the optimum = single-head risk formula",
                 single_head_risk_approx(d, L, sigma2), loss, 1e-10,
                 "symbolic loss vs closed form"),
        *(CheckRow(f"one head: flow Jacobian eigenvalue {i + 1} (negative: stable)", e, m,
                   1e-8 * abs(e),
                   "-G^-1 H with autograd H, G = diag(d, 1); closed form derived here")
          for i, (e, m) in enumerate(zip(expected_eig, measured_eig))),
    ]


def pair_valley_point(model, omega: float, hyper: dict) -> torch.Tensor:
    """State (omega, -omega, mu_1, mu_2) of a +- pair with mu minimising Lt at fixed omega.

    Lt is quadratic in mu, so one Newton step in the mu block from mu = 0 is exact.
    """
    state = torch.tensor([omega, -omega, 0.0, 0.0], dtype=torch.float64)
    grad = model.gradient(state[None], hyper)[0]
    hess = model.hessian(state, hyper)
    state[2:] = -torch.linalg.solve(hess[2:, 2:], grad[2:])
    return state


def pair_rows(d: int, L: int, sigma2: float) -> list[CheckRow]:
    """The +- pair: no finite stationary point; the valley floor's omega -> 0 limit."""
    model = theory.symbolic_model(d, 2)
    hyper = {"L": float(L), "sigma2": sigma2}
    limit = pair_valley_point(model, PAIR_OMEGA, hyper)
    stable = pair_valley_point(model, PAIR_STABILITY_OMEGA, hyper)
    eig = flow_eigenvalues(model, stable, hyper)
    valley = f"valley floor at omega = +-{PAIR_OMEGA:g} (distance to the limit O(omega^4))"
    return [
        CheckRow("pair: omega_h mu_h -> 1/(2(1 + xi(1+sigma2)))",
                 theory.pair_asymptote(d, L, sigma2), float(limit[0] * limit[2]), 1e-9, valley),
        CheckRow("pair: loss infimum = optimal one-step GD risk (proportional)",
                 debiased_gd_risk_proportional(d, L, sigma2), model.loss(limit[None], hyper).item(),
                 1e-9, valley),
        CheckRow("pair: unstable directions on the valley floor", 0.0, float((eig > 0).sum()), 0.0,
                 f"eigenvalues of -G^-1 H at omega = +-{PAIR_STABILITY_OMEGA:g}: "
                 + ", ".join(f"{e:.3g}" for e in eig)),
    ]


def zero_sum(mu: np.ndarray) -> np.ndarray:
    """|sum_h mu_h| / sum_h |mu_h| over the last axis (0 for a zero-sum set of heads)."""
    return np.abs(mu.sum(-1)) / np.abs(mu).sum(-1)


def omega_spread(omega: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Spread of |omega_h| over the active heads (network.active_heads), last axis.

    The |mu|-weighted mean absolute deviation of |omega_h| relative to its
    |mu|-weighted mean: 0 when every active head has the same |omega|. Dummy
    heads (|mu_h| < 0.1 max |mu|) do not count.
    """
    active = active_heads(torch.as_tensor(mu)).numpy()
    weight, size = np.where(active, np.abs(mu), 0.0), np.abs(omega)
    centre = (weight * size).sum(-1, keepdims=True) / weight.sum(-1, keepdims=True)
    return (weight * np.abs(size - centre)).sum(-1) / (weight * centre).sum(-1)


def multihead_rows(d: int, L: int, sigma2: float, seed: int, solver: dict) -> list[CheckRow]:
    """MULTI_STARTS random 4-head starts (omega, mu ~ N(0, 0.05^2)), one batched flow of Lt
    to t = MULTI_T; the worst start counts."""
    model = theory.symbolic_model(d, MULTI_HEADS)
    hyper = {"L": float(L), "sigma2": sigma2}
    start = START_SCALE * torch.randn((MULTI_STARTS, model.manifold.dim), generator=generator(seed),
                                      dtype=torch.float64)
    sol = integrate(model.rhs(hyper), start, np.array([0.0, MULTI_T]), **solver)
    final = model.manifold.unpack(sol.y[-1])
    omega, mu = final["omega"].numpy(), final["mu"].numpy()
    where = f"{MULTI_STARTS} random starts, worst at t = {MULTI_T:g}; status {','.join(sol.status)}"
    product = (omega * mu).sum(-1)
    target = 2 * theory.pair_asymptote(d, L, sigma2)
    return [
        CheckRow("4 heads: zero-sum |sum mu| / sum |mu|", 0.0, float(zero_sum(mu).max()),
                 ZERO_SUM_ALLOWANCE, f"{where}; allowance for finite t"),
        CheckRow("4 heads: active heads share |omega| (mu-weighted spread)", 0.0,
                 float(omega_spread(omega, mu).max()), HOMOGENEITY_ALLOWANCE,
                 f"{where}; allowance for finite t"),
        CheckRow("4 heads: sum omega_h mu_h -> 1/(1 + xi(1+sigma2))", target,
                 float(product[np.argmax(np.abs(product - target))]), PRODUCT_ALLOWANCE * target,
                 f"{where}; relative allowance {PRODUCT_ALLOWANCE:g} for finite t"),
    ]

