"""Reduced model of preprocess-then-optimize written as a linear-attention stack.

docs/theory/sparse.md (Chen, Zhao, Zou, NeurIPS 2024, arXiv 2408.04532): layer 1
reweights the coordinates by the in-context correlations r = (1/n) X^T y,
later layers run GD steps on the reweighted data. Our construction (an
exact weight setting of sims.sparse.network.LinearAttentionStack, weight
names KQ and OV of shape (layers, H, D, D), D = d + H + 1, channels (x, u, y)):

- layer 1, head h, owns the coordinate block C_h = {k : k mod H = h}:
  KQ[0, h] = alpha_h diag(1 on C_h), OV[0, h] = e_(u_h) e_y^T, so it writes
  the feature u_h(x) = alpha_h r_(C_h) . x_(C_h) into its free channel;
- layer l >= 2, head 1: KQ[l, 0] = eta_(l-1) diag(I_(d+H), 0),
  OV[l, 0] = - e_y e_y^T: one GD step of size eta on the features (x, u),
  the residual kept in the label channel; other heads zero.

The predictor is y_hat = x_q . beta_hat with beta_hat = the GD iterate from 0,

    beta <- beta + eta_l M (c - S beta),   M = I + sum_h alpha_h^2 r_h r_h^T,

(S = X^T X / n, c = r, r_h = r on C_h, zero elsewhere): GD preconditioned
by the correlations. With H = d heads, M = diag(1 + alpha_k^2 r_k^2), a
coordinate reweighting; fewer heads reweight coarser blocks.

State: alpha (H,), eta (layers - 1,); the lift is affine (the value maps are
constants), with metric G = |C_h| for alpha_h and d + H for each eta.
Loss: the population MSE E (y_q - y_hat)^2 = sigma2 + E |beta_hat - beta|^2
(the query integrated exactly), by Monte Carlo over a fixed sample of prompts
(common random numbers), as a TorchLoss (gradient by autograd).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Manifold, Param, ReducedModel, TorchLoss


def blocks(d: int, heads: int) -> list[list[int]]:
    """Coordinates owned by each layer-1 head: block h = {k : k mod heads = h}."""
    if not 1 <= heads <= d:
        raise ValueError(f"need 1 <= heads <= d, got heads={heads}, d={d}")
    return [list(range(h, d, heads)) for h in range(heads)]


def block_indicator(d: int, heads: int, dtype=torch.float64) -> torch.Tensor:
    """(d, H) one-hot: entry (k, h) = 1 when coordinate k is in block h."""
    out = torch.zeros((d, heads), dtype=dtype)
    for h, block in enumerate(blocks(d, heads)):
        out[block, h] = 1.0
    return out


def manifold(d: int, layers: int, heads: int) -> Manifold:
    """Affine lift of (alpha, eta) into the linear stack's KQ, OV (layers, H, D, D)."""
    if layers < 2:
        raise ValueError(f"need at least 2 layers (preprocess, then a GD step), got {layers}")
    D = d + heads + 1
    owned = blocks(d, heads)

    def lift(s):
        kq = np.zeros((layers, heads, D, D), dtype=object)
        ov = np.zeros((layers, heads, D, D), dtype=object)
        for h, block in enumerate(owned):
            for k in block:
                kq[0, h, k, k] = s["alpha"][h]
            ov[0, h, d + h, D - 1] = 1
        for layer in range(1, layers):
            for k in range(d + heads):
                kq[layer, 0, k, k] = s["eta"][layer - 1]
            ov[layer, 0, D - 1, D - 1] = -1
        return {"KQ": kq, "OV": ov}

    return Manifold([Param("alpha", (heads,), "preprocessing scale of layer-1 head h"),
                     Param("eta", (layers - 1,), "GD step size of layer l >= 2")], lift)


def observables(symbols: dict) -> dict:
    return {"alpha": symbols["alpha"], "eta": symbols["eta"]}


def block_preconditioned_gd(gram: torch.Tensor, corr: torch.Tensor, alpha: torch.Tensor,
                            eta: torch.Tensor) -> torch.Tensor:
    """beta_hat of the (alpha, eta) predictor from the moments S (N, d, d), c = r (N, d).

    K = eta.shape[-1] steps beta <- beta + eta_l M (c - S beta) from 0, with
    M = I + sum_h alpha_h^2 r_h r_h^T (r_h: r on block C_h, zero elsewhere), for
    each of B states alpha (B, H), eta (B, K): returns (B, N, d).
    """
    indicator = block_indicator(gram.shape[-1], alpha.shape[-1]).to(alpha)
    weight = alpha**2  # (B, H)
    beta = torch.zeros(alpha.shape[0], *corr.shape, dtype=alpha.dtype, device=corr.device)
    for step in range(eta.shape[-1]):
        grad = corr - torch.einsum("Nde,bNe->bNd", gram, beta)
        boost = ((corr * grad) @ indicator * weight[:, None]) @ indicator.T
        beta = beta + eta[:, step, None, None] * (grad + corr * boost)
    return beta


