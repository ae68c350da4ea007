"""Linear attention and experiment linreg-length: length generalisation of trained attention."""

import json
import math

import h5py
import numpy as np
import pytest
import torch

from reduced_models import linreg as theory
from reduced_models.linreg_theory import plain_gd_optimal_step, plain_gd_risk_at_step
from sims.cli import main
from sims.experiment import generator
from sims.linreg.estimators import gd_predict, mc_risk, risk_curves
from sims.linreg.length_experiment import network_predictor
from sims.linreg.linear_attention import LinearAttentionRegressor, gd_step
from sims.linreg.network import SoftmaxAttentionRegressor, project
from sims.linreg.task import sample_regression

D, L, S2 = 5, 40, 0.1


def _lifted(cls, point: dict, heads: int, param: str, **kwargs):
    manifold = theory.manifold(D, heads, param)
    net = cls(D, heads, param, **kwargs)
    state = theory.balanced_state(D, point["omega"], point["mu"], param)
    net.load(manifold.lift(manifold.pack(state)))
    return net


@pytest.mark.parametrize("param", ["merged", "factored"])
@pytest.mark.parametrize("normalisation", ["sum", "mean"])
def test_linear_attention_at_the_lift_is_one_gd_step(param, normalisation):
    point = {"omega": np.array([0.3, -0.1]), "mu": np.array([0.4, 0.7])}
    net = _lifted(LinearAttentionRegressor, point, 2, param, normalisation=normalisation)
    assert torch.allclose(project(net.weights())["omega"], torch.tensor(point["omega"]), atol=1e-14)
    for length in (7, 40):
        batch = sample_regression(16, length, D, S2, generator(length), dtype=torch.float64)
        eta = gd_step(point["omega"], point["mu"], length, normalisation)
        assert eta == pytest.approx((length if normalisation == "sum" else 1) * (0.12 - 0.07))
        assert torch.allclose(net(batch.tokens()), gd_predict(batch, eta), rtol=1e-12, atol=1e-14)


def test_linear_attention_rejects_an_unknown_normalisation():
    with pytest.raises(ValueError, match="normalisation"):
        LinearAttentionRegressor(D, 1, normalisation="max")


def test_linear_risk_follows_the_closed_form_and_overshoots_at_longer_contexts():
    # The "sum" network at the lift implementing the optimal step at L = 40.
    p = plain_gd_optimal_step(D, L, S2) / L
    net = _lifted(LinearAttentionRegressor, {"omega": np.array([math.sqrt(p)]),
                                             "mu": np.array([math.sqrt(p)])}, 1, "merged")
    risks = {}
    for length in (20, 40, 80):
        mean, err = mc_risk(network_predictor(net)(length), D, length, S2, 20_000,
                            generator(length + 1))
        exact = plain_gd_risk_at_step(D, length, S2, p * length)
        assert abs(mean - exact) <= 4 * err
        risks[length] = exact
    assert risks[40] < risks[20] and risks[80] > 2 * risks[40]


def test_softmax_at_fixed_weights_keeps_improving_at_longer_contexts():
    net = _lifted(SoftmaxAttentionRegressor, {"omega": np.array([0.13, -0.13]),
                                              "mu": np.array([3.45, -3.45])}, 2, "merged")
    estimators = {"net": network_predictor(net),
                  "reduced": {"kind": "multihead", "omega": [0.13, -0.13], "mu": [3.45, -3.45]}}
    curves = risk_curves([40, 80, 160], D, S2, estimators, 4000, generator(5))
    risk = curves["risk"]
    # the network at the lift is the reduced predictor: same risk on the same prompts
    assert np.allclose(risk["net"], risk["reduced"], rtol=1e-10)
    assert risk["net"][0] > risk["net"][1] > risk["net"][2]


def test_length_run_stores_trajectories_risks_and_plot(tmp_path, capsys):
    out = tmp_path / "len.h5"
    code = main(["run", "linreg-length", "--set", "heads=2", "--set", "steps=300",
                 "--set", "batch=128", "--set", "records=12", "--set", "eval_samples=512",
                 "--set", "L_test=10,40,160", "--set", "samples=3000", "--out", str(out), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["status"] == "complete" and payload["train_L"] == 40
    names = ["softmax_H2", "linear_H1"]
    assert list(payload["networks"]) == names
    assert set(payload["risk"]) == {*names, "softmax_H2_reduced", "dgd", "ridge"}
    with h5py.File(out, "r") as fh:
        run = fh["runs"][payload["run_id"]]
        for name in names:
            assert run[name].attrs["kind"] == "sgd"
            loss = run[f"{name}/loss"][()]
            assert loss[-1] < 0.6 * loss[0]
            assert run[f"{name}/params/omega"][-1].tolist() == payload["networks"][name]["omega"]
        assert run["risk/L_test"][()].tolist() == [10, 40, 160]
        assert run["theory/linear_H1_reduced"].shape == (3,)
    softmax, linear = payload["risk"]["softmax_H2"], payload["risk"]["linear_H1"]
    assert softmax[2] < softmax[1]  # keeps improving beyond the training length
    assert linear[2] > 2 * linear[1]  # the "sum" step overshoots
    eta = payload["networks"]["linear_H1"]["gd_step_at_L"]
    assert 0.5 < eta < 1.2  # near the optimal step at L = 40, 0.86
    assert (tmp_path / f"len_{payload['run_id']}.png").stat().st_size > 10_000


def test_length_run_refuses_no_sgd_and_huge_batches(tmp_path, capsys):
    cases = ((["--no-sgd"], "--no-sgd"), (["--set", "batch=10000000"], "key 'batch'"))
    for argv, fragment in cases:
        code = main(["run", "linreg-length", *argv, "--out", str(tmp_path / "x.h5")])
        _, err = capsys.readouterr()
        assert code == 2 and fragment in err
    assert not (tmp_path / "x.h5").exists()
