"""A trajectory: reduced parameters and loss at recorded times."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .status import Status

KINDS = ("ode", "sgd")
# A trajectory whose loss exceeds this factor times its loss at the start has blown up:
# status "diverged" (dynamics.sgd.train); no run of a decreasing loss comes near it.
BLOWUP_FACTOR = 1e3


@dataclass
class Trajectory:
    """Recorded dynamics of one model.

    - kind: "ode" (a reduced flow) or "sgd" (a full network)
    - t: (T,) gradient-flow time; for sgd, lr x step
    - loss: (T,) the loss the model descends (sgd: the minibatch loss before the step)
    - params: name -> (T, ...) reduced parameters (observables)
    - step: (T,) int64 optimiser steps (sgd only)
    - status: "complete", "diverged" (non-finite or unbounded state, or a loss above
      BLOWUP_FACTOR times its start; attrs["diverged_t"] is then the time it failed) or "stalled"
      (the adaptive solver's step budget or step size ran out); times after
      the failure are not recorded, so the last row is the last good state
    - attrs: free-form metadata (written as HDF5 attributes of the trajectory's group)
    - param_attrs: per parameter, metadata written as attributes of its dataset
      params/<name>, e.g. {"p": {"labels": ["1", "2", "1,2"]}} (one label per entry
      of the last axis); strings, numbers and lists of either
    """

    kind: str
    t: np.ndarray
    loss: np.ndarray
    params: dict[str, np.ndarray]
    step: np.ndarray | None = None
    status: Status = Status.COMPLETE
    attrs: dict = field(default_factory=dict)
    param_attrs: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        self.t = np.asarray(self.t, dtype=np.float64)
        self.loss = np.asarray(self.loss, dtype=np.float64)
        self.status = Status(self.status)
        self.params = {k: np.asarray(v, dtype=np.float64) for k, v in self.params.items()}
        if self.step is not None:
            self.step = np.asarray(self.step, dtype=np.int64)
        for name, values in self.params.items():
            if values.shape[:1] != self.t.shape:
                raise ValueError(f"params/{name} has {values.shape[0]} rows, t has {len(self.t)}")
        unknown = set(self.param_attrs) - set(self.params)
        if unknown:
            raise ValueError(f"param_attrs for parameters it does not have: {sorted(unknown)}")

    def final(self) -> dict[str, list]:
        """Last recorded value of every parameter, as nested lists."""
        return {k: v[-1].tolist() for k, v in self.params.items() if len(v)}

    def failed_at(self) -> float | None:
        """Time of the failure of a diverged or stalled trajectory: the failing step's
        (attrs["diverged_t"]) if known, else the last recorded time; None if complete."""
        if self.status == "complete":
            return None
        if "diverged_t" in self.attrs:
            return float(self.attrs["diverged_t"])
        return float(self.t[-1]) if len(self.t) else 0.0

    def summary(self) -> dict:
        """JSON-able: status (and failed_at), final parameters, final loss, time reached."""
        return {
            "kind": self.kind,
            "status": self.status,
            **({"failed_at": self.failed_at()} if self.status != "complete" else {}),
            "t_final": float(self.t[-1]) if len(self.t) else 0.0,
            "final": self.final(),
            "loss_final": float(self.loss[-1]) if len(self.loss) else None,
        }
