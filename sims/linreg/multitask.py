"""Multi-task in-context linear regression (docs/theory/linreg.md, section 7): data, network, head classification.

N tasks share the covariates x ~ N(0, I_d); task k reads the coordinates S_k
(supports may overlap): beta_k is N(0, I / |S_k|) on S_k and zero elsewhere
(so E|beta_k|^2 = 1, as for A.1), y_k = beta_k . x + eps_k with eps_k ~ N(0, sigma2).
Tokens are z_l = (x_l, y_1l, ..., y_Nl) in R^(d+N), the query (x_q, 0, ..., 0).

The network is one softmax attention layer with H heads (merged weights):
KQ_h (d+N, d+N) as in the single-task network, OV_h (d+N, N) with one column
per output, y_hat_k = sum_h OV_h[:, k] . sum_l z_l softmax_l(z_l^T KQ_h z_q).
The loss is the sum over tasks of the mean squared error against the noisy
query labels.

Head classification (`classify_heads`): per head h and task k,
omega_hk = mean diag(KQ_h) over S_k (the head's score scale on task k's
coordinates) and mu_hk = OV_h[d + k, k] (its weight of label y_k in output k);
the head's strength on task k is |omega_hk mu_hk| (the step of the GD it
implements, docs/theory/linreg.md, section 3). Head h serves task k when its strength is at least
`fraction` of the strongest head's on task k. The layout is "split" when every
serving head serves one task and each task has heads of both signs of mu_hk
(its own +- pair), "superposition" when some head serves several tasks, and
"partial" otherwise (some task lacks a +- pair).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dynamics.errors import UsageError

from .network import attend


def parse_supports(text: str, d: int, key: str = "supports") -> list[list[int]]:
    """'0-3;2-5' -> [[0, 1, 2, 3], [2, 3, 4, 5]]: tasks separated by ';', each a
    comma-separated list of coordinates (0-based) or inclusive ranges a-b.

    UsageError naming the key for an empty task, a repeated or out-of-range
    coordinate (0 <= i < d), or text that is not of this form."""
    tasks = []
    for part in text.split(";"):
        coords = []
        for item in filter(None, (i.strip() for i in part.split(","))):
            lo, sep, hi = item.partition("-")
            try:
                first, last = (int(lo), int(hi)) if sep else (int(item), int(item))
            except ValueError:
                raise UsageError(f"key '{key}': {item!r} is not a coordinate or range a-b") from None
            if not 0 <= first <= last < d:
                raise UsageError(f"key '{key}': {item!r} is outside 0..{d - 1} or decreasing")
            coords.extend(range(first, last + 1))
        if not coords:
            raise UsageError(f"key '{key}': task {len(tasks) + 1} has no coordinates")
        if len(set(coords)) != len(coords):
            raise UsageError(f"key '{key}': task {len(tasks) + 1} repeats a coordinate")
        tasks.append(coords)
    return tasks


def chained_supports(d: int, tasks: int) -> list[list[int]]:
    """N tasks on d coordinates as a chain of equal blocks, neighbours overlapping
    by about half a block: width w = ceil(2d / (N + 1)), task k starts at
    round(k (d - w) / (N - 1)). d=6: N=1 -> [0..5]; N=2 -> [0..3], [2..5] (the
    authors' layout); N=3 -> [0..2], [2..4], [3..5]."""
    width = min(d, -(-2 * d // (tasks + 1)))
    starts = [0] if tasks == 1 else [round(k * (d - width) / (tasks - 1)) for k in range(tasks)]
    return [list(range(s, s + width)) for s in starts]


def resolve_supports(text: str, d: int, tasks: int) -> list[list[int]]:
    """The supports of a config: `chained_supports(d, tasks)` for 'auto', otherwise
    `parse_supports`, whose task count must then equal `tasks` (UsageError naming it)."""
    if text == "auto":
        if tasks > d:
            raise UsageError(f"key 'tasks': supports=auto needs tasks <= d = {d}, got {tasks}")
        return chained_supports(d, tasks)
    supports = parse_supports(text, d)
    if len(supports) != tasks:
        raise UsageError(f"key 'tasks': {tasks}, but supports {text!r} lists {len(supports)} "
                         f"tasks (set tasks={len(supports)} or supports=auto)")
    return supports


def support_mask(supports: list[list[int]], d: int, dtype=torch.float64) -> torch.Tensor:
    """(N, d) indicator of each task's coordinates."""
    mask = torch.zeros((len(supports), d), dtype=dtype)
    for k, coords in enumerate(supports):
        mask[k, coords] = 1.0
    return mask


@dataclass
class MultitaskBatch:
    """B prompts of N tasks: x (B, L, d), y (B, L, N), xq (B, d), yq (B, N) noisy,
    beta (B, N, d)."""

    x: torch.Tensor
    y: torch.Tensor
    xq: torch.Tensor
    yq: torch.Tensor
    beta: torch.Tensor

    def tokens(self) -> torch.Tensor:
        """(B, L + 1, d + N): context tokens (x_l, y_l), then the query (x_q, 0)."""
        ctx = torch.cat([self.x, self.y], dim=-1)
        query = torch.cat([self.xq, torch.zeros_like(self.yq)], dim=-1)
        return torch.cat([ctx, query.unsqueeze(1)], dim=1)


def sample_multitask(batch: int, L: int, d: int, supports: list[list[int]], sigma2: float,
                     generator: torch.Generator, dtype=torch.float32,
                     device: str | torch.device = "cpu") -> MultitaskBatch:
    """Draw `batch` prompts of context length L for the tasks with these supports."""
    mask = support_mask(supports, d, dtype).to(device)
    x_all = torch.randn((batch, L + 1, d), generator=generator, dtype=dtype, device=device)
    beta = torch.randn((batch, len(supports), d), generator=generator, dtype=dtype, device=device)
    beta = beta * mask / mask.sum(-1, keepdim=True).sqrt()
    noise = torch.randn((batch, L + 1, len(supports)), generator=generator, dtype=dtype,
                        device=device)
    y_all = torch.einsum("bld,bkd->blk", x_all, beta) + sigma2**0.5 * noise
    return MultitaskBatch(x=x_all[:, :L], y=y_all[:, :L], xq=x_all[:, L], yq=y_all[:, L],
                          beta=beta)


class MultitaskAttention(nn.Module):
    """H-head softmax attention with N outputs; weights KQ (H, d+N, d+N), OV (H, d+N, N),
    created at zero (set them with `init_normal` or by assigning .data)."""

    def __init__(self, d: int, tasks: int, heads: int, dtype=torch.float64):
        super().__init__()
        D = d + tasks
        self.KQ = nn.Parameter(torch.zeros((heads, D, D), dtype=dtype))
        self.OV = nn.Parameter(torch.zeros((heads, D, tasks), dtype=dtype))
        self.d, self.tasks, self.heads = d, tasks, heads

    @torch.no_grad()
    def init_normal(self, std: float, generator: torch.Generator) -> None:
        for p in self.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L + 1, d + N), the query last -> y_hat (B, N)."""
        mixed = attend(self.KQ, tokens)
        return mixed.reshape(mixed.shape[0], -1) @ self.OV.reshape(-1, self.tasks)


def task_observables(kq: torch.Tensor, ov: torch.Tensor,
                     supports: list[list[int]], d: int) -> dict[str, torch.Tensor]:
    """Per head and task, each (..., H, N): omega (mean diag(KQ_h) over S_k), mu
    (OV_h[d + k, k]) and strength |omega mu|. kq (..., H, D, D), ov (..., H, D, N)."""
    diag = torch.diagonal(kq[..., :d, :d], dim1=-2, dim2=-1)
    mask = support_mask(supports, d, kq.dtype).to(kq.device)
    omega = diag @ mask.T / mask.sum(-1)
    tasks = len(supports)
    mu = torch.diagonal(ov[..., d:d + tasks, :], dim1=-2, dim2=-1)
    return {"omega": omega, "mu": mu, "strength": (omega * mu).abs()}


def classify_heads(omega: np.ndarray, mu: np.ndarray, fraction: float = 0.1) -> dict:
    """Which task(s) each head serves and the layout, from (H, N) omega_hk and mu_hk.

    Returns serves (H, N) bool, tasks_of_head (list per head of served task indices),
    and layout "split" | "superposition" | "partial" (module docstring)."""
    strength = np.abs(np.asarray(omega) * np.asarray(mu))
    best = strength.max(axis=0, keepdims=True)
    serves = (strength >= fraction * best) & (best > 0)
    per_head = serves.sum(axis=1)
    mu = np.asarray(mu)
    if (per_head > 1).any():
        layout = "superposition"
    else:
        paired = all((mu[serves[:, k], k] > 0).any() and (mu[serves[:, k], k] < 0).any()
                     for k in range(serves.shape[1]))
        layout = "split" if paired else "partial"
    return {"serves": serves, "tasks_of_head": [np.flatnonzero(row).tolist() for row in serves],
            "layout": layout}
