"""Fault injection on real processes (`make faults`); the reliability tests reuse its pieces.

Scenarios: kill -9 of `icldyn run` and `icldyn sweep` at random moments (the
sweep then resumes), kill -9 of a store writer
in the middle of its writes, two concurrent writers of one file, readers during
writes, bad input files, absurd sizes and a memory limit (refused before any
work), a diverging run, a solver stalled at t = 0, a stiff flow against the step
budget, the mode of written files, a full disk, Ctrl-C, and a huge sweep grid. Prints one row per scenario:
faults tried, survived (the file opens, the outcome is the expected one),
results lost (a run committed before the fault that is missing or changed).
Exits 1 if any result is lost or any fault is not survived.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dynamics import store
from dynamics.errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OUTPUT, EXIT_USAGE, UsageError

# no progress lines in the stderr the scenarios count (a slow machine would print them)
ENV = dict(os.environ, ICLDYN_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=ROOT,
           ICLDYN_PROGRESS_SECONDS="3600")
ICLDYN = [sys.executable, "-m", "sims.cli"]

# Small configs per experiment (about a second of work after start-up).
TINY = {
    "linreg": ["--set", "t_max=1", "--set", "lr=0.05", "--set", "batch=64",
               "--set", "mc_samples=300", "--set", "records=20", "--set", "eval_samples=256"],
}
# A run of a few seconds, so that random kills land in the flows and in SGD.
LONGER = {"linreg": ["--set", "t_max=6", "--set", "lr=0.01", "--set", "batch=128",
                     "--set", "mc_samples=500", "--set", "records=30", "--set", "eval_samples=256"]}

# A writer that appends synthetic runs of known content and reports each commit on stdout.
WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from dynamics import store
    from dynamics.trajectory import Trajectory
    path, tag, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    for k in range(count):
        trajs = {"ode": Trajectory("ode", np.arange(size, dtype=float),
                                   np.full(size, float(tag * 1000 + k)),
                                   {"x": np.arange(size, dtype=float)[:, None] * (tag * 1000 + k)})}
        rid = store.write_run(path, "synthetic", {"tag": tag, "k": k}, tag * 1000 + k, trajs,
                              "complete", {})
        print(rid, tag * 1000 + k, flush=True)
""")


def snapshot(path: str) -> dict[str, dict]:
    """run id -> {dataset path: (dtype, shape, raw bytes)} plus its config/seed/status attrs."""
    out = {}
    with store.open_store(path) as fh:
        for run_id, run in fh.get("runs", {}).items():
            entry = {f"@{k}": str(run.attrs[k]) for k in ("config", "seed", "status")}

            def visit(name, obj, entry=entry):
                if isinstance(obj, h5py.Dataset):
                    data = obj[()]
                    entry[name] = (str(data.dtype), data.shape, np.ascontiguousarray(data).tobytes())

            run.visititems(visit)
            out[run_id] = entry
    return out


def sweep_points(path: str) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """sweep id -> (done mask over the grid, metric name -> array over the grid x ...)."""
    out = {}
    with store.open_store(path) as fh:
        for sid, group in fh.get("sweeps", {}).items():
            done = group["done"][()].astype(bool)
            out[sid] = (done, {name: ds[()] for name, ds in group.items()
                               if name != "done" and "CLASS" not in ds.attrs  # not an axis
                               and ds.shape[:done.ndim] == done.shape})
    return out


def sweep_points_lost(reference: dict, path: str) -> int:
    """Points marked done in the file whose metrics differ in any bit from the reference."""
    lost = 0
    for sid, (done, metrics) in sweep_points(path).items():
        ref_metrics = reference[sid][1]
        lost += sum(metrics[n][done].tobytes() != ref_metrics[n][done].tobytes() for n in metrics)
    return lost


def temp_files(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(store.TEMP_SUFFIX))


def icldyn(*args: str, timeout: float = 170) -> subprocess.CompletedProcess:
    return subprocess.run([*ICLDYN, *args], capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=timeout, check=False)


