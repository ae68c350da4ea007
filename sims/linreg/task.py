"""In-context linear regression tasks (docs/theory/linreg.md, section 1).

x_1..x_L, x_q ~ N(0, Sigma) in R^d; beta ~ N(0, I_d / d); y = beta.x + eps,
eps ~ N(0, sigma2), the query label y_q noisy too. Tokens z_l = (x_l, y_l) and
the query token z_q = (x_q, 0), all in R^(d+1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import COVARIANCES


@dataclass
class RegressionBatch:
    """One batch of B prompts.

    - x: (B, L, d) context covariates
    - y: (B, L) context labels
    - xq: (B, d) query covariate
    - yq: (B,) noisy query label
    - beta: (B, d) task vectors
    """

    x: torch.Tensor
    y: torch.Tensor
    xq: torch.Tensor
    yq: torch.Tensor
    beta: torch.Tensor

    def tokens(self) -> torch.Tensor:
        """(B, L + 1, d + 1): context tokens (x_l, y_l), then the query (x_q, 0)."""
        ctx = torch.cat([self.x, self.y.unsqueeze(-1)], dim=-1)
        query = torch.cat([self.xq, torch.zeros_like(self.yq).unsqueeze(-1)], dim=-1)
        return torch.cat([ctx, query.unsqueeze(1)], dim=1)


def toeplitz_covariance(d: int, rho: float, dtype=torch.float64) -> torch.Tensor:
    """(d, d) covariance Sigma_ij = rho^|i - j|."""
    idx = torch.arange(d)
    return torch.tensor(rho, dtype=dtype) ** (idx[:, None] - idx[None, :]).abs().to(dtype)


def covariance_matrix(kind: str, d: int, rho: float) -> torch.Tensor | None:
    """Sigma of the covariates: None for "identity" (I_d), `toeplitz_covariance` for "toeplitz"."""
    if kind == "identity":
        return None
    if kind == "toeplitz":
        return toeplitz_covariance(d, rho)
    raise ValueError(f"covariance must be one of {COVARIANCES}, got {kind!r}")


def sample_regression(
    batch: int,
    L: int,
    d: int,
    sigma2: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    covariance: torch.Tensor | None = None,
) -> RegressionBatch:
    """Draw `batch` independent prompts of context length L (docs/theory/linreg.md, section 1).

    covariance: optional (d, d) Sigma of the covariates (default I_d).
    """
    shape = (batch, L + 1, d)
    x_all = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if covariance is not None:
        chol = torch.linalg.cholesky(covariance.to(dtype=dtype, device=device))
        x_all = x_all @ chol.T
    beta = torch.randn((batch, d), generator=generator, dtype=dtype, device=device) / d**0.5
    noise = torch.randn((batch, L + 1), generator=generator, dtype=dtype, device=device)
    y_all = torch.einsum("bld,bd->bl", x_all, beta) + sigma2**0.5 * noise
    return RegressionBatch(
        x=x_all[:, :L], y=y_all[:, :L], xq=x_all[:, L], yq=y_all[:, L], beta=beta
    )
