"""The symbolic ODE against SGD on the default linreg run, to the same t_max.

Engine: the run's "ode" flow (reduced_models.linreg.symbolic_model, the
large-L loss Lt; dopri5 at the run's rtol, atol; the default output grid with
losses and observables recorded), from the symmetric start.
Baseline: the run's SGD trajectory (LinregExperiment.run without flows: 1000
steps of batch 512 in float64, lr 0.02, to t = lr x steps = t_max, with the
evaluation loss recorded on the same grid).

Three engine timings:
- warm: the compiled model reused from the in-process cache (repeated runs,
  sweeps, notebooks);
- fresh process, model cached: a new Python process reading the compiled model
  from the on-disk cache (reduced_models/cache.py) and integrating (a repeated
  `icldyn run`);
- fresh process, empty cache: building the model (sympy differentiation and
  compilation) and integrating.
Imports are timed apart and excluded, as they are for the baseline, whose
process has them loaded already.
Where the warm time goes: the right-hand-side evaluations alone (their count
times the median time of one call on the lean solver's interface), and, for
scale, the same flow integrated by scipy's solve_ivp (RK45, the same
Dormand-Prince pair, same tolerances and output grid) on the same right-hand
side. A further case pairs the warm flow with its floor, as many right-hand-side
calls as it makes: ratio = floor / flow, so the target "flow at most 3x its
right-hand side" is a ratio of at least 1/3; these two alternate in rounds of
their own, 20 calls per timing. All other timings run in the same interleaved
rounds; every case is paired with the SGD run of its round.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch
from common import interleaved, memory, print_table, side_by_side, timed, write
from scipy.integrate import solve_ivp
from spread import spread

from dynamics.ode import integrate
from dynamics.times import record_times
from reduced_models import linreg as theory
from reduced_models.base import integrate_flow
from sims.linreg.experiment import SCHEMA, LinregExperiment
from sims.linreg.network import project

FLOW_CALLS = 20

COLD = """
import json, sys, time
start = time.perf_counter()
import torch
from dynamics.times import record_times
from reduced_models import linreg as theory
from reduced_models.base import integrate_flow
from sims.linreg.experiment import SCHEMA
from sims.linreg.network import project
torch.set_num_threads(1)
imported = time.perf_counter()
c = SCHEMA.resolve({})
model = theory.symbolic_model(c["d"], c["heads"], c["param"])
start0 = model.manifold.pack(theory.symmetric_start(c["d"], c["heads"], c["init_scale"], c["param"]))
t, _ = record_times(c["t_max"], c["lr"], c["records"])
built = time.perf_counter()
integrate_flow(model, start0, t, {"L": c["L"], "sigma2": c["sigma2"]}, project,
               rtol=c["rtol"], atol=c["atol"])
done = time.perf_counter()
print(json.dumps({"imports_s": imported - start, "build_s": built - imported,
                  "integrate_s": done - built}))
