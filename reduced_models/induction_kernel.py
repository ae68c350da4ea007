"""The simplified induction network's logit table as a function of its weights (w, p, a),
with its gradient in closed form (docs/theory/induction.md, section 2).

T(z, y) = a k(z, y), k = sum_S p_S prod_(h in S) <u_h(z), u_h(y)>, u_h(y) = v_h(y) / |v_h(y)|,
v_h(y) = sum_k softmax_k(w_h) onehot(token of pattern y at head h's k-th offset).
The gradient of any scalar of T (`LogitTable.vjp`) is the chain of the three layers by
hand: the products of the selector, the inner products of the copier features, the norm
and the softmax (`CopierFeatures.similarity_vjp`). Autograd gives the same numbers (tests/test_induction_gradients.py) at
several times the cost on these small tensors, where each operation's overhead dominates.
"""

from __future__ import annotations

import torch


def copier_features(w: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Normalised copier outputs u_h(y) = v_h(y) / |v_h(y)| of every window pattern.

    w: (..., H, M) logits; inputs: (H, P, M, vocab) from `InductionShape.copier_inputs`.
    v_h(y) = sum_k softmax_k(w_h) onehot(y at head h's k-th offset); u = 0 where v = 0
    (no token in the window). Returns (..., H, P, vocab).
    """
    v = torch.einsum("...hk,hpke->...hpe", torch.softmax(w, -1), inputs)
    norm2 = (v**2).sum(-1, keepdim=True)
    nonzero = norm2 > 0
    return torch.where(nonzero, v * torch.where(nonzero, norm2, 1.0).rsqrt(), 0.0)


def head_similarity(w: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """(..., H, P, P) <u_h(z), u_h(y)> between all pairs of window patterns."""
    u = copier_features(w, inputs)
    return torch.einsum("...hpe,...hqe->...hpq", u, u)


def selector_kernel(similarity: torch.Tensor, p: torch.Tensor,
                    sets: list[tuple[int, ...]]) -> torch.Tensor:
    """Feature kernel k(z, y) = sum_S p_S prod_(h in S) similarity_h(z, y).

    similarity: (..., H, P, P); p: (..., n_sets); sets of 1-indexed heads (the empty
    set's product is 1). Returns (..., P, P).
    """
    terms = []
    for i, heads in enumerate(sets):
        product = torch.ones_like(similarity[..., 0, :, :])
        for h in heads:
            product = product * similarity[..., h - 1, :, :]
        terms.append(p[..., i, None, None] * product)
    return torch.stack(terms, 0).sum(0)


def logit_table(w: torch.Tensor, p: torch.Tensor, a: torch.Tensor, inputs: torch.Tensor,
                sets: list[tuple[int, ...]]) -> torch.Tensor:
    """(B, P, P) classifier logits a k(z, y) from w (B, H, M), p (B, n_sets), a (B,)."""
    return a[:, None, None] * selector_kernel(head_similarity(w, inputs), p, sets)


class CopierFeatures:
    """u = copier_features(w, inputs) (..., H, P, vocab) and its similarity u u^T
    (..., H, P, P), with what the gradient through them reuses; w (..., H, M)."""

    def __init__(self, w: torch.Tensor, inputs: torch.Tensor):
        H, P, M, vocab = inputs.shape
        self.s = torch.softmax(w, -1)
        self.rows = inputs.permute(0, 2, 1, 3).reshape(H, M, P * vocab)   # onehot_k(y)_e
        v = (self.s[..., None, :] @ self.rows).reshape(*w.shape[:-1], P, vocab)
        norm2 = (v**2).sum(-1, keepdim=True)
        nonzero = norm2 > 0
        # 1 / |v|, 0 where v = 0 (there u = 0 and so is its gradient)
        self.scale = torch.where(nonzero, torch.where(nonzero, norm2, 1.0).rsqrt(), 0.0)
        self.u = v * self.scale
        self.similarity = self.u @ self.u.transpose(-1, -2)

    def similarity_vjp(self, grad_similarity: torch.Tensor) -> torch.Tensor:
        """(..., H, M) gradient w.r.t. w of sum(grad_similarity * similarity),
        grad_similarity (..., H, P, P).

        With G_h = grad_similarity_h: d/du_h(z) = sum_y (G_h + G_h^T)[z, y] u_h(y); through
        the norm d/dv = (d/du - u <u, d/du>) / |v| (0 where v = 0); through v
        d/ds_k = sum_(y, e) d/dv(y)_e onehot_k(y)_e; through s = softmax(w)
        d/dw = s (d/ds - <s, d/ds>).
        """
        u = self.u
        grad_u = (grad_similarity + grad_similarity.transpose(-1, -2)) @ u
        grad_v = (grad_u - u * (u * grad_u).sum(-1, keepdim=True)) * self.scale
        grad_s = (self.rows @ grad_v.flatten(-2)[..., None])[..., 0]
        return self.s * (grad_s - (self.s * grad_s).sum(-1, keepdim=True))


def _factor_index(sets: list[tuple[int, ...]]) -> torch.Tensor:
    """(D, n_sets) int64: row j holds the j-th head of every set (1-indexed), 0 (a factor
    1) where a set has fewer than D heads."""
    depth = max(1, max(len(heads) for heads in sets))
    return torch.tensor([[heads[j] if j < len(heads) else 0 for heads in sets]
                         for j in range(depth)], dtype=torch.int64)


class LogitTable:
    """T = a k (B, P, P) of weights w (B, H, M), p (B, n_sets), a (B,) (`logit_table`),
    with what its gradient reuses. The selector's products over the sets are D gathers
    of the heads' similarities (a few operations whatever the number of sets)."""

    def __init__(self, w: torch.Tensor, p: torch.Tensor, a: torch.Tensor,
                 inputs: torch.Tensor, sets: list[tuple[int, ...]]):
        self.p, self.a, self.index = p, a, _factor_index(sets)
        self.features = CopierFeatures(w, inputs)
        similarity = self.features.similarity                               # (B, H, P, P)
        self.padded = torch.cat([torch.ones_like(similarity[:, :1]), similarity], 1)
        self.factors = [self.padded.index_select(1, row) for row in self.index]
        self.products = self.factors[0]                                     # (B, n_sets, P, P)
        for factor in self.factors[1:]:
            self.products = self.products * factor
        self.kernel = (p[:, None, :] @ self.products.flatten(2)).view(similarity.shape[0],
                                                                      *similarity.shape[2:])
        self.table = a[:, None, None] * self.kernel

    def vjp(self, grad_table: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"w": (B, H, M), "p": (B, n_sets), "a": (B,)} gradients of
        sum(grad_table * T), grad_table (B, P, P)."""
        grad_a = (grad_table * self.kernel).sum((-1, -2))
        grad_kernel = self.a[:, None, None] * grad_table
        grad_p = (self.products.flatten(2) @ grad_kernel.flatten(1)[:, :, None])[..., 0]
        weighted = self.p[:, :, None, None] * grad_kernel[:, None]           # (B, n_sets, P, P)
        grad_padded = torch.zeros_like(self.padded)
        for j, row in enumerate(self.index):
            term = weighted
            for k, factor in enumerate(self.factors):
                if k != j:
                    term = term * factor
            grad_padded.index_add_(1, row, term)
        return {"w": self.features.similarity_vjp(grad_padded[:, 1:]), "p": grad_p,
                "a": grad_a}
