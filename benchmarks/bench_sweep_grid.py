"""A 32 x 32 grid of the linreg symbolic flow: one batched integration against a loop.

Engine: sims.linreg.sweep.linreg_flow_batch, the 1024 points (init_scale log-spaced
1e-3..1e-1 x L log-spaced 10..1000, H = 2, d = 5, sigma2 = 0.1, symmetric
start, t_max = 20, 60 records) as one (1024, 4) state in one integrate call
(torchdiffeq dopri5).
Baseline: a per-point loop of scipy.integrate.solve_ivp (RK45, the same
Dormand-Prince pair) on the same compiled right-hand side (ReducedModel.rhs
of the same cached symbolic model, one (1, 4) state per call), with the same
tolerances and output grid; losses and observables recorded as the engine
records them. Both cover the whole grid.
Repetitions: SLICES rounds, each timing the engine on the whole grid and the
baseline loop on one slice of the points (a fixed random 1/SLICES of them, a
different slice each round, so the rounds together cover the grid once), scaled
by SLICES to the whole grid; the engine and the slice alternate which goes
first. The ratio's spread thus holds the machine's noise and the slices'
sampling of the grid; baseline_total_s is the loop over all points, measured
once across the rounds.
Also reports the largest difference of final loss, escape time and final
(omega, mu) between the batch and the loop over all points, which must stay
below 1e-8.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import memory, print_table, write
from scipy.integrate import solve_ivp
from spread import spread

from dynamics.compare import escape_time
from dynamics.sweep import Sweep, parse_grid
from dynamics.times import record_times
from dynamics.trajectory import Trajectory
from reduced_models import linreg as theory
from sims.linreg.experiment import SCHEMA
from sims.linreg.network import project
from sims.linreg.sweep import linreg_flow_batch, linreg_start

N = 32
SLICES = 8
RTOL, ATOL = 1e-10, 1e-12


def grid_configs() -> list[dict]:
    base = SCHEMA.resolve({"heads": 2, "t_max": 20.0, "records": 60, "rtol": RTOL, "atol": ATOL})
    axes = parse_grid(SCHEMA, [f"init_scale=logspace:1e-3:1e-1:{N}", f"L=logspace:10:1000:{N}"])
    return [cfg for _, cfg in Sweep("linreg", base, tuple(axes), True, False).points()]


def scipy_point(config: dict) -> Trajectory:
    """One point integrated by solve_ivp on the compiled right-hand side, recorded like
    reduced_models.base.integrate_flow records it."""
    model = theory.symbolic_model(config["d"], config["heads"], config["param"])
    hyper = {"L": float(config["L"]), "sigma2": float(config["sigma2"])}
    rhs = model.rhs(hyper)
    t, _ = record_times(config["t_max"], config["lr"], config["records"])
    sol = solve_ivp(lambda _, y: rhs(torch.from_numpy(y)[None])[0].numpy(), (t[0], t[-1]),
                    linreg_start(config).numpy(), method="RK45", t_eval=t,
                    rtol=config["rtol"], atol=config["atol"])
    states = torch.from_numpy(sol.y.T.copy())
    with torch.no_grad():
        params = {k: v.numpy() for k, v in project(model.manifold.lift(states)).items()}
        loss = model.loss(states, hyper).numpy()
    return Trajectory("ode", sol.t, loss, params)


def features(trajs) -> np.ndarray:
    """(B, K): final loss, escape time, final omega and mu of every point."""
    return np.array([[tr.loss[-1], escape_time(tr) or np.nan, *tr.params["omega"][-1],
                      *tr.params["mu"][-1]] for tr in trajs])


def main():
    torch.set_num_threads(1)
    configs = grid_configs()
    linreg_flow_batch(configs[:2]), scipy_point(configs[0])  # warm-up: compile the model
    slices = np.array_split(np.random.default_rng(0).permutation(len(configs)), SLICES)
    single, batched, batch_s, slice_s = [None] * len(configs), [], [], []

    def engine():
        start = time.perf_counter()
        batched[:] = linreg_flow_batch(configs)
        batch_s.append(time.perf_counter() - start)

    def baseline(points):
        start = time.perf_counter()
        for i in points:
            single[i] = scipy_point(configs[i])
        slice_s.append(time.perf_counter() - start)

    for i, points in enumerate(slices):  # the engine first in even rounds, second in odd
        pair = [engine, lambda p=points: baseline(p)]
        for fn in pair if i % 2 == 0 else pair[::-1]:
            fn()
    diff = float(np.nanmax(np.abs(features(batched) - features(single))))
    case = {"case": f"{N}x{N} grid, H=2",
            **spread(batch_s, [s * len(configs) / len(p) for s, p in zip(slice_s, slices)]),
            "baseline_total_s": sum(slice_s), "points": len(configs), "max_abs_diff": diff,
            "identical_to_1e-8": diff <= 1e-8,
            "engine_memory": memory(lambda: linreg_flow_batch(configs)),
            "baseline_memory_one_point": memory(lambda: scipy_point(configs[0]))}
    result = write("sweep_grid", "per-point loop of scipy solve_ivp (RK45) on the same "
                   "compiled right-hand side", [case], target=20.0, target_case=case["case"],
                   notes=f"linreg symbolic Lt flow, d=5, sigma2=0.1, symmetric start, t_max=20, "
                         f"60 records, rtol {RTOL:g} atol {ATOL:g} (engine: torchdiffeq dopri5, "
                         f"batched; baseline: scipy RK45 per point); init_scale 1e-3..1e-1 "
                         "x L 10..1000, both log-spaced; max |batched - single| over final loss, "
                         "escape time, final omega and mu, over all points; each of the "
                         f"{SLICES} repetitions times the baseline on a random 1/{SLICES} of "
                         "the points, scaled to the grid")
    print_table(result)


if __name__ == "__main__":
    main()
