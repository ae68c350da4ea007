"""Tests of the sparse linear regression sampler (sims/sparse/task.py).

Moment checks use tolerances of a few standard errors of the sample moments.
"""

import itertools
import math

import pytest
import torch
from scipy.stats import chi2

from sims.sparse.task import sample_sparse, sample_support

torch.set_num_threads(1)

D, S, SIGMA2 = 20, 3, 0.25
BATCH, N = 20000, 5


@pytest.fixture(scope="module")
def batch():
    return sample_sparse(BATCH, N, D, S, SIGMA2, torch.Generator().manual_seed(1))


def test_shapes_and_dtype(batch):
    assert batch.x.shape == (BATCH, N, D)
    assert batch.y.shape == (BATCH, N)
    assert batch.xq.shape == (BATCH, D)
    assert batch.yq.shape == (BATCH,)
    assert batch.beta.shape == (BATCH, D)
    assert batch.support.shape == (BATCH, D) and batch.support.dtype == torch.bool
    for tensor in (batch.x, batch.y, batch.xq, batch.yq, batch.beta):
        assert tensor.dtype == torch.float64


def test_support_has_exactly_s_coordinates_and_beta_lives_on_it(batch):
    assert torch.all(batch.support.sum(dim=-1) == S)
    assert torch.all(batch.beta[~batch.support] == 0)
    assert torch.all(batch.beta[batch.support] != 0)


def test_coordinate_inclusion_frequency_is_s_over_d(batch):
    p = S / D
    freq = batch.support.double().mean(dim=0)
    stderr = math.sqrt(p * (1 - p) / BATCH)
    assert torch.all((freq - p).abs() < 4.5 * stderr)


def test_support_is_uniform_over_subsets():
    d, s, trials = 5, 2, 20000
    support = sample_support(trials, d, s, torch.Generator().manual_seed(2))
    subsets = list(itertools.combinations(range(d), s))
    codes = (support.long() * (2 ** torch.arange(d))).sum(dim=-1)
    expected_codes = torch.tensor([sum(2**i for i in subset) for subset in subsets])
    counts = (codes[:, None] == expected_codes[None, :]).sum(dim=0).double()
    assert counts.sum() == trials
    expected = trials / len(subsets)
    statistic = ((counts - expected) ** 2 / expected).sum().item()
    assert statistic < chi2.ppf(1 - 1e-4, df=len(subsets) - 1)


def test_beta_values_on_support_are_standard_normal(batch):
    values = batch.beta[batch.support]
    count = values.numel()
    assert abs(values.mean().item()) < 4 / math.sqrt(count)
    assert abs((values**2).mean().item() - 1) < 4 * math.sqrt(2 / count)
    # E b^4 = 3 and Var b^4 = 105 - 9 for a standard normal
    assert abs((values**4).mean().item() - 3) < 4 * math.sqrt(96 / count)


def test_covariates_are_standard_normal(batch):
    rows = torch.cat([batch.x.reshape(-1, D), batch.xq])
    count = rows.shape[0]
    assert torch.all(rows.mean(dim=0).abs() < 4.5 / math.sqrt(count))
    second = rows.T @ rows / count
    off_diagonal = second - torch.diag(second.diagonal())
    assert torch.all(off_diagonal.abs() < 5 / math.sqrt(count))
    assert torch.all((second.diagonal() - 1).abs() < 4.5 * math.sqrt(2 / count))


@pytest.mark.parametrize("which", ["context", "query"])
def test_label_noise_has_variance_sigma2_and_is_independent_of_x(batch, which):
    if which == "context":
        x, y = batch.x.reshape(-1, D), batch.y.reshape(-1)
        beta = batch.beta.repeat_interleave(N, dim=0)
    else:
        x, y, beta = batch.xq, batch.yq, batch.beta
    noise = y - (x * beta).sum(dim=-1)
    count = noise.numel()
    assert abs(noise.mean().item()) < 4 * math.sqrt(SIGMA2 / count)
    assert abs((noise**2).mean().item() - SIGMA2) < 4 * SIGMA2 * math.sqrt(2 / count)
    cross = (x * noise[:, None]).mean(dim=0)
    assert torch.all(cross.abs() < 4.5 * math.sqrt(SIGMA2 / count))


def test_same_seed_reproduces_and_other_seed_differs():
    first = sample_sparse(64, 8, D, S, SIGMA2, torch.Generator().manual_seed(7))
    again = sample_sparse(64, 8, D, S, SIGMA2, torch.Generator().manual_seed(7))
    other = sample_sparse(64, 8, D, S, SIGMA2, torch.Generator().manual_seed(8))
    for name in ("x", "y", "xq", "yq", "beta", "support"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.support, other.support)
    assert not torch.equal(first.x, other.x)


def test_noiseless_labels_are_exact():
    batch = sample_sparse(16, 4, D, S, 0.0, torch.Generator().manual_seed(3))
    exact = torch.einsum("bnd,bd->bn", batch.x, batch.beta)
    torch.testing.assert_close(batch.y, exact, rtol=0, atol=1e-12)
    torch.testing.assert_close(batch.yq, (batch.xq * batch.beta).sum(dim=-1), rtol=0, atol=1e-12)


def test_support_size_outside_range_is_rejected():
    with pytest.raises(ValueError):
        sample_sparse(2, 3, 4, 5, 0.1, torch.Generator().manual_seed(0))
