"""Training a full network: the optimiser by name, progress, timing and recording.

Every experiment trains through `fit`, which builds the optimiser, shows a
progress bar, runs dynamics.sgd.train (checkpointed when the run checkpoints)
and times it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .progress import bar
from .sgd import train
from .trajectory import Trajectory

OPTIMIZERS = ("sgd", "adam")


class PlainSGD:
    """Plain gradient descent, p <- p - lr grad (parameters without a gradient stay).

    The update of torch.optim.SGD without momentum or weight decay, bit for bit, without
    its per-step dispatch; torch's optimiser also imports its compiler (about 1 s of CPU)
    on its first step. Has the optimiser methods dynamics.sgd.train uses."""

    def __init__(self, params, lr: float):
        self.params, self.lr = list(params), lr

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)

    def state_dict(self) -> dict:
        return {"lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        """Plain SGD keeps no state (a torch.optim.SGD state dict loads too)."""


def make_optimizer(name: str, params, lr: float) -> PlainSGD | torch.optim.Optimizer:
    """Plain SGD (`PlainSGD`, no momentum) or torch's Adam (default betas) at learning rate
    lr."""
    if name == "sgd":
        return PlainSGD(params, lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


@dataclass
class Fit:
    """A finished training: its "sgd" trajectory and the wall seconds it took."""

    trajectory: Trajectory
    seconds: float


def set_lr(optimizer, lr: float) -> None:
    """Set the learning rate of a `make_optimizer` optimiser."""
    if isinstance(optimizer, PlainSGD):
        optimizer.lr = lr
    else:
        for group in optimizer.param_groups:
            group["lr"] = lr


def fit(
    net: torch.nn.Module,
    batch_loss: Callable[[int], torch.Tensor],
    observe: Callable[[], dict[str, np.ndarray]],
    record_steps: np.ndarray,
    *,
    optimizer: str,
    lr: float,
    model: str,
    eval_loss: Callable[[], float] | None = None,
    name: str = "sgd",
    label: str | None = None,
    generators: Sequence[torch.Generator] = (),
    lr_at: Callable[[int], float] | None = None,
) -> Fit:
    """Train net with the named optimiser at learning rate lr, recording at record_steps.

    The optimiser moves the parameters that require a gradient (the others stay: a stage
    of a schedule freezes them). Time is t = lr x step (nominal for Adam and with lr_at).
    The trajectory's attribute "model" is `model` (what was trained, on what). name names
    the training's checkpoints within its run (dynamics.checkpoint) and, unless label is
    given, its progress bar; generators are the random streams batch_loss draws from;
    lr_at, if given, is the learning rate of each step (a schedule; set before the step's
    batch is drawn). See dynamics.sgd.train for batch_loss, observe, eval_loss."""
    start = time.perf_counter()
    opt = make_optimizer(optimizer, [p for p in net.parameters() if p.requires_grad], lr)
    step_loss = batch_loss
    if lr_at is not None:
        def step_loss(step: int) -> torch.Tensor:
            set_lr(opt, lr_at(step))
            return batch_loss(step)
    with bar(int(record_steps[-1]), label or name, unit="step") as progress:
        traj = train(net, step_loss, opt, record_steps, observe, lr,
                     on_step=lambda s: progress.update(1), eval_loss=eval_loss,
                     name=name.replace(" ", "_"), generators=generators)
    traj.attrs["model"] = model
    return Fit(traj, time.perf_counter() - start)
