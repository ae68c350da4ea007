"""Predictors, Monte-Carlo risk and risk curves of sims.linreg.estimators."""

import math

import numpy as np
import pytest
import torch

from reduced_models.linreg_theory import (
    debiased_gd_risk,
    plain_gd_optimal_step,
    plain_gd_risk,
    single_head_large_L_optimum,
)
from sims.linreg.estimators import (
    dgd_predict,
    gd_predict,
    mc_risk,
    ridge_predict,
    risk_curves,
    softmax_predict,
)
from sims.linreg.task import sample_regression

torch.set_num_threads(1)

D, SIGMA2 = 5, 0.1
Z = 4.0  # standard errors allowed between a Monte-Carlo mean and an exact value


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _small_batch(seed: int = 0, batch: int = 3, L: int = 7, d: int = 4):
    return sample_regression(batch, L, d, SIGMA2, _generator(seed), dtype=torch.float64)


def test_predictors_return_one_float64_value_per_prompt():
    batch = _small_batch()
    omega = torch.tensor([0.3, -0.3], dtype=torch.float64)
    mu = torch.tensor([1.0, -1.0], dtype=torch.float64)
    for y_hat in (
        ridge_predict(batch, 0.5),
        gd_predict(batch, 0.8),
        dgd_predict(batch, 0.8),
        softmax_predict(batch, omega, mu),
    ):
        assert y_hat.shape == (3,) and y_hat.dtype == torch.float64


def test_gd_and_dgd_match_explicit_sums():
    batch = _small_batch()
    x, y, xq = batch.x.numpy(), batch.y.numpy(), batch.xq.numpy()
    B, L, _ = x.shape
    for b in range(B):
        x_bar = x[b].mean(axis=0)
        plain = sum(y[b, t] * x[b, t] @ xq[b] for t in range(L)) / L
        centred = sum(y[b, t] * (x[b, t] - x_bar) @ xq[b] for t in range(L)) / L
        assert gd_predict(batch, 0.7)[b].item() == pytest.approx(0.7 * plain, rel=1e-12)
        assert dgd_predict(batch, 0.7)[b].item() == pytest.approx(0.7 * centred, rel=1e-12)


def test_ridge_is_regularised_least_squares():
    batch = _small_batch()
    x, y, xq = batch.x.numpy(), batch.y.numpy(), batch.xq.numpy()
    d = x.shape[-1]
    lam = 0.7
    for b in range(x.shape[0]):
        # Ridge = least squares on the data augmented with sqrt(lam) I rows and zero labels.
        design = np.vstack([x[b], math.sqrt(lam) * np.eye(d)])
        labels = np.concatenate([y[b], np.zeros(d)])
        beta_hat = np.linalg.lstsq(design, labels, rcond=None)[0]
        assert ridge_predict(batch, lam)[b].item() == pytest.approx(beta_hat @ xq[b], rel=1e-10)


def test_softmax_predict_matches_explicit_sums():
    batch = _small_batch()
    x, y, xq = batch.x.numpy(), batch.y.numpy(), batch.xq.numpy()
    omega, mu = [0.4, -0.2, 0.1], [1.5, -0.5, 2.0]
    y_hat = softmax_predict(
        batch, torch.tensor(omega, dtype=torch.float64), torch.tensor(mu, dtype=torch.float64)
    )
    for b in range(x.shape[0]):
        expected = 0.0
        for w, m in zip(omega, mu):
            logits = [w * x[b, t] @ xq[b] for t in range(x.shape[1])]
            norm = sum(math.exp(s) for s in logits)
            expected += m * sum(y[b, t] * math.exp(s) / norm for t, s in enumerate(logits))
        assert y_hat[b].item() == pytest.approx(expected, rel=1e-12)


def test_softmax_predict_limits():
    batch = _small_batch()
    zero = torch.tensor([0.0], dtype=torch.float64)
    two = torch.tensor([2.0], dtype=torch.float64)
    # omega = 0: uniform attention, mu times the context mean of y.
    assert torch.allclose(softmax_predict(batch, zero, two), 2.0 * batch.y.mean(1))
    # Large omega: all attention on the context token most aligned with the query.
    nearest = torch.einsum("bld,bd->bl", batch.x, batch.xq).argmax(1)
    hard = batch.y.gather(1, nearest[:, None]).squeeze(1)
    big = torch.tensor([1e4], dtype=torch.float64)
    assert torch.allclose(softmax_predict(batch, big, two), 2.0 * hard)


