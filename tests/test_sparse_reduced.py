"""The preprocess-then-optimize reduced model: lift, metric, predictor, gradient."""

import numpy as np
import torch

from reduced_models import sparse as rs
from reduced_models.base import integrate_flow
from sims.sparse import estimators as est
from sims.sparse.network import LinearAttentionStack, TransformerShape, tokens
from sims.sparse.task import sample_sparse

D, LAYERS, HEADS, N, SIGMA2 = 6, 3, 2, 8, 0.25


def prompts(size=200, seed=0):
    return sample_sparse(size, N, D, 2, SIGMA2, torch.Generator().manual_seed(seed))


def state(alpha=(0.7, 0.4), eta=(0.15, 0.1)):
    return torch.tensor([*alpha, *eta], dtype=torch.float64)


def test_blocks_partition_the_coordinates_and_the_metric_counts_lifted_entries():
    assert rs.blocks(7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    man = rs.manifold(7, 3, 3)
    # alpha_h fills |C_h| diagonal entries; eta fills d + H = 10
    assert np.array_equal(man.metric, np.diag([3.0, 2, 2, 10, 10]))


def test_lifted_stack_equals_the_reduced_predictor():
    b = prompts(50)
    man = rs.manifold(D, LAYERS, HEADS)
    net = LinearAttentionStack(TransformerShape(D, LAYERS, HEADS))
    net.load(man.lift(state()))
    sample = rs.PromptSample(b.x, b.y, b.beta, SIGMA2)
    beta_hat = sample.estimate(state()[None, :HEADS], state()[None, HEADS:])[0]
    torch.testing.assert_close(net(tokens(b)), (b.xq * beta_hat).sum(-1), rtol=0, atol=1e-12)


def test_predictor_is_gd_on_the_head_features():
    """Independent ground truth: GD on explicit features (x, alpha_h r_(C_h).x_(C_h))."""
    b = prompts(40)
    alpha, eta, k = torch.tensor([0.7, 0.4], dtype=torch.float64), 0.12, LAYERS - 1
    r = est.moments(b.x, b.y)[1]
    owned = rs.blocks(D, HEADS)
    lift = [alpha[h] * torch.where(torch.isin(torch.arange(D), torch.tensor(c)), r, 0.0)
            for h, c in enumerate(owned)]
    A = torch.cat([torch.eye(D, dtype=torch.float64).expand(40, D, D),
                   torch.stack(lift, dim=1)], dim=1)  # (B, D + H, D)
    features = b.x @ A.transpose(-1, -2)
    w = est.gd(features, b.y, eta, k)
    expected = (A.transpose(-1, -2) @ w[..., None])[..., 0]
    got = rs.PromptSample(b.x, b.y, b.beta, SIGMA2).estimate(alpha[None],
                                                             torch.full((1, k), eta, dtype=torch.float64))[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_without_preprocessing_the_loss_is_the_gd_risk():
    b = prompts(300)
    sample = rs.PromptSample(b.x, b.y, b.beta, SIGMA2)
    loss = sample.loss(torch.zeros((1, HEADS), dtype=torch.float64),
                       torch.full((1, 2), 0.3, dtype=torch.float64))
    expected = est.risk(est.gd(b.x, b.y, 0.3, 2), b.beta, SIGMA2).mean()
    torch.testing.assert_close(loss[0], expected, rtol=1e-13, atol=0)


def test_reduced_gradient_is_the_networks_gradient_pulled_back_by_the_lift():
    """grad_theta L = J^T grad_W L_net, with the query integrated exactly on the network side
    by querying every basis vector: sum_k (y_hat(e_k) - beta_k)^2 = |beta_hat - beta|^2."""
    b = prompts(60)
    model = rs.population_model(D, LAYERS, HEADS, rs.PromptSample(b.x, b.y, b.beta, SIGMA2))
    theta = state()
    net = LinearAttentionStack(TransformerShape(D, LAYERS, HEADS))
    net.load(model.manifold.lift(theta))
    z = tokens(b).repeat_interleave(D, dim=0)
    z[:, -1, :-1] = torch.eye(D, dtype=torch.float64).repeat(60, 1)
    target = b.beta.reshape(-1)
    loss = SIGMA2 + ((net(z) - target) ** 2).sum() / 60
    torch.testing.assert_close(loss, model.loss(theta[None], {})[0], rtol=1e-13, atol=0)
    loss.backward()
    grad_w = torch.cat([net.KQ.grad.reshape(-1), net.OV.grad.reshape(-1)])
    pulled = torch.as_tensor(model.manifold.jacobian).T @ grad_w
    torch.testing.assert_close(model.gradient(theta[None], {})[0], pulled, rtol=1e-10, atol=1e-12)


def test_flow_lowers_the_loss_below_plain_gd_start():
    b = prompts(150, seed=3)
    model = rs.population_model(D, LAYERS, HEADS, rs.PromptSample(b.x, b.y, b.beta, SIGMA2))
    start = model.manifold.pack(rs.start_state(HEADS, LAYERS, 0.5, 0.02))
    t = np.concatenate([[0.0], np.logspace(-1, 1.2, 8)])
    (traj,) = integrate_flow(model, start, t, {}, lambda w: {"eta": w["KQ"][..., 1, 0, 0, 0]})
    assert traj.status == "complete"
    assert np.all(np.diff(traj.loss) <= 1e-12) and traj.loss[-1] < 0.8 * traj.loss[0]
    # the observable read through the lift is the state's eta_1
    assert traj.params["eta"][0] == 0.02
