"""Acceptance of the induction experiment on a short run (all three stages, stored, JSON)."""

import contextlib
import io
import json

import h5py
import numpy as np
import pytest

from dynamics.errors import UsageError
from sims.cli import main
from sims.registry import get

EXP = get("induction")
QUICK = ["t_max=40", "lr=0.5", "samples=1000", "mi_chains=300", "batch=512", "records=40"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ind") / "ind.h5"
    args = ["run", "induction", "--out", str(out), "--json", "--no-plot"]
    for pair in QUICK:
        args += ["--set", pair]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(args) == 0
    return out, json.loads(buffer.getvalue())


def test_summary_has_mi_s_star_and_finals(run):
    _, summary = run
    assert summary["S_star"] == [1, 2]
    mi = summary["chi2_mi"]
    assert set(mi) == {"1", "2", "3", "1,2", "1,3", "2,3"}
    assert all(mi["1,2"] > v for k, v in mi.items() if k != "1,2")
    for name in ("ode", "population", "sgd"):
        assert summary[name]["status"] == "complete"
        assert set(summary[name]["final"]) >= {"w", "p", "a"}
        assert np.isfinite(summary[name]["loss_final"])


def test_three_stages(run):
    _, summary = run
    a_opt = summary["limit"]["a_optimum"]
    for name in ("population", "sgd"):
        stages = summary[name]["stages"]
        assert stages["selector"]["p_star_final"] > 0.99
        assert stages["copier"]["outside_over_inside"] < 0.2
        assert 0.3 < stages["classifier"]["a_final"] / a_opt < 1.2
    # gradient flow conserves |C|; SGD steps do not
    assert abs(summary["population"]["stages"]["selector"]["c_norm_change"]) < 1e-4
    assert summary["sgd"]["stages"]["selector"]["c_norm_change"] > 0.5
    assert summary["comparison"]["sgd_vs_population"]["pointwise"]["a"] < 0.05


def test_stored_trajectories(run):
    path, summary = run
    with h5py.File(path) as fh:
        group = fh["runs"][summary["run_id"]]
        for name in ("ode", "population", "sgd"):
            T = group[name]["t"].shape[0]
            assert group[name]["params/w"].shape == (T, 3, 3)
            assert group[name]["params/p"].shape == (T, 6)
            assert group[name]["params/a"].shape == (T,)
            labels = json.loads(group[name].attrs["p_labels"])
            assert labels == ["1", "2", "3", "1,2", "1,3", "2,3"]
        assert group["limit_loss/loss"].shape == group["limit_loss/a"].shape


def test_plot(run, tmp_path):
    path, summary = run
    png = EXP.plot(str(path), summary["run_id"], str(tmp_path / "f.png"))
    assert (tmp_path / "f.png").stat().st_size > 10_000 and png.endswith("f.png")


@pytest.mark.parametrize("overrides, key", [({"heads": 4}, "heads"), ({"degree": 3, "heads": 2,
                                            "window": 2}, "degree"), ({"L": 2}, "L")])
def test_bad_config_names_the_key(overrides, key):
    with pytest.raises(UsageError, match=key):
        EXP.validate(EXP.schema.resolve(overrides))
