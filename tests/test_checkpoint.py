"""Resumable training: a run interrupted mid-training and started again with the same
command ends bit-identical to an uninterrupted run, and leaves no checkpoint behind."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from dynamics import checkpoint
from sims.cli import main

SPARSE = ["sparse", "--set", "d=6", "--set", "s=2", "--set", "layers=2", "--set", "heads=2",
          "--set", "width=8", "--set", "n_min=3", "--set", "n_max=6", "--set", "n_test=3,6", "--set",
          "sigma2_test=0.25", "--set", "batch=8", "--set", "eval_samples=50", "--set",
          "probe_samples=20", "--set", "reference_trials=20"]
INDUCTION = ["induction", "--no-ode", "--set", "L=20", "--set", "batch=16", "--set",
             "t_max=6", "--set", "records=10", "--set", "mi_chains=50", "--set",
             "samples=100", "--set", "test_samples=0"]
LINREG = ["linreg", "--no-ode", "--set", "t_max=4", "--set", "lr=0.02", "--set", "batch=64",
          "--set", "eval_samples=200", "--set", "records=20"]


def stored(path) -> tuple[dict, dict]:
    """Every dataset of the file's only run (name -> array) and its summary without timings."""
    import json

    with h5py.File(path, "r") as fh:
        (run,) = fh["runs"].values()
        arrays = {}
        run.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                       if isinstance(obj, h5py.Dataset) else None)
        summary = json.loads(run.attrs["summary"])
    summary.pop("seconds", None)
    return arrays, summary


def assert_identical(a, b):
    arrays_a, summary_a = stored(a)
    arrays_b, summary_b = stored(b)
    assert arrays_a.keys() == arrays_b.keys() and arrays_a
    for name in arrays_a:
        assert np.array_equal(arrays_a[name], arrays_b[name], equal_nan=True), name
    assert summary_a == summary_b


class Crash(Exception):
    pass


@pytest.mark.parametrize("command,steps", [(SPARSE, "steps=60"), (LINREG, None),
                                           (INDUCTION, None)])
def test_a_crash_after_a_checkpoint_resumes_bit_identical(tmp_path, monkeypatch, command, steps):
    args = ["run", *command, "--set", "checkpoint_every=7", "--no-plot"]
    if steps:
        args += ["--set", steps]
    reference, resumed = tmp_path / "reference.h5", tmp_path / "resumed.h5"
    assert main([*args, "--out", str(reference)]) == 0
    assert not checkpoint.root(reference).exists()

    real_save, saves = checkpoint.save, []

    def save_then_crash(plan, name, state):
        real_save(plan, name, state)
        saves.append(state["step"])
        if len(saves) == 3:
            raise Crash

    monkeypatch.setattr(checkpoint, "save", save_then_crash)
    with pytest.raises(Crash):
        main([*args, "--out", str(resumed)])
    assert saves == [7, 14, 21] and not resumed.exists()
    assert list(checkpoint.root(resumed).rglob("*.pt"))
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert main([*args, "--out", str(resumed)]) == 0
    assert_identical(reference, resumed)
    assert not checkpoint.root(resumed).exists()


def test_a_changed_config_does_not_resume_from_a_stale_checkpoint(tmp_path, monkeypatch):
    args = ["run", *SPARSE, "--set", "steps=30", "--set", "checkpoint_every=5", "--no-plot"]
    out = tmp_path / "x.h5"

    def crash(plan, name, state):
        raise Crash

    monkeypatch.setattr(checkpoint, "save", crash)
    with pytest.raises(Crash):
        main([*args, "--set", "net_lr=0.01", "--out", str(out)])
    monkeypatch.undo()
    # a checkpoint saved under another config is never read
    loaded = []
    real_load = checkpoint.load
    monkeypatch.setattr(checkpoint, "load",
                        lambda plan, name: loaded.append(real_load(plan, name)) or loaded[-1])
    assert main([*args, "--out", str(out)]) == 0
    assert loaded and all(state is None for state in loaded)


def _kill_when_checkpointed(cmd, out, env):
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if list(checkpoint.root(out).rglob("*.pt")):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    proc.wait()
    return False


@pytest.mark.parametrize("command,steps", [(SPARSE, "steps=400"), (LINREG, None)])
def test_kill_9_mid_training_then_the_same_command_resumes_bit_identical(tmp_path, command,
                                                                         steps):
    args = ["run", *command, "--set", "checkpoint_every=10", "--no-plot"]
    if steps:
        args += ["--set", steps]
    if command is LINREG:
        args += ["--set", "t_max=40"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    reference, resumed = tmp_path / "reference.h5", tmp_path / "resumed.h5"
    base = [sys.executable, "-m", "sims.cli", *args]
    subprocess.run([*base, "--out", str(reference)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _kill_when_checkpointed([*base, "--out", str(resumed)], resumed, env)
    assert not resumed.exists()
    subprocess.run([*base, "--out", str(resumed)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert_identical(reference, resumed)
    assert not checkpoint.root(resumed).exists()
