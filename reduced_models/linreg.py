"""Reduced models of multi-head softmax attention on in-context linear regression.

docs/theory/linreg.md (He, Pan, Chen, Yang, ICML 2025, arXiv 2503.12734): trained heads
become KQ_h = omega_h diag(I_d, 0) and OV_h = mu_h e_(d+1), so the network is
the reduced predictor

    y_hat = sum_h mu_h sum_l y_l softmax_l(omega_h x_l . x_q).

Two parameterisations of the same manifold (weight names match
sims.linreg.network):
- "merged": state (omega, mu), one of each per head; lift KQ_h, OV_h;
  metric d for each omega_h and 1 for each mu_h.
- "factored": state (q, k, v, o) per head; lift Q_h = q_h D, K_h = k_h D,
  V_h = v_h e e^T, O_h = o_h e (D = diag(I_d, 0), e = e_(d+1)); observables
  omega = q k / sqrt(d+1) (scores are scaled by 1/sqrt(d+1)), mu = v o;
  metric d for q and k, 1 for v and o.

Two losses on either manifold, both the mean squared error E (y_hat - y_q)^2
with the noisy query label (no factor 1/2; so flow time t equals lr x step of
SGD on that MSE):
- symbolic: the large-L approximation Lt(omega, mu);
- population: the exact loss of the reduced predictor, with beta and the label
  noise integrated out in closed form and the covariates sampled once
  (common random numbers): E_x[ |r|^2 / d + sigma2 (sum_l w_l^2 + 1) ],
  w_l = sum_h mu_h softmax_l(omega_h x_l . x_q), r = sum_l w_l x_l - x_q.
  For isotropic covariates the components of the x_l orthogonal to x_q are
  integrated out too (`CovariateSample.loss`), so only the scores
  s_l = x_l . x_q and q = |x_q|^2 of each draw enter, with an analytic gradient.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .base import Manifold, Param, ReducedModel, SymbolicLoss, TorchLoss

PARAMETERISATIONS = ("merged", "factored")


def _diag_block(value, d: int) -> np.ndarray:
    """(d+1, d+1) object array value * diag(I_d, 0)."""
    out = np.zeros((d + 1, d + 1), dtype=object)
    for i in range(d):
        out[i, i] = value
    return out


def _last_entry(value, d: int) -> np.ndarray:
    out = np.zeros(d + 1, dtype=object)
    out[d] = value
    return out


def _last_corner(value, d: int) -> np.ndarray:
    out = np.zeros((d + 1, d + 1), dtype=object)
    out[d, d] = value
    return out


@functools.lru_cache(maxsize=32)
def manifold(d: int, heads: int, param: str) -> Manifold:
    """The reduced manifold of H heads in dimension d, for either parameterisation (built once
    per process; it holds no run state)."""
    if param == "merged":
        def lift(s):
            return {
                "KQ": [_diag_block(w, d) for w in s["omega"]],
                "OV": [_last_entry(m, d) for m in s["mu"]],
            }
        blocks = [Param("omega", (heads,), "key-query scale per head"),
                  Param("mu", (heads,), "output-value label weight per head")]
    elif param == "factored":
        def lift(s):
            return {
                "Q": [_diag_block(q, d) for q in s["q"]],
                "K": [_diag_block(k, d) for k in s["k"]],
                "V": [_last_corner(v, d) for v in s["v"]],
                "O": [_last_entry(o, d) for o in s["o"]],
            }
        blocks = [Param(n, (heads,), f"factor {n} per head") for n in "qkvo"]
    else:
        raise ValueError(f"param must be one of {PARAMETERISATIONS}, got {param!r}")
    return Manifold(blocks, lift)


def observables(d: int, param: str):
    """State symbols -> {"omega": (H,), "mu": (H,)} sympy expressions."""
    def merged(s):
        return {"omega": s["omega"], "mu": s["mu"]}

    def factored(s):
        import sympy as sp

        scale = 1 / sp.sqrt(d + 1)
        return {"omega": s["q"] * s["k"] * scale, "mu": s["v"] * s["o"]}

    return merged if param == "merged" else factored


def large_L_loss(d: int) -> SymbolicLoss:
    """Lt = 1 + sigma2 - 2 mu.omega + mu^T [omega omega^T + ((1+sigma2)/L) exp.(d omega omega^T)] mu."""
    def build(obs, hyper):
        import sympy as sp

        omega, mu = list(obs["omega"]), list(obs["mu"])
        L, sigma2 = hyper["L"], hyper["sigma2"]
        overlap = sum(m * w for m, w in zip(mu, omega))
        spread = sum(
            mu[h] * mu[g] * sp.exp(d * omega[h] * omega[g])
            for h in range(len(mu)) for g in range(len(mu))
        )
        return 1 + sigma2 - 2 * overlap + overlap**2 + (1 + sigma2) / L * spread

    return SymbolicLoss(build, "large-L loss Lt (docs/theory/linreg.md, section 4)")


@functools.lru_cache(maxsize=32)
def symbolic_model(d: int, heads: int, param: str = "merged",
                   metric: str = "lift") -> ReducedModel:
    """Gradient flow of Lt; hyper-parameters L and sigma2 (floats or (B,) tensors).

    metric "lift": G = J^T J (merged: diag(d, 1) per head, KQ_h = omega_h I_d; the flow SGD
    follows); "unit": G = I, d theta/dt = -grad Lt in the state itself (the paper's ODE).
    Built once per (d, heads, param, metric) in a process (symbolic differentiation and
    compilation take ~0.1 s; the model holds no run state)."""
    return ReducedModel(manifold(d, heads, param), observables(d, param), large_L_loss(d),
                        hyper=("L", "sigma2"), metric=metric)


def reduced_weights(omega: torch.Tensor, mu: torch.Tensor, x: torch.Tensor,
                    xq: torch.Tensor) -> torch.Tensor:
    """Label weights w_l = sum_h mu_h softmax_l(omega_h x_l . x_q).

    omega, mu: (B, H); x: (n, L, d); xq: (n, d). Returns (B, n, L).
    """
    scores = torch.einsum("nld,nd->nl", x, xq)
    attn = torch.softmax(omega[:, :, None, None] * scores[None, None], dim=-1)
    return torch.einsum("bh,bhnl->bnl", mu, attn)


def reduced_prediction(omega: torch.Tensor, mu: torch.Tensor, x: torch.Tensor,
                       y: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """The reduced predictor y_hat = sum_l w_l y_l for one (omega, mu) of shape (H,).

    x: (n, L, d), y: (n, L), xq: (n, d). Returns (n,).
    """
    return (reduced_weights(omega[None], mu[None], x, xq)[0] * y).sum(-1)


BLOCK = 2**15  # scores per block of draws in the Rao-Blackwellised loss (256 KB, cache-sized)


class _ScoreBlock:
    """What the isotropic loss needs of a block of m draws: scores (L, m) = s_l = x_l . x_q
    (transposed, so sums over l run along contiguous rows), q (m,) = |x_q|^2, 1 / q and
    2 / (d q); `at` is where the block starts among the n draws.

    Per draw, with a_hl = softmax_l(omega_h s_l), w_l = sum_h mu_h a_hl,
    S_h = sum_l a_hl s_l and dev = sum_l w_l s_l - q = sum_h mu_h S_h - q:
        f = (dev^2 / q + (d - 1) sum_l w_l^2) / d + sigma2 (sum_l w_l^2 + 1),
        g_l = df/dw_l = 2 dev s_l / (q d) + 2 ((d - 1)/d + sigma2) w_l,
        df/dmu_h = sum_l a_hl g_l,  df/domega_h = mu_h sum_l a_hl g_l (s_l - S_h).
    Arguments: omega, mu (rows, H); shift (rows H, 1, n) = -max_l omega_h s_l of every
    draw (keeps exp <= 1)."""

    def __init__(self, scores: torch.Tensor, q: torch.Tensor, at: int, d: int):
        self.scores = scores.T.contiguous()
        self.q, self.inv_q, self.slope = q, 1 / q, 2 / (d * q)
        self.at, self.d = at, d

    def _weights(self, omega, mu, shift, inplace: bool):
        """(attention a (rows H, L, m), label weights w (rows, L, m))."""
        rows, heads = omega.shape
        length, m = self.scores.shape
        shift = shift[..., self.at:self.at + m]
        attn = torch.addcmul(shift, omega.reshape(rows * heads, 1, 1), self.scores).exp_()
        total = attn.sum(1, keepdim=True)
        attn = attn.mul_(total.reciprocal_()) if inplace else attn / total
        w = torch.bmm(mu[:, None, :], attn.reshape(rows, heads, length * m))
        return attn, w.reshape(rows, length, m)

    def loss(self, omega, mu, sigma2, shift) -> torch.Tensor:
        """(rows,) sum of f over the block's draws; sigma2 (rows, 1). Differentiable
        where autograd records (in place elsewhere)."""
        _, w = self._weights(omega, mu, shift, inplace=not torch.is_grad_enabled())
        dev = (w * self.scores).sum(1) - self.q
        w2 = (w * w).sum(1)
        return ((dev * dev * self.inv_q + (self.d - 1) * w2) / self.d + sigma2 * (w2 + 1)).sum(-1)

    def gradient(self, omega, mu, coef, shift) -> tuple[torch.Tensor, torch.Tensor]:
        """Sums over the block's draws of df/domega_h / mu_h and of df/dmu_h, (rows, H)
        each; coef (rows, 1, 1) = 2 ((d - 1)/d + sigma2). In place, no autograd graph."""
        attn, w = self._weights(omega, mu, shift, inplace=True)
        rows, heads = omega.shape
        length, m = self.scores.shape
        weighted = attn * self.scores                                         # a_hl s_l
        spread = weighted.sum(1).reshape(rows, heads, m)                      # S_h
        dev = torch.bmm(mu[:, None, :], spread)[:, 0] - self.q
        g = w.mul_(coef).addcmul_((dev * self.slope)[:, None, :], self.scores)[:, None]
        d_mu = (attn.reshape(rows, heads, length, m) * g).sum(2)              # (rows, H, m)
        moment = weighted.reshape(rows, heads, length, m).mul_(g).sum(2)
        return (moment - d_mu * spread).sum(-1), d_mu.sum(-1)


class CovariateSample:
    """A fixed Monte-Carlo sample of covariates (common random numbers).

    x: (n, L, d), xq: (n, d), float64, x ~ N(0, I_d), or N(0, Sigma) when a (d, d)
    covariance is given (beta stays N(0, I_d / d)).

    antithetic: the draws come in pairs (x, x_q), (x, -x_q) (n rounded up to even; the
    first n/2 draws, then their mirrors). Flipping x_q maps the loss at (omega, mu) to the
    loss at (-omega, -mu), so the sample's loss keeps the population loss's symmetry
    L(omega, mu) = L(-omega, -mu) exactly, and with it the +- head symmetry of a
    symmetric start (an i.i.d. sample breaks it by O(n^-1/2)).

    It also halves the isotropic loss's cost on such states: where the heads' (omega_h,
    mu_h) are closed under negation (omega_pi(h) = -omega_h, mu_pi(h) = -mu_h for a
    permutation pi, e.g. the +- pairs of `symmetric_start`), each mirror draw gives the
    loss of its first-half twin, so the loss is the first half's mean, and its gradient
    is (g_h - g_pi(h)) / 2 with g that of the first half's mean (exactly); used by the
    analytic gradient and by the loss where autograd does not record.
    """

    def __init__(self, n: int, L: int, d: int, generator: torch.Generator,
                 covariance: torch.Tensor | None = None, antithetic: bool = False):
        device = generator.device
        draws = (n + 1) // 2 if antithetic else n
        self.x = torch.randn((draws, L, d), generator=generator, dtype=torch.float64,
                             device=device)
        self.xq = torch.randn((draws, d), generator=generator, dtype=torch.float64,
                              device=device)
        if antithetic:
            self.x, self.xq = torch.cat([self.x, self.x]), torch.cat([self.xq, -self.xq])
        n = self.x.shape[0]
        self.isotropic, self.antithetic = covariance is None, antithetic
        if covariance is not None:
            chol = torch.linalg.cholesky(covariance.to(torch.float64).to(device))
            self.x, self.xq = self.x @ chol.T, self.xq @ chol.T
        self._blocks, self._first_half = [], []
        if self.isotropic:
            scores = torch.einsum("nld,nd->nl", self.x, self.xq)
            self._extremes = scores.aminmax(dim=-1)  # (n,) each: min_l s_l, max_l s_l
            norms = (self.xq**2).sum(-1)
            # antithetic samples: the halves in separate blocks, so the first alone is at hand
            halves = [(0, n // 2), (n // 2, n)] if antithetic else [(0, n)]
            for start, stop in halves:
                part = stop - start
                size = math.ceil(part / math.ceil(part * L / BLOCK))  # <= ~BLOCK scores each
                self._blocks += [_ScoreBlock(scores[at:at + size], norms[at:at + size], at, d)
                                 for at in range(start, stop, size)]
            self._first_half = self._blocks[:len(self._blocks) // 2] if antithetic else []

    def loss(self, omega: torch.Tensor, mu: torch.Tensor, sigma2) -> torch.Tensor:
        """(B, H) omega, mu -> (B,) MC estimate of the population MSE of the reduced predictor.

        Isotropic samples integrate out, given s_l = x_l . x_q and q = |x_q|^2, the
        components of the x_l orthogonal to x_q (each N(0, I - x_q x_q^T / q), independent
        of s_l, on which w depends only through s): E[|r|^2 | s, x_q] =
        (sum_l w_l s_l - q)^2 / q + (d - 1) sum_l w_l^2 (a Rao-Blackwellised `mc_loss`:
        the same expectation, a smaller variance, no d-vectors per draw). Otherwise `mc_loss`."""
        if not self.isotropic:
            return self.mc_loss(omega, mu, sigma2)
        return self._rao_blackwell(omega, mu, sigma2, grad=False)[0]

    def loss_gradient(self, omega: torch.Tensor, mu: torch.Tensor,
                      sigma2) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H) omega, mu -> (d loss / d omega, d loss / d mu), each (B, H), of the
        isotropic `loss` in closed form (no autograd graph)."""
        if not self.isotropic:
            raise ValueError("the analytic gradient needs isotropic covariates")
        with torch.no_grad():
            d_omega, d_mu = self._rao_blackwell(omega, mu, sigma2, grad=True)
        return d_omega, d_mu

    def mc_loss(self, omega: torch.Tensor, mu: torch.Tensor, sigma2) -> torch.Tensor:
        """(B, H) omega, mu -> (B,) plain MC estimate over the full covariates,
        E_x[|r|^2 / d + sigma2 (sum_l w_l^2 + 1)] per draw."""
        return self._loss_of_weights(reduced_weights(omega, mu, self.x, self.xq), sigma2)

    def _mirror(self, omega: torch.Tensor, mu: torch.Tensor) -> list[int] | None:
        """The permutation pi with omega[:, pi] = -omega and mu[:, pi] = -mu in every row
        (exactly), for an antithetic sample; else None."""
        if not self.antithetic:
            return None
        first_o, first_m = omega[0].tolist(), mu[0].tolist()
        pi = []
        for o, m in zip(first_o, first_m):
            match = [j for j, (oj, mj) in enumerate(zip(first_o, first_m))
                     if oj == -o and mj == -m and j not in pi]
            if not match:
                return None
            pi.append(match[0])
        index = torch.tensor(pi, device=omega.device)
        if torch.equal(omega[:, index], -omega) and torch.equal(mu[:, index], -mu):
            return pi
        return None

    def _rao_blackwell(self, omega, mu, sigma2, grad: bool) -> list[torch.Tensor]:
        """[(B,) loss] or, with grad, [d/d omega (B, H), d/d mu (B, H)], summed over the
        blocks (the first half's alone on states closed under negation, see the class);
        rows go in groups so that a block's attention holds <= 4 heads' worth."""
        # not where autograd records: the first half's loss has the full loss's value on
        # these states, not its derivatives
        pi = None if torch.is_grad_enabled() and not grad else self._mirror(omega, mu)
        if pi is None:
            return self._block_sums(omega, mu, sigma2, grad, self._blocks)
        out = self._block_sums(omega, mu, sigma2, grad, self._first_half)
        if not grad:
            return out
        return [(g - g[:, pi]) / 2 for g in out]

    def _block_sums(self, omega, mu, sigma2, grad: bool,
                    blocks: list[_ScoreBlock]) -> list[torch.Tensor]:
        rows, heads = omega.shape
        d, n = self.x.shape[-1], sum(b.scores.shape[1] for b in blocks)
        sigma2 = torch.as_tensor(sigma2, dtype=omega.dtype, device=omega.device)
        sigma2 = sigma2.reshape(-1, 1).expand(rows, 1)
        coef = (2 * ((d - 1) / d + sigma2))[:, :, None]
        low, high = self._extremes
        om = omega.detach().reshape(rows * heads, 1, 1)
        shift = -torch.where(om > 0, om * high, om * low)                     # (rows H, 1, n)
        group = max(1, 4 // heads)
        out = []
        for r in range(0, rows, group):
            part = slice(r, r + group)
            args = omega[part], mu[part]
            shifts = shift[r * heads:(r + group) * heads]
            if grad:
                sums = zip(*(b.gradient(*args, coef[part], shifts) for b in blocks))
                d_omega, d_mu = (sum(s) / n for s in sums)
                out.append([mu[part] * d_omega, d_mu])
            else:
                out.append([sum(b.loss(*args, sigma2[part], shifts) for b in blocks) / n])
        return [torch.cat(parts) for parts in zip(*out)]

    def matrix_loss(self, kq: torch.Tensor, mu: torch.Tensor, sigma2) -> torch.Tensor:
        """(B, H, d, d) score matrices KQ_xx and (B, H) mu -> (B,) population MSE of
        y_hat = sum_h mu_h sum_l y_l softmax_l(x_l^T KQ_xx,h x_q)."""
        keys = torch.einsum("bhij,nj->bhni", kq, self.xq)
        attn = torch.softmax(torch.einsum("nli,bhni->bhnl", self.x, keys), dim=-1)
        return self._loss_of_weights(torch.einsum("bh,bhnl->bnl", mu, attn), sigma2)

    def _loss_of_weights(self, w: torch.Tensor, sigma2) -> torch.Tensor:
        """(B, n, L) label weights -> (B,) E_x[|r|^2 / d + sigma2 (sum_l w_l^2 + 1)]."""
        d = self.x.shape[-1]
        r = torch.einsum("bnl,nld->bnd", w, self.x) - self.xq
        sigma2 = torch.as_tensor(sigma2, dtype=w.dtype, device=w.device)
        if sigma2.dim():
            sigma2 = sigma2[:, None]
        per_sample = (r**2).sum(-1) / d + sigma2 * ((w**2).sum(-1) + 1)
        return per_sample.mean(-1)


def population_loss(sample: CovariateSample) -> TorchLoss:
    """The population MSE on sample as a TorchLoss of (omega, mu); isotropic samples give
    it the Rao-Blackwellised form with its analytic gradient (`CovariateSample.loss`)."""
    if not sample.isotropic:
        return TorchLoss(lambda obs, hyper: sample.loss(obs["omega"], obs["mu"], hyper["sigma2"]),
                         f"population MSE of the reduced predictor, Monte Carlo over "
                         f"{sample.x.shape[0]} covariate draws (beta and noise integrated exactly)")

    def gradient(obs, hyper):
        return dict(zip(("omega", "mu"), sample.loss_gradient(obs["omega"], obs["mu"],
                                                               hyper["sigma2"])))

    return TorchLoss(
        lambda obs, hyper: sample.loss(obs["omega"], obs["mu"], hyper["sigma2"]),
        f"population MSE of the reduced predictor, Monte Carlo over {sample.x.shape[0]} "
        f"covariate draws{' in antithetic pairs' if sample.antithetic else ''} (beta, noise "
        "and the covariates orthogonal to x_q integrated exactly)",
        gradient=gradient,
    )


def population_model(d: int, heads: int, L: int, samples: int, generator: torch.Generator,
                     param: str = "merged") -> ReducedModel:
    """Gradient flow of the Monte-Carlo population loss over `samples` draws in antithetic
    pairs (`CovariateSample`); hyper-parameter sigma2."""
    sample = CovariateSample(samples, L, d, generator, antithetic=True)
    return ReducedModel(manifold(d, heads, param), observables(d, param),
                        population_loss(sample), hyper=("sigma2",))


def matrix_manifold(d: int, heads: int) -> Manifold:
    """Non-isotropic manifold (merged weights): KQ_h = diag(G_h, 0) with G_h a symmetric
    (d, d) matrix, OV_h = mu_h e_(d+1). State: the upper triangles g_h (H, d(d+1)/2),
    row-major, then mu (H,). Metric: 1 for a diagonal entry of G_h, 2 for an
    off-diagonal one (it fills two weights), 1 for mu_h."""
    pairs = [(i, j) for i in range(d) for j in range(i, d)]

    def lift(s):
        kq = []
        for g in s["g"]:
            block = np.zeros((d + 1, d + 1), dtype=object)
            for (i, j), value in zip(pairs, g):
                block[i, j] = block[j, i] = value
            kq.append(block)
        return {"KQ": kq, "OV": [_last_entry(m, d) for m in s["mu"]]}

    return Manifold([Param("g", (heads, len(pairs)), "upper triangle of KQ_xx per head"),
                     Param("mu", (heads,), "output-value label weight per head")], lift)


def matrix_observables(d: int):
    """State symbols -> {"kq": (H, d, d) symmetric KQ_xx, "mu": (H,)}."""
    pairs = [(i, j) for i in range(d) for j in range(i, d)]

    def observe(s):
        kq = np.zeros((len(s["g"]), d, d), dtype=object)
        for h, g in enumerate(s["g"]):
            for (i, j), value in zip(pairs, g):
                kq[h, i, j] = kq[h, j, i] = value
        return {"kq": kq, "mu": s["mu"]}

    return observe


def matrix_population_model(d: int, heads: int, L: int, samples: int,
                            generator: torch.Generator,
                            covariance: torch.Tensor | None = None) -> ReducedModel:
    """Gradient flow of the Monte-Carlo population loss with KQ_xx,h = omega_h Gamma_h
    learned as a whole symmetric matrix per head (`matrix_manifold`); covariates
    N(0, covariance), in antithetic pairs. Hyper-parameter sigma2."""
    sample = CovariateSample(samples, L, d, generator, covariance, antithetic=True)
    loss = TorchLoss(
        lambda obs, hyper: sample.matrix_loss(obs["kq"], obs["mu"], hyper["sigma2"]),
        f"population MSE with a symmetric KQ_xx per head, Monte Carlo over {samples} "
        "covariate draws (beta and noise integrated exactly)",
    )
    return ReducedModel(matrix_manifold(d, heads), matrix_observables(d), loss, hyper=("sigma2",))


def matrix_state(d: int, omega, mu, gamma: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """State of `matrix_manifold` with G_h = omega_h Gamma (Gamma (d, d), default I_d)."""
    omega = np.asarray(omega, dtype=np.float64)
    gamma = np.eye(d) if gamma is None else np.asarray(gamma, dtype=np.float64)
    return {"g": np.stack([w * gamma[np.triu_indices(d)] for w in omega]),
            "mu": np.asarray(mu, dtype=np.float64)}


def balanced_state(d: int, omega, mu, param: str) -> dict[str, np.ndarray]:
    """The state with observables (omega, mu), each (H,); factored: balanced factors
    q_h = sign(omega_h) sqrt(|omega_h| sqrt(d+1)), k_h = sqrt(|omega_h| sqrt(d+1)),
    v_h = sign(mu_h) sqrt(|mu_h|), o_h = sqrt(|mu_h|)."""
    omega, mu = np.asarray(omega, dtype=np.float64), np.asarray(mu, dtype=np.float64)
    if param == "merged":
        return {"omega": omega, "mu": mu}
    qk = np.sqrt(np.abs(omega) * np.sqrt(d + 1))
    vo = np.sqrt(np.abs(mu))
    return {"q": np.where(omega < 0, -qk, qk), "k": qk, "v": np.where(mu < 0, -vo, vo), "o": vo}


def symmetric_start(d: int, heads: int, scale: float, param: str) -> dict[str, np.ndarray]:
    """Alternating-sign start omega_h = mu_h = s_h scale, with s_h = (-1)^h
    (factored: balanced factors, `balanced_state`)."""
    sign = np.where(np.arange(heads) % 2 == 0, 1.0, -1.0)
    return balanced_state(d, sign * scale, sign * scale, param)


def one_head_optimum(d: int, L: int, sigma2: float) -> tuple[float, float]:
    """Stationary point of Lt for H = 1: omega = 1/sqrt(d), mu = sqrt(d)/(1 + e(1+sigma2)d/L)."""
    return 1 / np.sqrt(d), np.sqrt(d) / (1 + np.e * (1 + sigma2) * d / L)


def pair_asymptote(d: int, L: int, sigma2: float) -> float:
    """Limit of omega_h mu_h for each head of a +- pair: 1 / (2 (1 + (d/L)(1+sigma2)))."""
    return 1 / (2 * (1 + d / L * (1 + sigma2)))


def conformance_cases():
    """(id, model, hyper, start state (P,)) for the conformance suite."""
    for param in PARAMETERISATIONS:
        for heads in (1, 3):
            man = manifold(4, heads, param)
            start = man.pack(symmetric_start(4, heads, 0.3, param))
            start = start + 0.05 * torch.arange(start.shape[0], dtype=torch.float64)
            yield (f"linreg-{param}-H{heads}-Lt", symbolic_model(4, heads, param),
                   {"L": 20.0, "sigma2": 0.2}, start)
            pop = population_model(4, heads, 20, 400, torch.Generator().manual_seed(1), param)
            yield f"linreg-{param}-H{heads}-population", pop, {"sigma2": 0.2}, start
    sigma = torch.tensor([[1.0, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 1.0]], dtype=torch.float64)
    model = matrix_population_model(3, 2, 10, 300, torch.Generator().manual_seed(2), sigma)
    start = model.manifold.pack(matrix_state(3, [0.3, -0.25], [0.4, -0.3]))
    start = start + 0.02 * torch.arange(start.shape[0], dtype=torch.float64)
    yield "linreg-matrix-H2-population", model, {"sigma2": 0.2}, start