def test_mc_risk_merges_chunks_exactly():
    seen = []

    def zero_predictor(batch):
        seen.append(batch.yq.clone())
        return torch.zeros_like(batch.yq)

    mean, stderr = mc_risk(zero_predictor, D, 10, SIGMA2, 2500, _generator(1), chunk=700)
    errors = torch.cat(seen) ** 2
    assert [len(s) for s in seen] == [700, 700, 700, 400]
    assert mean == pytest.approx(errors.mean().item(), rel=1e-12)
    assert stderr == pytest.approx(errors.std().item() / 2500**0.5, rel=1e-10)


def test_mc_risk_of_zero_predictor_is_label_variance():
    # E y_q^2 = E|beta|^2 + sigma2 = 1 + sigma2.
    mean, stderr = mc_risk(
        lambda b: torch.zeros_like(b.yq), D, 10, SIGMA2, 50_000, _generator(2), chunk=8192
    )
    assert abs(mean - (1 + SIGMA2)) < Z * stderr


def test_mc_stderr_matches_spread_of_repetitions():
    L = 40
    eta = plain_gd_optimal_step(D, L, SIGMA2)
    generator = _generator(3)
    runs = [
        mc_risk(lambda b: gd_predict(b, eta), D, L, SIGMA2, 2000, generator, chunk=600)
        for _ in range(40)
    ]
    means = torch.tensor([m for m, _ in runs])
    stderrs = torch.tensor([s for _, s in runs])
    # With 40 repetitions the sample standard deviation has a relative error of about
    # 1 / sqrt(2 * 39) = 0.11; allow about three times that.
    ratio = means.std().item() / stderrs.pow(2).mean().sqrt().item()
    assert 0.65 < ratio < 1.4
    assert abs(means.mean().item() - plain_gd_risk(D, L, SIGMA2)) < Z * stderrs.mean() / 40**0.5


ESTIMATORS = {
    "multihead": {"omega": [0.13, -0.13], "mu": [3.45, -3.45]},
    "single_head": None,
    "gd": None,
    "dgd": None,
    "ridge": None,
}


def test_risk_curves_shapes_and_keys():
    L_test = [10, 20, 40]
    curves = risk_curves(L_test, D, SIGMA2, ESTIMATORS, 500, _generator(4))
    assert curves["L_test"] == L_test
    assert set(curves["risk"]) == set(ESTIMATORS) == set(curves["stderr"])
    for name in ESTIMATORS:
        assert len(curves["risk"][name]) == len(L_test) == len(curves["stderr"][name])
        assert all(s > 0 for s in curves["stderr"][name])


def test_risk_curves_use_common_random_numbers_and_custom_specs():
    L_test = [15, 30]

    def custom_single_head(L):
        omega, mu = single_head_large_L_optimum(D, L, SIGMA2)
        omega_t = torch.tensor([omega], dtype=torch.float64)
        mu_t = torch.tensor([mu], dtype=torch.float64)
        return lambda batch: softmax_predict(batch, omega_t, mu_t)

    estimators = {
        "dgd": None,
        "dgd_again": {"kind": "dgd"},
        "single_head": None,
        "custom": custom_single_head,
    }
    curves = risk_curves(L_test, D, SIGMA2, estimators, 3000, _generator(5), chunk=1000)
    assert curves["risk"]["dgd"] == curves["risk"]["dgd_again"]
    assert curves["risk"]["single_head"] == curves["risk"]["custom"]


def test_risk_curves_match_closed_forms():
    L_test = [20, 80]
    curves = risk_curves(L_test, D, SIGMA2, ESTIMATORS, 40_000, _generator(6))
    for i, L in enumerate(L_test):
        for name, exact in (("gd", plain_gd_risk), ("dgd", debiased_gd_risk)):
            assert (
                abs(curves["risk"][name][i] - exact(D, L, SIGMA2)) < Z * curves["stderr"][name][i]
            )
        assert (
            curves["risk"]["ridge"][i] < curves["risk"]["dgd"][i] < curves["risk"]["single_head"][i]
        )
    # Step sizes follow L: the optimal-step risks fall with L.
    assert curves["risk"]["gd"][1] < curves["risk"]["gd"][0]


def test_unknown_estimator_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown estimator kind"):
        risk_curves([10], D, SIGMA2, {"lasso": None}, 10, _generator(7))
