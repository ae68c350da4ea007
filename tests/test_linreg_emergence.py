"""Emergence from random initialisation: pattern metrics, active heads, flows from the pattern."""

import numpy as np
import pytest
import torch

from dynamics.errors import UsageError
from reduced_models import linreg
from sims.linreg.network import (
    SoftmaxAttentionRegressor,
    active_heads,
    head_observables,
    pattern_formed,
)
from sims.registry import get

D = 5
EXP = get("linreg")


def test_active_heads_relative_to_the_largest_label_weight():
    mu = torch.tensor([[3.0, -3.0, 0.29, -0.31], [0.0, 0.0, 0.0, 0.0]])
    assert active_heads(mu).tolist() == [[True, True, False, True], [False] * 4]


def test_pattern_metrics_are_exact_on_the_manifold_and_not_off_it():
    net = SoftmaxAttentionRegressor(D, 2, "factored")
    man = linreg.manifold(D, 2, "factored")
    net.load(man.lift(man.pack(linreg.symmetric_start(D, 2, 0.2, "factored"))))
    obs = head_observables(net.weights())
    assert torch.allclose(obs["kq_diag_ratio"], torch.ones(2, dtype=torch.float64))
    assert torch.allclose(obs["ov_last_ratio"], torch.ones(2, dtype=torch.float64))
    assert obs["kq_diag_var"].abs().max() < 1e-20 and obs["active"].tolist() == [1.0, 1.0]
    assert pattern_formed({k: v.detach().numpy() for k, v in obs.items()}, 0.95)
    with torch.no_grad():
        net.V[1, D, 0] = net.V[1, D, D]  # head 2 now outputs a covariate as much as the label
    obs = {k: v.detach().numpy() for k, v in head_observables(net.weights()).items()}
    assert obs["ov_last_ratio"][1] == pytest.approx(2**-0.5)
    assert not pattern_formed(obs, 0.95)


def test_balanced_state_has_the_observed_omega_and_mu():
    omega, mu = np.array([0.21, -0.19]), np.array([-1.5, 2.0])
    model = linreg.symbolic_model(D, 2, "factored")
    obs = model.observe(model.manifold.pack(linreg.balanced_state(D, omega, mu, "factored"))[None])
    assert np.allclose(obs["omega"][0].numpy(), omega, rtol=1e-14)
    assert np.allclose(obs["mu"][0].numpy(), mu, rtol=1e-14)


def _run(ode=True, sgd=True, **overrides):
    config = EXP.schema.resolve(overrides)
    EXP.validate(config)
    return EXP.run(config, ode=ode, sgd=sgd)


def test_symmetric_start_is_formed_at_once_so_both_starts_agree():
    small = {"t_max": 0.5, "lr": 0.05, "mc_samples": 300, "records": 8, "batch": 64,
             "eval_samples": 128}
    at_init = _run(**small)
    at_pattern = _run(ode_start="pattern", **small)
    assert at_pattern.summary["sgd"]["pattern"]["formed_t"] == 0.0
    for name in ("ode", "population"):
        a, b = at_init.trajectories[name], at_pattern.trajectories[name]
        assert np.array_equal(a.t, b.t) and np.allclose(a.params["omega"], b.params["omega"])


def test_pattern_start_needs_the_network():
    config = EXP.schema.resolve({"ode_start": "pattern"})
    with pytest.raises(UsageError, match="ode_start"):
        EXP.run(config, sgd=False)


RECIPE = {"init": "random", "param": "factored", "optimizer": "adam", "lr": 1e-3, "batch": 256,
          "init_scale": 0.5, "ode_start": "pattern", "sgd_dtype": "float32", "seed": 1}


def test_two_heads_from_random_start_split_and_flows_start_at_the_pattern():
    """Acceptance: 10 000 Adam steps (about 20 s on an idle core); seed 1 forms the
    pattern near t = 3.5, then splits into a +- pair."""
    result = _run(t_max=10.0, records=60, mc_samples=1000, eval_samples=1024, **RECIPE)
    sgd = result.trajectories["sgd"]
    final, pattern = result.summary["sgd"]["final"], result.summary["sgd"]["pattern"]
    omega, mu = np.array(final["omega"]), np.array(final["mu"])
    assert pattern["active"] == [True, True]
    assert min(pattern["kq_diag_ratio"]) > 0.95 and min(pattern["ov_last_ratio"]) > 0.95
    assert omega[0] * omega[1] < 0
    assert abs(mu.sum()) < 0.1 * np.abs(mu).sum()
    assert 0 < pattern["formed_t"] < 10 and result.summary["flows_start_t"] == pattern["formed_t"]
    row = int(np.flatnonzero(sgd.t == pattern["formed_t"])[0])
    for name in ("ode", "population"):
        flow = result.trajectories[name]
        assert flow.t[0] == pattern["formed_t"] and flow.t[-1] == pytest.approx(10.0)
        # the flows start at the network's observed (omega, mu), not at its factor projection
        assert np.allclose(flow.params["omega"][0], sgd.params["omega"][row], rtol=1e-6)
        assert np.allclose(flow.params["mu"][0], sgd.params["mu"][row], rtol=1e-6)
    assert "sgd_vs_population" in result.summary["comparison"]
