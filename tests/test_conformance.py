"""The conformance suite: every reduced model of every registered system."""

import numpy as np
import pytest
import torch

from reduced_models.conformance import gradient_error, metric_error, worst_loss_increase
from sims.registry import conformance_cases

CASES = list(conformance_cases())
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_matches_independent_derivative(case):
    _, model, hyper, start = case
    gen = torch.Generator().manual_seed(5)
    points = start + 0.3 * torch.randn((4, start.shape[0]), generator=gen, dtype=torch.float64)
    tol = 1e-10 if model.symbolic else 1e-6
    assert gradient_error(model, points, hyper) < tol


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_metric_is_lift_jacobian_gram(case):
    _, model, _, start = case
    assert metric_error(model, start) < 1e-12


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_loss_never_increases_along_the_flow(case):
    _, model, hyper, start = case
    t = np.concatenate([[0.0], np.logspace(-2, 1.3, 40)])
    assert worst_loss_increase(model, start, hyper, t) <= 1e-10


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_shapes(case):
    _, model, hyper, start = case
    batch = start.repeat(3, 1)
    assert model.loss(batch, hyper).shape == (3,)
    assert model.gradient(batch, hyper).shape == batch.shape
    assert model.rhs(hyper)(batch).shape == batch.shape
    weights = model.manifold.lift(batch)
    assert torch.allclose(model.manifold.project(weights), batch, atol=1e-12)
