"""Acceptance of the linreg experiment: SGD on the full network follows the reduced flow."""

import numpy as np
import pytest

from dynamics.errors import UsageError
from sims.registry import get

EXP = get("linreg")


def _run(**overrides):
    config = EXP.schema.resolve(overrides)
    EXP.validate(config)
    return EXP.run(config)


def test_default_run_sgd_follows_the_population_flow():
    result = _run()
    cmp = result.summary["comparison"]["sgd_vs_population"]
    assert result.status == "complete"
    assert cmp["pointwise"]["omega"] < 0.03 and cmp["pointwise"]["mu"] < 0.03
    # the large-L loss is an approximation: its flow differs, by a few percent
    gap = result.summary["comparison"]["ode_vs_population"]["pointwise"]["max"]
    assert 0.005 < gap < 0.1
    t = result.trajectories["sgd"].t
    assert np.allclose(t, result.trajectories["ode"].t) and t[-1] == pytest.approx(20.0)
    assert np.array_equal(result.trajectories["sgd"].step, np.rint(t / 0.02).astype(int))


def test_factored_run_escape_time_agrees():
    result = _run(param="factored")
    cmp = result.summary["comparison"]["sgd_vs_population"]
    assert cmp["escape_shift"] < 0.05
    assert 8 < cmp["escape_time"]["b"] < 16  # the factored plateau is long (docs/linreg-extensions.md)


@pytest.mark.xfail(strict=True, reason=(
    "measured path gap 0.0444 (0.0445 with 16000 draws): the antithetic population sample "
    "keeps the two heads exactly +- symmetric (|mu_1 + mu_2| / sum|mu| = 2e-15) while SGD "
    "breaks that symmetry by 2%; with an i.i.d. sample, whose own noise broke it by 3.3%, "
    "the gap was 0.0256"))
def test_factored_run_path_agrees_within_3_percent():
    result = _run(param="factored")
    assert result.summary["comparison"]["sgd_vs_population"]["path"] < 0.03


def test_diverging_sgd_and_ode_are_stored_as_diverged():
    result = _run(lr=40.0, t_max=400.0, init_scale=0.5, mc_samples=200, records=30, batch=64)
    sgd = result.trajectories["sgd"]
    assert sgd.status == "diverged" and len(sgd.t) >= 1 and np.isfinite(sgd.params["mu"]).all()
    blown = _run(init_scale=30.0, mc_samples=100, records=10, t_max=1.0, lr=0.1)
    assert blown.trajectories["ode"].status == "diverged"
    assert blown.status == "diverged"


def test_step_budget_refused_before_work():
    with pytest.raises(UsageError, match="t_max"):
        EXP.validate(EXP.schema.resolve({"t_max": 1e6, "lr": 1e-3}))