def kill_after(argv: list[str], delay: float) -> bool:
    """Start argv, SIGKILL it after delay seconds; True if it was still running."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV,
                            cwd=ROOT)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def lost_runs(before: dict, path: str) -> list[str]:
    """Runs of `before` that are missing from the file or differ from it in any bit."""
    after = snapshot(path)
    return [rid for rid, entry in before.items() if after.get(rid) != entry]


def writer_argv(path: str, tag: int, count: int, size: int) -> list[str]:
    return [sys.executable, "-c", WRITER, path, str(tag), str(count), str(size)]


def committed(stdout: str) -> dict[str, int]:
    """run id -> value reported by a writer (complete lines only)."""
    lines = [line.split() for line in stdout.splitlines() if line.endswith(tuple("0123456789"))]
    return {parts[0]: int(parts[1]) for parts in lines if len(parts) == 2}


def synthetic_intact(path: str, run_id: str, value: int) -> bool:
    with store.open_store(path) as fh:
        run = fh["runs"][run_id]
        x = run["ode/params/x"][()]
        return (int(run.attrs["seed"]) == value and run.attrs["status"] == "complete"
                and np.array_equal(x[:, 0], np.arange(len(x)) * float(value)))


def kill_writer_once(path: str, delay: float, size: int = 20_000) -> tuple[bool, int]:
    """Kill a store writer after delay s; (file fine, lost runs) counting what it had reported."""
    before = snapshot(path) if os.path.exists(path) else {}
    proc = subprocess.Popen(writer_argv(path, 1, 10_000, size), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=ENV, cwd=ROOT)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    if not os.path.exists(path):
        return not committed(out), len(committed(out))
    lost = len(lost_runs(before, path))
    runs = snapshot(path)
    lost += sum(1 for rid in committed(out) if rid not in runs)
    lost += sum(1 for rid, v in committed(out).items() if rid in runs and not synthetic_intact(path, rid, v))
    return len(temp_files(os.path.dirname(path))) <= 1, lost


# --- scenarios for `make faults`: each returns (tried, survived, lost) ---

def scenario_kill_run(work: str, rng: random.Random, kills: int) -> tuple[int, int, int]:
    path = os.path.join(work, "kill_run.h5")
    base = ["run", "linreg", *LONGER["linreg"], "--no-plot", "--out", path]
    start = time.perf_counter()
    assert icldyn(*base, "--seed", "1").returncode == 0
    duration = time.perf_counter() - start  # start-up, flows, SGD and write of one run
    committed_before = snapshot(path)
    tried = survived = lost = 0
    for _ in range(kills):
        if not kill_after([*ICLDYN, *base, "--seed", "2"], rng.uniform(0.05, 0.95) * duration):
            continue  # finished before the kill: not a fault
        tried += 1
        runs = snapshot(path)
        lost += len(lost_runs(committed_before, path))
        new = set(runs) - set(committed_before)  # a run killed after its commit is whole
        whole = all(runs[rid]["@status"] == "complete" for rid in new) and len(new) <= 1
        survived += whole and len(temp_files(work)) <= 1
        committed_before = runs
    proc = icldyn(*base, "--seed", "2")
    survived_rerun = proc.returncode == 0 and not temp_files(work)
    return tried + 1, survived + survived_rerun, lost + len(lost_runs(committed_before, path))


def scenario_kill_sweep(work: str, rng: random.Random, kills: int) -> tuple[int, int, int]:
    reference, path = os.path.join(work, "sweep_ref.h5"), os.path.join(work, "sweep.h5")
    argv = ["sweep", "linreg", *TINY["linreg"], "--grid", "heads=1,2,3,4,5,6", "--no-plot"]
    start = time.perf_counter()
    assert icldyn(*argv, "--out", reference).returncode == 0
    duration = time.perf_counter() - start
    ref = sweep_points(reference)
    tried = survived = lost = 0
    for _ in range(kills):
        if not kill_after([*ICLDYN, *argv, "--out", path], rng.uniform(0.05, 0.95) * duration):
            continue
        tried += 1
        n_lost = sweep_points_lost(ref, path) if os.path.exists(path) else 0
        lost, survived = lost + n_lost, survived + (n_lost == 0)
    proc = icldyn(*argv, "--out", path)
    ((sid, (done, metrics)),) = sweep_points(path).items()
    same = done.all() and all(m.tobytes() == ref[sid][1][n].tobytes() for n, m in metrics.items())
    return tried + 1, survived + (proc.returncode == 0 and same), lost + (not same)


def scenario_kill_writer(work: str, rng: random.Random, kills: int) -> tuple[int, int, int]:
    path = os.path.join(work, "kill_writer.h5")
    tried = survived = lost = 0
    for _ in range(kills):
        ok, n_lost = kill_writer_once(path, rng.uniform(0.3, 3.0))
        tried, survived, lost = tried + 1, survived + ok, lost + n_lost
    return tried, survived, lost


def scenario_concurrent_writers(work: str, count: int) -> tuple[int, int, int]:
    path = os.path.join(work, "concurrent.h5")
    procs = [subprocess.Popen(writer_argv(path, tag, count, 5000), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
             for tag in (1, 2)]
    reads = failed_reads = 0
    while any(p.poll() is None for p in procs):
        try:
            store.describe(path)
            reads += 1
        except UsageError as exc:
            failed_reads += "no such file" not in str(exc)
    outs = [p.communicate()[0] for p in procs]
    reported = {rid: v for out in outs for rid, v in committed(out).items()}
    lost = sum(1 for rid, v in reported.items() if not synthetic_intact(path, rid, v))
    ok = all(p.returncode == 0 for p in procs) and len(reported) == 2 * count and not failed_reads
    return 1 + reads + failed_reads, int(ok) + reads, lost + (2 * count - len(reported))


def scenario_bad_files(work: str) -> tuple[int, int, int]:
    good = os.path.join(work, "kill_run.h5")
    data = pathlib.Path(good).read_bytes()
    files = {"text.h5": b"not hdf5", "empty.h5": b""}
    files.update({f"trunc{f}.h5": data[: int(len(data) * f / 10)] for f in (1, 5, 9)})
    other = os.path.join(work, "other.h5")
    with h5py.File(other, "w") as fh:
        fh.attrs["format"], fh.attrs["format_version"] = "icldyn", 2
    tried = survived = 0
    for name, content in files.items():
        path = os.path.join(work, name)
        pathlib.Path(path).write_bytes(content)
    for path in [os.path.join(work, n) for n in files] + [other]:
        before = pathlib.Path(path).read_bytes()
        for argv in (["show", path], ["run", "linreg", *TINY["linreg"], "--no-plot", "--out", path]):
            proc = icldyn(*argv)
            tried += 1
            survived += (proc.returncode == 2 and proc.stderr.count("\n") == 1
                         and "Traceback" not in proc.stderr and pathlib.Path(path).read_bytes() == before)
    return tried, survived, 0


def scenario_diverging_run(work: str) -> tuple[int, int, int]:
    path = os.path.join(work, "diverge.h5")
    proc = icldyn("run", "linreg", "--set", "lr=20", "--set", "t_max=2000", "--set", "batch=16",
                  "--set", "eval_samples=16", "--set", "records=10", "--no-ode", "--no-plot",
                  "--out", path)
    ok = proc.returncode == EXIT_INCOMPLETE and "Traceback" not in proc.stderr
    ok = ok and "sgd diverged at t = " in proc.stdout
    if ok:
        _, attrs, trajs = store.read_run(path)
        sgd = trajs["sgd"]
        ok = (attrs["status"] == "diverged" and sgd.status == "diverged" and sgd.t[-1] < 2000
              and all(np.isfinite(v).all() for v in sgd.params.values()))
    return 1, int(ok), 0


def refused(proc: subprocess.CompletedProcess, fragment: str) -> bool:
    """Exit 2 with one line naming fragment, no traceback."""
    return (proc.returncode == 2 and proc.stderr.count("\n") == 1 and fragment in proc.stderr
            and "Traceback" not in proc.stderr)


def scenario_absurd_sizes(work: str, rng: random.Random, per_experiment: int) -> tuple[int, int, int]:
    """Integer size keys at 10^12 (a few per experiment, drawn at random): exit 2 naming the
    key (or a key it conflicts with), nothing written."""
    from sims import registry

    path = os.path.join(work, "absurd.h5")
    tried = survived = 0
    for name, exp in sorted(registry.EXPERIMENTS.items()):
        keys = [k for k in exp.schema.keys if k.type in ("int", "ints") and k.name != "seed"]
        for key in rng.sample(keys, min(per_experiment, len(keys))):
            proc = icldyn("run", name, "--set", f"{key.name}={10**12}", "--out", path)
            tried += 1
            survived += refused(proc, "key '") and not os.path.exists(path)
    return tried, survived, 0


def scenario_memory_limit(work: str) -> tuple[int, int, int]:
    """ICLDYN_MEMORY_LIMIT below the interpreter: run, check and sweep refused; a sweep with
    one absurd grid point is refused before any point is computed."""
    path = os.path.join(work, "limit.h5")
    env = dict(ENV, ICLDYN_MEMORY_LIMIT="0.25")
    tried = survived = 0
    for argv in (["run", "linreg", "--out", path], ["check", "linreg"],
                 ["sweep", "linreg", "--grid", "heads=1,2", "--out", path]):
        proc = subprocess.run([*ICLDYN, *argv], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=170, check=False)
        tried += 1
        survived += refused(proc, "more than the limit 0.25 GiB") and not os.path.exists(path)
    proc = icldyn("sweep", "linreg", *TINY["linreg"], "--grid", "mc_samples=100,10000000000",
                  "--out", path)
    tried += 1
    survived += refused(proc, "key 'mc_samples'") and not os.path.exists(path)
    return tried, survived, 0


def scenario_stalled_solver(work: str) -> tuple[int, int, int]:
    """Tolerances of 1e-300: the symbolic flow stalls at t = 0, stored with its start state."""
    path = os.path.join(work, "stalled.h5")
    proc = icldyn("run", "linreg", "--set", "rtol=1e-300", "--set", "atol=1e-300",
                  "--set", "t_max=1", "--set", "lr=0.1", "--set", "mc_samples=50",
                  "--set", "records=10", "--no-sgd", "--no-plot", "--out", path)
    ok = proc.returncode == EXIT_INCOMPLETE and "Traceback" not in proc.stderr
    if ok:
        _, attrs, trajs = store.read_run(path)
        ok = (attrs["status"] == trajs["ode"].status == "stalled"
              and list(trajs["ode"].t) == [0.0])
    return 1, int(ok), 0


STIFF = textwrap.dedent("""
    import numpy as np, torch
    from dynamics.ode import integrate
    t = np.linspace(0.0, 2.0, 21)
    sol = integrate(lambda y: -1e6 * (y - torch.cos(y)), torch.ones(1, 1, dtype=torch.float64),
                    t, max_steps=5000)
    print(sol.status[0])
