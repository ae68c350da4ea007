"""Reduced models of the induction-head system (docs/theory/induction.md; arXiv 2409.10559).

The simplified network TF(M, H, d, D) (sims/induction/network.py) has three
parameter blocks and they are the reduced state:
- w (H, M): copier logits; head h gives offset k the logit w[h-1, k-1];
- C (n_sets,): selector amplitudes over the candidate sets of heads S
  (`candidate_sets(H, D)`, labels such as "1,2"), c_S = C_S^2 and
  p_S = C_S^2 / sum C^2;
- a (): the classifier's logit scale.
The lift is the identity onto weights named w, C and a, so the metric is
G = I and flow time is t = lr x step of plain SGD on the network.

Sufficient statistics. A window pattern is the tuple of tokens at offsets
1..M before a position, symbol `vocab` standing for a position before x_1
(a zero input row). The network's prediction for a sequence depends on the
sequence only through the query's window pattern and the counts N_y(e) of
context positions with window pattern y and token e (`WindowCounts`), so a
loss evaluation costs O(n (vocab+1)^M vocab) for n sequences, whatever L.

Two flows on this manifold (docs/induction.md):
- population: gradient flow of the simplified network's loss, Monte Carlo
  over a fixed sample of chains and sequences (a TorchLoss);
- ode: the symbolic three-stage model Loss = Lambda(a m(w, p)) with
  m = sum_S p_S D_S(w) / D_*, Lambda the limiting generalised induction
  head's loss as a function of its logit, D_S(w) the first-order gain of
  set S with soft copiers (a sympy function of w with a closed-form torch
  implementation), D_* = -Lambda'(0). It equals the population loss to
  first order in a everywhere, and exactly when p sits on S* with sharp
  copiers (m = 1), where a follows the one-dimensional flow on Lambda.
Architecture options (`InductionShape`): the authors' empty-set selector
term (a constant kernel term whose amplitude enters |C|) and shifted
offsets (head h reads offsets h..h+M-1 instead of 1..M).
Losses: "ce" the true cross-entropy -log y_hat[x_(L+1)], with sequences
whose target never occurs in the context left out (their loss is an
infinite constant, independent of every parameter); "logsoftmax" the
authors' variant -log softmax(y_hat)[x_(L+1)] over all sequences.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch
from torch.autograd.function import once_differentiable

from dynamics.ode import integrate
from dynamics.trajectory import Trajectory

from .base import Manifold, Param, ReducedModel, SymbolicLoss, TorchLoss
from .induction_kernel import (
    CopierFeatures,
    LogitTable,
    head_similarity,
    logit_table,
    selector_kernel,
)
from .markov import (
    candidate_sets,
    gih_counts,
    gih_log_predict_from_counts,
    loss_from_log_predict,
)

LOSSES = ("ce", "logsoftmax")
FLOOR = 1e-200  # |C_S| below which a losing set stops decaying in `integrate_log_selector`


@dataclass(frozen=True, kw_only=True)
class InductionShape:
    """Shapes and architecture options of the simplified network (keywords only, so that
    vocab, window, heads and degree cannot be swapped).

    - vocab d, window M (logits per head), heads H, degree D (largest |S|)
    - empty_set: the selector also has the empty set, whose kernel term is the constant 1
      (no effect on attention; its C^2 counts in |C|^2, so p starts at 1 / len(sets))
    - shifted: head h (1-indexed) reads offsets h..h+M-1; otherwise every head reads 1..M
    """

    vocab: int
    window: int
    heads: int
    degree: int
    empty_set: bool = False
    shifted: bool = False

    @property
    def sets(self) -> list[tuple[int, ...]]:
        """Candidate sets of heads, the empty set first when `empty_set`."""
        return ([()] if self.empty_set else []) + candidate_sets(self.heads, self.degree)

    @property
    def offsets(self) -> np.ndarray:
        """(H, M) int 1-indexed offset of head h's k-th logit."""
        first = np.arange(self.heads)[:, None] if self.shifted else np.zeros((self.heads, 1), int)
        return first + np.arange(1, self.window + 1)[None, :]

    @property
    def span(self) -> int:
        """Largest offset any head reads (the window of the sufficient statistics):
        heads + window - 1 when shifted, else window (computed without building `offsets`:
        config checks call it on unchecked sizes)."""
        return self.heads + self.window - 1 if self.shifted else self.window

    def copier_inputs(self) -> torch.Tensor:
        """(H, P, M, vocab) float64: one-hot token at head h's k-th offset of every window
        pattern over `span` offsets (zero before x_1)."""
        one_hot = pattern_one_hot(self.span, self.vocab)
        return torch.stack([one_hot[:, row - 1] for row in torch.as_tensor(self.offsets)])

    def own_offset_index(self) -> np.ndarray:
        """(H,) index k of the logit of head h's own offset h (the authors' w_plus)."""
        return np.array([list(row).index(h) for h, row in enumerate(self.offsets, start=1)])


# ----------------------------------------------------------- window patterns


