"""A repeated ODE-only run from the command line against importing torch and h5py.

Engine: `icldyn run linreg --no-sgd --no-plot` in a fresh process, the default
config (the symbolic Lt flow and the Monte-Carlo population flow to t = 20),
writing to one file, as a user repeating the command does: the compiled
reduced models come from the on-disk cache (reduced_models/cache.py, here a
temporary directory filled by the warm-up run), and so does Python's bytecode
(written as Python does by default, here under a temporary PYTHONPYCACHEPREFIX,
whatever PYTHONDONTWRITEBYTECODE the caller has set).
Baseline: `python -c "import torch, h5py"` in a fresh process, the floor of
any run.
Both are timed in interleaved rounds as whole processes (wall clock, start to
exit), each round's engine run paired with its baseline run.
A second case starts the engine with an empty cache each time (the first run
after a change of the models or the libraries). Where the repeated run's time
goes: its own --json report (seconds per flow) and `python -X importtime`.

Ratio = baseline / engine as everywhere in BENCHMARKS.md; the target, the run at
most 1.5x the import, is a ratio of at least 1 / 1.5, met when the ratio's lower
quartile reaches it (the run's time over the import's at its upper quartile).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import interleaved, print_table, write
from spread import spread

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPEATS = 7
RUN = ["-m", "sims.cli", "run", "linreg", "--no-sgd", "--no-plot"]
IMPORTS = ["-c", "import torch, h5py"]


def environment(cache: str) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT, "ICLDYN_CACHE": cache, "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1",
           "PYTHONPYCACHEPREFIX": os.path.join(os.path.dirname(cache), "bytecode")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def process(args: list[str], env: dict) -> tuple[float, str]:
    """Wall seconds of `python args` in a fresh process, and its stdout."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env=env, cwd=ROOT, check=True,
                          capture_output=True, text=True)
    return time.perf_counter() - start, proc.stdout


def import_seconds(args: list[str], env: dict) -> dict[str, float]:
    """Cumulative import seconds of the heavy top-level packages (python -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], env=env, cwd=ROOT,
                          check=True, capture_output=True, text=True)
    out = {}
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in ("torch", "sympy", "h5py", "torchdiffeq",
                                            "matplotlib", "scipy"):
            out[parts[2]] = round(int(parts[1]) / 1e6, 3)
    return out


def main():
    work = tempfile.mkdtemp(prefix="bench-startup-")
    try:
        cache = os.path.join(work, "cache")
        out = ["--out", os.path.join(work, "linreg.h5")]
        env = environment(cache)
        times = interleaved({
            "warm": lambda: process(RUN + out, env),
            "imports": lambda: process(IMPORTS, env),
            "cold": lambda: process(RUN + out, environment(tempfile.mkdtemp(dir=work))),
        }, REPEATS)
        report = json.loads(process(RUN + out + ["--json"], env)[1])
        warm, cold = (spread(times[k], times["imports"]) for k in ("warm", "cold"))
        cases = [
            {"case": "repeated run (cache warm)", **warm,
             "engine_over_baseline": round(warm["engine_s"] / warm["baseline_s"], 2),
             "flow_seconds": report["seconds"], "imports_s": import_seconds(RUN + out, env)},
            {"case": "first run (cache empty)", **cold,
             "engine_over_baseline": round(cold["engine_s"] / cold["baseline_s"], 2),
             "imports_s": import_seconds(RUN + out, environment(os.path.join(work, "fresh")))},
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = write("startup", '`python -c "import torch, h5py"` (fresh process)', cases,
                   target=round(1 / 1.5, 3), target_case="repeated run (cache warm)",
                   notes=f"default linreg config, --no-sgd --no-plot; wall clock of whole "
                         f"processes, {REPEATS} rounds each running the engine, the baseline "
                         "and the empty-cache engine (order rotated every round), each case "
                         "paired with the baseline of its round; imports_s: cumulative import "
                         "times of one further run (python -X importtime, which slows imports "
                         "a little)")
    print_table(result)


if __name__ == "__main__":
    main()
