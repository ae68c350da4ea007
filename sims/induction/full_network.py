"""The full induction-head transformer (docs/theory/induction.md, section 2): token-dependent layer 1 plus LayerNorm.

Layer 1, head h, at a position with token x (the query position L+1 has a zero row) and
window tokens x_(-k), k = 1..M (zero rows before x_1):
  score_k = w_hk + (Q_h x) . (K_h x_(-k)),    attn_h = softmax_k(score),
  v_h = sum_k attn_hk OV_h x_(-k),            u_h = LayerNorm_h(v_h)
(LayerNorm over the d entries, gain g_h and bias b_h, eps 1e-12). Layer 2 is the simplified
model's: c_S = C_S^2, p = c / sum c, k(L+1, l) = sum_S p_S prod_(h in S) <u_h(L+1), u_h(l)>,
y_hat = sum_(l <= L) softmax_l(a k(L+1, l)) x_l. All parameters train jointly.

Start (`FullInductionNet.start`): Q, K with N(0, qk_init^2) entries, OV_h = I, g_h = sqrt(d-1)/d
and b_h = 1/d (so LayerNorm maps a one-hot row to itself), w, C and a as the simplified model's.

Sufficient statistics: u_h of a context position depends on its window pattern y and its own
token e, that of the query on its window pattern z only, so y_hat depends on a sequence through
the query's pattern and the counts N_y(e) (reduced_models.induction.WindowCounts), as for the
simplified model.

Projection onto (w, p, a) (`project_full`, docs/induction.md):
- w (H, M): w_hk = log(mean attention of head h on offset k over the context positions of a
  reference sample) + logsumexp_k(w_h); at Q K = 0 this is the RPE logits w_h exactly;
- p (n_sets,) = C^2 / |C|^2 and c_norm = |C|, as for the simplified model;
- a: the classifier's logit gap between a key whose copied tokens all match the query's and
  one whose copied tokens all differ, for exact copies:
  a sum_S p_S (prod_(h in S) m_h - prod_(h in S) n_h), m_h (n_h) the mean of
  <f_h(i), f_h(j)> over i = j (i != j), f_h(i) = LayerNorm_h(OV_h e_i); at the start it is a.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from reduced_models import induction as theory

from ..weights import NamedWeights
from .network import shifted_windows

EPS = 1e-12  # LayerNorm eps: a one-hot row maps to itself up to a relative 1e-12
COPIER = ("w", "Q", "K", "OV")  # layer-1 attention and values: the copier


def _layer_norm(v: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last axis of v (H, ..., d) with per-head gain and bias (H, d)."""
    shape = (gain.shape[0],) + (1,) * (v.dim() - 2) + (gain.shape[1],)
    centred = v - v.mean(-1, keepdim=True)
    scaled = centred * (centred.pow(2).mean(-1, keepdim=True) + EPS).rsqrt()
    return scaled * gain.reshape(shape) + bias.reshape(shape)


