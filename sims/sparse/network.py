"""Multi-layer multi-head transformers for in-context sparse regression (docs/theory/sparse.md).

Prompts become n + 1 tokens: context tokens z_i = (x_i, y_i) and the query
token (x_q, 0). Keys and values come from the n context tokens only; every
token (context and query) queries them, so the query never sees its own
missing label. Two forms:

- `SoftmaxTransformer`: the standard blocks of the paper's experiments
  (arXiv 2408.04532): a linear embedding of z into `width` channels, then per
  layer pre-LayerNorm softmax attention (H heads of width / H channels,
  scores / sqrt(width / H)) and a GELU MLP, each with a residual; a final
  LayerNorm and a linear read-out of the query token.
- `LinearAttentionStack`: the theory's linear-attention-only stack, no MLP,
  no LayerNorm. The residual stream has D = d + H + 1 channels: (x, u, y)
  with u in R^H free channels (zero at the input) that the first layer may
  write, y the label channel. Layer l, head h, merged weights KQ[l, h] and
  OV[l, h] (D, D):

      Z_j <- Z_j + sum_h m[l, h] OV[l, h] (1/n) sum_{i <= n} Z_i (Z_i^T KQ[l, h] Z_j),

  and y_hat = - Z_q[y] (the label channel of the query, sign as in the
  construction of GD by attention, where it accumulates - x_q.beta_hat).

Both take a head mask m (layers, heads) of floats: a head's output is
multiplied by its entry before the heads are combined. No mask and a mask of
ones give bit-identical results; masking a head leaves everything computed
before that head's output bit-identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .task import SparseBatch


def tokens(batch: SparseBatch) -> torch.Tensor:
    """(B, n + 1, d + 1): context tokens (x_i, y_i), then the query (x_q, 0)."""
    context = torch.cat([batch.x, batch.y.unsqueeze(-1)], dim=-1)
    query = torch.cat([batch.xq, torch.zeros_like(batch.yq).unsqueeze(-1)], dim=-1)
    return torch.cat([context, query.unsqueeze(1)], dim=1)


def interleave(batch: SparseBatch) -> torch.Tensor:
    """(B, 2n + 1, d + 1): x_1, y_1, ..., x_n, y_n, x_q. An x token is (x, 0), a y token
    (0_d, y): the label has a channel of its own."""
    B, n, d = batch.x.shape
    xs = F.pad(torch.cat([batch.x, batch.xq[:, None]], dim=1), (0, 1))
    ys = F.pad(batch.y[..., None], (d, 0))
    pairs = torch.stack([xs[:, :n], ys], dim=2).reshape(B, 2 * n, d + 1)
    return torch.cat([pairs, xs[:, n:]], dim=1)


def labels(batch: SparseBatch) -> torch.Tensor:
    """(B, n + 1): y_1, ..., y_n, y_q, the targets of the predictions at the x tokens."""
    return torch.cat([batch.y, batch.yq[:, None]], dim=1)


def _gate(head_outputs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, H, T, C) head outputs times a (H,) mask; no mask leaves them untouched."""
    return head_outputs if mask is None else head_outputs * mask[None, :, None, None]


@dataclass(frozen=True)
class TransformerShape:
    """Sizes of a network: d covariates, layers, heads per layer, width (channels of the
    residual stream of SoftmaxTransformer; divisible by heads), MLP hidden = mlp_ratio x width."""

    d: int
    layers: int
    heads: int
    width: int = 64
    mlp_ratio: int = 4


