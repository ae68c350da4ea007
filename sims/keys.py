"""Config keys several experiments' schemas share (no torch: schemas load at once)."""

from __future__ import annotations

from dynamics.config import Key

CHECKPOINT_EVERY = Key(
    "checkpoint_every", "int", 0, "optimiser steps between checkpoints of a training, kept "
    "beside the output file until the run is stored (0: every 60 s of wall time)", low=0)
