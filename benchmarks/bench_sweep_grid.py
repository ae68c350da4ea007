"""A 32 x 32 grid of the linreg symbolic flow: one batched integration against a loop.

Engine: sims.sweeps.linreg_flow_batch, the 1024 points (init_scale log-spaced
1e-3..1e-1 x L log-spaced 10..1000, H = 2, d = 5, sigma2 = 0.1, symmetric
start, t_max = 20, 60 records) as one (1024, 4) state in one integrate call.
Baseline: the same function called on one point at a time (the same compiled
model, tolerances and output grid: only the batching differs). One point takes
about a second at these tolerances, so the loop runs over every SUBSAMPLE-th
point of the grid (64 points spread over it) and its time is scaled by
SUBSAMPLE to the whole grid; the batch is timed on the whole grid.
Also reports the largest difference of final loss, escape time and final
(omega, mu) between batched and single integration on those points, which
must stay below 1e-8.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from common import print_table, write

from dynamics.compare import escape_time
from dynamics.sweep import Sweep, parse_grid
from sims.linreg.experiment import SCHEMA
from sims.sweeps import linreg_flow_batch

N = 32
SUBSAMPLE = 16
RTOL, ATOL = 1e-10, 1e-12


def grid_configs() -> list[dict]:
    base = SCHEMA.resolve({"heads": 2, "t_max": 20.0, "records": 60, "rtol": RTOL, "atol": ATOL})
    axes = parse_grid(SCHEMA, [f"init_scale=logspace:1e-3:1e-1:{N}", f"L=logspace:10:1000:{N}"])
    return [cfg for _, cfg in Sweep("linreg", base, tuple(axes), True, False).points()]


def features(trajs) -> np.ndarray:
    """(B, K): final loss, escape time, final omega and mu of every point."""
    return np.array([[tr.loss[-1], escape_time(tr) or np.nan, *tr.params["omega"][-1],
                      *tr.params["mu"][-1]] for tr in trajs])


def main():
    torch.set_num_threads(1)
    configs = grid_configs()
    linreg_flow_batch(configs[:2])  # warm-up: compile the model
    batch_s = []
    for _ in range(3):
        start = time.perf_counter()
        batched = linreg_flow_batch(configs)
        batch_s.append(time.perf_counter() - start)
    sample = configs[::SUBSAMPLE]
    start = time.perf_counter()
    single = [linreg_flow_batch([c])[0] for c in sample]
    loop_s = (time.perf_counter() - start) * SUBSAMPLE
    diff = float(np.nanmax(np.abs(features(batched[::SUBSAMPLE]) - features(single))))
    te = statistics.median(batch_s)
    case = {"case": f"{N}x{N} grid, H=2", "engine_s": te, "baseline_s": loop_s,
            "ratio": loop_s / te, "points_looped": len(sample), "max_abs_diff": diff,
            "identical_to_1e-8": diff <= 1e-8}
    result = write("sweep_grid", "the same points integrated one by one", [case], target=20.0,
                   target_case=case["case"],
                   notes=f"linreg symbolic Lt flow, d=5, sigma2=0.1, symmetric start, t_max=20, "
                         f"60 records, dopri5 rtol {RTOL:g} atol {ATOL:g}; init_scale 1e-3..1e-1 "
                         f"x L 10..1000, both log-spaced; max |batched - single| over final loss, "
                         f"escape time, final omega and mu; baseline time = {SUBSAMPLE} x the "
                         f"loop over {len(sample)} points spread over the grid")
    print_table(result)


if __name__ == "__main__":
    main()
