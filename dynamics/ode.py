"""Adaptive ODE integration of batched flows.

The state has a batch dimension: y is (B, P), so many initial points or
hyper-parameter points integrate as one call. Two paths (`backend`):
- "lean" (`dynamics.dopri5`): Dormand-Prince on one float64 CPU state of at most
  128 entries held as Python floats, at a few microseconds per step besides the
  right-hand side; it takes torchdiffeq's dopri5 steps (same rules), so both agree
  to rounding (beyond 128 entries tensor arithmetic catches up: at 256 the lean path
  took 0.66x torchdiffeq's time on a diagonal linear flow, at 1024 1.15x);
- "torchdiffeq": every method, batches, other devices and dtypes, and
  differentiation through the solver.
"auto" (the default) takes the lean path wherever it applies.

A member whose state leaves the bound or whose right-hand side stops being
finite is frozen there and marked "diverged"; a solver that fails (step size
underflow, or the step budget of the whole integration spent) marks the
members still running "stalled", keeping the output times reached (on the
torchdiffeq path: those before the failing chunk). Neither raises.

Error control is per member: the adaptive solver shares one step size across
the batch, and its error norm is the largest of the members' RMS norms, so
every member meets the tolerance as if integrated alone (the plain RMS norm
over the whole batch would let one member's error hide among the others').
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .dopri5 import MAX_DIM, Dopri5
from .status import Status

ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
# Right-hand-side evaluations per step (rejected steps cost the same); others: 4.
EVALUATIONS_PER_STEP = {"dopri5": 6, "dopri8": 14, "bosh3": 4, "fehlberg2": 3,
                        "adaptive_heun": 2, "euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3,
                        "rk4": 4}
BACKENDS = ("auto", "lean", "torchdiffeq")
Rhs = Callable[[torch.Tensor], torch.Tensor]


class BudgetSpent(RuntimeError):
    """The step budget of an integration is spent (caught: the members still running stall)."""


@dataclass
class OdeSolution:
    """Integrated flow.

    - t: (T,) output times
    - y: (T, B, P) states; rows after a member's failure repeat its last good state
    - valid: (T, B) bool, whether the row was reached before any failure
    - status: per member Status (complete, diverged or stalled)
    """

    t: np.ndarray
    y: torch.Tensor
    valid: np.ndarray
    status: list[Status]


class _Guarded:
    """rhs wrapper that freezes members that blow up (derivative set to 0) and raises
    BudgetSpent once more than `budget` evaluations were asked for.

    A plain class, not a torch Module: the solver calls it hundreds of times per
    flow, and per-call overhead (Module attribute hooks, per-member checks while
    every member is finite) was a measurable share of a small symbolic flow."""

    def __init__(self, rhs: Rhs, batch: int, bound: float, device, budget: int):
        self.rhs = rhs
        self.bound = bound
        self.budget = budget
        self.frozen = torch.zeros(batch, dtype=torch.bool, device=device)
        self.tripped = False  # once anything was bad, every call takes the exact path
        self.evaluations = 0

    def __call__(self, t, y):
        self.evaluations += 1
        if self.evaluations > self.budget:
            raise BudgetSpent(f"{self.budget} right-hand-side evaluations")
        dy = self.rhs(y)
        # Cheap test while all is well: a sum is finite only if every entry is (an
        # overflowing sum of finite entries just takes the exact path below); NaN in y
        # fails the comparison.
        # (detached: a flow whose right-hand side uses autograd returns a graph-carrying dy)
        if (not self.tripped and math.isfinite(float(dy.detach().sum()))
                and float(y.detach().abs().max()) <= self.bound):
            return dy
        bad = ~torch.isfinite(dy).all(dim=1) | ~(y.abs() <= self.bound).all(dim=1)
        self.frozen |= bad
        self.tripped = True
        return torch.where(self.frozen[:, None], torch.zeros_like(dy), dy)


def integrate(
    rhs: Rhs,
    y0: torch.Tensor,
    t: np.ndarray,
    *,
    method: str = "dopri5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 200_000,
    bound: float = 1e8,
    chunks: int = 4,
    step_size: float | None = None,
    on_chunk: Callable[[float], None] | None = None,
    backend: str = "auto",
) -> OdeSolution:
    """Integrate dy/dt = rhs(y) (autonomous) from y0 at t[0], output at every t.

    Args:
    - rhs: maps (B, P) states to (B, P) derivatives
    - y0: (B, P) initial state, or (P,) for B = 1 (dtype and device are kept: use float64)
    - t: (T,) increasing output times
    - method, rtol, atol: torchdiffeq solver and tolerances (per member, see above)
    - max_steps: step budget of the whole integration, all chunks together and
      rejected steps included (counted as right-hand-side evaluations, the method's
      EVALUATIONS_PER_STEP per step); spending it marks running members "stalled"
    - bound: a state entry beyond it in absolute value counts as divergence
    - step_size: the step of a fixed-grid method ("rk4", "euler", ...); adaptive
      methods ignore it
    - chunks: the output grid is integrated in this many consecutive pieces (each a
      restart of the solver), so that a stall on the torchdiffeq path keeps everything
      before the failing piece
    - on_chunk: called with the time reached after each piece (progress)
    - backend: "lean", "torchdiffeq" or "auto" (lean for dopri5 on one float64 CPU state
      of at most 128 entries that needs no gradient, else torchdiffeq). An rhs with an
      `on_floats` method, list of P floats -> list of P floats, is evaluated through it
      on the lean path.

    A member frozen during a chunk in which the solver then fails is "stalled", not
    "diverged": its non-finite state may be a trial stage of the failing step control
    (e.g. a NaN first step at tolerances below the float resolution).
    """
    y = y0.reshape(1, -1) if y0.dim() == 1 else y0
    batch = y.shape[0]
    lean = (method == "dopri5" and batch == 1 and 0 < y.shape[1] <= MAX_DIM
            and y.dtype == torch.float64 and y.device.type == "cpu" and not y.requires_grad)
    if backend not in BACKENDS or (backend == "lean" and not lean):
        raise ValueError(f"backend {backend!r}: one of {BACKENDS}; 'lean' needs dopri5 on one "
                         f"float64 CPU state of 1 to {MAX_DIM} entries without gradient")
    pieces = np.array_split(np.arange(len(t)), min(chunks, max(1, len(t) - 1)))
    if lean and backend != "torchdiffeq":
        return _integrate_lean(rhs, y, np.asarray(t, dtype=np.float64), pieces, rtol=rtol,
                               atol=atol, budget=max_steps * EVALUATIONS_PER_STEP[method],
                               bound=bound, on_chunk=on_chunk)
    from torchdiffeq import odeint  # imports scipy: only where this path runs

    times = torch.as_tensor(np.asarray(t, dtype=np.float64), dtype=y.dtype, device=y.device)
    func = _Guarded(rhs, batch, bound, y.device,
                    max_steps * EVALUATIONS_PER_STEP.get(method, 4))
    options = ({"max_num_steps": max_steps} if method in ADAPTIVE
               else {"step_size": step_size} if step_size else {})
    if method in ADAPTIVE and batch > 1:
        options["norm"] = _worst_member_rms
    out = [y]
    status = [Status.COMPLETE] * batch
    reached = 1
    for piece in pieces:
        idx = np.concatenate([[reached - 1], piece[piece >= reached]])
        if len(idx) < 2:
            continue
        frozen = func.frozen.clone()
        try:
            sol = odeint(func, out[-1], times[idx], method=method, rtol=rtol, atol=atol,
                         options=options)
        except (AssertionError, RuntimeError):
            func.frozen = frozen
            status = [Status.STALLED if s == Status.COMPLETE else s for s in status]
            break
        out.extend(sol[1:])
        reached = idx[-1] + 1
        if on_chunk is not None:
            on_chunk(float(times[idx[-1]]))
    ys = torch.stack(out)
    n_out = ys.shape[0]
    valid = np.zeros((len(times), batch), dtype=bool)
    valid[:n_out] = True
    beyond = (~torch.isfinite(ys) | (ys.abs() > bound)).any(dim=2).cpu().numpy()
    for b in range(batch):
        first_bad = np.flatnonzero(beyond[:, b])
        if func.frozen[b] or len(first_bad):
            status[b] = Status.DIVERGED
            cut = first_bad[0] if len(first_bad) else _first_frozen_row(ys[:, b])
            valid[cut:, b] = False
    if n_out < len(times):
        ys = torch.cat([ys, ys[-1:].expand(len(times) - n_out, -1, -1)])
    for b in range(batch):
        last = np.flatnonzero(valid[:, b])[-1]
        ys[last + 1 :, b] = ys[last, b]
    return OdeSolution(t=np.asarray(t, dtype=np.float64), y=ys, valid=valid, status=status)


def _integrate_lean(rhs: Rhs, y: torch.Tensor, t: np.ndarray, pieces: list[np.ndarray], *,
                    rtol: float, atol: float, budget: int, bound: float,
                    on_chunk: Callable[[float], None] | None) -> OdeSolution:
    """The lean path of `integrate` for one state (1, P): the same pieces, each restarted
    as torchdiffeq restarts them, so the two paths take the same steps."""
    f = getattr(rhs, "on_floats", None)
    if f is None:
        def f(v: list[float]) -> list[float]:
            return rhs(torch.tensor([v], dtype=torch.float64))[0].tolist()

    solver = Dopri5(f, rtol, atol, bound, budget)
    times = t.tolist()
    rows = [y[0].tolist()]
    status = Status.COMPLETE
    for piece in pieces:
        idx = [len(rows) - 1] + [i for i in piece.tolist() if i >= len(rows)]
        if len(idx) < 2:
            continue
        reached, status = solver.solve(rows[-1], [times[i] for i in idx])
        rows.extend(reached)
        if status != Status.COMPLETE:
            break
        if on_chunk is not None:
            on_chunk(times[idx[-1]])
    n = len(rows)
    if n == 1 and not all(math.isfinite(v) and abs(v) <= bound for v in rows[0]):
        n = 0  # diverged at the start: no valid row
    rows.extend([rows[-1]] * (len(t) - len(rows)))
    valid = np.zeros((len(t), 1), dtype=bool)
    valid[:n] = True
    return OdeSolution(t=t, y=torch.tensor(rows, dtype=torch.float64)[:, None], valid=valid,
                       status=[status])


def _worst_member_rms(error: torch.Tensor) -> torch.Tensor:
    """Error norm of a (B, P) batch: the largest RMS norm of a member."""
    return error.pow(2).mean(dim=1).sqrt().max()


def _first_frozen_row(path: torch.Tensor) -> int:
    """Index of the first output row holding a frozen state (its time label would be wrong)."""
    moving = (path[1:] != path[:-1]).any(dim=1).cpu().numpy()
    idx = np.flatnonzero(moving)
    return int(idx[-1]) + 1 if len(idx) else 1
