"""K copies of one network trained as a single batched model.

The parameters of K independently initialised copies are stacked on a leading
seed axis and the forward pass is vmapped over it, so one optimizer step
updates all copies. With the loss summed over copies (not averaged), each
copy receives exactly its own gradient, and SGD and Adam (element-wise) make
exactly the updates K separate optimizers would.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class Ensemble(nn.Module):
    """Stacked copies of `models` (same architecture).

    forward(*inputs) takes inputs with a leading axis of size K (one batch per
    copy) and returns the copies' outputs stacked on that axis.
    """

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        params, buffers = stack_module_state(models)
        if buffers:
            raise ValueError("ensembles of models with buffers are not supported")
        self.size = len(models)
        self._names = list(params)
        self.stacked = nn.ParameterList([nn.Parameter(params[n]) for n in self._names])
        self._template = copy.deepcopy(models[0]).to("meta")

    def weights(self) -> dict[str, torch.Tensor]:
        """{parameter name: (K, *shape)} of the stacked copies."""
        return dict(zip(self._names, self.stacked))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        def member(params, *xs):
            return functional_call(self._template, params, xs)

        return vmap(member)(self.weights(), *inputs)
