"""linreg-multitask sweeps: the (heads, tasks) phase diagram equals per-point classification."""

import json

import numpy as np
import xarray as xr

from sims.cli import main
from sims.linreg.multitask import classify_heads
from sims.linreg.multitask_experiment import SCHEMA, MultitaskExperiment
from sims.linreg.sweep import MULTITASK_PHASES

QUICK = ["--set", "t_max=0.3", "--set", "lr=0.01", "--set", "batch=32", "--set", "L=12",
         "--set", "eval_samples=64", "--set", "records=8"]


def test_phase_grid_equals_each_points_own_run(tmp_path, capsys):
    out = tmp_path / "m.h5"
    code = main(["sweep", "linreg-multitask", "--grid", "heads=1,3", "--grid", "tasks=1,2",
                 *QUICK, "--out", str(out), "--json", "--no-plot"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["points_computed"] == 4
    ds = xr.open_dataset(out, group=f"sweeps/{report['sweep_id']}", engine="h5netcdf")
    assert ds.sgd_omega_final.dims == ("heads", "tasks", "head", "task")
    assert ds.sizes["head"] == 3 and ds.sizes["task"] == 2
    quick = {QUICK[i + 1].split("=")[0]: QUICK[i + 1].split("=")[1] for i in range(0, 12, 2)}
    for heads in (1, 3):
        for tasks in (1, 2):
            config = SCHEMA.resolve({**quick, "heads": heads, "tasks": tasks})
            traj = MultitaskExperiment().run(config).trajectories["sgd"]
            omega, mu = traj.params["omega"][-1], traj.params["mu"][-1]
            point = ds.sel(heads=heads, tasks=tasks)
            np.testing.assert_array_equal(point.sgd_omega_final.values[:heads, :tasks], omega)
            assert np.isnan(point.sgd_omega_final.values[heads:]).all()  # NaN-padded heads
            layout = classify_heads(omega, mu, config["active_fraction"])["layout"]
            assert MULTITASK_PHASES[int(point.sgd_phase)] == layout
