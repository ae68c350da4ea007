"""The linreg reduced models: known limits, stationary points, agreement with the network."""

import numpy as np
import pytest
import torch

from dynamics.ode import integrate
from reduced_models import flow_eigenvalues, flow_jacobian, linreg, stationary_point
from sims.linreg.network import SoftmaxAttentionRegressor, project
from sims.linreg.task import sample_regression

D, L, S2 = 5, 40, 0.1
HYPER = {"L": L, "sigma2": S2}
T_LONG = np.concatenate([[0.0], np.logspace(-2, 3, 60)])


def test_metric_is_d_for_omega_and_1_for_mu():
    assert np.array_equal(linreg.manifold(D, 2, "merged").metric, np.diag([5.0, 5, 1, 1]))
    assert np.array_equal(linreg.manifold(D, 1, "factored").metric, np.diag([5.0, 5, 1, 1]))


def test_one_head_flow_reaches_the_closed_form_optimum():
    model = linreg.symbolic_model(D, 1)
    sol = integrate(model.rhs(HYPER), model.manifold.pack(linreg.symmetric_start(D, 1, 0.05, "merged")),
                    T_LONG, rtol=1e-9, atol=1e-11)
    omega, mu = sol.y[-1, 0].tolist()
    omega_star, mu_star = linreg.one_head_optimum(D, L, S2)
    assert abs(omega / omega_star - 1) < 0.01 and abs(mu / mu_star - 1) < 0.01


@pytest.mark.parametrize("param", ["merged", "factored"])
def test_pair_approaches_the_omega_mu_asymptote(param):
    model = linreg.symbolic_model(D, 2, param)
    start = model.manifold.pack(linreg.symmetric_start(D, 2, 0.05, param))
    sol = integrate(model.rhs(HYPER), start, T_LONG, rtol=1e-9, atol=1e-11)
    obs = model.observe(sol.y[-1])
    product = (obs["omega"] * obs["mu"])[0]
    target = linreg.pair_asymptote(D, L, S2)
    assert torch.allclose(product, torch.full_like(product, target), rtol=0.01)
    # the pair stays exactly antisymmetric: zero-sum mu
    assert abs(float(obs["mu"].sum())) < 1e-9


def test_stationary_point_and_its_stability():
    model = linreg.symbolic_model(D, 1)
    omega_star, mu_star = linreg.one_head_optimum(D, L, S2)
    point, ok = stationary_point(model, torch.tensor([0.4, 1.5], dtype=torch.float64), HYPER)
    assert ok and np.allclose(point.numpy(), [omega_star, mu_star], rtol=1e-10)
    eig = flow_eigenvalues(model, point, HYPER)
    assert (eig < 0).all()
    jac_eig = np.sort(np.linalg.eigvals(flow_jacobian(model, point, HYPER).numpy()).real)
    assert np.allclose(jac_eig, eig, rtol=1e-10)
    # the origin is a saddle
    eig0 = flow_eigenvalues(model, torch.zeros(2, dtype=torch.float64), HYPER)
    assert eig0.min() < 0 < eig0.max()


@pytest.mark.parametrize("param", ["merged", "factored"])
def test_network_at_the_lift_is_the_reduced_predictor(param):
    gen = torch.Generator().manual_seed(3)
    man = linreg.manifold(D, 3, param)
    state = torch.randn(man.dim, generator=gen, dtype=torch.float64) * 0.5
    net = SoftmaxAttentionRegressor(D, 3, param)
    net.load(man.lift(state))
    batch = sample_regression(64, L, D, S2, gen, dtype=torch.float64)
    model = linreg.symbolic_model(D, 3, param)
    obs = model.observe(state[None])
    reduced = linreg.reduced_prediction(obs["omega"][0], obs["mu"][0], batch.x, batch.y, batch.xq)
    assert torch.allclose(net(batch.tokens()), reduced, rtol=1e-12, atol=1e-12)
    # the one observable function, on the network and on the lifted state
    projected = project(net.weights())
    assert torch.allclose(projected["omega"], obs["omega"][0], atol=1e-14)
    assert torch.allclose(projected["mu"], obs["mu"][0], atol=1e-14)


def test_population_loss_matches_the_network_loss_within_sampling_error():
    gen = torch.Generator().manual_seed(4)
    omega = torch.tensor([[0.3, -0.25]], dtype=torch.float64)
    mu = torch.tensor([[1.2, -0.9]], dtype=torch.float64)
    sample = linreg.CovariateSample(20000, L, D, gen)
    reduced = float(sample.loss(omega, mu, S2))
    batch = sample_regression(100000, L, D, S2, gen, dtype=torch.float64)
    err = (linreg.reduced_prediction(omega[0], mu[0], batch.x, batch.y, batch.xq) - batch.yq) ** 2
    mc, se = float(err.mean()), float(err.std() / len(err) ** 0.5)
    w = linreg.reduced_weights(omega, mu, sample.x, sample.xq)[0]
    r = torch.einsum("nl,nld->nd", w, sample.x) - sample.xq
    per_sample = (r**2).sum(-1) / D + S2 * ((w**2).sum(-1) + 1)
    se_reduced = float(per_sample.std() / len(per_sample) ** 0.5)
    assert abs(reduced - mc) < 4 * (se**2 + se_reduced**2) ** 0.5
    # and the large-L loss is only an approximation of it, of order a few percent
    lt = float(linreg.symbolic_model(D, 2).loss(torch.cat([omega, mu], 1), HYPER))
    assert 0.0 < abs(lt - reduced) / reduced < 0.1
