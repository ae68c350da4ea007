"""One-layer multi-head linear attention for in-context linear regression (the
length-generalisation baseline of docs/linreg-theory.md).

The weights, both parameterisations and the projection are those of
sims.linreg.network; the scores are used as attention weights directly:

    y_hat = sum_h OV_h . sum_l z_l (z_l^T KQ_h z_q) / n,   n = 1 ("sum") or L ("mean").

On the reduced manifold (KQ_h = omega_h diag(I_d, 0), OV_h = mu_h e_(d+1))
this is one plain GD step, y_hat = eta (1/L) sum_l y_l x_l.x_q with
eta = (L / n) sum_h omega_h mu_h (`gd_step`). With "sum" the step grows in
proportion to L, so a network trained at one length overshoots at longer
ones; with "mean" the step is the same at every L. Softmax attention
normalises over the context by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .config import NORMALISATIONS
from .network import SoftmaxAttentionRegressor, effective_weights


class LinearAttentionRegressor(SoftmaxAttentionRegressor):
    """H-head linear attention predicting the query label.

    Args:
    - d: covariate dimension (tokens have d + 1 entries)
    - heads: H
    - param: "merged" or "factored" (as SoftmaxAttentionRegressor)
    - normalisation: "sum" (n = 1) or "mean" (n = L)
    - dtype: parameter dtype
    """

    def __init__(self, d: int, heads: int, param: str = "merged", normalisation: str = "sum",
                 dtype=torch.float64):
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, "
                             f"got {normalisation!r}")
        super().__init__(d, heads, param, dtype=dtype)
        self.normalisation = normalisation

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L + 1, d + 1), the query last -> y_hat (B,)."""
        kq, ov = effective_weights(self.weights())
        context, query = tokens[:, :-1], tokens[:, -1]
        scores = torch.einsum("bli,hij,bj->bhl", context, kq, query)
        if self.normalisation == "mean":
            scores = scores / context.shape[1]
        mixed = torch.einsum("bhl,bli->bhi", scores, context)
        return torch.einsum("bhi,hi->b", mixed, ov)


def gd_step(omega: Sequence[float], mu: Sequence[float], L: int, normalisation: str) -> float:
    """Step eta of the plain GD predictor that linear attention at the lift of (omega, mu)
    (each (H,)) implements at context length L: (L / n) sum_h omega_h mu_h."""
    per_token = float(np.dot(omega, mu))
    return per_token * L if normalisation == "sum" else per_token
