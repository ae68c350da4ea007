"""Dormand-Prince 5(4) on one state held as Python floats: the lean path of
`dynamics.ode.integrate`.

torchdiffeq spends, per step of one small state, many times the cost of a
compiled right-hand side on tensor bookkeeping, and numpy on arrays of a few
entries costs about a microsecond per operation. This loop takes the same steps
as torchdiffeq's "dopri5" (the same tableau, initial-step rule, RMS error norm,
step-size controller and quartic dense output; Dormand & Prince 1980, Shampine
1986, Hairer, Norsett & Wanner, Solving ODEs I, II.4) on lists of floats, so the
two paths agree to rounding (tests/test_ode_backends.py compares them on every
built-in flow).

Outcomes, as in `integrate`:
- a step whose stage state leaves the bound, or whose right-hand side is not
  finite, ends the integration as "diverged" with every output time before it;
- a step size that is not finite or underflows (t + dt == t), or a spent
  evaluation budget, ends it as "stalled" likewise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .status import Status

Vector = list[float]

# Butcher tableau (the nodes are not needed: the flows are autonomous).
A21 = 1 / 5
A31, A32 = 3 / 40, 9 / 40
A41, A42, A43 = 44 / 45, -56 / 15, 32 / 9
A51, A52, A53, A54 = 19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729
A61, A62, A63, A64, A65 = 9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656
B1, B3, B4, B5, B6 = 35 / 384, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84  # B2 = B7 = 0
# 5th-order weights minus the embedded 4th-order ones (E2 = 0; the 7th stage is FSAL).
E1, E3, E4 = 35 / 384 - 1951 / 21600, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720
E5, E6, E7 = -2187 / 6784 + 12231 / 42400, 11 / 84 - 649 / 6300, -1 / 60
# Weights of the midpoint state for the dense output (Shampine 1986); M2 = 0.
M1, M3, M4 = 6025192743 / 30085553152 / 2, 51252292925 / 65400821598 / 2, \
    -2691868925 / 45128329728 / 2
M5, M6, M7 = 187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, \
    11237099 / 235043384 / 2
ORDER = 5
SAFETY, GROW, SHRINK = 0.9, 10.0, 0.2


class Stop(Exception):
    """The integration ends early with `status`."""

    def __init__(self, status: Status):
        super().__init__(status.value)
        self.status = status


def _rms(x: Vector) -> float:
    """Root mean square (inf where the squares overflow, as the plain formula gives)."""
    return math.sqrt(sum([v * v for v in x]) / len(x))


class Dopri5:
    """Adaptive integration of dy/dt = f(y) for one state of P floats.

    - f: list of P floats -> list of P floats
    - rtol, atol: tolerances of the RMS error norm
    - bound: a stage state beyond it in absolute value counts as divergence
    - budget: right-hand-side evaluations allowed in all (more: "stalled")
    """

    def __init__(self, f: Callable[[Vector], Vector], rtol: float, atol: float,
                 bound: float, budget: int):
        self.f, self.rtol, self.atol = f, rtol, atol
        self.bound, self.budget = bound, budget
        self.evaluations = 0

    def _eval(self, y: Vector) -> Vector:
        if self.evaluations >= self.budget:
            raise Stop(Status.STALLED)
        self.evaluations += 1
        dy = self.f(y)
        # fast test: a finite sum means finite entries, and sum |y_i| <= bound bounds each
        # (NaN fails the comparison); otherwise the exact test
        if not (math.isfinite(sum(dy)) and sum(map(abs, y)) <= self.bound) and not (
                all(map(math.isfinite, dy)) and all(abs(v) <= self.bound for v in y)):
            raise Stop(Status.DIVERGED)
        return dy

    def _first_step(self, y0: Vector, f0: Vector) -> float:
        """Hairer-Norsett-Wanner's starting step (order 4 for the error estimate), in IEEE
        arithmetic: absurd tolerances give NaN (then "stalled"), not an exception."""
        scale = [self.atol + abs(y) * self.rtol for y in y0]
        d0 = _rms([_div(y, s) for y, s in zip(y0, scale)])
        d1 = _rms([_div(f, s) for f, s in zip(f0, scale)])
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * _div(d0, d1)
        if self.evaluations >= self.budget:
            raise Stop(Status.STALLED)
        self.evaluations += 1
        f1 = self.f([y + h0 * f for y, f in zip(y0, f0)])
        d2 = abs(_div(_rms([_div(b - a, s) for a, b, s in zip(f0, f1, scale)]), h0))
        if d1 <= 1e-15 and d2 <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = _div(0.01, max(d1, d2)) ** (1 / ORDER)
        return math.nan if math.isnan(h0) or math.isnan(h1) else min(100 * h0, h1)

    def solve(self, y0: Vector, times: list[float]) -> tuple[list[Vector], Status]:
        """States at times[1:] (times[0] is y0's time) as far as reached, and the status."""
        out: list[Vector] = []
        try:
            f0 = self._eval(y0)
            dt = self._first_step(y0, f0)
            t0 = t1 = times[0]
            y = y_prev = y0
            coeffs, fitted_for, last = None, None, None
            for target in times[1:]:
                while target > t1:
                    if not (abs(dt) < math.inf and t1 + dt > t1):  # NaN, inf or underflow
                        raise Stop(Status.STALLED)
                    y_new, stages, error_ratio = self._step(y, f0, dt)
                    if error_ratio <= 1:
                        t0, t1, y_prev, y, f0 = t1, t1 + dt, y, y_new, stages[6]
                        last = (stages, dt)
                    dt = _next_step(dt, error_ratio)
                if fitted_for != t1:  # the dense output of a step, only where it is read
                    coeffs, fitted_for = _fit(y_prev, y, *last), t1
                x = (target - t0) / (t1 - t0)
                out.append([e + x * (d + x * (c + x * (b + x * a)))
                            for e, d, c, b, a in zip(*coeffs)])
        except Stop as stop:
            return out, stop.status
        return out, Status.COMPLETE

    def _step(self, y0: Vector, k1: Vector, h: float) -> tuple[Vector, list[Vector], float]:
        """One trial step: (y1, the 7 stage slopes, error ratio)."""
        ev = self._eval
        k2 = ev([y + h * (A21 * a) for y, a in zip(y0, k1)])
        k3 = ev([y + h * (A31 * a + A32 * b) for y, a, b in zip(y0, k1, k2)])
        k4 = ev([y + h * (A41 * a + A42 * b + A43 * c) for y, a, b, c in zip(y0, k1, k2, k3)])
        k5 = ev([y + h * (A51 * a + A52 * b + A53 * c + A54 * d)
                 for y, a, b, c, d in zip(y0, k1, k2, k3, k4)])
        k6 = ev([y + h * (A61 * a + A62 * b + A63 * c + A64 * d + A65 * e)
                 for y, a, b, c, d, e in zip(y0, k1, k2, k3, k4, k5)])
        y1 = [y + h * (B1 * a + B3 * c + B4 * d + B5 * e + B6 * f)
              for y, a, c, d, e, f in zip(y0, k1, k3, k4, k5, k6)]
        k7 = ev(y1)
        rtol, atol = self.rtol, self.atol
        pairs = zip(y0, y1, k1, k3, k4, k5, k6, k7)
        try:
            scaled = [h * (E1 * a + E3 * c + E4 * d + E5 * e + E6 * f + E7 * g)
                      / (atol + rtol * max(abs(y), abs(z))) for y, z, a, c, d, e, f, g in pairs]
        except ZeroDivisionError:  # atol = 0 at a zero entry
            scaled = [_div(h * (E1 * a + E3 * c + E4 * d + E5 * e + E6 * f + E7 * g),
                           atol + rtol * max(abs(y), abs(z)))
                      for y, z, a, c, d, e, f, g in zip(y0, y1, k1, k3, k4, k5, k6, k7)]
        return y1, [k1, k2, k3, k4, k5, k6, k7], _rms(scaled)


def _fit(y0: Vector, y1: Vector, k: list[Vector], h: float) -> list[Vector]:
    """Coefficients (e, d, c, b, a) of the quartic in x = (t - t0) / h through y0, y1, the
    midpoint state and the end slopes."""
    k1, _, k3, k4, k5, k6, k7 = k
    mid = [y + h * (M1 * a + M3 * c + M4 * d + M5 * e + M6 * f + M7 * g)
           for y, a, c, d, e, f, g in zip(y0, k1, k3, k4, k5, k6, k7)]
    rows = list(zip(y0, y1, mid, k1, k7))
    return [y0, [h * a for a in k1],
            [h * (g - 4 * a) - 11 * y - 5 * z + 16 * m for y, z, m, a, g in rows],
            [h * (5 * a - 3 * g) + 18 * y + 14 * z - 32 * m for y, z, m, a, g in rows],
            [2 * h * (g - a) - 8 * (z + y) + 16 * m for y, z, m, a, g in rows]]


def _next_step(dt: float, error_ratio: float) -> float:
    """Step-size controller: dt (0.9 / ratio^(1/5)) clipped to [0.2, 10] (no shrinking
    after an accepted step)."""
    if error_ratio == 0:
        return dt * GROW
    factor = SAFETY / error_ratio ** (1 / ORDER)
    if math.isnan(factor):
        return math.nan
    return dt * min(GROW, max(factor, 1.0 if error_ratio < 1 else SHRINK))


def _div(a: float, b: float) -> float:
    """a / b in IEEE arithmetic (inf or NaN where Python raises)."""
    try:
        return a / b
    except ZeroDivisionError:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * (
            math.copysign(1.0, b))
