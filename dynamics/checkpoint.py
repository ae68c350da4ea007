"""Resumable training: atomic checkpoints of a run's trainings, beside its output file.

A run writing FILE.h5 keeps its checkpoints in FILE.h5.ckpt/<key>/, one file per
training (`train(..., name=...)`), where <key> hashes the experiment, its whole config
(but `checkpoint_every`) and the run's switches: a changed config never meets a stale
checkpoint. A checkpoint holds the step, the weights, the optimiser state, the state of
every random stream of the training and the records so far; the same command after a
kill resumes from it and ends bit-identical to an uninterrupted run. A finished training
keeps its final checkpoint until the whole run is stored (a later training of the same
run may still be interrupted); `discard` then removes the run's checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_SECONDS = 60.0
"""Wall-clock seconds between checkpoints when checkpoint_every = 0."""


@dataclass(frozen=True)
class Plan:
    """Where and how often the trainings of the current run checkpoint.

    - directory: FILE.h5.ckpt/<key>
    - every_steps: checkpoint every this many optimiser steps; 0: every `every_seconds`
    """

    directory: Path
    every_steps: int = 0
    every_seconds: float = DEFAULT_SECONDS

    def due(self, step: int, since_save: float) -> bool:
        if self.every_steps > 0:
            return step % self.every_steps == 0
        return since_save >= self.every_seconds

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.pt"


_ACTIVE: ContextVar[Plan | None] = ContextVar("checkpoint_plan", default=None)


def active() -> Plan | None:
    """The plan of the run in progress, or None (trainings then do not checkpoint)."""
    return _ACTIVE.get()


def run_key(experiment: str, config: dict, switches: dict) -> str:
    """16 hex digits identifying a run's computation (checkpoint_every excluded)."""
    payload = {"experiment": experiment, "switches": switches,
               "config": {k: v for k, v in sorted(config.items()) if k != "checkpoint_every"}}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def root(out: str | os.PathLike) -> Path:
    """The checkpoint folder of an output file: FILE.h5 -> FILE.h5.ckpt."""
    return Path(f"{os.fspath(out)}.ckpt")


@contextlib.contextmanager
def checkpointing(out: str | os.PathLike, key: str, every_steps: int = 0,
                  every_seconds: float = DEFAULT_SECONDS) -> Iterator[Plan]:
    """Make trainings inside the block checkpoint under root(out)/key."""
    plan = Plan(root(out) / key, every_steps, every_seconds)
    token = _ACTIVE.set(plan)
    try:
        yield plan
    finally:
        _ACTIVE.reset(token)


def discard(out: str | os.PathLike, key: str) -> None:
    """Remove a stored run's checkpoints (and the folder, once it holds no other run's)."""
    folder = root(out)
    shutil.rmtree(folder / key, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def save(plan: Plan, name: str, state: dict) -> None:
    """Write a training's state atomically (a temporary file, fsync, rename)."""
    plan.directory.mkdir(parents=True, exist_ok=True)
    target = plan.path(name)
    fd, tmp = tempfile.mkstemp(dir=plan.directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load(plan: Plan, name: str) -> dict | None:
    """A training's saved state, or None when there is none or it cannot be read."""
    path = plan.path(name)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a damaged checkpoint is ignored: training starts afresh
        return None


class Clock:
    """Seconds since the last save, for time-based checkpoints."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def since(self) -> float:
        return time.monotonic() - self.last

    def reset(self) -> None:
        self.last = time.monotonic()
