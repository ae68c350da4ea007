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


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """torch's SGD (plain, no momentum) or Adam (default betas) at learning rate lr."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


@dataclass
class Fit:
    """A finished training: its "sgd" trajectory and the wall seconds it took."""

    trajectory: Trajectory
    seconds: float


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
    generators: Sequence[torch.Generator] = (),
) -> Fit:
    """Train net with the named optimiser at learning rate lr, recording at record_steps.

    Time is t = lr x step (nominal for Adam). The trajectory's attribute "model" is
    `model` (what was trained, on what). name labels the progress bar and the training's
    checkpoints within its run (dynamics.checkpoint); generators are the random streams
    batch_loss draws from. See dynamics.sgd.train for batch_loss, observe, eval_loss."""
    start = time.perf_counter()
    with bar(int(record_steps[-1]), name, unit="step") as progress:
        traj = train(net, batch_loss, make_optimizer(optimizer, net.parameters(), lr),
                     record_steps, observe, lr, on_step=lambda s: progress.update(1),
                     eval_loss=eval_loss, name=name.replace(" ", "_"), generators=generators)
    traj.attrs["model"] = model
    return Fit(traj, time.perf_counter() - start)
