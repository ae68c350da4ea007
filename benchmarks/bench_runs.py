"""Wall and CPU time of the default run of every experiment, each a whole fresh process.

For every registered experiment (`icldyn list`), or those named:
`python -m sims.cli run EXP --out TMP/EXP.h5 --no-plot --json` with the default config,
this checkout first on PYTHONPATH, torch at one thread (OMP_NUM_THREADS, MKL_NUM_THREADS
= 1, as `make bench`), and an empty compiled-model cache (ICLDYN_CACHE a new directory:
a symbolic model is built, as on a first run). Recorded per experiment:
- wall_s: seconds from spawning the process to its exit;
- cpu_s = user_s + sys_s: CPU seconds of the process and of the children it waited for
  (os.wait4), the cost that holds under load: a shared machine stretches wall time,
  CPU time much less;
- max_rss_mb, exit_status, the run's own report (in_process_s: its wall_seconds,
  imports excluded; status), the load average before and after, the time (UTC).
One measurement per experiment (a default run takes seconds to many minutes).

Resumable: results/default_runs.json keeps every experiment measured and is rewritten
after each one; a later call measures only those not recorded with exit status 0 yet,
unless --force. `--skip EXP ... --reason TEXT` records experiments as not measured, with why.
Target: the default `induction` run at most CPU_TARGET seconds of CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from common import RESULTS, SCHEMA, machine, versions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "default_runs"
PATH = os.path.join(RESULTS, f"{NAME}.json")
CPU_TARGET = ("induction", 30.0)
METHOD = ("Each experiment's default run, `icldyn run EXP --out TMP.h5 --no-plot --json`, "
          "in a fresh process (torch at one thread, an empty compiled-model cache), measured "
          "once: wall seconds from spawn to exit, and the CPU seconds (user + sys) of the "
          "process and the children it waited for (os.wait4). CPU time is the figure that "
          "holds under load; wall time stretches on a shared machine (CPU / wall well below 1 "
          "means the run waited for a core). Written by `make bench-runs` "
          "(benchmarks/bench_runs.py), which skips experiments already measured.")


def experiments() -> list[str]:
    from sims import registry

    return list(registry.experiments())


def measure(argv: list[str], env: dict, cwd: str, log: str) -> dict:
    """Run argv to completion: wall and CPU seconds, peak RSS (MB), exit status, stdout.
    stdout and stderr go to files under log (no pipe to drain while waiting)."""
    with open(f"{log}.out", "w+") as out, open(f"{log}.err", "w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime, "max_rss_mb": usage.ru_maxrss / 1024,
            "exit_status": proc.returncode, "stdout": stdout, "stderr": stderr}


def default_run(name: str) -> dict:
    """The measured default run of experiment name (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-runs-{name}-") as work:
        path = [ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path),
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "ICLDYN_CACHE": os.path.join(work, "cache")}
        argv = [sys.executable, "-m", "sims.cli", "run", name,
                "--out", os.path.join(work, f"{name}.h5"), "--no-plot", "--json"]
        before = os.getloadavg()
        measured_at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
        run = measure(argv, env, work, os.path.join(work, "log"))
    stdout, stderr = run.pop("stdout"), run.pop("stderr")
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        report = {}
    lines = stderr.strip().splitlines()
    return {**{k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()},
            "in_process_s": report.get("wall_seconds"),
            "status": report.get("status", lines[-1] if lines else "no report"),
            "load_before": [round(x, 2) for x in before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "measured_at": measured_at, "cache": "empty",
            "command": f"icldyn run {name} --out TMP.h5 --no-plot --json"}


def load() -> dict:
    try:
        with open(PATH) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {"runs": {}, "not_measured": {}}


def save(result: dict) -> None:
    """Rewrite the result file (write to a temporary name, then rename)."""
    experiment, limit = CPU_TARGET
    run = result["runs"].get(experiment)
    result.update({
        "schema": SCHEMA, "name": NAME, "method": METHOD, "experiments": experiments(),
        "cpu_target": {"experiment": experiment, "cpu_s_at_most": limit,
                       "met": None if run is None else run["cpu_s"] <= limit},
        "machine": machine(), "versions": versions(),
        "notes": "One measurement per experiment; the table lists each run's load average "
                 "before it started (1 min). The runs with an exit status other than 0 are "
                 "recorded as they ended.",
    })
    os.makedirs(RESULTS, exist_ok=True)
    with open(PATH + ".tmp", "w") as fh:
        json.dump(result, fh, indent=2)
    os.replace(PATH + ".tmp", PATH)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="EXP", help="experiments (default: all)")
    parser.add_argument("--force", action="store_true", help="measure again those recorded")
    parser.add_argument("--skip", nargs="+", default=[], metavar="EXP",
                        help="record these as not measured (with --reason) and run nothing")
    parser.add_argument("--reason", default="", help="why the --skip experiments are not measured")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in the runs, so the machine line names their thread count
    known = experiments()
    unknown = sorted(set(args.names + args.skip) - set(known))
    if unknown:
        parser.error(f"unknown experiment(s) {', '.join(unknown)} (known: {', '.join(known)})")
    result = load()
    if args.skip:
        if not args.reason:
            parser.error("--skip needs --reason")
        result["not_measured"].update({name: args.reason for name in args.skip})
        save(result)
        return
    for name in args.names or known:
        done = result["runs"].get(name, {}).get("exit_status") == 0
        if done and not args.force:
            print(f"{name}: recorded {result['runs'][name]['measured_at']}, skipped "
                  "(--force measures again)")
            continue
        print(f"{name}: running its default ...", flush=True)
        run = default_run(name)
        result["runs"][name] = run
        result["not_measured"].pop(name, None)
        save(result)
        print(f"{name}: wall {run['wall_s']:.1f} s, CPU {run['cpu_s']:.1f} s, "
              f"exit {run['exit_status']}, {run['status']}", flush=True)


if __name__ == "__main__":
    main()
