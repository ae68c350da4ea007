"""Training schedules of the induction system, for the networks and for the flows alike.

- "joint": every parameter moves at once, for t_max with learning rate lr;
- "sequential": the selector (C), then the copier (layer 1: w, and in the full model also
  Q, K, OV and the LayerNorm), then the classifier (a), each alone, stage X for gradient-flow
  time t_X with learning rate lr_X (config keys lr_selector, t_selector, ...).
Time is gradient-flow time throughout: a stage of n steps at learning rate lr lasts lr x n,
and the stages follow one another on one time axis (t, and the cumulative SGD step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dynamics.fit import fit
from dynamics.times import record_times
from dynamics.trajectory import Trajectory

BLOCKS = ("selector", "copier", "classifier")
STATE_BLOCKS = {"selector": "C", "copier": "w", "classifier": "a"}  # reduced-state parameters


@dataclass(frozen=True)
class Stage:
    """A stretch of training: the blocks that move, the learning rate, the length (flow time)."""

    name: str
    blocks: tuple[str, ...]
    lr: float
    length: float

    def grid(self, records: int) -> tuple[np.ndarray, np.ndarray]:
        """(t, steps) log-spaced records of the stage, relative to its start."""
        return record_times(self.length, self.lr, records)


def schedule(config: dict) -> list[Stage]:
    """The stages of a run's `schedule` key."""
    if config["schedule"] == "joint":
        return [Stage("joint", BLOCKS, config["lr"], config["t_max"])]
    return [Stage(b, (b,), config[f"lr_{b}"], config[f"t_{b}"]) for b in BLOCKS]


def flow_segments(stages: list[Stage], manifold, records: int) -> tuple[list, list]:
    """Time grids (absolute, each starting where the previous ends) and (P,) masks of the
    moving state entries, one per stage, for `integrate_log_selector`."""
    grids, masks, start = [], [], 0.0
    for stage in stages:
        t, _ = stage.grid(records)
        grids.append(start + t)
        start += float(t[-1])
        moving = {STATE_BLOCKS[b] for b in stage.blocks}
        masks.append(None if len(moving) == len(BLOCKS) else torch.cat([
            torch.full((p.size,), p.name in moving, dtype=torch.bool)
            for p in manifold.params]))
    return grids, masks


def train_schedule(net: torch.nn.Module, stages: list[Stage], records: int, batch_loss,
                   observe, eval_loss, name: str = "sgd", model: str = "",
                   generators=()) -> Trajectory:
    """Plain SGD through the stages (dynamics.fit.fit, one per stage); one "sgd" Trajectory
    on the common time axis, with attribute "model" = model.

    net.BLOCKS maps each block to the names of its parameters; parameters outside a
    stage's blocks are frozen (no gradient) during it. batch_loss() draws a fresh minibatch
    and returns its loss. Stage k trains (and checkpoints, when the run does) as
    "<name>-stage<k>"; generators are the random streams batch_loss draws from.
    """
    pieces, t0, s0 = [], 0.0, 0
    for k, stage in enumerate(stages):
        moving = {n for b in stage.blocks for n in net.BLOCKS[b]}
        for pname, p in net.named_parameters():
            p.requires_grad_(pname in moving)
        _, steps = stage.grid(records)
        piece = fit(net, lambda step: batch_loss(), observe, steps, optimizer="sgd",
                    lr=stage.lr, model=model, eval_loss=eval_loss, name=f"{name}-stage{k}",
                    label=name if len(stages) == 1 else f"{name} {stage.name}",
                    generators=generators).trajectory
        piece.t, piece.step = piece.t + t0, piece.step + s0
        if len(piece.t) > (1 if pieces else 0):
            pieces.append(piece if not pieces else _drop_first(piece))
            t0, s0 = float(piece.t[-1]), int(piece.step[-1])
        if piece.status != "complete":
            break
    for p in net.parameters():
        p.requires_grad_(True)
    return Trajectory(kind="sgd", t=np.concatenate([p.t for p in pieces]),
                      loss=np.concatenate([p.loss for p in pieces]),
                      params={k: np.concatenate([p.params[k] for p in pieces])
                              for k in pieces[0].params},
                      step=np.concatenate([p.step for p in pieces]), status=piece.status,
                      attrs={"model": model})


def _drop_first(traj: Trajectory) -> Trajectory:
    """A later stage without its first record (the previous stage's last state)."""
    return Trajectory(kind=traj.kind, t=traj.t[1:], loss=traj.loss[1:],
                      params={k: v[1:] for k, v in traj.params.items()}, step=traj.step[1:],
                      status=traj.status)
