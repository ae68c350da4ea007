"""In-context predictors for linear regression and their Monte-Carlo risks (docs/theory/linreg.md, docs/linreg-theory.md).

Every predictor maps a RegressionBatch to y_hat of shape (B,). Risks are mean
squared errors against the noisy query label y_q, whose noise the sampler adds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from reduced_models.linreg_theory import (
    debiased_gd_optimal_step,
    plain_gd_optimal_step,
    single_head_large_L_optimum,
)
from sims.linreg.task import RegressionBatch, sample_regression

Predictor = Callable[[RegressionBatch], torch.Tensor]


def _dot_query(coefficients: torch.Tensor, batch: RegressionBatch) -> torch.Tensor:
    """(B,) coefficients.x_q for coefficients (B, d)."""
    return (coefficients * batch.xq).sum(-1)


def ridge_coefficients(batch: RegressionBatch, lam: float) -> torch.Tensor:
    """(B, d) beta_hat = (X^T X + lam I)^-1 X^T y."""
    d = batch.x.shape[-1]
    gram = batch.x.transpose(1, 2) @ batch.x
    eye = torch.eye(d, dtype=batch.x.dtype, device=batch.x.device)
    return torch.linalg.solve(gram + lam * eye, torch.einsum("bld,bl->bd", batch.x, batch.y))


def ridge_predict(batch: RegressionBatch, lam: float) -> torch.Tensor:
    """(B,) ridge prediction; lam = sigma2 d gives the Bayes-optimal posterior mean."""
    return _dot_query(ridge_coefficients(batch, lam), batch)


def gd_direction(batch: RegressionBatch) -> torch.Tensor:
    """(B, d) (1/L) sum_l y_l x_l: one GD step from beta = 0 with unit step."""
    return torch.einsum("bld,bl->bd", batch.x, batch.y) / batch.x.shape[1]


def dgd_direction(batch: RegressionBatch) -> torch.Tensor:
    """(B, d) (1/L) sum_l y_l (x_l - x_bar): the debiased (centred-covariate) GD step."""
    centred = batch.x - batch.x.mean(dim=1, keepdim=True)
    return torch.einsum("bld,bl->bd", centred, batch.y) / batch.x.shape[1]


def gd_predict(batch: RegressionBatch, eta: float) -> torch.Tensor:
    """(B,) y_hat = eta (1/L) sum_l y_l x_l.x_q."""
    return eta * _dot_query(gd_direction(batch), batch)


def dgd_predict(batch: RegressionBatch, eta: float) -> torch.Tensor:
    """(B,) y_hat = eta (1/L) sum_l y_l (x_l - x_bar).x_q."""
    return eta * _dot_query(dgd_direction(batch), batch)


def softmax_predict(batch: RegressionBatch, omega: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """(B,) reduced multi-head softmax attention (docs/theory/linreg.md, section 3).

    y_hat = sum_h mu_h sum_l y_l softmax_l(omega_h x_l.x_q), omega and mu of shape (H,).
    The softmax runs over the L context tokens only.
    """
    scores = torch.einsum("bld,bd->bl", batch.x, batch.xq)
    weights = torch.softmax(omega[:, None, None] * scores, dim=-1)
    return torch.einsum("h,hbl,bl->b", mu, weights, batch.y)


@dataclass
class _RunningMoments:
    """Streaming mean and sum of squared deviations (pairwise merge of chunk statistics)."""

    count: int = 0
    mean: float = 0.0
    sum_sq_dev: float = 0.0

    def add(self, values: torch.Tensor) -> None:
        n = values.numel()
        chunk_mean = values.mean().item()
        chunk_sum_sq_dev = ((values - chunk_mean) ** 2).sum().item()
        total = self.count + n
        delta = chunk_mean - self.mean
        self.mean += delta * n / total
        self.sum_sq_dev += chunk_sum_sq_dev + delta**2 * self.count * n / total
        self.count = total

    def mean_and_stderr(self) -> tuple[float, float]:
        return self.mean, math.sqrt(self.sum_sq_dev / (self.count - 1) / self.count)


def _mc_risks(
    predictors: Mapping[str, Predictor],
    d: int,
    L: int,
    sigma2: float,
    n_samples: int,
    generator: torch.Generator,
    chunk: int,
) -> dict[str, tuple[float, float]]:
    """(mean, stderr) of the squared error of each predictor, all on the same prompts."""
    moments = {name: _RunningMoments() for name in predictors}
    remaining = n_samples
    while remaining > 0:
        batch = sample_regression(
            min(chunk, remaining), L, d, sigma2, generator, dtype=torch.float64
        )
        for name, predict in predictors.items():
            moments[name].add((predict(batch) - batch.yq) ** 2)
        remaining -= batch.yq.shape[0]
    return {name: m.mean_and_stderr() for name, m in moments.items()}


def mc_risk(
    predict: Predictor,
    d: int,
    L: int,
    sigma2: float,
    n_samples: int,
    generator: torch.Generator,
    chunk: int = 10_000,
) -> tuple[float, float]:
    """Monte-Carlo risk E(y_hat - y_q)^2 over n_samples fresh prompts: (mean, standard error).

    Prompts are drawn in float64 in chunks of at most `chunk` to bound memory.
    """
    return _mc_risks({"risk": predict}, d, L, sigma2, n_samples, generator, chunk)["risk"]


def _builtin_predictor(kind: str, params: Mapping, d: int, L: int, sigma2: float) -> Predictor:
    """Predictor of a built-in estimator at context length L (steps and weights chosen per L)."""
    if kind == "multihead":
        omega = torch.as_tensor(params["omega"], dtype=torch.float64)
        mu = torch.as_tensor(params["mu"], dtype=torch.float64)
        return lambda batch: softmax_predict(batch, omega, mu)
    if kind == "single_head":
        omega, mu = single_head_large_L_optimum(d, L, sigma2)
        omega_t = torch.tensor([omega], dtype=torch.float64)
        mu_t = torch.tensor([mu], dtype=torch.float64)
        return lambda batch: softmax_predict(batch, omega_t, mu_t)
    if kind == "gd":
        eta = plain_gd_optimal_step(d, L, sigma2)
        return lambda batch: gd_predict(batch, eta)
    if kind == "dgd":
        eta = debiased_gd_optimal_step(d, L, sigma2)
        return lambda batch: dgd_predict(batch, eta)
    if kind == "ridge":
        return lambda batch: ridge_predict(batch, sigma2 * d)
    if kind == "gd_fixed":
        return lambda batch: gd_predict(batch, float(params["eta"]))
    if kind == "dgd_fixed":
        return lambda batch: dgd_predict(batch, float(params["eta"]))
    if kind == "single_head_fixed":
        omega, mu = single_head_large_L_optimum(d, int(params["L"]), sigma2)
        omega_t = torch.tensor([omega], dtype=torch.float64)
        mu_t = torch.tensor([mu], dtype=torch.float64)
        return lambda batch: softmax_predict(batch, omega_t, mu_t)
    raise ValueError(f"unknown estimator kind {kind!r}")


EstimatorSpec = Callable[[int], Predictor] | Mapping | None


def _predictor_at_length(
    name: str, spec: EstimatorSpec, d: int, L: int, sigma2: float
) -> Predictor:
    if callable(spec):
        return spec(L)
    params = spec or {}
    return _builtin_predictor(params.get("kind", name), params, d, L, sigma2)


def risk_curves(
    L_test: Sequence[int],
    d: int,
    sigma2: float,
    estimators: Mapping[str, EstimatorSpec],
    n_samples: int,
    generator: torch.Generator,
    chunk: int = 10_000,
) -> dict:
    """Monte-Carlo risk of each estimator at each test context length.

    estimators: name -> spec, where spec is
    - None or a dict of parameters for a built-in estimator; its kind is
      spec["kind"] if given, else the name: "multihead" (needs "omega", "mu":
      lists of length H), "single_head" (large-L optimum at each L), "gd" and
      "dgd" (optimal finite-L step at each L), "ridge" (lambda = sigma2 d),
      "gd_fixed" and "dgd_fixed" (one fixed step "eta" at every L), "single_head_fixed"
      (the large-L optimum of one length "L" at every L);
    - or a callable L -> predictor.
    All estimators see the same n_samples prompts at a given L (common random
    numbers), so their differences carry little Monte-Carlo error.
    Returns {"L_test": [...], "risk": {name: [...]}, "stderr": {name: [...]}}.
    """
    risk = {name: [] for name in estimators}
    stderr = {name: [] for name in estimators}
    for L in L_test:
        predictors = {
            name: _predictor_at_length(name, spec, d, L, sigma2)
            for name, spec in estimators.items()
        }
        for name, (mean, err) in _mc_risks(
            predictors, d, L, sigma2, n_samples, generator, chunk
        ).items():
            risk[name].append(mean)
            stderr[name].append(err)
    return {"L_test": list(L_test), "risk": risk, "stderr": stderr}
