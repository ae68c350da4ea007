"""Networks whose full weights are their named parameters: what a reduced model's
lift produces and what the projections read."""

from __future__ import annotations

import torch
from torch import nn


class NamedWeights(nn.Module):
    """nn.Module with `weights()` (name -> parameter) and `load(weights)` (copy in,
    reshaped to each parameter's shape, e.g. from a lift's flat rows)."""

    def weights(self) -> dict[str, torch.Tensor]:
        return dict(self.named_parameters())

    @torch.no_grad()
    def load(self, weights: dict[str, torch.Tensor]) -> None:
        for name, p in self.named_parameters():
            p.copy_(torch.as_tensor(weights[name]).reshape(p.shape))