"""


def ode(config: dict):
    d, H, param = config["d"], config["heads"], config["param"]
    model = theory.symbolic_model(d, H, param)
    start = model.manifold.pack(theory.symmetric_start(d, H, config["init_scale"], param))
    t, _ = record_times(config["t_max"], config["lr"], config["records"])
    return integrate_flow(model, start, t, {"L": config["L"], "sigma2": config["sigma2"]},
                          project, rtol=config["rtol"], atol=config["atol"])


def anatomy(config: dict) -> tuple[dict, object]:
    """Seconds of the rhs evaluations of one warm integration and of scipy's RK45 on the
    same right-hand side; and the floor of the flow: a call making as many rhs
    evaluations (at the start state) as the integration does."""
    d, H, param = config["d"], config["heads"], config["param"]
    model = theory.symbolic_model(d, H, param)
    start = model.manifold.pack(theory.symmetric_start(d, H, config["init_scale"], param))[None]
    t, _ = record_times(config["t_max"], config["lr"], config["records"])
    rhs, count = model.rhs({"L": float(config["L"]), "sigma2": config["sigma2"]}), [0]

    class Counted:
        def __call__(self, y):
            return rhs(y)

        def on_floats(self, y):
            count[0] += 1
            return rhs.on_floats(y)

    integrate(Counted(), start, t, rtol=config["rtol"], atol=config["atol"])
    state = start[0].tolist()
    per_call = timed(lambda: [rhs.on_floats(state) for _ in range(1000)], repeats=9) / 1000
    scipy_s = timed(lambda: solve_ivp(lambda _, y: rhs.on_floats(y.tolist()),
                                      (t[0], t[-1]), start[0].numpy(), t_eval=t,
                                      rtol=config["rtol"], atol=config["atol"]))
    return ({"engine_evaluations": count[0], "engine_rhs_s": count[0] * per_call,
             "scipy_rk45_same_rhs_s": scipy_s},
            lambda: [rhs.on_floats(state) for _ in range(count[0])])


def fresh_process(cache_dir: str) -> dict:
    """Import, build (or cache read) and integration seconds of one fresh process whose
    compiled-model cache (reduced_models/cache.py) is cache_dir: filled by an earlier
    process, or empty, so that it builds."""
    return json.loads(subprocess.run(
        [sys.executable, "-c", COLD], check=True, capture_output=True, text=True,
        env={**os.environ, "ICLDYN_CACHE": cache_dir}).stdout)


def main():
    torch.set_num_threads(1)
    config = SCHEMA.resolve({})
    exp = LinregExperiment()
    parts, floor = anatomy(config)
    fresh = {"cached": [], "empty": []}  # each list's first run is the warm-up call's
    with tempfile.TemporaryDirectory() as work:
        shared = os.path.join(work, "shared")  # filled by the warm-up call
        times = interleaved({
            "warm": lambda: ode(config), "sgd": lambda: exp.run(config, ode=False),
            "cached": lambda: fresh["cached"].append(fresh_process(shared)),
            "empty": lambda: fresh["empty"].append(fresh_process(tempfile.mkdtemp(dir=work))),
        })
    base = {"baseline_memory": memory(lambda: exp.run(config, ode=False)),
            "engine_memory": memory(lambda: ode(config))}
    cases = [{"case": "warm (model cached)", **spread(times["warm"], times["sgd"]),
              "target": 150.0, **parts, **base},
             # in rounds of their own: between multi-second SGD runs a 2 ms flow finds
             # its caches cold, and the floor, one function called in a row, would not;
             # FLOW_CALLS calls per timing: timing single 2 ms calls, the rounds' ratios
             # spread from 0.23 to 0.42
             {"case": "warm flow against its right-hand side",
              **side_by_side(lambda: [ode(config) for _ in range(FLOW_CALLS)],
                             lambda: [floor() for _ in range(FLOW_CALLS)], repeats=9),
              "target": round(1 / 3, 3), "calls_per_timing": FLOW_CALLS}]
    for name, key, target in (("fresh process, model cached on disk", "cached", 100.0),
                              ("fresh process, empty cache", "empty", None)):
        runs = fresh[key][1:]
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        cases.append({"case": name,
                      **spread([r["build_s"] + r["integrate_s"] for r in runs], times["sgd"]),
                      "target": target,
                      "build_s": round(median["build_s"], 4),
                      "integrate_s": round(median["integrate_s"], 4),
                      "imports_s_excluded": round(median["imports_s"], 3)})
    steps = round(config["t_max"] / config["lr"])
    result = write("ode_vs_sgd", f"SGD of the default run ({steps} steps, batch {config['batch']})",
                   cases, target=150.0, target_case="warm (model cached)",
                   notes=f"default linreg config, t_max={config['t_max']}, {config['records']} "
                         f"records; ODE dopri5 rtol {config['rtol']:g} atol {config['atol']:g}; "
                         "a fresh process's engine time is model build or cache read + "
                         "integration. engine_rhs_s is the right-hand side's share of a warm "
                         "flow (the case against the right-hand side: the flow and its "
                         f"evaluations alternated in 9 rounds of their own, {FLOW_CALLS} "
                         "calls per timing, target flow at most 3x theirs); the "
                         "rest is the lean solver (dynamics.dopri5: generated steps with their "
                         "divergence guard, restarts at its 4 chunks, dense output) and the "
                         "recording of losses "
                         "and observables; scipy_rk45_same_rhs_s is the same flow on the same "
                         "right-hand side")
    print_table(result)


if __name__ == "__main__":
    main()
