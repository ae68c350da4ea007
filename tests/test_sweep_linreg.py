"""linreg sweeps: the batched symbolic-flow grid against per-point runs, and its
escape times against the closed-form growth rates of the linearised plateau."""

import json

import h5py
import numpy as np
import pytest
import xarray as xr

from dynamics.sweep import Sweep, parse_grid
from sims.cli import main
from sims.linreg.experiment import SCHEMA, LinregExperiment
from sims.linreg.sweep import LinregHooks, run_linreg_flow_batch

# tight tolerances: batched and single steps differ, so agreement is at the solver's error
TIGHT = {"rtol": 1e-10, "atol": 1e-12, "t_max": 8.0, "records": 40, "mc_samples": 20}


def test_batched_grid_equals_per_point_runs():
    """One batched integration over (L, sigma2, init_scale, heads, init) points gives the
    metrics of the experiment's own run at each point, to 1e-8."""
    base = SCHEMA.resolve({k: v for k, v in TIGHT.items()})
    axes = parse_grid(SCHEMA, ["L=10,80", "sigma2=0,0.5", "init=symmetric,random",
                               "heads=1,3"])
    sweep = Sweep("linreg", base, tuple(axes), ode=True, sgd=False)
    hooks = LinregHooks()
    tasks = hooks.tasks(sweep)
    assert len(tasks) == 2  # one batch per head count
    assert sorted(len(t.indices) for t in tasks) == [8, 8]
    batched = dict(r for task in tasks for r in task.fn(*task.args))
    exp = LinregExperiment()
    for index, config in sweep.points()[::5]:
        single = hooks.measure(exp.run(config, ode=True, sgd=False).trajectories, config,
                               True, False)
        assert batched[index].keys() == single.keys()
        for name, value in single.items():
            np.testing.assert_allclose(batched[index][name], value, rtol=0, atol=1e-8,
                                       err_msg=f"{name} at {config}")


def test_escape_time_shift_matches_linearised_growth_rate(tmp_path, capsys):
    """Near omega = mu = 0 the flow of Lt (metric d for omega, 1 for mu) is linear:
    one head  d omega/dt = 2 mu / d, d mu/dt = 2 omega - 2 c mu, c = (1 + sigma2) / L,
              growth rate lambda = -c + sqrt(c^2 + 4/d);
    a +- pair (the quadratic part of its spread term cancels) lambda = 2 / sqrt(d).
    Dividing the start scale by 10 delays the escape by ln(10) / lambda."""
    out = tmp_path / "e.h5"
    code = main(["sweep", "linreg", "--grid", "init_scale=1e-4,1e-3", "--grid", "heads=1,2",
                 "--set", "L=10", "--set", "t_max=40", "--set", "records=400", "--no-sgd",
                 "--out", str(out), "--json", "--no-plot"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["points_computed"] == 4
    ds = xr.open_dataset(out, group=f"sweeps/{report['sweep_id']}", engine="h5netcdf")
    shift = ds.ode_escape_time.sel(init_scale=1e-4) - ds.ode_escape_time.sel(init_scale=1e-3)
    d, c = 5, 1.1 / 10
    expected = np.log(10) / np.array([-c + np.sqrt(c * c + 4 / d), 2 / np.sqrt(d)])
    # measured rel. gaps 4e-4 (H=1) and 4e-5 (H=2): log-time interpolation of the escape
    np.testing.assert_allclose(shift.sel(heads=[1, 2]).values, expected, rtol=2e-3)
    assert list(ds.ode_phase.sel(init_scale=1e-3).values) == [1.0, 2.0]  # single, pair
    assert ds.ode_mu_final.sel(heads=1).isel(head=1).isnull().all()  # H=1 pads head 1
    ds.close()


def test_plateau_phase_when_t_max_ends_before_escape(tmp_path, capsys):
    out = tmp_path / "p.h5"
    main(["sweep", "linreg", "--grid", "init_scale=1e-4,0.1", "--set", "t_max=3",
          "--set", "records=40", "--no-sgd", "--out", str(out), "--json", "--no-plot"])
    sid = json.loads(capsys.readouterr().out)["sweep_id"]
    with h5py.File(out) as fh:
        group = fh[f"sweeps/{sid}"]
        assert list(group["ode_phase"][()]) == [0.0, 2.0]  # plateau, pair
        assert np.isnan(group["ode_escape_time"][0]) and np.isfinite(group["ode_escape_time"][1])
        assert group.attrs["phase_metric"] == "ode_phase"


@pytest.mark.parametrize("key", ["mc_samples", "batch"])
def test_sgd_only_keys_do_not_split_batches(key):
    base = SCHEMA.resolve({})
    sweep = Sweep("linreg", base, tuple(parse_grid(SCHEMA, [f"{key}=64,128", "L=10,20"])),
                  ode=True, sgd=False)
    assert len(LinregHooks().tasks(sweep)) == 1


def test_sweeps_with_sgd_run_points_as_independent_tasks():
    base = SCHEMA.resolve({})
    sweep = Sweep("linreg", base, tuple(parse_grid(SCHEMA, ["L=10,20"])), ode=True, sgd=True)
    tasks = LinregHooks().tasks(sweep)
    assert [t.indices for t in tasks] == [(0,), (1,)]
    assert all(t.fn is not run_linreg_flow_batch for t in tasks)
