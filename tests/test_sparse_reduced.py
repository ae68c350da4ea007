"""The preprocess-then-optimize reduced model: lift, metric, predictor, gradient."""

import numpy as np
import pytest
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


# ---------------------------------------------------------------------------
# The extended manifold and the transformer-implementable PTO estimators


def random_extended_state(man, seed=4, scale=0.3):
    return scale * torch.randn(man.dim, generator=torch.Generator().manual_seed(seed),
                               dtype=torch.float64)


def test_lifted_stack_equals_the_extended_predictor_at_a_random_point():
    b = prompts(50)
    man = rs.extended_manifold(D, LAYERS, HEADS)
    theta = random_extended_state(man)
    net = LinearAttentionStack(TransformerShape(D, LAYERS, HEADS))
    net.load(man.lift(theta))
    obs = man.unpack(theta[None])
    beta_hat = rs.extended_estimate(rs.PromptSample(b.x, b.y, b.beta, SIGMA2), obs["alpha"],
                                    obs["eta_x"], obs["eta_u"])[0]
    torch.testing.assert_close(net(tokens(b)), (b.xq * beta_hat).sum(-1), rtol=0, atol=1e-12)


def test_extended_manifold_contains_the_alpha_eta_manifold():
    b = prompts(50)
    alpha, eta = np.array([0.7, 0.4]), np.array([0.15, 0.1])
    small, big = rs.manifold(D, LAYERS, HEADS), rs.extended_manifold(D, LAYERS, HEADS)
    lifted_small = small.lift(small.pack({"alpha": alpha, "eta": eta}))
    lifted_big = big.lift(big.pack(rs.extend_state(alpha, eta, D)))
    for name in ("KQ", "OV"):
        torch.testing.assert_close(lifted_small[name], lifted_big[name], rtol=0, atol=0)
    # metric: |C_g| for alpha[h, g] and eta_x[l, g], 1 for eta_u entries
    sizes = [len(c) for c in rs.blocks(D, HEADS)]
    expected = np.diag(sizes * HEADS + sizes * (LAYERS - 1) + [1.0] * (LAYERS - 1) * HEADS**2)
    assert np.array_equal(big.metric, expected)
    del b


def _network_gradient(net, z, target):
    net.zero_grad()
    ((net(z) - target) ** 2).mean().backward()
    return net.KQ.grad.clone()


def test_extended_manifold_is_fixed_by_the_symmetries_of_the_task():
    """At a point of the extended manifold, the network gradient on prompts transformed by a
    coordinate sign flip, or a permutation inside a block, is the transformed gradient: the
    expected gradient is symmetric, so its part off the manifold vanishes (the manifold is
    invariant under the population flow). Off the manifold the identity fails."""
    b = prompts(40)
    man = rs.extended_manifold(D, LAYERS, HEADS)
    net = LinearAttentionStack(TransformerShape(D, LAYERS, HEADS))
    net.load(man.lift(random_extended_state(man)))
    z = tokens(b)
    channels = D + HEADS + 1
    flip = torch.ones(channels, dtype=torch.float64)
    flip[1] = -1.0  # coordinate 1 changes sign
    swap = torch.arange(channels)
    swap[[0, 2]] = swap[[2, 0]]  # coordinates 0 and 2, both in block C_0
    assert rs.blocks(D, HEADS)[0][:2] == [0, 2]

    def flipped(w):
        return w * flip[:, None] * flip[None, :]

    def swapped(w):
        return w[..., swap, :][..., swap]

    z_flip, z_swap = z.clone(), z[..., torch.cat([swap[:D], torch.tensor([D])])]
    z_flip[..., 1] = -z[..., 1]
    base = _network_gradient(net, z, b.yq)
    torch.testing.assert_close(_network_gradient(net, z_flip, b.yq), flipped(base),
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(_network_gradient(net, z_swap, b.yq), swapped(base),
                               rtol=1e-10, atol=1e-12)
    # off the manifold (one off-diagonal KQ entry) the sign-flip identity fails
    with torch.no_grad():
        net.KQ[0, 0, 0, 1] += 0.3
    base = _network_gradient(net, z, b.yq)
    assert (_network_gradient(net, z_flip, b.yq) - flipped(base)).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["pto_fixed", "pto_split"])
def test_a_stack_with_one_head_per_coordinate_computes_the_fixed_step_pto(name):
    """Layer 1: d heads, head h has KQ = e_h e_h^T and writes u_h = r_h x_h; k later layers
    step on (x, u) with KQ = diag(eta_x I, eta_u I) (eta_x = 0 for pto_fixed)."""
    b, k = prompts(50), 3
    eta_x, eta_u = (0.0, 0.4) if name == "pto_fixed" else (0.2, 0.3)
    man = rs.extended_manifold(D, k + 1, D)
    state = {"alpha": np.eye(D), "eta_x": np.full((k, D), eta_x),
             "eta_u": eta_u * np.broadcast_to(np.eye(D), (k, D, D))}
    lifted = man.lift(man.pack(state))
    direct = rs.per_coordinate_weights(D, k + 1, eta_x, eta_u)
    for weight in ("KQ", "OV"):  # the direct form is the lift at that point
        torch.testing.assert_close(direct[weight], lifted[weight], rtol=0, atol=0)
    net = LinearAttentionStack(TransformerShape(D, k + 1, D))
    net.load(direct)
    beta_hat = (est.pto_fixed(b.x, b.y, eta_u, k) if name == "pto_fixed"
                else est.pto_split(b.x, b.y, eta_x, eta_u, k))
    torch.testing.assert_close(net(tokens(b)), (b.xq * beta_hat).sum(-1), rtol=0, atol=1e-12)


def test_pto_fixed_is_gd_on_the_reweighted_data():
    """Independent ground truth: k GD steps of size eta on x -> r * x, mapped back by r."""
    b, k, eta = prompts(40), 4, 0.3
    r = est.moments(b.x, b.y)[1]
    expected = r * est.gd(b.x * r[:, None, :], b.y, eta, k)
    torch.testing.assert_close(est.pto_fixed(b.x, b.y, eta, k), expected, rtol=1e-12, atol=1e-13)


def test_the_lifted_alpha_eta_stack_computes_pto_reduced():
    b, alpha, eta = prompts(50), 0.6, 0.2
    man = rs.manifold(D, LAYERS, HEADS)
    net = LinearAttentionStack(TransformerShape(D, LAYERS, HEADS))
    net.load(man.lift(man.pack(rs.start_state(HEADS, LAYERS, alpha, eta))))
    beta_hat = est.pto_reduced(b.x, b.y, alpha, eta, LAYERS - 1, HEADS)
    torch.testing.assert_close(net(tokens(b)), (b.xq * beta_hat).sum(-1), rtol=0, atol=1e-12)
    # with one head per coordinate it is pto_split at eta_x = eta, eta_u = eta alpha^2
    torch.testing.assert_close(est.pto_reduced(b.x, b.y, alpha, eta, 3, D),
                               est.pto_split(b.x, b.y, eta, eta * alpha**2, 3),
                               rtol=1e-12, atol=1e-13)
