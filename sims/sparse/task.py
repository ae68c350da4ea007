"""In-context sparse linear regression tasks (docs/theory/sparse.md).

Chen, Zhao, Zou, "How Transformers Utilize Multi-Head Attention in In-Context
Learning? A Case Study on Sparse Linear Regression" (NeurIPS 2024,
arXiv 2408.04532): x ~ N(0, I_d); beta is s-sparse with a uniformly random
support and N(0, 1) values on it; y = beta.x + eps, eps ~ N(0, sigma2). The
query label y_q is noisy too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SparseBatch:
    """One batch of B prompts with n context examples each.

    - x: (B, n, d) context covariates
    - y: (B, n) context labels
    - xq: (B, d) query covariate
    - yq: (B,) noisy query label
    - beta: (B, d) task vectors, zero off the support
    - support: (B, d) bool, exactly s True entries per row
    """

    x: torch.Tensor
    y: torch.Tensor
    xq: torch.Tensor
    yq: torch.Tensor
    beta: torch.Tensor
    support: torch.Tensor


def sample_support(
    batch: int, d: int, s: int, generator: torch.Generator, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """(batch, d) bool mask of a uniformly random subset of size exactly s per row."""
    if not 0 <= s <= d:
        raise ValueError(f"need 0 <= s <= d, got s={s}, d={d}")
    keys = torch.rand((batch, d), generator=generator, dtype=torch.float64, device=device)
    ranks = keys.argsort(dim=-1)
    support = torch.zeros((batch, d), dtype=torch.bool, device=device)
    return support.scatter(-1, ranks[:, :s], True)


def sample_sparse(
    batch: int,
    n: int,
    d: int,
    s: int,
    sigma2: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> SparseBatch:
    """Draw `batch` independent prompts of n examples in dimension d with s-sparse beta."""
    x_all = torch.randn((batch, n + 1, d), generator=generator, dtype=dtype, device=device)
    support = sample_support(batch, d, s, generator, device)
    values = torch.randn((batch, d), generator=generator, dtype=dtype, device=device)
    beta = torch.where(support, values, torch.zeros_like(values))
    noise = torch.randn((batch, n + 1), generator=generator, dtype=dtype, device=device)
    y_all = torch.einsum("bnd,bd->bn", x_all, beta) + sigma2**0.5 * noise
    return SparseBatch(
        x=x_all[:, :n], y=y_all[:, :n], xq=x_all[:, n], yq=y_all[:, n], beta=beta, support=support
    )