""")


def scenario_step_budget(work: str) -> tuple[int, int, int]:
    """A flow of rate 1e6 (~1e6 explicit steps) with a budget of 5000 steps: stalled, soon."""
    proc = subprocess.run([sys.executable, "-c", STIFF], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=170, check=False)
    return 1, int(proc.returncode == 0 and proc.stdout.strip() == "stalled"), 0


def scenario_file_mode(work: str) -> tuple[int, int, int]:
    """Under umask 027 a new file is 0640 (not the temp file's private 0600); a rewritten
    file keeps its mode."""
    path = os.path.join(work, "mode.h5")
    argv = [*ICLDYN, "run", "linreg", *TINY["linreg"], "--no-plot", "--out", path]
    ok = subprocess.run(argv, capture_output=True, env=ENV, cwd=ROOT, timeout=170, check=False,
                        preexec_fn=lambda: os.umask(0o027)).returncode == 0
    ok = ok and os.stat(path).st_mode & 0o777 == 0o640
    os.chmod(path, 0o604)
    ok = ok and icldyn(*argv[len(ICLDYN):]).returncode == 0 and os.stat(path).st_mode & 0o777 == 0o604
    return 1, int(ok), 0


def scenario_full_disk(work: str) -> tuple[int, int, int]:
    """Files limited to a few bytes more than the existing output (RLIMIT_FSIZE: EFBIG, as a
    full disk gives ENOSPC): the append fails with one line, the file byte-identical, no temp
    file; then a new output with room for the results but not the figure keeps the results."""
    import resource

    path = os.path.join(work, "full.h5")
    assert icldyn("run", "linreg", *TINY["linreg"], "--no-plot", "--out", path).returncode == 0
    before = pathlib.Path(path).read_bytes()
    tried = survived = lost = 0
    for limit, argv in ((len(before) + 1000, ["--no-plot", "--out", path]),
                        (80_000, ["--out", os.path.join(work, "full_fig.h5")])):
        proc = subprocess.run(
            [*ICLDYN, "run", "linreg", *TINY["linreg"], *argv], capture_output=True, text=True,
            env=ENV, cwd=ROOT, timeout=170, check=False,
            preexec_fn=lambda limit=limit: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
        tried += 1
        survived += (proc.returncode == EXIT_OUTPUT and proc.stderr.count("\n") == 1
                     and "Traceback" not in proc.stderr and not temp_files(work))
    lost += pathlib.Path(path).read_bytes() != before
    lost += len(snapshot(os.path.join(work, "full_fig.h5"))) != 1
    return tried, survived, lost


def scenario_interrupt(work: str, rng: random.Random, kills: int) -> tuple[int, int, int]:
    """SIGINT (Ctrl-C) of `icldyn run` at random moments after start-up: exit 130 and one
    line, or a finished run; earlier runs intact, no temp file."""
    path = os.path.join(work, "interrupt.h5")
    assert icldyn("run", "linreg", *TINY["linreg"], "--no-plot", "--out", path).returncode == 0
    before = snapshot(path)
    tried = survived = 0
    for _ in range(kills):
        proc = subprocess.Popen([*ICLDYN, "run", "linreg", *LONGER["linreg"], "--no-plot",
                                 "--out", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=ENV, cwd=ROOT)
        time.sleep(rng.uniform(6.0, 12.0))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate()
        tried += 1
        survived += ((proc.returncode == EXIT_INTERRUPTED and err.count("\n") == 1
                      or proc.returncode == 0) and "Traceback" not in err and not temp_files(work))
    return tried, survived, len(lost_runs(before, path))


def scenario_huge_grid(work: str) -> tuple[int, int, int]:
    """A 10^9-point grid: refused with one line before anything is allocated."""
    path = os.path.join(work, "huge.h5")
    proc = icldyn("sweep", "linreg", "--grid", "init_scale=logspace:1e-4:1e-1:1000000",
                  "--grid", "sigma2=0:1:1000", "--no-sgd", "--no-plot", "--out", path, timeout=60)
    return 1, int(proc.returncode == EXIT_USAGE and refused(proc, "points")
                  and not os.path.exists(path)), 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=4,
                        help="kills of icldyn run and of icldyn sweep (store writer: 2x)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--sizes", type=int, default=2,
                        help="absurd size keys tried per experiment (drawn at random)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="icldyn-faults-")
    rows = []
    try:
        scenarios = [
            ("kill -9 icldyn run", lambda: scenario_kill_run(work, rng, args.kills)),
            ("kill -9 icldyn sweep", lambda: scenario_kill_sweep(work, rng, args.kills)),
            ("kill -9 store writer", lambda: scenario_kill_writer(work, rng, 2 * args.kills)),
            ("2 writers + reader", lambda: scenario_concurrent_writers(work, 15)),
            ("bad / damaged files", lambda: scenario_bad_files(work)),
            ("absurd sizes", lambda: scenario_absurd_sizes(work, rng, args.sizes)),
            ("memory limit", lambda: scenario_memory_limit(work)),
            ("diverging SGD", lambda: scenario_diverging_run(work)),
            ("solver stalled at t=0", lambda: scenario_stalled_solver(work)),
            ("stiff flow, step budget", lambda: scenario_step_budget(work)),
            ("file mode (umask 027)", lambda: scenario_file_mode(work)),
            ("full disk", lambda: scenario_full_disk(work)),
            ("Ctrl-C (SIGINT)", lambda: scenario_interrupt(work, rng, args.kills)),
            ("huge sweep grid", lambda: scenario_huge_grid(work)),
        ]
        for name, scenario in scenarios:
            start = time.perf_counter()
            tried, survived, lost = scenario()
            rows.append((name, tried, survived, lost, time.perf_counter() - start))
            print(f"{name:<24} tried {tried:4d}  survived {survived:4d}  results lost {lost}  "
                  f"({rows[-1][4]:.0f} s)", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'scenario':<24} {'faults tried':>12} {'survived':>9} {'results lost':>13}")
    for name, tried, survived, lost, _ in rows:
        print(f"{name:<24} {tried:>12d} {survived:>9d} {lost:>13d}")
    total = [sum(r[i] for r in rows) for i in (1, 2, 3)]
    print(f"{'total':<24} {total[0]:>12d} {total[1]:>9d} {total[2]:>13d}")
    return 0 if total[2] == 0 and total[0] == total[1] else 1


if __name__ == "__main__":
    sys.exit(main())