class _Block(nn.Module):
    """Pre-LN block: h + Attn(LN h), then h + MLP(LN h)."""

    def __init__(self, shape: TransformerShape):
        super().__init__()
        w, self.heads = shape.width, shape.heads
        self.norm_attn = nn.LayerNorm(w)
        self.qkv = nn.Linear(w, 3 * w)
        self.proj = nn.Linear(w, w)
        self.norm_mlp = nn.LayerNorm(w)
        self.mlp = nn.Sequential(nn.Linear(w, shape.mlp_ratio * w), nn.GELU(),
                                 nn.Linear(shape.mlp_ratio * w, w))

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, W = h.shape
        q, k, v = self.qkv(self.norm_attn(h)).view(B, T, 3, self.heads, W // self.heads).unbind(2)
        q, k, v = (a.transpose(1, 2) for a in (q, k, v))  # (B, H, T, C)
        context = slice(0, T - 1)  # keys and values: the context tokens, not the query
        scores = q @ k[:, :, context].transpose(-1, -2) / math.sqrt(W // self.heads)
        heads = torch.softmax(scores, dim=-1) @ v[:, :, context]
        h = h + self.proj(_gate(heads, mask).transpose(1, 2).reshape(B, T, W))
        return h + self.mlp(self.norm_mlp(h))


class SoftmaxTransformer(nn.Module):
    """Standard transformer predicting the query label; PyTorch's default initialisation."""

    def __init__(self, shape: TransformerShape):
        super().__init__()
        if shape.width % shape.heads:
            raise ValueError(f"width {shape.width} is not divisible by heads {shape.heads}")
        self.shape = shape
        self.embed = nn.Linear(shape.d + 1, shape.width)
        self.blocks = nn.ModuleList(_Block(shape) for _ in range(shape.layers))
        self.norm = nn.LayerNorm(shape.width)
        self.readout = nn.Linear(shape.width, 1)

    encode = staticmethod(tokens)

    def hidden(self, z: torch.Tensor, head_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Residual streams (B, T, width) after the embedding and after each layer."""
        states = [self.embed(z)]
        for layer, block in enumerate(self.blocks):
            states.append(block(states[-1], None if head_mask is None else head_mask[layer]))
        return states

    def forward(self, z: torch.Tensor, head_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, n + 1, d + 1) -> y_hat (B,); head_mask (layers, heads) or None."""
        return self.readout(self.norm(self.hidden(z, head_mask)[-1][:, -1]))[:, 0]


class _CausalBlock(nn.Module):
    """GPT-2 block: h + Attn(LN h) with causal softmax attention, then h + MLP(LN h)."""

    def __init__(self, shape: TransformerShape):
        super().__init__()
        w, self.heads = shape.width, shape.heads
        self.norm_attn = nn.LayerNorm(w)
        self.qkv = nn.Linear(w, 3 * w)
        self.proj = nn.Linear(w, w)
        self.norm_mlp = nn.LayerNorm(w)
        self.fc = nn.Linear(w, shape.mlp_ratio * w)
        self.out = nn.Linear(shape.mlp_ratio * w, w)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, W = h.shape
        qkv = self.qkv(self.norm_attn(h)).view(B, T, 3, self.heads, W // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, C)
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(_gate(heads, mask).transpose(1, 2).reshape(B, T, W))
        return h + self.out(F.gelu(self.fc(self.norm_mlp(h)), approximate="tanh"))


class InterleavedTransformer(nn.Module):
    """GPT-2-style decoder on interleaved tokens x_1, y_1, ..., x_n, y_n, x_q (`interleave`).

    Learned positions, pre-LayerNorm blocks with causal softmax attention (H heads of
    width / H channels, scores / sqrt(width / H)) and a tanh-GELU MLP, a final LayerNorm
    and a linear read-out at every x token: the output at x_i predicts y_i from the
    i - 1 examples before it. GPT-2's initialisation (normal(0, 0.02) weights, output
    projections scaled by 1 / sqrt(2 layers), zero biases).
    """

    def __init__(self, shape: TransformerShape, max_points: int):
        super().__init__()
        if shape.width % shape.heads:
            raise ValueError(f"width {shape.width} is not divisible by heads {shape.heads}")
        self.shape = shape
        self.read_in = nn.Linear(shape.d + 1, shape.width)
        self.positions = nn.Parameter(torch.zeros(2 * max_points + 1, shape.width))
        self.blocks = nn.ModuleList(_CausalBlock(shape) for _ in range(shape.layers))
        self.norm = nn.LayerNorm(shape.width)
        self.readout = nn.Linear(shape.width, 1)
        self._init_gpt2()

    encode = staticmethod(interleave)

    @torch.no_grad()
    def _init_gpt2(self) -> None:
        nn.init.normal_(self.positions, std=0.02)
        for block in self.blocks:
            for layer in (block.qkv, block.proj, block.fc, block.out):
                nn.init.normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
            for layer in (block.proj, block.out):
                layer.weight.mul_(1 / math.sqrt(2 * self.shape.layers))

    def hidden(self, z: torch.Tensor, head_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Residual streams (B, T, width) after the embedding and after each layer."""
        if z.shape[1] > self.positions.shape[0]:
            raise ValueError(f"{z.shape[1]} tokens exceed the {self.positions.shape[0]} "
                             "learned positions")
        states = [self.read_in(z) + self.positions[: z.shape[1]]]
        for layer, block in enumerate(self.blocks):
            states.append(block(states[-1], None if head_mask is None else head_mask[layer]))
        return states

    def predict_all(self, z: torch.Tensor, head_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, 2n + 1, d + 1) -> predictions (B, n + 1) at x_1, ..., x_n, x_q."""
        return self.readout(self.norm(self.hidden(z, head_mask)[-1][:, ::2]))[..., 0]

    def forward(self, z: torch.Tensor, head_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, 2n + 1, d + 1) -> y_hat at the query (B,)."""
        return self.readout(self.norm(self.hidden(z, head_mask)[-1][:, -1]))[:, 0]


class LinearAttentionStack(nn.Module):
    """The theory's linear-attention stack; weights KQ, OV of shape (layers, heads, D, D),
    D = d + heads + 1, created at zero (set them with `load` or `init_normal`)."""

    def __init__(self, shape: TransformerShape, dtype=torch.float64):
        super().__init__()
        self.shape = shape
        D = channels(shape.d, shape.heads)
        size = (shape.layers, shape.heads, D, D)
        self.KQ = nn.Parameter(torch.zeros(size, dtype=dtype))
        self.OV = nn.Parameter(torch.zeros(size, dtype=dtype))

    encode = staticmethod(tokens)

    def weights(self) -> dict[str, torch.Tensor]:
        return {"KQ": self.KQ, "OV": self.OV}

    @torch.no_grad()
    def load(self, weights: dict[str, torch.Tensor]) -> None:
        self.KQ.copy_(weights["KQ"])
        self.OV.copy_(weights["OV"])

    @torch.no_grad()
    def init_normal(self, std: float, generator: torch.Generator) -> None:
        for p in (self.KQ, self.OV):
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """(B, T, d + 1) tokens -> (B, T, D) stream (x, 0_H, y)."""
        free = z.new_zeros(*z.shape[:-1], self.shape.heads)
        return torch.cat([z[..., :-1], free, z[..., -1:]], dim=-1)

    def hidden(self, z: torch.Tensor, head_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Residual streams (B, T, D) at the input and after each layer."""
        states = [self.embed(z)]
        n = z.shape[1] - 1
        for layer in range(self.shape.layers):
            Z = states[-1]
            ctx = Z[:, :n]
            scores = torch.einsum("bid,hde,bje->bhij", ctx, self.KQ[layer], Z)
            mixed = torch.einsum("bhij,bid->bhjd", scores, ctx) / n
            out = torch.einsum("hed,bhjd->bhje", self.OV[layer], mixed)
            mask = None if head_mask is None else head_mask[layer]
            states.append(Z + _gate(out, mask).sum(1))
        return states

    def forward(self, z: torch.Tensor, head_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, n + 1, d + 1) -> y_hat = - (label channel of the query) (B,)."""
        return -self.hidden(z, head_mask)[-1][:, -1, -1]


def channels(d: int, heads: int) -> int:
    """Residual-stream width of LinearAttentionStack: x (d), u (heads), y (1)."""
    return d + heads + 1


def build(kind: str, shape: TransformerShape, dtype=torch.float32, token_format: str = "concat",
          max_points: int = 0) -> nn.Module:
    """'standard' -> SoftmaxTransformer (concat tokens, PyTorch's default init) or
    InterleavedTransformer (token_format 'interleaved', positions for max_points examples
    and the query); 'linear' -> LinearAttentionStack (concat tokens, weights at zero)."""
    if kind == "standard" and token_format == "interleaved":
        return InterleavedTransformer(shape, max_points).to(dtype)
    if token_format != "concat":
        raise ValueError(f"network {kind!r} reads concat tokens, not {token_format!r}")
    if kind == "standard":
        return SoftmaxTransformer(shape).to(dtype)
    if kind == "linear":
        return LinearAttentionStack(shape, dtype)
    raise ValueError(f"network must be 'standard' or 'linear', got {kind!r}")
