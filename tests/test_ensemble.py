"""K seeds trained as one batched model make exactly the updates of K separate runs."""

import numpy as np
import pytest
import torch

from dynamics.ensemble import Ensemble
from dynamics.sgd import split_members, train
from sims.linreg.network import SoftmaxAttentionRegressor, project
from sims.linreg.task import sample_regression

K, STEPS = 3, 25
RECORD = np.array([0, 1, 5, 12, 25])


def _nets():
    gen = torch.Generator().manual_seed(11)
    nets = [SoftmaxAttentionRegressor(4, 2, "factored") for _ in range(K)]
    for net in nets:
        net.init_normal(0.3, gen)
    return nets


def _tokens(gens, step):
    batches = [sample_regression(32, 10, 4, 0.1, g, dtype=torch.float64) for g in gens]
    return torch.stack([b.tokens() for b in batches]), torch.stack([b.yq for b in batches])


@pytest.mark.parametrize("opt", [torch.optim.SGD, torch.optim.Adam])
def test_batched_seeds_equal_separate_runs(opt):
    separate = []
    for k, net in enumerate(_nets()):
        gen = torch.Generator().manual_seed(100 + k)
        optimizer = opt(net.parameters(), lr=0.05)

        def loss(step, net=net, gen=gen):
            tokens, yq = _tokens([gen], step)
            return ((net(tokens[0]) - yq[0]) ** 2).mean()

        def observe(net=net):
            return {n: v.detach().numpy() for n, v in project(net.weights()).items()}

        separate.append(train(net, loss, optimizer, RECORD, observe, 0.05))

    ens = Ensemble(_nets())
    gens = [torch.Generator().manual_seed(100 + k) for k in range(K)]
    optimizer = opt(ens.parameters(), lr=0.05)

    def ens_loss(step):
        tokens, yq = _tokens(gens, step)
        return ((ens(tokens) - yq) ** 2).mean(dim=1)

    def ens_observe():
        return {n: v.detach().numpy() for n, v in project(ens.weights()).items()}

    batched = split_members(train(ens, ens_loss, optimizer, RECORD, ens_observe, 0.05))
    assert len(batched) == K
    for one, other in zip(separate, batched):
        assert np.array_equal(one.step, other.step)
        np.testing.assert_allclose(other.loss, one.loss, rtol=1e-11, atol=1e-13)
        for name in ("omega", "mu"):
            np.testing.assert_allclose(other.params[name], one.params[name], rtol=1e-10, atol=1e-13)
