"""The simplified induction network's logit table as a function of its weights (w, p, a),
with its gradient in closed form (docs/theory/induction.md, section 2).

T(z, y) = a k(z, y), k = sum_S p_S prod_(h in S) <u_h(z), u_h(y)>, u_h(y) = v_h(y) / |v_h(y)|,
v_h(y) = sum_k softmax_k(w_h) onehot(token of pattern y at head h's k-th offset).
The gradient of any scalar of T (`LogitTable.vjp`) is the chain of the three layers by
hand: the products of the selector, the inner products of the copier features, the norm
and the softmax. Autograd gives the same numbers (tests/test_induction_gradients.py) at
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


def similarity_vjp(w: torch.Tensor, inputs: torch.Tensor,
                   grad_similarity: torch.Tensor) -> torch.Tensor:
    """(..., H, M) gradient w.r.t. w of sum(grad_similarity * head_similarity(w, inputs)),
    grad_similarity (..., H, P, P) (`CopierFeatures.similarity_vjp`)."""
    return CopierFeatures(w, inputs).similarity_vjp(grad_similarity)


def selector_kernel_vjp(similarity: torch.Tensor, p: torch.Tensor, sets: list[tuple[int, ...]],
                        grad_kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of sum(grad_kernel * selector_kernel(similarity, p, sets)), grad_kernel
    (..., P, P) broadcasting to similarity's batch: w.r.t. similarity (..., H, P, P) and
    w.r.t. p (..., n_sets).

    d/dp_S = sum(grad_kernel prod_(h in S) similarity_h);
    d/dsimilarity_h = sum_(S contains h) p_S grad_kernel prod_(h' in S, h' != h) similarity_h'.
    """
    grad_similarity = torch.zeros_like(similarity)
    grad_p = []
    for i, heads in enumerate(sets):
        factors = [similarity[..., h - 1, :, :] for h in heads]
        product = grad_kernel
        for factor in factors:
            product = product * factor
        grad_p.append(product.sum((-1, -2)))
        weighted = p[..., i, None, None] * grad_kernel
        for j, h in enumerate(heads):
            term = weighted
            for k, factor in enumerate(factors):
                if k != j:
                    term = term * factor
            grad_similarity[..., h - 1, :, :] += term
    return grad_similarity, torch.stack(grad_p, -1)


class LogitTable:
    """T = a k (B, P, P) of weights w (B, H, M), p (B, n_sets), a (B,) (`logit_table`),
    with what its gradient reuses."""

    def __init__(self, w: torch.Tensor, p: torch.Tensor, a: torch.Tensor,
                 inputs: torch.Tensor, sets: list[tuple[int, ...]]):
        self.p, self.a, self.sets = p, a, sets
        self.features = CopierFeatures(w, inputs)
        self.similarity = self.features.similarity
        self.kernel = selector_kernel(self.similarity, p, sets)
        self.table = a[:, None, None] * self.kernel

    def vjp(self, grad_table: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"w": (B, H, M), "p": (B, n_sets), "a": (B,)} gradients of
        sum(grad_table * T), grad_table (B, P, P)."""
        grad_a = (grad_table * self.kernel).sum((-1, -2))
        grad_similarity, grad_p = selector_kernel_vjp(
            self.similarity, self.p, self.sets, self.a[:, None, None] * grad_table)
        return {"w": self.features.similarity_vjp(grad_similarity), "p": grad_p, "a": grad_a}
