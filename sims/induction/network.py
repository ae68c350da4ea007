"""The simplified induction-head transformer TF(M, H, d, D) (docs/theory/induction.md, section 2; arXiv 2409.10559).

Parameters (the reduced state, see reduced_models/induction.py):
- w (H, M): copier, head h mixes the previous M positions with weights
  softmax(w_h): v_h(i) = sum_k softmax_k(w_h) x_(i-k) (x_(i-k) = 0 before x_1),
  then u_h = v_h / |v_h| (u_h = 0 if v_h = 0);
- C (n_sets,): selector over candidate sets S of heads (|S| <= D), c_S = C_S^2,
  p_S = c_S / sum c; kernel k(i, l) = sum_S p_S prod_(h in S) <u_h(i), u_h(l)>;
- a (1,): classifier, y_hat = sum_(l <= L) softmax_l(a k(L+1, l)) x_l.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from reduced_models import induction as theory

from ..weights import NamedWeights


def project(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The observables of a network or of a lifted reduced state:
    w (..., H, M), p (..., n_sets) = C^2 / |C|^2, a (...,), c_norm (...,) = |C|
    (conserved by gradient flow, not by discrete SGD steps)."""
    squares = weights["C"] ** 2
    total = squares.sum(-1, keepdim=True)
    return {"w": weights["w"], "p": squares / total, "a": weights["a"][..., 0],
            "c_norm": total[..., 0].sqrt()}


def shifted_windows(inputs: torch.Tensor, window: int) -> torch.Tensor:
    """(n, L + 1, vocab) one-hot inputs -> (n, M, L + 1, vocab), entry [:, k-1, i] the token
    k positions before position i (0-based; zero before the sequence starts), k = 1..M."""
    n, length, vocab = inputs.shape
    padded = torch.cat([inputs.new_zeros((n, window, vocab)), inputs[:, :-1]], 1)
    return torch.stack([padded[:, window - k : window - k + length]
                        for k in range(1, window + 1)], 1)


class SimplifiedInductionNet(NamedWeights):
    """TF(M, H, d, D) with parameters w, C, a (float64 by default), set by `load`.

    shape (keyword only): vocab, window, heads, degree and the architecture options
    (reduced_models.induction.InductionShape)."""

    BLOCKS: ClassVar[dict] = {"selector": ("C",), "copier": ("w",), "classifier": ("a",)}

    def __init__(self, *, shape: theory.InductionShape, dtype=torch.float64):
        super().__init__()
        self.shape = shape
        self.sets = shape.sets
        self.w = nn.Parameter(torch.zeros((shape.heads, shape.window), dtype=dtype))
        self.C = nn.Parameter(torch.ones(len(self.sets), dtype=dtype))
        self.a = nn.Parameter(torch.zeros(1, dtype=dtype))
        self.register_buffer("inputs", shape.copier_inputs().to(dtype), persistent=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (n, L + 1, vocab) one-hot with a zero query row -> y_hat (n, vocab).

        The direct position-by-position definition (reference for `predict_counts`).
        """
        windows = shifted_windows(inputs, self.shape.span)
        per_head = windows[:, torch.as_tensor(self.shape.offsets - 1)]     # (n, H, M, L+1, d)
        v = torch.einsum("hk,nhkie->nhie", torch.softmax(self.w, -1), per_head)
        norm2 = (v**2).sum(-1, keepdim=True)
        u = torch.where(norm2 > 0, v * torch.where(norm2 > 0, norm2, 1.0).rsqrt(), 0.0)
        similarity = torch.einsum("nhe,nhle->nhl", u[:, :, -1], u[:, :, :-1])
        p = project(self.weights())["p"]
        ones = torch.ones_like(similarity[:, 0])
        kernel = sum(p[i] * torch.stack([ones] + [similarity[:, h - 1] for h in heads], 0).prod(0)
                     for i, heads in enumerate(self.sets))
        attention = torch.softmax(self.a * kernel, -1)
        return torch.einsum("nl,nle->ne", attention, inputs[:, :-1])

    def predict_counts(self, counts: theory.WindowCounts) -> torch.Tensor:
        """The same y_hat (n, vocab) from the sequences' window counts (fast path)."""
        obs = project(self.weights())
        table = theory.logit_table(self.w[None], obs["p"][None], obs["a"][None], self.inputs,
                                   self.sets)
        return counts.predict(table)[0]

    def loss(self, counts: theory.WindowCounts | theory.TargetCounts,
             variant: str) -> torch.Tensor:
        """Scalar mean loss on the sequences of `counts` ("ce" or "logsoftmax"; TargetCounts
        hold "ce" only)."""
        obs = project(self.weights())
        return theory.network_loss(counts, self.w[None], obs["p"][None], obs["a"][None],
                                   self.inputs, self.sets, variant)[0]
