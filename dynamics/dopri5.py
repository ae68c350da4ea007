"""Dormand-Prince 5(4) on one state held in numpy: the lean path of `dynamics.ode.integrate`.

torchdiffeq spends, per step of one small state, many times the cost of a
compiled right-hand side on tensor bookkeeping. This loop takes the same steps
as torchdiffeq's "dopri5" (the same tableau, initial-step rule, error norm,
step-size controller and quartic dense output; Dormand & Prince 1980, Shampine
1986, Hairer, Norsett & Wanner, Solving ODEs I, II.4), on a (P,) float64 array,
so the two paths agree to rounding (tests/test_ode.py compares them on every
built-in flow).

Outcomes, as in `integrate`:
- a step whose stage point leaves the bound, or whose right-hand side is not
  finite, ends the integration as "diverged" with every output time before that
  step;
- a step size that is not finite or underflows (t + dt == t), or a spent
  evaluation budget, ends it as "stalled" likewise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .status import Status

# Butcher tableau (nodes are not needed: the flows are autonomous).
BETA = [np.array(row) for row in (
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
)]
# 5th-order weights minus the embedded 4th-order ones (the last stage is FSAL).
ERROR = np.array([35 / 384 - 1951 / 21600, 0, 500 / 1113 - 22642 / 50085,
                  125 / 192 - 451 / 720, -2187 / 6784 + 12231 / 42400, 11 / 84 - 649 / 6300,
                  -1 / 60])
# Weights of the midpoint state, for the dense output (Shampine 1986).
MID = np.array([6025192743 / 30085553152, 0, 51252292925 / 65400821598,
                -2691868925 / 45128329728, 187940372067 / 1594534317056,
                -1776094331 / 19743644256, 11237099 / 235043384]) / 2
ORDER = 5
SAFETY, GROW, SHRINK = 0.9, 10.0, 0.2


class Stop(Exception):
    """The integration ends early with `status`."""

    def __init__(self, status: Status):
        super().__init__(status.value)
        self.status = status


def _rms(x: np.ndarray) -> float:
    """Root mean square (inf where the squares overflow, as the plain formula gives)."""
    return math.sqrt(float(x @ x) / x.shape[0])


class Dopri5:
    """Adaptive integration of dy/dt = f(y) for one (P,) float64 state.

    - f: (P,) -> (P,) numpy right-hand side
    - rtol, atol: tolerances of the RMS error norm
    - bound: a stage state beyond it in absolute value counts as divergence
    - budget: right-hand-side evaluations allowed in all (more: "stalled")
    """

    def __init__(self, f: Callable[[np.ndarray], np.ndarray], rtol: float, atol: float,
                 bound: float, budget: int):
        self.f, self.rtol, self.atol = f, rtol, atol
        self.bound, self.budget = bound, budget
        self.evaluations = 0

    def _eval(self, y: np.ndarray, checked: bool = True) -> np.ndarray:
        if self.evaluations >= self.budget:
            raise Stop(Status.STALLED)
        self.evaluations += 1
        dy = np.asarray(self.f(y), dtype=np.float64)
        # a finite sum means finite entries (else the exact test); NaN fails both comparisons
        if checked and not ((math.isfinite(float(dy.sum())) or np.isfinite(dy).all())
                            and y.max() <= self.bound and -y.min() <= self.bound):
            raise Stop(Status.DIVERGED)
        return dy

    def _first_step(self, y0: np.ndarray, f0: np.ndarray) -> float:
        """Hairer-Norsett-Wanner's starting step (order 4 for the error estimate)."""
        with np.errstate(all="ignore"):  # IEEE arithmetic: absurd tolerances give NaN, not raise
            scale = self.atol + np.abs(y0) * self.rtol
            d0, d1 = np.float64(_rms(y0 / scale)), np.float64(_rms(f0 / scale))
            h0 = np.float64(1e-6) if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
            f1 = self._eval(y0 + h0 * f0, checked=False)
            d2 = abs(np.float64(_rms((f1 - f0) / scale)) / h0)
            if d1 <= 1e-15 and d2 <= 1e-15:
                h1 = max(np.float64(1e-6), h0 * 1e-3)
            else:
                h1 = (0.01 / max(d1, d2)) ** (1 / ORDER)
            return float(np.nan if np.isnan(h0) or np.isnan(h1) else min(100 * h0, h1))

    def solve(self, y0: np.ndarray, times: np.ndarray) -> tuple[list[np.ndarray], Status]:
        """States at times[1:] (times[0] is y0's time) as far as reached, and the status."""
        out: list[np.ndarray] = []
        try:
            f0 = self._eval(y0)
            dt = self._first_step(y0, f0)
            t0 = t1 = float(times[0])
            y = y_prev = y0
            # stage buffers: the last accepted step's and the next trial's (swapped on
            # acceptance); the dense output is fitted only when an output time needs it
            trial, accepted = np.empty((7, y0.shape[0])), None
            coeffs, fitted_for = [y0] * 5, None
            for target in times[1:]:
                target = float(target)
                while target > t1:
                    if not (abs(dt) < math.inf and t1 + dt > t1):  # NaN, inf or underflow
                        raise Stop(Status.STALLED)
                    y_new, error_ratio = self._step(y, f0, dt, trial)
                    if error_ratio <= 1:
                        trial, accepted = (accepted if accepted is not None
                                           else np.empty_like(trial)), trial
                        t0, t1, y_prev, y, f0, step = t1, t1 + dt, y, y_new, accepted[6], dt
                    dt = _next_step(dt, error_ratio)
                if accepted is not None and fitted_for != t1:
                    coeffs, fitted_for = self._fit(y_prev, y, accepted, step), t1
                out.append(_evaluate(coeffs, t0, t1, target))
        except Stop as stop:
            return out, stop.status
        return out, Status.COMPLETE

    def _step(self, y0: np.ndarray, f0: np.ndarray, dt: float,
              stages: np.ndarray) -> tuple[np.ndarray, float]:
        """One trial step: (y1, error ratio); stages[6] holds f(y1) afterwards."""
        stages[0] = f0
        for i, beta in enumerate(BETA):
            yi = y0 + (beta * dt) @ stages[: i + 1]
            stages[i + 1] = self._eval(yi)
        error = (ERROR * dt) @ stages
        tol = self.atol + self.rtol * np.maximum(np.abs(y0), np.abs(yi))
        return yi, float(_rms(error / tol))

    @staticmethod
    def _fit(y0: np.ndarray, y1: np.ndarray, stages: np.ndarray, dt: float) -> list[np.ndarray]:
        """Coefficients [e, d, c, b, a] of the quartic through y0, y1, the midpoint state
        and the end slopes, in x = (t - t0) / dt."""
        f0, f1 = stages[0], stages[6]
        y_mid = y0 + (MID * dt) @ stages
        a = 2 * dt * (f1 - f0) - 8 * (y1 + y0) + 16 * y_mid
        b = dt * (5 * f0 - 3 * f1) + 18 * y0 + 14 * y1 - 32 * y_mid
        c = dt * (f1 - 4 * f0) - 11 * y0 - 5 * y1 + 16 * y_mid
        return [y0, dt * f0, c, b, a]


def _next_step(dt: float, error_ratio: float) -> float:
    """Step-size controller: dt (0.9 / ratio^(1/5)) clipped to [0.2, 10] (no shrinking
    after an accepted step)."""
    if error_ratio == 0:
        return dt * GROW
    factor = SAFETY / error_ratio ** (1 / ORDER)
    if math.isnan(factor):
        return math.nan
    return dt * min(GROW, max(factor, 1.0 if error_ratio < 1 else SHRINK))


def _evaluate(coeffs: list[np.ndarray], t0: float, t1: float, t: float) -> np.ndarray:
    x = (t - t0) / (t1 - t0)
    total = coeffs[0] + x * coeffs[1]
    power = x
    for c in coeffs[2:]:
        power = power * x
        total = total + power * c
    return total
