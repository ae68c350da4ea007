"""Sweeps of sparse-risk (winning estimator) and sparse-flow (agreement of flow and SGD)."""

import json

import numpy as np
import xarray as xr

from sims.cli import main
from sims.registry import get
from sims.sparse.sweep import SPARSE_RISK_ESTIMATORS

RISK_QUICK = ["--set", "d=6", "--set", "trials=200", "--set", "tune_trials=100",
              "--set", "k_steps=3", "--set", "heads=2"]


def test_sparse_risk_winner_grid_equals_each_points_own_run(tmp_path, capsys):
    out = tmp_path / "r.h5"
    code = main(["sweep", "sparse-risk", "--grid", "n_test=[4],[12]", "--grid", "s=1,3",
                 *RISK_QUICK, "--out", str(out), "--json", "--no-plot"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["points_computed"] == 4
    ds = xr.open_dataset(out, group=f"sweeps/{report['sweep_id']}", engine="h5netcdf")
    exp = get("sparse-risk")
    for n in (4, 12):
        for s in (1, 3):
            config = exp.schema.resolve({"d": 6, "trials": 200, "tune_trials": 100,
                                         "k_steps": 3, "heads": 2, "n_test": [n], "s": s})
            risks = exp.run(config).summary["risk"]
            point = ds.isel(n_test=[4, 12].index(n)).sel(s=s)
            finite = {k: v[0] for k, v in risks.items() if np.isfinite(v[0])}
            assert SPARSE_RISK_ESTIMATORS[int(point.winner)] == min(finite, key=finite.get)
            assert float(point.risk_lasso) == risks["lasso"][0]


def test_sparse_flow_sweep_reports_gaps_and_off_manifold(tmp_path, capsys):
    out = tmp_path / "f.h5"
    code = main(["sweep", "sparse-flow", "--grid", "lr=2e-3,4e-3", "--set", "d=4",
                 "--set", "t_max=0.05", "--set", "records=4", "--set", "mc_samples=100",
                 "--set", "flow_batch=32", "--set", "n_flow=6", "--out", str(out), "--json",
                 "--no-plot"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["points_computed"] == 2
    ds = xr.open_dataset(out, group=f"sweeps/{report['sweep_id']}", engine="h5netcdf")
    assert (ds.sgd_vs_population_gap.values >= 0).all()
    assert (ds.sgd_off_manifold_final.values > 0).all()
    assert (ds.sgd_off_manifold_max.values >= ds.sgd_off_manifold_final.values).all()
