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
QUICK = ["t_max=40", "lr=0.5", "samples=1000", "mi_chains=300", "batch=512", "records=40",
         "model=full", "test_samples=300", "L_test=10,100,1000", "alpha_test=0.05,0.2"]


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
    for name in ("ode", "population", "corrected", "sgd", "full"):
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
    # the flow approaches the limiting optimum from below; the symbolic model follows the
    # population flow in a (within 2%) and in the copier's move (within 15% per head of S*)
    pop_a = summary["population"]["stages"]["classifier"]["a_final"]
    assert pop_a < a_opt
    assert abs(summary["ode"]["stages"]["classifier"]["a_final"] / pop_a - 1) < 0.02
    assert set(summary["copier_error"]) == {"1", "2"}
    assert max(summary["copier_error"].values()) < 0.15
    # gradient flow conserves |C|; SGD steps do not
    assert abs(summary["population"]["stages"]["selector"]["c_norm_change"]) < 1e-4
    assert summary["sgd"]["stages"]["selector"]["c_norm_change"] > 0.5
    assert summary["comparison"]["sgd_vs_population"]["pointwise"]["a"] < 0.05


def test_full_model_shows_the_same_order_of_stages(run):
    """Half-change times (selector p_S*, copier |w - w(0)| of S*'s heads, classifier a):
    the full model's projection passes through the stages in the simplified network's order,
    the selector first."""
    _, summary = run
    simplified = summary["sgd"]["stages"]["stage_times"]
    full = summary["full"]["stages"]["stage_times"]
    assert full["order"] == simplified["order"]
    assert full["order"][0] == "selector"
    # horizon-independent 90% times: the copier's gradient is proportional to a, so under
    # joint training the classifier gets there before the copier (docs/induction.md)
    for name in ("ode", "population", "sgd"):
        times = summary[name]["stages"]["stage_times"]
        assert times["order_90"][0] == "selector"
        assert times["reach_90"]["copier"] is None or times["order_90"].index(
            "classifier") < times["order_90"].index("copier")
    assert summary["full"]["stages"]["selector"]["p_star_final"] > 0.95
    assert summary["full"]["stages"]["copier"]["outside_over_inside"] < 0.2


def test_corrected_flow_follows_sgds_growth_of_c(run):
    """Gradient flow conserves |C|; SGD grows it (here ~9x); the flow with SGD's noise drift
    and edge-of-stability bound follows it, and SGD's final |C|^2 sits on that bound."""
    _, summary = run
    sgd = summary["sgd"]["stages"]["selector"]["c_norm_change"]
    corrected = summary["corrected"]["stages"]["selector"]["c_norm_change"]
    assert sgd > 5
    assert abs((1 + corrected) / (1 + sgd) - 1) < 0.1
    cmp = summary["comparison"]
    assert cmp["sgd_vs_corrected"]["path"] < 0.2 * cmp["sgd_vs_population"]["path"]
    eos = summary["sgd"]["stages"]["edge_of_stability"]
    assert eos["kappa_max"] > 2
    assert abs(eos["c_norm2_final"] / eos["c_norm2_bound"] - 1) < 0.1


def test_stored_trajectories(run):
    path, summary = run
    with h5py.File(path) as fh:
        group = fh["runs"][summary["run_id"]]
        for name in ("ode", "population", "corrected", "sgd", "full"):
            T = group[name]["t"].shape[0]
            assert group[name]["params/w"].shape == (T, 3, 3)
            assert group[name]["params/p"].shape == (T, 6)
            assert group[name]["params/a"].shape == (T,)
            labels = list(group[name]["params/p"].attrs["labels"])
            assert labels == ["1", "2", "3", "1,2", "1,3", "2,3"]
        assert group["limit_loss/loss"].shape == group["limit_loss/a"].shape
        tests = group["generalise"]
        assert tests["alpha"][()].tolist() == [0.05, 0.2]
        assert tests["L"][()].tolist() == [10, 100, 1000]
        for name in ("sgd", "full", "limit"):
            assert tests[name].shape == tests[f"stderr_{name}"].shape == (2, 3)
        # a longer context helps, a flatter prior (larger alpha) hurts
        sgd, err = tests["sgd"][()], tests["stderr_sgd"][()]
        assert (sgd[:, 0] - sgd[:, 2] > 2 * (err[:, 0] + err[:, 2])).all()
        assert (sgd[1] > sgd[0]).all()


def test_plot(run, tmp_path):
    path, summary = run
    png = EXP.plot(str(path), summary["run_id"], str(tmp_path / "f.png"))
    assert (tmp_path / "f.png").stat().st_size > 10_000 and png.endswith("f.png")


@pytest.mark.parametrize("overrides, key", [({"heads": 4}, "heads"), ({"degree": 3, "heads": 2,
                                            "window": 2}, "degree"), ({"L": 2}, "L"),
                                            ({"L_test": [3, 10]}, "L_test"),
                                            ({"schedule": "sequential", "t_copier": 1e9},
                                             "t_copier")])
def test_bad_config_names_the_key(overrides, key):
    with pytest.raises(UsageError, match=key):
        EXP.validate(EXP.schema.resolve(overrides))


def test_fixed_training_set_is_the_only_sgd_data(monkeypatch):
    """train_size = N: every SGD minibatch is made of rows of one set of N sequences."""
    from reduced_models import induction as theory
    seen = []

    def spy(original):
        def counts(tokens, *args, **kwargs):
            seen.append(tokens.clone())
            return original(tokens, *args, **kwargs)
        return staticmethod(counts)

    # the minibatches' statistics (TargetCounts for the "ce" loss), and every other count
    for kind in (theory.WindowCounts, theory.TargetCounts):
        monkeypatch.setattr(kind, "from_tokens", spy(kind.from_tokens))
    config = EXP.schema.resolve({"train_size": 6, "batch": 16, "t_max": 0.5, "lr": 0.1,
                                 "samples": 100, "mi_chains": 50, "records": 5,
                                 "test_samples": 0, "corrected": False})
    EXP.validate(config)
    seen.clear()
    EXP.run(config, ode=False, sgd=True)
    batches = [t for t in seen if len(t) == 16]
    assert len(batches) >= 5  # t_max / lr = 5 steps
    rows = {tuple(r.tolist()) for t in batches for r in t}
    assert 1 < len(rows) <= 6