class FullInductionNet(NamedWeights):
    """Full TF(M, H, d, D): parameters w (H, M), Q, K, OV (H, d, d), ln_gain, ln_bias (H, d),
    C (n_sets,), a (1,); float64 by default."""

    BLOCKS: ClassVar[dict] = {"selector": ("C",), "copier": COPIER,
                              "classifier": ("a", "ln_gain", "ln_bias")}

    def __init__(self, *, shape: theory.InductionShape, dtype=torch.float64):
        """shape (keyword only): vocab, window, heads, degree; every head reads offsets 1..M
        (shape.shifted is not supported), the empty selector set is."""
        super().__init__()
        if shape.shifted:
            raise ValueError("the full network reads offsets 1..M in every head (shifted=False)")
        vocab, window, heads = shape.vocab, shape.window, shape.heads
        self.vocab, self.window, self.heads = vocab, window, heads
        self.sets = shape.sets
        d = vocab
        self.w = nn.Parameter(torch.zeros((heads, window), dtype=dtype))
        self.Q = nn.Parameter(torch.zeros((heads, d, d), dtype=dtype))
        self.K = nn.Parameter(torch.zeros((heads, d, d), dtype=dtype))
        self.OV = nn.Parameter(torch.eye(d, dtype=dtype).repeat(heads, 1, 1))
        self.ln_gain = nn.Parameter(torch.full((heads, d), math.sqrt(d - 1) / d, dtype=dtype))
        self.ln_bias = nn.Parameter(torch.full((heads, d), 1.0 / d, dtype=dtype))
        self.C = nn.Parameter(torch.ones(len(self.sets), dtype=dtype))
        self.a = nn.Parameter(torch.zeros(1, dtype=dtype))
        self.register_buffer("one_hot", theory.pattern_one_hot(window, vocab).to(dtype),
                             persistent=False)
        # token slots of a position: one-hot rows 0..d-1, and a zero row (the query position)
        tokens = torch.cat([torch.eye(d, dtype=dtype), torch.zeros((1, d), dtype=dtype)])
        self.register_buffer("tokens", tokens, persistent=False)

    @torch.no_grad()
    def start(self, simplified: dict[str, torch.Tensor], qk_init: float,
              generator: torch.Generator) -> None:
        """The start described in the module docstring; simplified: w, C, a of the simplified
        model's start."""
        for name in ("w", "C", "a"):
            getattr(self, name).copy_(torch.as_tensor(simplified[name]).reshape(
                getattr(self, name).shape))
        for weight in (self.Q, self.K):
            weight.copy_(qk_init * torch.randn(weight.shape, generator=generator,
                                               dtype=weight.dtype))

    def shares(self) -> torch.Tensor:
        """(n_sets,) p = C^2 / |C|^2."""
        squares = self.C**2
        return squares / squares.sum()

    # ------------------------------------------------------------ layer 1 by pattern

    def attention(self) -> torch.Tensor:
        """(H, P, d+1, M) layer-1 attention of a position with window pattern y (axis 1) and
        own token e (axis 2; slot d is the query's zero row) over offsets 1..M."""
        keys = torch.einsum("hij,pkj->hpki", self.K, self.one_hot)        # (H, P, M, d)
        queries = torch.einsum("hij,ej->hei", self.Q, self.tokens)        # (H, d+1, d)
        scores = self.w[:, None, None, :] + torch.einsum("hei,hpki->hpek", queries, keys)
        return torch.softmax(scores, -1)

    def features(self) -> torch.Tensor:
        """(H, P, d+1, d) u_h of every (window pattern, own-token slot)."""
        values = torch.einsum("hij,pkj->hpki", self.OV, self.one_hot)     # (H, P, M, d)
        v = torch.einsum("hpek,hpki->hpei", self.attention(), values)
        return _layer_norm(v, self.ln_gain, self.ln_bias)

    def logit_table(self) -> torch.Tensor:
        """(P, P, d) classifier logits a k(query, key) between a query of pattern z and a key of
        pattern y with token e."""
        u = self.features()
        query, keys = u[:, :, -1], u[:, :, :-1]                           # (H,P,d), (H,P,d,d)
        similarity = torch.einsum("hzi,hyei->hzye", query, keys)
        H, P = similarity.shape[:2]
        kernel = theory.selector_kernel(similarity.reshape(H, P, -1), self.shares(), self.sets)
        return self.a * kernel.reshape(P, P, self.vocab)

    def predict_counts(self, counts: theory.WindowCounts) -> torch.Tensor:
        """y_hat (n, vocab) from the sequences' window counts."""
        return counts.predict_by_token(self.logit_table()[None])[0]

    def loss(self, counts: theory.WindowCounts, variant: str) -> torch.Tensor:
        """Scalar mean loss on the sequences of `counts` ("ce" or "logsoftmax")."""
        return counts.loss(self.predict_counts(counts)[None], variant)[0]

    # ------------------------------------------------------------ reference forward

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (n, L + 1, vocab) one-hot with a zero query row -> y_hat (n, vocab).

        The direct position-by-position definition (reference for `predict_counts`).
        """
        shifted = shifted_windows(inputs, self.window)
        queries = torch.einsum("hij,nlj->nhli", self.Q, inputs)
        keys = torch.einsum("hij,nklj->nhkli", self.K, shifted)
        scores = self.w[None, :, :, None] + torch.einsum("nhli,nhkli->nhkl", queries, keys)
        attention = torch.softmax(scores, 2)
        v = torch.einsum("nhkl,hij,nklj->hnli", attention, self.OV, shifted)
        u = _layer_norm(v, self.ln_gain, self.ln_bias)                    # (H, n, L+1, d)
        similarity = torch.einsum("hni,hnli->nhl", u[:, :, -1], u[:, :, :-1])
        p = self.shares()
        ones = torch.ones_like(similarity[:, 0])
        kernel = sum(p[i] * torch.stack([ones] + [similarity[:, h - 1] for h in heads], 0).prod(0)
                     for i, heads in enumerate(self.sets))
        weights = torch.softmax(self.a * kernel, -1)
        return torch.einsum("nl,nle->ne", weights, inputs[:, :-1])


def position_law(counts: theory.WindowCounts) -> torch.Tensor:
    """(P, d) frequency of (window pattern, token) over all context positions of `counts`."""
    table = (counts.log_visits.exp()[..., None] * counts.ratio).sum(0)
    return table / table.sum()


def project_full(net: FullInductionNet, law: torch.Tensor) -> dict[str, torch.Tensor]:
    """The full network's observables w (H, M), p (n_sets,), a (), c_norm () (module docstring).

    law: (P, d) reference frequency of (window pattern, token) from `position_law`.
    """
    mean_attention = torch.einsum("ye,hyek->hk", law, net.attention()[:, :, :-1])
    w = mean_attention.log() + torch.logsumexp(net.w, -1, keepdim=True)
    squares = net.C**2
    total = squares.sum()
    p = squares / total
    copies = _layer_norm(net.OV.transpose(1, 2), net.ln_gain, net.ln_bias)  # f_h(i): (H, d, d)
    gram = torch.einsum("hid,hjd->hij", copies, copies)
    d = net.vocab
    match = gram.diagonal(dim1=1, dim2=2).mean(-1)
    mismatch = (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)) / (d * (d - 1))
    gap = sum(p[i] * (match[[h - 1 for h in heads]].prod() - mismatch[[h - 1 for h in heads]].prod())
              for i, heads in enumerate(net.sets))
    return {"w": w, "p": p, "a": net.a[0] * gap, "c_norm": total.sqrt()}
