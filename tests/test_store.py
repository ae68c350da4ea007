import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from dynamics import store
from dynamics.errors import UsageError
from dynamics.trajectory import Trajectory


def _trajs():
    t = np.array([0.0, 0.1, 1.0])
    return {
        "ode": Trajectory("ode", t, [1.0, 0.9, 0.5], {"omega": np.ones((3, 2)), "w": np.zeros((3, 2, 3))}),
        "sgd": Trajectory("sgd", t, [1.0, 0.8, 0.4], {"omega": np.ones((3, 2))}, step=[0, 1, 10]),
    }


def test_round_trip_and_format_v1(tmp_path):
    path = str(tmp_path / "r.h5")
    rid = store.write_run(path, "linreg", {"d": 5}, 3, _trajs(), "complete", {"x": 1})
    assert rid == "linreg-0001"
    assert store.write_run(path, "linreg", {"d": 6}, 4, _trajs(), "complete", {}) == "linreg-0002"
    with h5py.File(path, "r") as fh:
        assert fh.attrs["format"] == "icldyn" and fh.attrs["format_version"] == 1
        run = fh["runs/linreg-0001"]
        assert json.loads(run.attrs["config"]) == {"d": 5} and run.attrs["seed"] == 3
        assert run.attrs["status"] == "complete" and "T" in run.attrs["created"]
        assert run["ode"].attrs["kind"] == "ode" and run["sgd/step"].dtype == np.int64
        assert run["ode/t"].dtype == np.float64 and run["ode/params/w"].shape == (3, 2, 3)
    rid, attrs, trajs = store.read_run(path, "linreg-0001")
    assert attrs["summary"] == {"x": 1}
    assert np.array_equal(trajs["sgd"].step, [0, 1, 10])
    assert set(store.describe(path)["runs"]) == {"linreg-0001", "linreg-0002"}


def test_failed_write_leaves_the_old_file_intact(tmp_path):
    path = str(tmp_path / "r.h5")
    store.write_run(path, "linreg", {}, 0, _trajs(), "complete", {})
    before = Path(path).read_bytes()
    bad = _trajs()
    bad["sgd"].params["omega"] = object()  # not storable: fails mid-write
    with pytest.raises(AttributeError):
        store.write_run(path, "linreg", {}, 0, bad, "complete", {})
    assert Path(path).read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_foreign_files_are_refused(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(UsageError, match="notes.h5: not a readable HDF5 file"):
        store.open_store(str(text))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as fh:
        fh.attrs["format"] = "icldyn"
        fh.attrs["format_version"] = 7
    with pytest.raises(UsageError, match="format version 7"):
        store.check_writable(str(other))
    with pytest.raises(UsageError, match="no such file"):
        store.open_store(str(tmp_path / "none.h5"))
