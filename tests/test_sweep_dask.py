"""Dask execution: a cluster of two local worker processes gives the in-process numbers."""

import json

import h5py
import numpy as np
import pytest

from dynamics import sweep
from sims.cli import main

distributed = pytest.importorskip("dask.distributed")

ODE_GRID = ["--grid", "L=10,40", "--grid", "heads=1,2", "--set", "t_max=6", "--set", "records=30",
            "--no-sgd"]
SGD_GRID = ["--grid", "init_scale=0.04,0.06", "--set", "t_max=0.5", "--set", "lr=0.05",
            "--set", "batch=64", "--set", "mc_samples=200", "--set", "records=12",
            "--set", "eval_samples=128"]


def sweep_metrics(capsys, out, argv) -> dict:
    assert main(["sweep", "linreg", *argv, "--out", str(out), "--json", "--no-plot"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["points_computed"] == report["points_total"]
    with h5py.File(out) as fh:
        group = fh["sweeps"][report["sweep_id"]]
        assert group["done"][()].all()
        names = [n for n in group if group[n].attrs.get("CLASS") != b"DIMENSION_SCALE"]
        return {n: group[n][()] for n in names}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, values in a.items():
        np.testing.assert_array_equal(values, b[name], err_msg=name)


def test_scheduler_cluster_of_two_processes_matches_in_process(tmp_path, capsys):
    """Per-point tasks (SGD) on a cluster of two worker processes this test starts."""
    local = sweep_metrics(capsys, tmp_path / "local.h5", SGD_GRID)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        remote = sweep_metrics(capsys, tmp_path / "remote.h5",
                               [*SGD_GRID, "--scheduler", cluster.scheduler_address])
    assert_same(local, remote)


def test_workers_option_matches_in_process(tmp_path, capsys):
    """Batched ODE tasks (two head counts: two batches) on --workers 2."""
    local = sweep_metrics(capsys, tmp_path / "local.h5", ODE_GRID)
    assert_same(local, sweep_metrics(capsys, tmp_path / "w.h5", [*ODE_GRID, "--workers", "2"]))


def test_unreachable_scheduler_exits_2_before_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT", "1s")
    out = tmp_path / "s.h5"
    code = main(["sweep", "linreg", *ODE_GRID, "--scheduler", "tcp://127.0.0.1:9",
                 "--out", str(out), "--json"])
    assert code == 2 and "--scheduler" in capsys.readouterr().err
    assert not out.exists()