class PromptSample:
    """A fixed Monte-Carlo sample of prompts, kept as moments (common random numbers).

    From x (N, n, d), y (N, n), beta (N, d) and the label-noise variance sigma2:
    gram S = X^T X / n (N, d, d), corr c = X^T y / n (N, d), beta, sigma2.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, sigma2: float):
        n = x.shape[-2]
        self.gram = (x.transpose(-1, -2) @ x / n).to(torch.float64)
        self.corr = (torch.einsum("Nnd,Nn->Nd", x, y) / n).to(torch.float64)
        self.beta = beta.to(torch.float64)
        self.sigma2 = float(sigma2)

    def estimate(self, alpha: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """(B, H) alpha, (B, K) eta -> (B, N, d) beta_hat of the reduced predictor."""
        return block_preconditioned_gd(self.gram, self.corr, alpha, eta)

    def loss(self, alpha: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """(B,) population MSE sigma2 + mean_N |beta_hat - beta|^2."""
        error = self.estimate(alpha, eta) - self.beta
        return self.sigma2 + (error**2).sum(-1).mean(-1)


def population_model(d: int, layers: int, heads: int, sample: PromptSample) -> ReducedModel:
    """Gradient flow of the Monte-Carlo population loss on the (alpha, eta) manifold."""
    loss = TorchLoss(lambda obs, hyper: sample.loss(obs["alpha"], obs["eta"]),
                     f"population MSE of block-reweighted GD (alpha, eta), Monte Carlo over "
                     f"{sample.beta.shape[0]} prompts")
    return ReducedModel(manifold(d, layers, heads), observables, loss)


# ---------------------------------------------------------------------------
# The extended manifold: every weight the symmetries of the task allow


def extended_manifold(d: int, layers: int, heads: int) -> Manifold:
    """Affine lift of the symmetric weights of the linear stack (the extended manifold).

    The prompt distribution is invariant under flipping the sign of one coordinate
    (x_k, beta_k -> -x_k, -beta_k) and under permuting coordinates; the weights left
    fixed by the sign flips and by the permutations inside each block C_g (with the
    lift's constant value maps and label-free KQ) are:
    - alpha (H, H): layer 1, head h, the diagonal KQ entries on block C_g, so head h
      writes u_h(x) = sum_g alpha[h, g] r_(C_g).x_(C_g);
    - eta_x (layers - 1, H): layer l >= 2, head 1, the diagonal KQ entries on the x
      coordinates of block C_g (the GD step of those coordinates);
    - eta_u (layers - 1, H, H): layer l >= 2, head 1, the KQ block on the u channels.
    Gradient flow keeps weights fixed by a symmetry of the loss fixed, so the population
    flow of the full stack started here stays here. The (alpha, eta) manifold is the
    sub-manifold alpha diagonal, eta_x[l] = eta_l 1, eta_u[l] = eta_l I.
    Metric: |C_g| for alpha[h, g] and eta_x[l, g], 1 for each eta_u entry.
    """
    if layers < 2:
        raise ValueError(f"need at least 2 layers (preprocess, then a GD step), got {layers}")
    D = d + heads + 1
    owned = blocks(d, heads)

    def lift(s):
        kq = np.zeros((layers, heads, D, D), dtype=object)
        ov = np.zeros((layers, heads, D, D), dtype=object)
        for h in range(heads):
            for g, block in enumerate(owned):
                for k in block:
                    kq[0, h, k, k] = s["alpha"][h, g]
            ov[0, h, d + h, D - 1] = 1
        for layer in range(1, layers):
            for g, block in enumerate(owned):
                for k in block:
                    kq[layer, 0, k, k] = s["eta_x"][layer - 1, g]
            kq[layer, 0, d:d + heads, d:d + heads] = s["eta_u"][layer - 1]
            ov[layer, 0, D - 1, D - 1] = -1
        return {"KQ": kq, "OV": ov}

    return Manifold([
        Param("alpha", (heads, heads), "layer 1: head h's scale of block C_g"),
        Param("eta_x", (layers - 1, heads), "layer l >= 2: GD step of the x coordinates in C_g"),
        Param("eta_u", (layers - 1, heads, heads), "layer l >= 2: KQ block on the features u"),
    ], lift)


def per_coordinate_weights(d: int, layers: int, eta_x: float, eta_u: float,
                           dtype=torch.float64) -> dict[str, torch.Tensor]:
    """KQ, OV (layers, d, D, D) of the stack with one layer-1 head per coordinate: the
    extended-manifold point alpha = I, eta_x[l] = eta_x 1, eta_u[l] = eta_u I with H = d,
    written directly (the symbolic lift has O(d^4) entries). Head h of layer 1 writes
    u_h = r_h x_h; each later layer steps by eta_x on x and eta_u on u."""
    D = d + d + 1
    kq = torch.zeros((layers, d, D, D), dtype=dtype)
    ov = torch.zeros_like(kq)
    coords = torch.arange(d)
    kq[0, coords, coords, coords] = 1.0
    ov[0, coords, d + coords, D - 1] = 1.0
    kq[1:, 0, coords, coords] = eta_x
    kq[1:, 0, d + coords, d + coords] = eta_u
    ov[1:, 0, D - 1, D - 1] = -1.0
    return {"KQ": kq, "OV": ov}


def extended_observables(symbols: dict) -> dict:
    return {k: symbols[k] for k in ("alpha", "eta_x", "eta_u")}


def extend_state(alpha: np.ndarray, eta: np.ndarray, d: int) -> dict[str, np.ndarray]:
    """The (alpha (H,), eta (layers - 1,)) point as a state of the extended manifold."""
    alpha, eta = np.asarray(alpha, dtype=np.float64), np.asarray(eta, dtype=np.float64)
    heads = alpha.shape[0]
    return {"alpha": np.diag(alpha), "eta_x": np.repeat(eta[:, None], heads, axis=1),
            "eta_u": eta[:, None, None] * np.eye(heads)}


def extended_estimate(sample: PromptSample, alpha: torch.Tensor, eta_x: torch.Tensor,
                      eta_u: torch.Tensor) -> torch.Tensor:
    """(B, H, H) alpha, (B, K, H) eta_x, (B, K, H, H) eta_u -> (B, N, d) beta_hat.

    Features f = (x, W^T x), W[k, h] = alpha[h, g(k)] r_k (g(k) the block of k); a layer
    with KQ block K on f moves the feature weights v by K^T (A c - A S A^T v), A = [I; W^T],
    so beta = A^T v moves by P (c - S beta), P = diag(eta_x[g(k)]) + W eta_u^T W^T.
    """
    indicator = block_indicator(sample.gram.shape[-1], alpha.shape[-1]).to(alpha)  # (d, H)
    # W (B, N, d, H): r_k alpha[h, g(k)]
    W = sample.corr[None, :, :, None] * (indicator @ alpha.transpose(-1, -2))[:, None]
    beta = torch.zeros(alpha.shape[0], *sample.corr.shape, dtype=alpha.dtype)
    for step in range(eta_x.shape[-2]):
        grad = sample.corr - torch.einsum("Nde,bNe->bNd", sample.gram, beta)
        coordinate = (eta_x[:, step] @ indicator.T)[:, None] * grad
        feature = torch.einsum("bNdh,bgh,bNg->bNd", W, eta_u[:, step],
                               torch.einsum("bNdg,bNd->bNg", W, grad))
        beta = beta + coordinate + feature
    return beta


def extended_model(d: int, layers: int, heads: int, sample: PromptSample) -> ReducedModel:
    """Gradient flow of the Monte-Carlo population loss on the extended manifold."""

    def loss(obs, hyper):
        error = extended_estimate(sample, obs["alpha"], obs["eta_x"], obs["eta_u"]) - sample.beta
        return sample.sigma2 + (error**2).sum(-1).mean(-1)

    return ReducedModel(extended_manifold(d, layers, heads), extended_observables,
                        TorchLoss(loss, "population MSE of the symmetric linear stack (alpha, "
                                  f"eta_x, eta_u), Monte Carlo over {sample.beta.shape[0]} "
                                  "prompts"))


def start_state(heads: int, layers: int, alpha: float, eta: float) -> dict[str, np.ndarray]:
    """Every alpha_h = alpha, every eta_l = eta."""
    return {"alpha": np.full(heads, alpha), "eta": np.full(layers - 1, eta)}


def conformance_cases():
    """(id, model, hyper, start state (P,)) for the conformance suite."""
    gen = torch.Generator().manual_seed(2)
    d, n, N, s = 6, 8, 300, 2
    x = torch.randn((N, n, d), generator=gen, dtype=torch.float64)
    beta = torch.zeros((N, d), dtype=torch.float64)
    beta[:, :s] = torch.randn((N, s), generator=gen, dtype=torch.float64)
    y = torch.einsum("Nnd,Nd->Nn", x, beta) + 0.5 * torch.randn((N, n), generator=gen,
                                                                dtype=torch.float64)
    sample = PromptSample(x, y, beta, 0.25)
    for layers, heads in ((2, 1), (3, 2)):
        model = population_model(d, layers, heads, sample)
        start = model.manifold.pack(start_state(heads, layers, 0.6, 0.1))
        start = start + 0.05 * torch.arange(start.shape[0], dtype=torch.float64)
        yield f"sparse-L{layers}-H{heads}-population", model, {}, start
