"""Numerical faults end as status "diverged" or "stalled" with the last good state, never a hang."""

import json

import numpy as np
import pytest
import torch

from dynamics import store
from dynamics.errors import EXIT_INCOMPLETE
from dynamics.ode import integrate
from sims.cli import main

T = np.linspace(0.0, 2.0, 21)
Y0 = torch.ones(1, 1, dtype=torch.float64)


def test_finite_time_blowup_is_diverged_with_the_exact_last_state():
    """y' = y^2, y(0) = 1: y = 1 / (1 - t) leaves the bound 1e8 just before t = 1."""
    sol = integrate(lambda y: y**2, Y0, T, bound=1e8)
    n = int(sol.valid[:, 0].sum())
    assert sol.status == ["diverged"] and T[n - 1] < 1.0 <= T[n]
    assert sol.y[n - 1, 0, 0].item() == pytest.approx(1 / (1 - T[n - 1]), rel=1e-6)


def test_step_size_underflow_is_stalled_with_the_last_good_state():
    """Without a bound the adaptive step shrinks to nothing at the blow-up t = 1."""
    sol = integrate(lambda y: y**2, Y0, T, bound=float("inf"))
    n = int(sol.valid[:, 0].sum())
    assert sol.status == ["stalled"] and 1 < n and T[n - 1] < 1.0
    assert sol.y[n - 1, 0, 0].item() == pytest.approx(1 / (1 - T[n - 1]), rel=1e-6)


def test_step_budget_is_stalled_quickly():
    """A stiff flow (rate 1e6) needs ~1e6 explicit steps; a budget of 100 stops it at once."""
    sol = integrate(lambda y: -1e6 * (y - torch.cos(y)), Y0, T, max_steps=100)
    assert sol.status == ["stalled"] and sol.valid[0, 0] and torch.isfinite(sol.y).all()


def test_nan_right_hand_side_is_diverged_with_a_finite_last_state():
    """y' = 1, undefined (NaN) beyond y = 1.5: the stored rows are exact and before t = 0.5."""
    sol = integrate(lambda y: torch.where(y > 1.5, torch.nan, torch.ones_like(y)), Y0, T)
    n = int(sol.valid[:, 0].sum())
    assert sol.status == ["diverged"] and 1 <= n and T[n - 1] <= 0.5
    assert np.allclose(sol.y[:n, 0, 0].numpy(), 1 + T[:n], atol=1e-9)


def test_diverging_sgd_is_stored_as_diverged_with_its_last_good_state(tmp_path, capsys):
    out = str(tmp_path / "d.h5")
    code = main(["run", "linreg", "--set", "lr=20", "--set", "t_max=2000", "--set", "batch=16",
                 "--set", "eval_samples=16", "--set", "records=10", "--no-ode", "--no-plot",
                 "--out", out, "--json"])
    assert code == EXIT_INCOMPLETE  # stored, but not complete: a script can tell
    payload = json.loads(capsys.readouterr().out)
    _, attrs, trajs = store.read_run(out)
    sgd = trajs["sgd"]
    assert attrs["status"] == payload["status"] == "diverged" and sgd.status == "diverged"
    assert 0 < sgd.t[-1] < 2000 and sgd.t[-1] == pytest.approx(20 * sgd.step[-1])
    assert np.isfinite(sgd.loss).all() and all(np.isfinite(v).all() for v in sgd.params.values())


def test_absurd_tolerances_are_stalled_not_diverged(tmp_path, capsys):
    """At rtol = atol = 1e-300 the symbolic flow's first trial step is NaN and its step size
    underflows at t = 0: stalled there, with the start as the last good state."""
    out = str(tmp_path / "s.h5")
    code = main(["run", "linreg", "--set", "rtol=1e-300", "--set", "atol=1e-300",
                 "--set", "t_max=1", "--set", "lr=0.1", "--set", "mc_samples=50", "--set",
                 "records=10", "--no-sgd", "--no-plot", "--out", out])
    capsys.readouterr()
    assert code == EXIT_INCOMPLETE
    _, attrs, trajs = store.read_run(out)
    ode = trajs["ode"]
    assert attrs["status"] == ode.status == "stalled" and list(ode.t) == [0.0]
    assert np.array_equal(ode.params["omega"][0], [0.05, -0.05])


def test_a_nan_trial_step_in_a_failing_chunk_is_stalled_not_diverged():
    sol = integrate(lambda y: -y, Y0, T, rtol=1e-300, atol=1e-300)
    assert sol.status == ["stalled"] and sol.valid[:, 0].sum() == 1 and sol.y[0, 0, 0] == 1.0


def test_the_step_budget_covers_the_whole_integration():
    """A flow of rate 1e4 needs ~13000 dopri5 steps. torchdiffeq's own limit counts per
    output interval (here 20 of them, ~650 steps each), so only a budget over the whole
    integration stops it: at 1000 steps, i.e. 6000 right-hand-side evaluations (on the
    lean path, which does not start a step the budget cannot finish, within the last step's
    6 of it)."""
    for backend in ("lean", "torchdiffeq"):
        calls = []

        def stiff(y, calls=calls):
            calls.append(1)
            return -1e4 * (y - torch.cos(y))

        sol = integrate(stiff, Y0, T, max_steps=1000, chunks=8, backend=backend)
        assert sol.status == ["stalled"]
        assert 1000 * 6 - 6 < len(calls) <= 1000 * 6, backend
