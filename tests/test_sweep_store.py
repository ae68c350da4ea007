"""Sweep storage: layout readable by xarray, journal commits, resume, kill -9."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import xarray as xr

from dynamics.errors import UsageError
from dynamics.sweep import Metric, Sweep, Task, run_sweep
from dynamics.sweep_store import Axis, Journal, journal_path, prepare, read_sweep
from sims.cli import main
from sims.sweeps import run_point

AXES = (Axis("a", "float", (0.1, 1.0, 10.0), "log"), Axis("kind", "str", ("x", "y")))
METRICS = [Metric("square", "a^2"), Metric("per_head", "a * (h + 1)", dims=("head",)),
           Metric("phase", "0 if kind x else 1", phases=("left", "right"))]
CALLS = []


def toy_task(points):
    """[(index, config)] -> metrics; records which indices it computed."""
    CALLS.extend(i for i, _ in points)
    return [(i, {"square": c["a"] ** 2, "per_head": [c["a"] * (h + 1) for h in range(c["n"])],
                 "phase": float(c["kind"] == "y")}) for i, c in points]


def toy_sweep(n=2):
    return Sweep("toy", {"a": 0.0, "kind": "x", "n": n}, AXES, ode=True, sgd=False)


def tasks_of(sweep, per_task=1):
    pts = sweep.points()
    return [Task(toy_task, (pts[k:k + per_task],), tuple(i for i, _ in pts[k:k + per_task]))
            for k in range(0, len(pts), per_task)]


def test_layout_opens_in_xarray_with_labelled_coordinates(tmp_path):
    path = str(tmp_path / "s.h5")
    sweep = toy_sweep()
    report = run_sweep(path, sweep, METRICS, tasks_of(sweep), {"head": 3}, "phase")
    assert report == {"file": path, "sweep_id": sweep.sweep_id, "points_total": 6,
                      "points_computed": 6, "points_reused": 0}
    ds = xr.open_dataset(path, group=f"sweeps/{sweep.sweep_id}", engine="h5netcdf")
    assert ds.square.dims == ("a", "kind") and ds.per_head.dims == ("a", "kind", "head")
    assert list(ds.kind.values) == ["x", "y"] and ds.a.attrs["spacing"] == "log"
    np.testing.assert_array_equal(ds.square.sel(kind="y").values, [a * a for a in AXES[0].values])
    np.testing.assert_array_equal(ds.per_head.sel(a=10.0, kind="x").values, [10.0, 20.0, np.nan])
    assert ds.phase.attrs["flag_meanings"] == "left right"
    assert int(ds.done.sum()) == 6 and ds.attrs["status"] == "complete"
    assert json.loads(ds.attrs["config"]) == {"n": 2}  # swept keys removed
    ds.close()
    assert not os.path.exists(journal_path(path, sweep.sweep_id))  # folded and removed


def test_resume_computes_only_missing_points(tmp_path):
    path = str(tmp_path / "s.h5")
    sweep = toy_sweep()
    sid = sweep.sweep_id
    prepare(path, sid, {"experiment": "toy", "config": sweep.base, "ode": 1, "sgd": 0},
            list(AXES), METRICS, {"head": 2})
    with Journal(path, sid) as journal:  # two points finished, then a crash mid-line
        journal.commit(toy_task(sweep.points()[1:3]))
    with open(journal_path(path, sid), "a") as fh:
        fh.write('{"i": 5, "m": {"squ')
    CALLS.clear()
    report = run_sweep(path, sweep, METRICS, tasks_of(sweep), {"head": 2}, "phase")
    assert (report["points_reused"], report["points_computed"]) == (2, 4)
    assert sorted(CALLS) == [0, 3, 4, 5]
    data = read_sweep(path, sid)
    np.testing.assert_array_equal(data.metrics["square"][:, 0], [a * a for a in AXES[0].values])
    CALLS.clear()
    report = run_sweep(path, sweep, METRICS, tasks_of(sweep), {"head": 2}, "phase")
    assert (report["points_reused"], report["points_computed"], CALLS) == (6, 0, [])


def test_fold_is_idempotent_and_keeps_the_file_readable(tmp_path):
    path = str(tmp_path / "s.h5")
    sweep = toy_sweep()
    prepare(path, sweep.sweep_id, {"experiment": "toy", "config": {}, "ode": 1, "sgd": 0},
            list(AXES), METRICS, {"head": 2})
    with Journal(path, sweep.sweep_id) as journal:
        journal.commit(toy_task(sweep.points()[:2]))
        with pytest.raises(UsageError, match="another process is running"):
            Journal(path, sweep.sweep_id).__enter__()
        journal.fold()
        journal.commit(toy_task(sweep.points()[:1]))  # folded again after a crash: same values
        journal.fold()
    data = read_sweep(path, sweep.sweep_id)
    assert data.done.sum() == 2 and data.attrs["status"] == "partial"
    assert data.attrs["points_done"] == 2


def test_existing_sweep_with_other_metrics_is_refused(tmp_path):
    path = str(tmp_path / "s.h5")
    sweep = toy_sweep()
    attrs = {"experiment": "toy", "config": {}, "ode": 1, "sgd": 0}
    prepare(path, sweep.sweep_id, attrs, list(AXES), METRICS, {"head": 2})
    with pytest.raises(UsageError, match="holds other metrics"):
        prepare(path, sweep.sweep_id, attrs, list(AXES), METRICS[:1], {"head": 2})


SMALL = ["--set", "t_max=1", "--set", "lr=0.05", "--set", "batch=64", "--set", "mc_samples=300",
         "--set", "records=20", "--set", "eval_samples=256"]


def test_kill_9_mid_sweep_then_same_command_completes(tmp_path, capsys):
    """A real process is killed (SIGKILL) after some points; the same command reuses every
    journaled point, computes the rest, and the file opens in xarray before and after."""
    out = str(tmp_path / "k.h5")
    argv = ["sweep", "linreg", "--grid", "init_scale=0.04,0.05,0.06,0.07,0.08,0.09", *SMALL,
            "--out", out, "--json", "--no-plot"]
    env = {**os.environ, "ICLDYN_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sims.cli", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = [f for f in os.listdir(tmp_path) if f.endswith(".journal")]
        if found:
            journal = tmp_path / found[0]
            if journal.read_text().count("\n") >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {json.loads(line)["i"]: json.loads(line)["m"]
                for line in journal.read_text().splitlines()}
    assert 2 <= len(finished) < 6
    sid = journal.name.split(".")[-2]
    with xr.open_dataset(out, group=f"sweeps/{sid}", engine="h5netcdf") as ds:
        assert int(ds.done.sum()) == 0 and ds.sgd_loss_final.isnull().all()
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sweep_id"] == sid
    assert (report["points_reused"], report["points_computed"]) == (len(finished), 6 - len(finished))
    with xr.open_dataset(out, group=f"sweeps/{sid}", engine="h5netcdf") as ds:
        assert int(ds.done.sum()) == 6 and ds.attrs["status"] == "complete"
        loss = ds.sgd_loss_final.values
    assert np.isfinite(loss).all()
    index = min(finished)  # a point from the killed process sits in its own cell
    np.testing.assert_array_equal(loss[index], finished[index]["sgd_loss_final"])
    with h5py.File(out) as fh:
        base = json.loads(fh["sweeps"][sid].attrs["config"])
    config = dict(base, init_scale=[0.04, 0.05, 0.06, 0.07, 0.08, 0.09][index])
    ((_, direct),) = run_point("linreg", index, config, True, True)
    assert direct["sgd_loss_final"] == loss[index]
