"""Same config and seed: bit-identical trajectories (CPU); the seed and library versions are stored.

Across processes: tests/test_reliability_crash.py compares a subprocess run with an
in-process run of the same seed, dataset by dataset, bit for bit.
"""

import json
from importlib import metadata

import h5py
import pytest
from fault_injection import TINY, snapshot

from sims.cli import main


@pytest.mark.parametrize("experiment", sorted(TINY))
def test_same_seed_is_bit_identical_and_another_seed_differs(tmp_path, capsys, experiment):
    argv = ["run", experiment, *TINY[experiment], "--no-plot"]
    a, b, c = (str(tmp_path / f"{n}.h5") for n in "abc")
    for out, seed in ((a, "5"), (b, "5"), (c, "6")):
        assert main([*argv, "--out", out, "--seed", seed]) == 0
    capsys.readouterr()
    run_a, run_b, run_c = (next(iter(snapshot(p).values())) for p in (a, b, c))
    assert run_a == run_b
    datasets = [k for k in run_a if not k.startswith("@") and not k.endswith("/t")
                and not k.endswith("/step")]
    assert any(run_a[k] != run_c[k] for k in datasets)  # the seed reaches the numbers


def test_seed_and_every_library_version_are_stored(tmp_path, capsys):
    out = str(tmp_path / "v.h5")
    assert main(["run", "linreg", *TINY["linreg"], "--no-plot", "--no-sgd", "--out", out,
                 "--seed", "11"]) == 0
    capsys.readouterr()
    with h5py.File(out, "r") as fh:
        run = fh["runs/linreg-0001"]
        versions = json.loads(run.attrs["versions"])
        assert int(run.attrs["seed"]) == 11 and json.loads(run.attrs["config"])["seed"] == 11
    for name in ("torch", "torchdiffeq", "sympy", "numpy", "scipy", "h5py"):
        assert versions[name] == metadata.version(name)
    assert versions["python"].count(".") == 2
