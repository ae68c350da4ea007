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
times the median time of one call on the lean solver's interface), their share
of the warm time (flow_over_rhs), and, for scale, the same flow integrated by
scipy's solve_ivp (RK45, the same Dormand-Prince pair, same tolerances and
output grid) on the same right-hand side.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch
from common import memory, print_table, side_by_side, timed, write
from scipy.integrate import solve_ivp

from dynamics.ode import integrate
from dynamics.times import record_times
from reduced_models import linreg as theory
from reduced_models.base import integrate_flow
from sims.linreg.experiment import SCHEMA, LinregExperiment
from sims.linreg.network import project

COLD_RUNS = 3
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


def anatomy(config: dict) -> dict:
    """Seconds of the rhs evaluations of one warm integration, the whole flow's time over
    theirs (both timed in a row of repeated calls, so with the same warm caches), and
    scipy's RK45 on the same right-hand side."""
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
    rhs_s = count[0] * per_call
    flow_s = timed(lambda: ode(config), repeats=9)
    return {"engine_evaluations": count[0], "engine_rhs_s": rhs_s, "flow_repeated_s": flow_s,
            "flow_over_rhs": round(flow_s / rhs_s, 2), "flow_over_rhs_target": 3.0,
            "scipy_rk45_same_rhs_s": scipy_s}


def fresh_process(cached: bool) -> dict:
    """Median over COLD_RUNS fresh processes of their import, build (or cache read) and
    integration times: with the compiled model on disk from an earlier process, or with
    an empty compiled-model cache (reduced_models/cache.py), so that each builds."""
    def once(cache_dir: str) -> dict:
        return json.loads(subprocess.run(
            [sys.executable, "-c", COLD], check=True, capture_output=True, text=True,
            env={**os.environ, "ICLDYN_CACHE": cache_dir}).stdout)

    runs = []
    with tempfile.TemporaryDirectory() as shared:
        if cached:
            once(shared)
        for _ in range(COLD_RUNS):
            if cached:
                runs.append(once(shared))
            else:
                with tempfile.TemporaryDirectory() as empty:
                    runs.append(once(empty))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main():
    torch.set_num_threads(1)
    config = SCHEMA.resolve({})
    exp = LinregExperiment()
    te, tb = side_by_side(lambda: ode(config), lambda: exp.run(config, ode=False), repeats=3)
    base = {"baseline_memory": memory(lambda: exp.run(config, ode=False)),
            "engine_memory": memory(lambda: ode(config))}
    cases = [{"case": "warm (model cached)", "engine_s": te, "baseline_s": tb, "ratio": tb / te,
              "target": 150.0, **anatomy(config), **base}]
    for name, cached, target in (("fresh process, model cached on disk", True, 100.0),
                                 ("fresh process, empty cache", False, None)):
        fresh = fresh_process(cached)
        cold_s = fresh["build_s"] + fresh["integrate_s"]
        cases.append({"case": name, "engine_s": cold_s, "baseline_s": tb,
                      "ratio": tb / cold_s, "target": target,
                      "build_s": round(fresh["build_s"], 4),
                      "integrate_s": round(fresh["integrate_s"], 4),
                      "imports_s_excluded": round(fresh["imports_s"], 3)})
    steps = round(config["t_max"] / config["lr"])
    result = write("ode_vs_sgd", f"SGD of the default run ({steps} steps, batch {config['batch']})",
                   cases, target=150.0, target_case="warm (model cached)",
                   notes=f"default linreg config, t_max={config['t_max']}, {config['records']} "
                         f"records; ODE dopri5 rtol {config['rtol']:g} atol {config['atol']:g}; "
                         "a fresh process's engine time is model build or cache read + "
                         "integration. engine_rhs_s is the right-hand side's share of a warm "
                         "flow (flow_over_rhs: flow_repeated_s / engine_rhs_s, both from "
                         "repeated calls, target at most 3); the "
                         "rest is the lean solver (dynamics.dopri5: steps, divergence guard, "
                         "restarts at its 4 chunks, dense output) and the recording of losses "
                         "and observables; scipy_rk45_same_rhs_s is the same flow on the same "
                         "right-hand side")
    print_table(result)


if __name__ == "__main__":
    main()
