"""One-layer multi-head softmax attention for in-context linear regression (docs/theory/linreg.md, section 2).

No residual, no LayerNorm, no MLP. Per head h, with tokens z in R^(d+1):

    y_hat = sum_h OV_h . sum_l z_l softmax_l(z_l^T KQ_h z_q)

(the softmax runs over the L context tokens, not over the query). Two
parameterisations of the same function:
- "merged": KQ (H, d+1, d+1), OV (H, d+1) are the weights;
- "factored": Q, K, V (H, d+1, d+1) and O (H, d+1), head dimension d+1,
  scores (Q z_q).(K z_l) / sqrt(d+1), output O . (V sum_l z_l a_l); so
  KQ = K^T Q / sqrt(d+1) and OV = V^T O.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..weights import NamedWeights

WEIGHT_SHAPES = {
    "merged": {"KQ": "HDD", "OV": "HD"},
    "factored": {"Q": "HDD", "K": "HDD", "V": "HDD", "O": "HD"},
}


def effective_weights(weights: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Either parameterisation -> (KQ (..., H, D, D), OV (..., H, D)), D = d + 1."""
    if "KQ" in weights:
        return weights["KQ"], weights["OV"]
    Q, K, V, O = (weights[n] for n in "QKVO")
    kq = K.transpose(-1, -2) @ Q / math.sqrt(Q.shape[-1])
    ov = (V.transpose(-1, -2) @ O.unsqueeze(-1)).squeeze(-1)
    return kq, ov


def project(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reduced parameters of a network: omega_h = tr(KQ_h[:d, :d]) / d, mu_h = OV_h[d].

    This is the one observable function used on both sides: on network weights,
    and on reduced-model states through their lift. Returns (..., H) tensors.
    """
    kq, ov = effective_weights(weights)
    d = kq.shape[-1] - 1
    omega = torch.diagonal(kq[..., :d, :d], dim1=-2, dim2=-1).sum(-1) / d
    return {"omega": omega, "mu": ov[..., d]}


def pattern_metrics(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-head pattern metrics (docs/linreg-extensions.md), each (..., H).

    - kq_diag_ratio: |diag(KQ_xx)| / |KQ_xx|_F (1 for a multiple of a diagonal)
    - kq_diag_var: variance of diag(KQ_xx) / mean(diag(KQ_xx))^2 (0 when homogeneous)
    - ov_last_ratio: |OV[d]| / |OV| (1 when only the label entry is used)
    """
    kq, ov = effective_weights(weights)
    d = kq.shape[-1] - 1
    block = kq[..., :d, :d]
    diag = torch.diagonal(block, dim1=-2, dim2=-1)
    return {
        "kq_diag_ratio": diag.norm(dim=-1) / block.flatten(-2).norm(dim=-1),
        "kq_diag_var": diag.var(dim=-1, unbiased=False) / diag.mean(-1) ** 2,
        "ov_last_ratio": ov[..., d].abs() / ov.norm(dim=-1),
    }


ACTIVE_FRACTION = 0.1


def active_heads(mu: torch.Tensor, fraction: float = ACTIVE_FRACTION) -> torch.Tensor:
    """(..., H) bool: head h is active when |mu_h| >= fraction x max_h' |mu_h'| (and > 0).

    A dummy head (H > 2; docs/theory/linreg.md, section 5) keeps a label weight far below the
    active ones; the default fraction 0.1 separates the two.
    """
    size = mu.abs()
    return (size >= fraction * size.amax(dim=-1, keepdim=True)) & (size > 0)


def head_observables(weights: dict[str, torch.Tensor],
                     fraction: float = ACTIVE_FRACTION) -> dict[str, torch.Tensor]:
    """What a trained network records per head, each (..., H): omega and mu (`project`),
    the pattern metrics, and `active` (1.0 or 0.0, `active_heads`)."""
    reduced = project(weights)
    return {**reduced, **pattern_metrics(weights),
            "active": active_heads(reduced["mu"], fraction).to(reduced["mu"].dtype)}


def pattern_formed(observed: dict, threshold: float) -> bool:
    """Whether every active head has kq_diag_ratio > threshold and ov_last_ratio > threshold.

    observed: one record of `head_observables` ((H,) arrays or tensors)."""
    active = np.asarray(observed["active"], dtype=bool)
    ratios = [np.asarray(observed[k])[active] for k in ("kq_diag_ratio", "ov_last_ratio")]
    return bool(active.any() and all((r > threshold).all() for r in ratios))


class SoftmaxAttentionRegressor(NamedWeights):
    """H-head softmax attention predicting the query label.

    Args:
    - d: covariate dimension (tokens have d + 1 entries)
    - heads: H
    - param: "merged" or "factored"
    - dtype: parameter dtype
    Parameters are created at zero; set them with `load` (e.g. from a lift) or
    `init_normal`.
    """

    def __init__(self, d: int, heads: int, param: str = "merged", dtype=torch.float64):
        super().__init__()
        size = {"H": heads, "D": d + 1}
        for name, dims in WEIGHT_SHAPES[param].items():
            shape = tuple(size[c] for c in dims)
            self.register_parameter(name, nn.Parameter(torch.zeros(shape, dtype=dtype)))
        self.d, self.heads, self.param = d, heads, param

    @torch.no_grad()
    def init_normal(self, std: float, generator: torch.Generator) -> None:
        for p in self.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L + 1, d + 1), the query last -> y_hat (B,)."""
        kq, ov = effective_weights(self.weights())
        mixed = attend(kq, tokens)
        return mixed.reshape(mixed.shape[0], -1) @ ov.reshape(-1)


def attend(kq: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-head attention average of the context tokens, (B, H, D).

    kq: (H, D, D); tokens: (B, L + 1, D), the query last; head h weighs context token
    z_l by softmax_l(z_l^T KQ_h z_q) over the L context tokens. Plain matmul and bmm:
    the same products through einsum spend 8-18% more on a training step at H = 8 in
    their per-call permutes and views."""
    context, query = tokens[:, :-1], tokens[:, -1]
    heads, width = kq.shape[0], kq.shape[-1]
    keys = (query @ kq.reshape(heads * width, width).T).view(-1, heads, width)  # KQ_h z_q
    attn = torch.softmax(torch.bmm(keys, context.transpose(1, 2)), dim=-1)  # (B, H, L)
    return torch.bmm(attn, context)
