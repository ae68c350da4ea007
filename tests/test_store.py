import json
import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from dynamics import store
from dynamics.errors import UsageError
from dynamics.trajectory import Trajectory
from sims.cli import main


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


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_new_files_get_the_usual_mode_and_old_files_keep_theirs(tmp_path, umask):
    """Temp files are private while written; the renamed result is not (0666 less the umask)."""
    path = tmp_path / "m.h5"
    old = os.umask(umask)
    try:
        store.write_run(str(path), "linreg", {}, 0, _trajs(), "complete", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    path.chmod(0o600)
    store.write_run(str(path), "linreg", {}, 1, _trajs(), "complete", {})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_parameter_labels_are_attributes_of_their_dataset(tmp_path):
    path = str(tmp_path / "l.h5")
    trajs = _trajs()
    trajs["ode"].param_attrs["omega"] = {"labels": ["1", "1,2"], "unit": "per head"}
    store.write_run(path, "induction", {}, 0, trajs, "complete", {})
    with h5py.File(path, "r") as fh:
        assert list(fh["runs/induction-0001/ode/params/omega"].attrs["labels"]) == ["1", "1,2"]
        assert "labels" not in fh["runs/induction-0001/sgd/params/omega"].attrs
    _, _, back = store.read_run(path)
    assert back["ode"].param_attrs == {"omega": {"labels": ["1", "1,2"], "unit": "per head"}}
    assert back["sgd"].param_attrs == {}
    with pytest.raises(ValueError, match="does not have"):
        Trajectory("ode", [0.0], [1.0], {"p": [[0.5]]}, param_attrs={"q": {"labels": ["1"]}})


def test_axes_of_extra_groups_are_dimension_scales_that_xarray_reads(tmp_path):
    path = str(tmp_path / "x.h5")
    extra = {"risk": {"L_test": np.array([10, 20, 40]), "gd": np.array([0.5, 0.4, 0.3])},
             "grid": {"noise": np.array([0.0, 1.0]), "n": np.array([8, 16]),
                      "risk": np.arange(4.0).reshape(2, 2)},
             "plain": {"values": np.ones(3)}}
    store.write_run(path, "e", {}, 0, {}, "complete", {}, extra,
                    {"risk": ("L_test",), "grid": ("noise", "n")})
    risk = xr.open_dataset(path, group="runs/e-0001/risk", engine="h5netcdf")
    assert list(risk["gd"].dims) == ["L_test"] and list(risk["L_test"].values) == [10, 20, 40]
    grid = xr.open_dataset(path, group="runs/e-0001/grid", engine="h5netcdf")
    assert list(grid["risk"].dims) == ["noise", "n"]
    assert list(grid["risk"].sel(noise=1.0, n=8).values.ravel()) == [2.0]
    with h5py.File(path, "r") as fh:
        assert "DIMENSION_LIST" not in fh["runs/e-0001/plain/values"].attrs
    with pytest.raises(ValueError, match="not a 1-D dataset"):
        store.write_run(path, "e", {}, 0, {}, "complete", {}, extra, {"plain": ("nothing",)})


def test_an_experiment_stores_its_risk_curves_against_labelled_lengths(tmp_path):
    path = str(tmp_path / "r.h5")
    assert main(["run", "linreg-risk", "--set", "samples=200", "--set", "L_test=10,20",
                 "--no-plot", "--out", path]) == 0
    risk = xr.open_dataset(path, group="runs/linreg-risk-0001/risk", engine="h5netcdf")
    assert list(risk["ridge"].dims) == ["L_test"] and list(risk["L_test"].values) == [10, 20]
