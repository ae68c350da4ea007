"""kill -9 never costs a committed result: real processes killed at random moments."""

import os
import random
import time

import h5py
import numpy as np
from fault_injection import (
    ICLDYN,
    LONGER,
    TINY,
    icldyn,
    kill_after,
    kill_writer_once,
    lost_runs,
    snapshot,
    sweep_points,
    sweep_points_lost,
    temp_files,
)

from dynamics import store
from dynamics.trajectory import Trajectory
from sims.cli import main


def test_killed_icldyn_run_leaves_committed_runs_bit_identical_and_rerun_completes(tmp_path, capsys):
    """Reference: runs seed 1, 2 written in-process without interruption. Target: seed 1
    committed, then `icldyn run --seed 2` killed at random moments, then re-run."""
    exp_args = ["run", "linreg", *LONGER["linreg"], "--no-plot"]
    reference, target = str(tmp_path / "ref.h5"), str(tmp_path / "target.h5")
    for seed in ("1", "2"):
        assert main([*exp_args, "--out", reference, "--seed", seed]) == 0
    capsys.readouterr()
    ref = snapshot(reference)
    start = time.perf_counter()
    assert icldyn(*exp_args, "--out", target, "--seed", "1").returncode == 0
    duration = time.perf_counter() - start
    assert snapshot(target) == {"linreg-0001": ref["linreg-0001"]}  # and across processes

    committed = snapshot(target)
    rng = random.Random(8)
    kills = 0
    for fraction in (0.45, 0.7):  # flows / SGD, end of SGD / write
        if kill_after([*ICLDYN, *exp_args, "--out", target, "--seed", "2"],
                      duration * (fraction + rng.uniform(-0.05, 0.05))):
            kills += 1
            after = snapshot(target)  # opens; nothing lost, nothing half-added:
            assert after == committed or after == ref  # killed after its commit: run 2 whole
            assert len(temp_files(str(tmp_path))) <= 1
            if after == ref:
                break
    assert kills >= 1, "every run finished before its kill: nothing was tested"

    if "linreg-0002" not in snapshot(target):
        proc = icldyn(*exp_args, "--out", target, "--seed", "2")
        assert proc.returncode == 0, proc.stderr
        assert temp_files(str(tmp_path)) == []  # the next write removed a killed writer's temp
    assert snapshot(target) == ref  # the re-run completes the file, bit-identical


def test_store_writer_killed_mid_write_loses_nothing(tmp_path):
    """A process appending runs as fast as it can, killed at random: every run it reported
    committed is in the file, intact; the file always opens; stale temp files are cleaned."""
    path = str(tmp_path / "w.h5")
    rng = random.Random(3)
    for _ in range(3):
        file_fine, lost = kill_writer_once(path, rng.uniform(0.8, 2.0))
        assert lost == 0 and file_fine
    runs = len(snapshot(path))
    assert runs >= 2
    kill_writer_once(path, 0.0)  # killed during start-up at the latest: no change
    assert len(snapshot(path)) == runs


def test_stale_temp_file_is_ignored_by_readers_and_removed_by_the_next_write(tmp_path):
    path = str(tmp_path / "s.h5")
    traj = {"ode": Trajectory("ode", [0.0, 1.0], [1.0, 0.5], {"x": np.ones((2, 1))})}
    store.write_run(path, "e", {}, 0, traj, "complete", {})
    stale = tmp_path / ".s.h5.abcd_123.tmp"  # what mkstemp leaves behind a killed writer
    stale.write_bytes(b"\x89HDF half written")
    other = tmp_path / ".s.h5.x.h5.abcd_123.tmp"  # another file's temp: not ours to delete
    other.write_bytes(b"x")
    assert set(store.describe(path)["runs"]) == {"e-0001"}
    store.write_run(path, "e", {}, 1, traj, "complete", {})
    assert not stale.exists() and other.exists()
    assert set(store.describe(path)["runs"]) == {"e-0001", "e-0002"}


def test_lost_runs_detects_a_changed_bit(tmp_path):
    """The comparison the crash tests rely on is bit-exact."""
    path = str(tmp_path / "b.h5")
    traj = {"ode": Trajectory("ode", [0.0, 1.0], [1.0, 0.5], {"x": np.ones((2, 1))})}
    store.write_run(path, "e", {}, 0, traj, "complete", {})
    before = snapshot(path)
    with h5py.File(path, "r+") as fh:
        fh["runs/e-0001/ode/params/x"][1, 0] = np.nextafter(1.0, 2.0)
    assert lost_runs(before, path) == ["e-0001"]


def test_killed_sweep_keeps_its_done_points_and_resumes_bit_identical(tmp_path, capsys):
    """Reference: the sweep in-process, uninterrupted. Target: `icldyn sweep` killed at random
    moments, then the same command again."""
    argv = ["sweep", "linreg", *TINY["linreg"], "--grid", "heads=1,2,3,4", "--no-plot"]
    reference, target = str(tmp_path / "ref.h5"), str(tmp_path / "target.h5")
    start = time.perf_counter()
    assert main([*argv, "--out", reference]) == 0
    duration = time.perf_counter() - start + 3.0  # plus the start-up of a fresh process
    capsys.readouterr()
    ref = sweep_points(reference)
    rng = random.Random(5)
    for fraction in (0.6, 0.8):
        delay = duration * (fraction + rng.uniform(-0.1, 0.1))
        if kill_after([*ICLDYN, *argv, "--out", target], delay) and os.path.exists(target):
            assert sweep_points_lost(ref, target) == 0  # opens; done points are exact
    proc = icldyn(*argv, "--out", target)
    assert proc.returncode == 0, proc.stderr
    (sid, (done, metrics)), = sweep_points(target).items()
    assert done.all() and sid in ref
    assert {n: m.tobytes() for n, m in metrics.items()} == {n: m.tobytes() for n, m in ref[sid][1].items()}
