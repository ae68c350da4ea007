"""Non-isotropic covariates: sampler, matrix reduced model, alignment, GD baselines, experiment."""

import numpy as np
import pytest
import torch

from dynamics.errors import UsageError
from reduced_models import linreg
from reduced_models.linreg_theory import debiased_gd_risk, plain_gd_optimal_step, plain_gd_risk
from sims.linreg.network import SoftmaxAttentionRegressor
from sims.linreg.noniso import baseline_risks, cosine_similarity, head_alignment
from sims.linreg.task import covariance_matrix, sample_regression, toeplitz_covariance
from sims.registry import get

D, L, S2 = 5, 40, 0.1
SIGMA = toeplitz_covariance(D, 0.5)


def test_toeplitz_sampler_covariance_within_sampling_error():
    n = 40000
    batch = sample_regression(n, 1, D, S2, torch.Generator().manual_seed(0), torch.float64,
                              covariance=SIGMA)
    x = batch.xq
    empirical = x.T @ x / n
    se = ((torch.diag(SIGMA)[:, None] * torch.diag(SIGMA)[None] + SIGMA**2) / n).sqrt()
    assert ((empirical - SIGMA).abs() < 4 * se).all()
    assert covariance_matrix("identity", D, 0.5) is None
    assert torch.equal(covariance_matrix("toeplitz", D, 0.5), SIGMA)
    assert SIGMA[0, 3] == 0.125


def test_matrix_lift_metric_and_network_at_the_lift():
    man = linreg.matrix_manifold(3, 1)
    # upper triangle (00, 01, 02, 11, 12, 22): off-diagonal entries fill two weights
    assert np.array_equal(np.diag(man.metric), [1, 2, 2, 1, 2, 1, 1])
    gen = torch.Generator().manual_seed(1)
    model = linreg.matrix_population_model(D, 2, L, 50, gen, SIGMA)
    state = 0.3 * torch.randn(model.manifold.dim, generator=gen, dtype=torch.float64)
    net = SoftmaxAttentionRegressor(D, 2)
    net.load(model.manifold.lift(state))
    batch = sample_regression(32, L, D, S2, gen, torch.float64, covariance=SIGMA)
    obs = model.observe(state[None])
    kq, mu = obs["kq"][0], obs["mu"][0]
    assert torch.allclose(kq, kq.transpose(-1, -2))
    scores = torch.einsum("bli,hij,bj->hbl", batch.x, kq, batch.xq)
    expected = torch.einsum("h,hbl,bl->b", mu, torch.softmax(scores, -1), batch.y)
    assert torch.allclose(net(batch.tokens()), expected, rtol=1e-12, atol=1e-12)


def test_matrix_loss_reduces_to_the_isotropic_loss_at_omega_identity():
    sample = linreg.CovariateSample(500, L, D, torch.Generator().manual_seed(2), SIGMA)
    omega = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    mu = torch.tensor([[1.1, -0.9]], dtype=torch.float64)
    kq = omega[..., None, None] * torch.eye(D, dtype=torch.float64)
    assert torch.allclose(sample.matrix_loss(kq, mu, S2), sample.loss(omega, mu, S2), rtol=1e-12)


def test_matrix_population_loss_matches_the_network_risk():
    gen = torch.Generator().manual_seed(3)
    model = linreg.matrix_population_model(D, 2, L, 20000, gen, SIGMA)
    state = model.manifold.pack(linreg.matrix_state(D, [0.25, -0.2], [1.2, -1.0],
                                                    torch.linalg.inv(SIGMA).numpy()))
    reduced = float(model.loss(state[None], {"sigma2": S2}))
    net = SoftmaxAttentionRegressor(D, 2)
    net.load(model.manifold.lift(state))
    batch = sample_regression(100000, L, D, S2, gen, torch.float64, covariance=SIGMA)
    with torch.no_grad():
        err = (net(batch.tokens()) - batch.yq) ** 2
    se = float(err.std()) / len(err) ** 0.5
    # the reduced loss is itself a 20000-draw estimate: allow for both errors
    assert abs(reduced - float(err.mean())) < 4 * se * 2**0.5


def test_alignment_is_one_for_multiples_of_the_target():
    inverse = torch.linalg.inv(SIGMA)
    kq = torch.stack([0.3 * inverse, -2.0 * inverse, torch.eye(D, dtype=torch.float64)])
    align = head_alignment(kq, inverse)
    assert torch.allclose(align[:2], torch.ones(2, dtype=torch.float64))
    expected = torch.trace(inverse) / (D**0.5 * inverse.norm())
    assert torch.allclose(align[2], expected)
    assert torch.allclose(cosine_similarity(inverse, inverse), torch.tensor(1.0, dtype=torch.float64))


def test_baselines_match_closed_forms_when_isotropic():
    gen = torch.Generator().manual_seed(4)
    fit, test = (sample_regression(60000, L, D, S2, gen, torch.float64) for _ in range(2))
    out = baseline_risks(fit, test, torch.eye(D, dtype=torch.float64))
    assert out["gd"]["risk"] == out["pgd"]["risk"]
    assert abs(out["gd"]["risk"] - plain_gd_risk(D, L, S2)) < 4 * out["gd"]["stderr"]
    assert abs(out["gd"]["step"] / plain_gd_optimal_step(D, L, S2) - 1) < 0.03
    assert abs(out["dgd"]["risk"] - debiased_gd_risk(D, L, S2)) < 4 * out["dgd"]["stderr"]


def test_preconditioning_helps_under_correlation():
    gen = torch.Generator().manual_seed(5)
    fit, test = (sample_regression(40000, L, D, S2, gen, torch.float64, covariance=SIGMA)
                 for _ in range(2))
    out = baseline_risks(fit, test, torch.linalg.inv(SIGMA))
    gap = out["gd"]["risk"] - out["pgd"]["risk"]
    assert gap > 5 * (out["gd"]["stderr"] ** 2 + out["pgd"]["stderr"] ** 2) ** 0.5


EXP = get("linreg")


@pytest.mark.parametrize("overrides, key", [
    ({"covariance": "toeplitz", "param": "factored"}, "key 'param'"),
    ({"covariance": "toeplitz", "rho": 1.0}, "key 'rho'"),
    ({"covariance": "wishart"}, "key 'covariance'"),
])
def test_bad_noniso_config(overrides, key):
    with pytest.raises(UsageError, match=key):
        EXP.validate(EXP.schema.resolve(overrides))


def test_toeplitz_run_records_kq_and_alignment():
    config = EXP.schema.resolve({"covariance": "toeplitz", "t_max": 2.0, "lr": 0.05,
                                 "mc_samples": 300, "records": 12, "eval_samples": 512,
                                 "batch": 128})
    EXP.validate(config)
    result = EXP.run(config)
    assert set(result.trajectories) == {"population", "sgd"}
    for name in ("population", "sgd"):
        assert result.trajectories[name].params["kq_xx"].shape[1:] == (2, D, D)
    noniso = result.summary["noniso"]
    assert len(noniso["align_sigma_inv"]) == 2 and len(noniso["align_flow"]) == 2
    # both sides start at omega I and share the same time: they stay close in KQ_xx
    assert min(noniso["align_flow"]) > 0.99
    assert set(noniso["risk"]) == {"network", "gd", "dgd", "pgd", "pdgd"}