def pattern_symbols(window: int, vocab: int) -> torch.Tensor:
    """(P, M) int64 symbols of every window pattern, P = (vocab+1)**M.

    Column k-1 is the symbol at offset k; symbol `vocab` means "before x_1".
    Pattern code = sum_k symbol_k (vocab+1)**(k-1).
    """
    codes = torch.arange((vocab + 1) ** window)
    return torch.stack([(codes // (vocab + 1) ** k) % (vocab + 1) for k in range(window)], -1)


def pattern_one_hot(window: int, vocab: int) -> torch.Tensor:
    """(P, M, vocab) float64 one-hot rows of every pattern (zero rows before x_1)."""
    one_hot = torch.nn.functional.one_hot(pattern_symbols(window, vocab), vocab + 1)
    return one_hot[..., :vocab].double()


def window_codes(tokens: torch.Tensor, window: int, vocab: int) -> torch.Tensor:
    """(n, T) pattern code of every position of tokens (n, T) int64.

    Position i (0-based) has the tokens at i-1, ..., i-M as its window.
    """
    n, length = tokens.shape
    padded = torch.cat([torch.full((n, window), vocab, dtype=torch.int64), tokens], 1)
    code = padded[:, window - 1 : window - 1 + length].clone(memory_format=torch.contiguous_format)
    for k in range(2, window + 1):
        code.add_(padded[:, window - k : window - k + length], alpha=(vocab + 1) ** (k - 1))
    return code


@dataclass
class WindowCounts:
    """What the simplified network needs of n sequences (context x_1..x_L, target x_(L+1)).

    - query: (n,) window-pattern code of the query position L+1
    - target: (n,) int64 x_(L+1)
    - log_visits: (n, P) log N_y, the count of context positions with pattern y (-inf if 0)
    - ratio: (n, P, vocab) N_y(e) / N_y (0 where N_y = 0)
    - target_seen: (n,) bool, x_(L+1) occurs among x_1..x_L
    - length: L
    """

    query: torch.Tensor
    target: torch.Tensor
    log_visits: torch.Tensor
    ratio: torch.Tensor
    target_seen: torch.Tensor
    length: int

    @classmethod
    def from_tokens(cls, tokens: torch.Tensor, window: int, vocab: int) -> WindowCounts:
        """tokens (n, L + 1) int64, L >= window (the query's window is complete)."""
        n, length = tokens.shape[0], tokens.shape[1] - 1
        codes = window_codes(tokens, window, vocab)
        n_patterns = (vocab + 1) ** window
        counts = torch.zeros((n, n_patterns * vocab), dtype=torch.float64)
        counts.scatter_add_(1, codes[:, :length] * vocab + tokens[:, :length],
                            torch.ones((n, length), dtype=torch.float64))
        counts = counts.reshape(n, n_patterns, vocab)
        visits = torch.zeros((n, n_patterns), dtype=torch.float64).scatter_add_(
            1, codes[:, :length], torch.ones((n, length), dtype=torch.float64))
        ratio = counts / visits.clamp(min=1.0)[..., None]
        target = tokens[:, -1]
        seen = counts.sum(1).gather(1, target[:, None]).squeeze(1) > 0
        # log 0 = -inf, set directly (torch's log is slow on zeros)
        log_visits = torch.where(visits > 0, visits, 1.0).log().masked_fill_(visits == 0,
                                                                             -torch.inf)
        return cls(query=codes[:, -1], target=target, log_visits=log_visits, ratio=ratio,
                   target_seen=seen, length=length)

    def __len__(self) -> int:
        return len(self.target)

    @functools.cached_property
    def visited(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The patterns each sequence visits, packed to the K most one sequence visits:
        (n, K) positions query x P + y in a flattened (P, P) logit table, (n, K) log N_y
        and (n, vocab, K) N_y(e) / N_y. A sequence with fewer than K fills up with
        patterns it never visits (log N_y = -inf: weight 0)."""
        seen = torch.isfinite(self.log_visits)
        width = max(int(seen.sum(1).max()), 1)
        pattern = torch.argsort((~seen).to(torch.uint8), dim=1, stable=True)[:, :width]
        ratio = self.ratio.gather(1, pattern[..., None].expand(-1, -1, self.ratio.shape[-1]))
        return (self.query[:, None] * seen.shape[1] + pattern,
                self.log_visits.gather(1, pattern), ratio.transpose(1, 2).contiguous())

    def predict(self, logit_table: torch.Tensor) -> torch.Tensor:
        """y_hat (B, n, vocab) for logits (B, P, P): entry [z, y] is the classifier's logit
        a k(query, key) between a query of pattern z and a key of pattern y.

        Sums over the patterns each sequence visits only (`visited`): the same softmax,
        without the terms that weigh exactly 0."""
        position, log_visits, ratio = self.visited
        logits = logit_table.reshape(logit_table.shape[0], -1)[:, position] + log_visits
        return (torch.softmax(logits, -1)[:, :, None, :] * ratio).sum(-1)

    @functools.cached_property
    def target_columns(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`visited` of the sequences whose target occurs in their context, with only the
        target's column of the ratio: (n_seen, K) each."""
        position, log_visits, ratio = self.visited
        seen = self.target_seen
        target = self.target[seen][:, None, None].expand(-1, 1, ratio.shape[-1])
        return position[seen], log_visits[seen], ratio[seen].gather(1, target)[:, 0]

    def table_loss(self, logit_table: torch.Tensor, variant: str) -> torch.Tensor:
        """(B,) mean loss of the classifier logits (B, P, P): loss(predict(logit_table)),
        for "ce" from the target's entry of y_hat alone (the only one it reads)."""
        if variant != "ce":
            return self.loss(self.predict(logit_table), variant)
        position, log_visits, target_ratio = self.target_columns
        logits = logit_table.reshape(logit_table.shape[0], -1)[:, position] + log_visits
        weights = (logits - logits.detach().amax(-1, keepdim=True)).exp()
        return -((weights * target_ratio).sum(-1) / weights.sum(-1)).log().mean(-1)

    @functools.cached_property
    def target_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Of the sequences in `target_columns`: (n_seen, K) N_y and N_y(target) (0 on the
        padding)."""
        _, log_visits, target_ratio = self.target_columns
        visits = log_visits.exp()
        return visits, visits * target_ratio

    def table_loss_gradient(self, logit_table: torch.Tensor,
                            variant: str) -> tuple[torch.Tensor, torch.Tensor]:
        """`table_loss` (B,) and its gradient w.r.t. the logit table (B, P, P).

        "ce", in closed form: sequence n with query pattern z reads row z of the table
        only, so with E = exp(T - max_y T[z, y]) (row by row), num_n = sum_y N_y(target)
        E[z, y] and den_n = sum_y N_y E[z, y], loss = -mean_n log(num_n / den_n) and
        d loss / d E[z, y] = mean_n [z_n = z] (N_y / den_n - N_y(target) / num_n). Where a
        row spans more than 600 (exp would underflow), and for other variants: autograd.
        """
        if variant != "ce" or not _exp_safe(logit_table):
            return _autograd_table_gradient(self.table_loss, logit_table, variant)
        position, _, _ = self.target_columns
        visits, target_visits = self.target_weights
        B = logit_table.shape[0]
        shifted = (logit_table - logit_table.amax(-1, keepdim=True)).exp().reshape(B, -1)
        loss, coefficient = _ce_terms(take(shifted, position), visits, target_visits)
        grad = torch.zeros_like(shifted).index_add_(1, position.reshape(-1),
                                                    coefficient.reshape(B, -1))
        return loss, (grad * shifted).reshape(logit_table.shape)

    def predict_by_token(self, logit_table: torch.Tensor) -> torch.Tensor:
        """y_hat (B, n, vocab) for logits (B, P, P, vocab) that also depend on the key's own
        token: entry [z, y, e] is the logit of a key of pattern y and token e (the full model).
        y_hat(e) = sum_y N_y(e) exp(T[z, y, e]) / sum_(y, e') N_y(e') exp(T[z, y, e'])."""
        B, n = logit_table.shape[0], len(self)
        log_counts = self.log_visits[..., None] + self.ratio.log()       # log N_y(e), -inf if 0
        logits = (logit_table[:, self.query] + log_counts).reshape(B, n, -1)
        weights = torch.softmax(logits, -1).reshape(B, n, -1, self.ratio.shape[-1])
        return weights.sum(2)

    def loss(self, y_hat: torch.Tensor, variant: str) -> torch.Tensor:
        """(B,) mean loss of predictions y_hat (B, n, vocab); see the module docstring."""
        return prediction_loss(y_hat, self.target, self.target_seen, variant)


@dataclass
class TargetCounts:
    """What the "ce" loss of the simplified network reads of n sequences: a lean
    `WindowCounts` for SGD's minibatches (no ratios, no packing). Of the n_seen sequences
    whose target x_(L+1) occurs among x_1..x_L (the others' loss is an infinite
    constant, left out as in WindowCounts):

    - query: (n_seen,) window-pattern code of the query position L+1
    - visits: (n_seen, P) N_y, the count of context positions with pattern y
    - target_visits: (n_seen, P) N_y(x_(L+1)), those followed by the target
    """

    query: torch.Tensor
    visits: torch.Tensor
    target_visits: torch.Tensor

    @classmethod
    def from_tokens(cls, tokens: torch.Tensor, window: int, vocab: int) -> TargetCounts:
        """tokens (n, L + 1) int64, L >= window."""
        n, length = tokens.shape[0], tokens.shape[1] - 1
        codes = window_codes(tokens, window, vocab)
        context = codes[:, :length]
        hits = (tokens[:, :length] == tokens[:, -1:]).double()
        visits, target_visits = (
            torch.zeros((n, (vocab + 1) ** window), dtype=torch.float64).scatter_add_(
                1, context, weight) for weight in (torch.ones_like(hits), hits))
        seen = hits.sum(1) > 0
        return cls(query=codes[seen, -1], visits=visits[seen], target_visits=target_visits[seen])

    def __len__(self) -> int:
        return len(self.query)

    def table_loss(self, logit_table: torch.Tensor, variant: str = "ce") -> torch.Tensor:
        """(B,) mean "ce" loss for the classifier logits (B, P, P) (`WindowCounts.table_loss`):
        per sequence logsumexp_y(T[z, y] + log N_y) - logsumexp_y(T[z, y] + log N_y(target))."""
        if variant != "ce":
            raise ValueError(f"TargetCounts holds the 'ce' loss only, not {variant!r}")
        rows = logit_table[:, self.query]                                      # (B, n, P)
        return (torch.logsumexp(rows + self.visits.log(), -1)
                - torch.logsumexp(rows + self.target_visits.log(), -1)).mean(-1)

    def table_loss_gradient(self, logit_table: torch.Tensor,
                            variant: str = "ce") -> tuple[torch.Tensor, torch.Tensor]:
        """`table_loss` (B,) and its gradient w.r.t. the logit table (B, P, P), in closed
        form as `WindowCounts.table_loss_gradient` (over all P patterns of the query's row);
        where a row spans more than 600, by autograd."""
        if variant != "ce" or not _exp_safe(logit_table):
            return _autograd_table_gradient(self.table_loss, logit_table, variant)
        shifted = (logit_table - logit_table.amax(-1, keepdim=True)).exp()
        loss, coefficient = _ce_terms(shifted.index_select(1, self.query), self.visits,
                                      self.target_visits)
        grad = torch.zeros_like(shifted).index_add_(1, self.query, coefficient)
        return loss, grad * shifted


def _exp_safe(logit_table: torch.Tensor) -> bool:
    """Whether every row of the table spans less than 600, so that exp(T - row max) does
    not underflow to 0 where a closed-form "ce" gradient divides by it."""
    return bool((logit_table.amax(-1) - logit_table.amin(-1) < 600).all())


def _ce_terms(read: torch.Tensor, visits: torch.Tensor, target_visits: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The "ce" loss (B,) and d loss / d E (B, n, K) of the entries E (B, n, K) of
    exp(T - row max) that the n sequences read, with their N_y and N_y(target) (n, K):
    num_n = sum_y N_y(target) E, den_n = sum_y N_y E, loss = -mean_n log(num_n / den_n),
    d loss / d E = (N_y / den_n - N_y(target) / num_n) / n."""
    num, den = (read * target_visits).sum(-1), (read * visits).sum(-1)
    n = read.shape[1]
    coefficient = visits * (1 / (n * den))[..., None] - target_visits * (
        1 / (n * num))[..., None]
    return -(num / den).log().mean(-1), coefficient


def _autograd_table_gradient(table_loss, logit_table: torch.Tensor, variant: str
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """table_loss (B,) of the logit table and its gradient w.r.t. it, by autograd."""
    with torch.enable_grad():
        table = logit_table.detach().requires_grad_(True)
        loss = table_loss(table, variant)
        (grad,) = torch.autograd.grad(loss.sum(), table)
    return loss.detach(), grad


def take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[:, index] (B, *index.shape) of values (B, X), by one index_select on the
    flattened values (several times faster on the CPU than indexing the second dimension)."""
    B, X = values.shape
    flat = index.reshape(-1)
    if B > 1:
        flat = (torch.arange(B)[:, None] * X + flat).reshape(-1)
    return values.reshape(-1).index_select(0, flat).view(B, *index.shape)


def prediction_loss(y_hat: torch.Tensor, target: torch.Tensor, target_seen: torch.Tensor,
                    variant: str) -> torch.Tensor:
    """(..., ) mean loss of probabilities y_hat (..., n, vocab) against target (n,).

    "ce": -log y_hat[target] over the sequences with target_seen; "logsoftmax":
    -log softmax(y_hat)[target] over all.
    """
    if variant == "ce":
        picked = y_hat[..., target_seen, :].gather(
            -1, target[target_seen].expand(*y_hat.shape[:-2], -1)[..., None])
        return -picked.squeeze(-1).log().mean(-1)
    if variant == "logsoftmax":
        log_prob = torch.log_softmax(y_hat, -1)
        return -log_prob.gather(-1, target.expand(*y_hat.shape[:-2], -1)[..., None]).squeeze(-1).mean(-1)
    raise ValueError(f"unknown loss variant {variant!r}")


# ----------------------------------------------- the simplified network's loss


def network_loss(counts: WindowCounts | TargetCounts, w: torch.Tensor, p: torch.Tensor,
                 a: torch.Tensor, inputs: torch.Tensor, sets: list[tuple[int, ...]],
                 variant: str) -> torch.Tensor:
    """(B,) mean loss on the sequences of `counts` of the network with weights w (B, H, M),
    p (B, n_sets), a (B,): counts.table_loss of `logit_table`.

    Where a gradient is needed it is the closed form (`WindowCounts.table_loss_gradient`
    and `LogitTable.vjp`), differentiable once (SGD's backward pass); for higher
    derivatives use table_loss(logit_table(...)), plain autograd.
    """
    if torch.is_grad_enabled() and any(x.requires_grad for x in (w, p, a)):
        return _NetworkLoss.apply(w, p, a, counts, inputs, sets, variant)
    return counts.table_loss(logit_table(w, p, a, inputs, sets), variant)


class _NetworkLoss(torch.autograd.Function):
    """`network_loss` with the gradient computed with the loss."""

    @staticmethod
    def forward(ctx, w, p, a, counts, inputs, sets, variant):
        table = LogitTable(w, p, a, inputs, sets)
        loss, grad_table = counts.table_loss_gradient(table.table, variant)
        ctx.table, ctx.grad_table = table, grad_table
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        grads = ctx.table.vjp(grad_loss[:, None, None] * ctx.grad_table)
        return grads["w"], grads["p"], grads["a"], None, None, None, None


# ------------------------------------------------------------- manifold

def manifold(*, shape: InductionShape) -> Manifold:
    """Identity lift of (w, C, a) onto the simplified network's weights (G = I).

    a is stored as a (1,) block (the network's weight `a` has shape (1,)).
    """
    blocks = [Param("w", (shape.heads, shape.window), "copier logits per head and offset"),
              Param("C", (len(shape.sets),), "selector amplitude per candidate set, "
                    "c_S = C_S^2"),
              Param("a", (1,), "classifier logit scale")]
    return Manifold(blocks, lambda s: {"w": s["w"], "C": s["C"], "a": s["a"]})


def observables(s: dict) -> dict:
    """State symbols -> {"w": (H, M), "p": (n_sets,) = C^2 / |C|^2, "a": ()}."""
    squares = s["C"] ** 2
    return {"w": s["w"], "p": squares / sum(squares), "a": np.asarray(s["a"][0], dtype=object)}


def population_model(counts: WindowCounts, *, shape: InductionShape,
                     variant: str = "ce") -> ReducedModel:
    """Gradient flow of the simplified network's loss on the fixed sample `counts` (window
    counts over `shape.span` offsets)."""
    sets, inputs = shape.sets, shape.copier_inputs()

    def loss(obs, hyper):
        return counts.table_loss(logit_table(obs["w"], obs["p"], obs["a"], inputs, sets),
                                 variant)

    def gradient(obs, hyper):
        table = LogitTable(obs["w"], obs["p"], obs["a"], inputs, sets)
        return table.vjp(counts.table_loss_gradient(table.table, variant)[1])

    description = (f"population {variant} loss of the simplified network, Monte Carlo over "
                   f"{len(counts)} chains and sequences (L={counts.length})")
    return _PopulationModel(manifold(shape=shape), observables,
                            TorchLoss(loss, description, gradient=gradient))


class _PopulationModel(ReducedModel):
    """`population_model`'s ReducedModel with the gradient in the state in closed form.

    The observables are w, p = C^2 / |C|^2 and a (`observables`), so from the loss's
    gradient in them d/dC = 2 C / |C|^2 (d/dp - <p, d/dp>): the same vector-Jacobian
    product as autograd through the compiled observables, without its many small steps."""

    def gradient(self, state: torch.Tensor, hyper) -> torch.Tensor:
        s = self.manifold.unpack(state.detach())
        C = s["C"]
        norm2 = (C**2).sum(-1, keepdim=True)
        p = C**2 / norm2
        grads = self.loss_spec.gradient({"w": s["w"], "p": p, "a": s["a"][..., 0]}, hyper)
        d_p = grads["p"]
        d_C = 2 * C / norm2 * (d_p - (p * d_p).sum(-1, keepdim=True))
        return torch.cat([grads["w"].flatten(-2), d_C, grads["a"][..., None]], -1)


# ------------------------------------------------ the symbolic three-stage model


def first_order_gains_table(counts: WindowCounts, variant: str) -> torch.Tensor:
    """Omega (P, P) with dLoss/da at a = 0 equal to -sum_(z,y) Omega[z, y] k(z, y).

    Omega = -dLoss/dT at T = 0, for the loss as a function of the logit table T
    (`WindowCounts.predict`): exact, by autograd, on the sample.
    """
    n_patterns = counts.ratio.shape[1]
    table = torch.zeros((1, n_patterns, n_patterns), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(counts.table_loss(table, variant).sum(), table)
    return -grad[0]


def exact_first_order_gains(omega: torch.Tensor, w: torch.Tensor, inputs: torch.Tensor,
                            sets: list[tuple[int, ...]]) -> torch.Tensor:
    """(..., n_sets) D_S(w) = sum_(z,y) Omega[z, y] prod_(h in S) <u_h(z), u_h(y)> for
    w (..., H, M): dLoss/da at a = 0 is -sum_S p_S D_S(w)."""
    similarity = head_similarity(w, inputs)
    eye = torch.eye(len(sets), dtype=torch.float64)
    return (selector_kernel(similarity[..., None, :, :, :], eye, sets) * omega).sum((-1, -2))


def sharp_gain(omega: torch.Tensor, offsets: tuple[int, ...], span: int, vocab: int) -> float:
    """G(T): the first-order gain D of |T| sharp copiers, one on each offset of T (a
    one-logit head reading only that offset), combined as one set. For "ce" it tends to
    the modified chi-square MI I(T) as L grows. (At positions whose copied offset lies
    before x_1 the copier output is 0, so such keys get no kernel weight: the network's
    limit, which differs from the limiting model there by O(M / L).)"""
    one_hot = pattern_one_hot(span, vocab)
    inputs = torch.stack([one_hot[:, [k - 1]] for k in offsets])           # (|T|, P, 1, V)
    w = torch.zeros((len(offsets), 1), dtype=torch.float64)
    return float(exact_first_order_gains(omega, w, inputs,
                                         [tuple(range(1, len(offsets) + 1))])[0])


def _as_w(args, heads: int) -> torch.Tensor:
    """(..., heads, M) logits from heads x M floats or broadcastable tensors."""
    values = torch.broadcast_tensors(*[torch.as_tensor(x, dtype=torch.float64) for x in args])
    return torch.stack(values, -1).reshape(*values[0].shape, heads, -1)


def _same(args: tuple, cached: tuple) -> bool:
    return len(args) == len(cached) and all(x is y for x, y in zip(args, cached))


class CopierCache:
    """`CopierFeatures` of each head at its latest logits, shared by the soft gains of
    every set that holds the head: one computation per head and new argument objects
    (those of one evaluation of a compiled gradient). inputs: (H, P, M, vocab)."""

    def __init__(self, inputs: torch.Tensor):
        self.inputs = inputs
        self._last: dict[int, tuple] = {}

    def __call__(self, head: int, args: tuple) -> CopierFeatures:
        """The features (..., 1, P, vocab) of head (1-indexed) at logits args (M)."""
        cached = self._last.get(head)
        if cached is None or not _same(args, cached[0]):
            cached = (args, CopierFeatures(_as_w(args, 1), self.inputs[head - 1 : head]))
            self._last[head] = cached
        return cached[1]


def soft_gain_function(name: str, omega: torch.Tensor, copiers: CopierCache,
                       heads: tuple[int, ...]) -> type:
    """D_S(w) of one set S of r heads (1-indexed) as a sympy Function of their r M copier
    logits.

    D_S(w) = sum_(z,y) Omega[z, y] prod_(h in S) <u_h(z), u_h(y)>: the soft copiers' own
    first-order gain (dLoss/da at a = 0 is -sum_S p_S D_S), in closed form in w (softmax,
    inner products and norms over the window patterns), evaluated in torch. Its partial
    derivatives are sympy Functions too (all r M of them, with D_S on Python floats, from
    one pass of the closed-form gradient `CopierFeatures.similarity_vjp`, reused while
    the arguments are the same objects: one evaluation of a compiled gradient); the
    heads' features come from `copiers`, shared with the other sets.
    """
    r, window = len(heads), copiers.inputs.shape[2]
    inputs = copiers.inputs[[h - 1 for h in heads]]
    last = {"args": (), "value": None, "grad": None}

    def evaluate(args) -> dict:
        """D_S and its gradient at args, once per new set of argument objects. On Python
        floats (the scalar path of a compiled gradient) they are Python floats too, so
        the rest of the expression stays on floats."""
        if not _same(args, last["args"]):
            features = [copiers(h, args[j * window : (j + 1) * window])
                        for j, h in enumerate(heads)]
            similarity = [f.similarity[..., 0, :, :] for f in features]
            product = similarity[0]
            for factor in similarity[1:]:
                product = product * factor
            gain = (product * omega).sum((-1, -2))
            grads = []
            for j, f in enumerate(features):
                others = omega
                for k, factor in enumerate(similarity):
                    if k != j:
                        others = others * factor
                grads.append(f.similarity_vjp(others[..., None, :, :])[..., 0, :])
            g = torch.cat(grads, -1)
            if all(type(x) is float for x in args):
                last.update(args=args, value=float(gain), grad=g.tolist())
            else:
                last.update(args=args, value=None, grad=g.unbind(-1))
        return last

    def value(*args):
        if all(type(x) is float for x in args):
            return evaluate(args)["value"]
        return exact_first_order_gains(omega, _as_w(args, r), inputs,
                                       [tuple(range(1, r + 1))])[..., 0]

    slopes = [_implemented(f"{name}Slope{k}", lambda *args, k=k: evaluate(args)["grad"][k],
                           r * window)
              for k in range(r * window)]
    gain = _implemented(name, value, r * window)
    gain.fdiff = lambda self, argindex=1: slopes[argindex - 1](*self.args)
    return gain


def limit_loss_function(tokens: torch.Tensor, offsets: tuple[int, ...], vocab: int,
                        variant: str) -> type:
    """The limiting model's loss Lambda(b) on tokens (n, L + 1), as a sympy Function.

    Lambda(b) = mean loss of the generalised induction head with set `offsets`
    and logit b (markov.gih_loss; "ce" leaves out sequences whose target is not
    in the context). Its torch implementation is used by lambdify; its
    derivative is a second Function, Lambda'(b), computed in closed form (its
    torch implementation is also the class attribute `slope`).
    """
    context, target = tokens[:, :-1], tokens[:, -1]
    matched, token_counts = gih_counts(context, offsets, vocab)
    if variant == "ce":
        seen = token_counts.gather(1, target[:, None]).squeeze(1) > 0
        matched, token_counts, target = matched[seen], token_counts[seen], target[seen]
    length = float(context.shape[1])

    def value(b):
        log_predict = gih_log_predict_from_counts(matched, token_counts, b)
        loss = loss_from_log_predict(log_predict, target, variant)
        return float(loss) if type(b) is float else loss  # floats stay floats (scalar path)

    def slope(b):
        if type(b) is float:
            return float(slope(torch.tensor(b, dtype=torch.float64)))
        b = torch.as_tensor(b, dtype=torch.float64)[..., None, None]
        boost = b.exp()
        matched_total = matched.sum(-1, keepdim=True)
        denominator = boost * matched_total + length - matched_total
        y_hat = (boost * matched + token_counts - matched) / denominator
        dy = boost * (matched - y_hat * matched_total) / denominator
        if variant == "ce":
            pick = target[:, None]
            grad = -(dy.gather(-1, pick.expand(*dy.shape[:-1], 1))
                     / y_hat.gather(-1, pick.expand(*dy.shape[:-1], 1))).squeeze(-1)
        else:
            soft = torch.softmax(y_hat, -1)
            grad = -dy.gather(-1, target[:, None].expand(*dy.shape[:-1], 1)).squeeze(-1) \
                + (soft * dy).sum(-1)
        return grad.mean(-1)

    slope_fn = _implemented("LimitSlope", slope)
    limit = _implemented("LimitLoss", value)
    limit.fdiff = lambda self, argindex=1: slope_fn(self.args[0])
    limit.slope = staticmethod(slope)
    return limit


def _implemented(name: str, torch_fn, nargs: int = 1) -> type:
    """A sympy Function of nargs arguments that lambdify's torch printer calls by name,
    with torch_fn as its implementation."""
    return type(name, (sp.Function,), {
        "nargs": nargs,
        "_imp_": staticmethod(torch_fn),
        "_torchcode": lambda self, printer: (
            f"{name}({', '.join(printer._print(x) for x in self.args)})"),
    })


@dataclass
class ThreeStageParts:
    """Ingredients of the symbolic model, kept for reports and tests.

    - gains: {offset set T (tuple): G(T)}, over the sets of offsets 1..span with |T| <= D
    - limit_loss: the sympy Function Lambda (limiting model with S*)
    - d_star: D_* = -Lambda'(0) (= G(S*) up to O(M / L))
    - omega: (P, P) the first-order table Omega of the sample
    """

    gains: dict
    limit_loss: type
    d_star: float
    omega: torch.Tensor


def three_stage_model(tokens: torch.Tensor, *, shape: InductionShape, s_star: tuple[int, ...],
                      variant: str = "ce") -> tuple[ReducedModel, ThreeStageParts]:
    """The symbolic model Loss = Lambda(a m(w, p)), m = sum_S p_S D_S(w) / D_*, D_* = -Lambda'(0).

    D_S(w) from `soft_gain_function` (the empty set's gain is 0: a constant kernel term
    moves no attention), Omega and Lambda averaged over tokens (n, L + 1) (use the
    population flow's sample: common random numbers). s_star: the offsets the limiting
    model uses (heads are named by the offset they start on).
    """
    span, vocab = shape.span, shape.vocab
    omega = first_order_gains_table(WindowCounts.from_tokens(tokens, span, vocab), variant)
    gains = {t: sharp_gain(omega, t, span, vocab) for t in candidate_sets(span, shape.degree)}
    limit = limit_loss_function(tokens, s_star, vocab, variant)
    d_star = -float(limit.slope(torch.tensor(0.0, dtype=torch.float64)))
    copiers = CopierCache(shape.copier_inputs())
    functions = {heads: soft_gain_function(f"SoftGain_{'_'.join(map(str, heads))}", omega,
                                           copiers, heads)
                 for heads in shape.sets if heads}

    def build(obs, hyper):
        w = obs["w"]
        terms = [p * functions[heads](*w[[h - 1 for h in heads]].ravel())
                 for p, heads in zip(obs["p"], shape.sets) if heads]
        return limit(obs["a"][()] * sp.Add(*terms) / sp.Float(d_star, 17))

    description = (f"symbolic three-stage model Lambda(a m(w, p)) ({variant}; S* = "
                   f"{{{','.join(map(str, s_star))}}}), soft-copier gains and Lambda averaged "
                   f"over {len(tokens)} sequences (L={tokens.shape[1] - 1})")
    model = ReducedModel(manifold(shape=shape), observables, SymbolicLoss(build, description))
    return model, ThreeStageParts(gains=gains, limit_loss=limit, d_star=d_star, omega=omega)


# ------------------------------------------------------------- SGD's growth of |C|


def target_ratio(ratio: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(n, K) ratio_k(target) of ratio (n, vocab, K) and target (n,)."""
    return ratio.gather(1, target[:, None, None].expand(-1, 1, ratio.shape[-1]))[:, 0]


def sequence_logit_gradients(logits: torch.Tensor, ratio: torch.Tensor, target: torch.Tensor,
                             variant: str, picked: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n, K) gradient of each sequence's own loss w.r.t. its attention logits (B, n, K)
    (a k(query, key) + log N_y over the K patterns it visits, `WindowCounts.visited`);
    ratio (n, vocab, K) N_y(e) / N_y, target (n,), picked: their `target_ratio` if the
    caller keeps it. With q = softmax(logits) and y_hat = sum_k q_k ratio_k: "ce"
    (targets seen in the context only) q_k (1 - ratio_k(target) / y_hat(target));
    "logsoftmax" q_k <c, ratio_k - y_hat>, c = softmax(y_hat) - onehot(target)."""
    q = torch.softmax(logits, -1)
    if variant == "ce":
        picked = target_ratio(ratio, target) if picked is None else picked
        y_target = (q * picked).sum(-1, keepdim=True)
        return q - q * picked / y_target
    if variant == "logsoftmax":
        y_hat = torch.einsum("bnk,nek->bne", q, ratio)
        c = torch.softmax(y_hat, -1) - torch.nn.functional.one_hot(target, ratio.shape[1])
        return q * (torch.einsum("bne,nek->bnk", c, ratio) - (c * y_hat).sum(-1, keepdim=True))
    raise ValueError(f"unknown loss variant {variant!r}")


class SgdSelectorDrift:
    """The growth of |C| under plain SGD, as the `radial` rate of `integrate_log_selector`.

    Gradient flow conserves |C| (rho = 0). SGD grows it in two ways (docs/induction.md):
    1. noise: the loss depends on C only through p, so every per-sequence gradient g_n
       (w.r.t. C) is orthogonal to C, and a step C -> C - lr g_hat gives |C|^2 -> |C|^2 +
       lr^2 |g_hat|^2 exactly. For a minibatch of `batch` fresh sequences E|g_hat|^2 =
       |g_bar|^2 + tr Sigma / B_eff (Sigma the per-sequence covariance, B_eff = batch x the
       fraction of sequences the loss counts), so with t = lr x step
       d|C|^2/dt = lr (|g_bar|^2 + tr Sigma / B_eff);
    2. edge of stability: near a vertex p = delta_S* the loss has curvature
       2 (g_T - g_bar) / |C|^2 along a losing C_T (g = dLoss/dp), so a step multiplies C_T by
       1 - lr 2 (g_T - g_bar) / |C|^2: unstable once |C|^2 < lr max_T (g_T - g_bar). The
       losing sets then oscillate and grow until |C|^2 is back above that bound; here |C|^2
       is relaxed onto it at rate `stiffness` (per unit t) whenever it falls below.
    rho = d ln|C|/dt is the sum of both. Moments over `counts` (the population sample).
    """

    def __init__(self, counts: WindowCounts, *, shape: InductionShape, variant: str, lr: float,
                 batch: int, stiffness: float = 20.0):
        self.counts, self.variant, self.lr, self.stiffness = counts, variant, lr, stiffness
        self.sets = shape.sets
        self.manifold = manifold(shape=shape)
        self.inputs = shape.copier_inputs()
        self.used = counts.target_seen if variant == "ce" else torch.ones_like(counts.target_seen)
        self.batch = batch * float(self.used.double().mean())
        # the patterns each counted sequence visits (WindowCounts.visited), and its target
        self.visited = tuple(x[self.used] for x in counts.visited)
        self.target = counts.target[self.used]
        self.target_ratio = target_ratio(self.visited[2], self.target)

    def per_sequence_gradients(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """At states (B, P): the gradient w.r.t. C of each counted sequence's loss
        (B, n_used, n_sets), and g_T - g_bar, g = dLoss/dp (B, n_sets)."""
        s = self.manifold.unpack(state.detach())
        w, C, a = s["w"], s["C"], s["a"]
        norm2 = (C**2).sum(-1, keepdim=True)
        p = C**2 / norm2
        weights = LogitTable(w, p, a[:, 0], self.inputs, self.sets)
        products, table = weights.products, weights.table          # (B, n_sets, P, P), (B, P, P)
        position, log_visits, ratio = self.visited
        logits = take(table.flatten(1), position) + log_visits          # (B, n_used, K)
        grad = sequence_logit_gradients(logits, ratio, self.target, self.variant,
                                        self.target_ratio)
        keys = take(products.flatten(2).flatten(0, 1), position)        # (B n_sets, n, K)
        g_p = a[:, :, None] * torch.einsum("bnk,bsnk->bns", grad,
                                           keys.view(*products.shape[:2], *position.shape))
        centred = g_p - (p[:, None] * g_p).sum(-1, keepdim=True)
        excess = g_p.mean(1) - (p * g_p.mean(1)).sum(-1, keepdim=True)
        return 2 * C[:, None] / norm2[:, None] * centred, excess

    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        """(B, P) -> (B,) rho = d ln|C|/dt of SGD with this lr and batch."""
        g, excess = self.per_sequence_gradients(state)
        mean = g.mean(1)
        mean2 = (mean**2).sum(-1)
        spread = (g**2).sum(-1).mean(1) - mean2
        norm2 = (self.manifold.unpack(state)["C"] ** 2).sum(-1)
        noise = self.lr * (mean2 + spread / self.batch) / (2 * norm2)
        bound = self.lr * excess.max(-1).values
        shortfall = 0.5 * torch.log(bound.clamp(min=1e-300) / norm2)
        return noise + self.stiffness * shortfall.clamp(min=0.0)


# ------------------------------------------------------------- integration


def integrate_log_selector(model: ReducedModel, state0: torch.Tensor, t, observe,
                           active=None, radial=None, **solver) -> Trajectory:
    """The gradient flow of `model` from state0 (P,), integrated with log|C_S| in place of C_S.

    The same flow as `integrate_flow` (dC_S/dt = -dLoss/dC_S; C_S never changes
    sign): losing sets decay like C_S ~ exp(-r t) with r ~ a (D_S* - D_S) / |C|^2,
    up to ~10^3 here, which makes the flow stiff for an explicit solver in C and
    leaves C_S below any absolute tolerance; in log|C_S| it is a line of slope -r.
    - t: (T,) increasing output times (t[0] any: the flow is autonomous), or a list of such
      grids, one per segment, each starting where the previous one ends
    - observe: the observable function on weights, applied to the lifted state
    - active: per segment (a list, or one value for a single grid), None (all entries
      move) or a (P,) bool mask of the state entries that move, the others frozen (the
      stages of a sequential schedule)
    - radial: optional (B, P) state -> (B,) rate rho added to d log|C_S|/dt of every S,
      i.e. d ln|C|/dt = rho with p unchanged (`SgdSelectorDrift`: the growth of |C| under SGD)
    Returns one "ode" Trajectory over all segments (the joins recorded once), cut after a
    failure.
    """
    grids, masks = (t, active) if isinstance(t, list) else ([t], [active])
    names = [p.name for p in model.manifold.params]
    start = sum(p.size for p in model.manifold.params[: names.index("C")])
    block = slice(start, start + model.manifold.params[names.index("C")].size)
    state0 = state0.reshape(-1).to(torch.float64)
    sign = torch.sign(state0[block])
    if (sign == 0).any():
        raise ValueError("every C_S must be nonzero")
    rhs = model.rhs({})

    def to_state(y: torch.Tensor) -> torch.Tensor:
        # the clamp only keeps rejected trial stages of the solver finite (|C| ~ 1 here)
        return torch.cat([y[..., : block.start], sign * y[..., block].clamp(max=50.0).exp(),
                          y[..., block.stop :]], -1)

    def log_rhs(y: torch.Tensor, mask) -> torch.Tensor:
        x = to_state(y)
        dx = rhs(x)
        c = x[..., block]
        # a set with |C_S| < FLOOR has p_S < 1e-390: nothing left to lose, frozen there
        dlog = torch.where(c.abs() > FLOOR, dx[..., block] / torch.where(c == 0, 1.0, c), 0.0)
        if radial is not None:
            dlog = dlog + radial(x)[..., None]
        out = torch.cat([dx[..., : block.start], dlog, dx[..., block.stop :]], -1)
        return out if mask is None else out * mask

    y = torch.cat([state0[: block.start], state0[block].abs().log(), state0[block.stop :]])[None]
    times, ys, status = [], [], "complete"
    for k, (grid, mask) in enumerate(zip(grids, masks)):
        sol = integrate(lambda v, mask=mask: log_rhs(v, mask), y, grid, **solver)
        reached = int(sol.valid[:, 0].sum())
        first = 0 if k == 0 else 1
        times.append(sol.t[first:reached])
        ys.append(sol.y[first:reached, 0])
        status = sol.status[0]
        if status != "complete":
            break
        y = sol.y[reached - 1]
    with torch.no_grad():
        states = to_state(torch.cat(ys))
        loss = model.loss(states, {}).cpu().numpy()
        params = {k: v.cpu().numpy() for k, v in observe(model.manifold.lift(states)).items()}
    return Trajectory(kind="ode", t=np.concatenate(times), loss=loss, params=params,
                      status=status,
                      attrs={"model": model.description, "integrated_in": "w, log|C_S|, a"})


# ------------------------------------------------------------- starts


def standard_start(*, shape: InductionShape, w_plus: float, w_minus: float, c_init: float,
                   a_init: float) -> dict[str, np.ndarray]:
    """The authors' start: w = w_plus on each head's own offset (head h, offset h),
    w_minus elsewhere; C_S = c_init for every set (the empty set too); a = a_init."""
    w = np.full((shape.heads, shape.window), w_minus)
    w[np.arange(shape.heads), shape.own_offset_index()] = w_plus
    return {"w": w, "C": np.full(len(shape.sets), c_init), "a": np.array([a_init])}


def conformance_cases():
    """(id, model, hyper, start state (P,)) for the conformance suite."""
    from .markov_chains import make_dataset

    data = make_dataset(60, 3, (1, 2), 0.3, 24, torch.Generator().manual_seed(2))
    for tag, shape in [("", InductionShape(vocab=3, window=2, heads=2, degree=2)),
                       ("-authors", InductionShape(vocab=3, window=2, heads=2, degree=2,
                                                   empty_set=True, shifted=True))]:
        man = manifold(shape=shape)
        start = man.pack(standard_start(shape=shape, w_plus=1.0, w_minus=0.2, c_init=0.5,
                                        a_init=0.8))
        start = start + 0.05 * torch.arange(start.shape[0], dtype=torch.float64)
        counts = WindowCounts.from_tokens(data.tokens, shape.span, 3)
        for variant in LOSSES:
            yield (f"induction-population-{variant}{tag}",
                   population_model(counts, shape=shape, variant=variant), {}, start)
            model, _ = three_stage_model(data.tokens, shape=shape, s_star=(1, 2),
                                         variant=variant)
            yield f"induction-three-stage-{variant}{tag}", model, {}, start
