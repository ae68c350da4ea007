"""The sparse-regression networks: head masking is exact, shapes, the lifted linear stack."""

import pytest
import torch

from sims.sparse.network import (
    InterleavedTransformer,
    LinearAttentionStack,
    SoftmaxTransformer,
    TransformerShape,
    channels,
    interleave,
    labels,
    tokens,
)
from sims.sparse.task import SparseBatch, sample_sparse

SHAPE = TransformerShape(d=6, layers=3, heads=3, width=12, mlp_ratio=2)


def batch(n=5, size=7, seed=0, dtype=torch.float64):
    return sample_sparse(size, n, SHAPE.d, 2, 0.1, torch.Generator().manual_seed(seed),
                         dtype=dtype)


def networks():
    torch.manual_seed(0)
    standard = SoftmaxTransformer(SHAPE).double()
    linear = LinearAttentionStack(SHAPE)
    linear.init_normal(0.3, torch.Generator().manual_seed(1))
    interleaved = InterleavedTransformer(SHAPE, max_points=10).double()
    return {"standard": standard, "linear": linear, "interleaved": interleaved}


def encoded(kind, b):
    return interleave(b) if kind == "interleaved" else tokens(b)


def remove_head(net, layer, head):
    """A copy of net with the head's value path zeroed, so it contributes exactly 0."""
    import copy

    out = copy.deepcopy(net)
    with torch.no_grad():
        if isinstance(out, LinearAttentionStack):
            out.OV[layer, head] = 0.0
        else:
            width, per = SHAPE.width, SHAPE.width // SHAPE.heads
            rows = slice(2 * width + head * per, 2 * width + (head + 1) * per)
            out.blocks[layer].qkv.weight[rows] = 0.0
            out.blocks[layer].qkv.bias[rows] = 0.0
    return out


def test_tokens_put_the_query_last_with_a_zero_label():
    b = batch()
    z = tokens(b)
    assert z.shape == (7, 6, SHAPE.d + 1)
    assert torch.equal(z[:, :5, :-1], b.x) and torch.equal(z[:, :5, -1], b.y)
    assert torch.equal(z[:, -1, :-1], b.xq) and torch.equal(z[:, -1, -1], torch.zeros(7, dtype=z.dtype))


@pytest.mark.parametrize("kind", ["standard", "linear", "interleaved"])
def test_a_mask_of_ones_is_bit_identical_to_no_mask(kind):
    net, z = networks()[kind], encoded(kind, batch())
    ones = torch.ones((SHAPE.layers, SHAPE.heads), dtype=torch.float64)
    assert torch.equal(net(z), net(z, ones))
    for a, b in zip(net.hidden(z), net.hidden(z, ones)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["standard", "linear", "interleaved"])
@pytest.mark.parametrize("layer,head", [(0, 1), (2, 0)])
def test_masking_a_head_is_removing_it_and_leaves_earlier_layers_untouched(kind, layer, head):
    net, z = networks()[kind], encoded(kind, batch())
    mask = torch.ones((SHAPE.layers, SHAPE.heads), dtype=torch.float64)
    mask[layer, head] = 0.0
    masked, full = net.hidden(z, mask), net.hidden(z)
    for a, b in zip(masked[: layer + 1], full[: layer + 1]):
        assert torch.equal(a, b)
    assert not torch.equal(masked[layer + 1], full[layer + 1])
    assert torch.equal(net(z, mask), remove_head(net, layer, head)(z))


def test_the_query_does_not_attend_to_itself():
    """Changing the query token changes only the query's own stream."""
    for net in networks().values():
        z = tokens(batch())
        other = z.clone()
        other[:, -1, :-1] += 1.0
        a, b = net.hidden(z)[-1], net.hidden(other)[-1]
        assert torch.equal(a[:, :-1], b[:, :-1]) and not torch.equal(a[:, -1], b[:, -1])


def test_networks_accept_any_context_length_and_shapes():
    nets = networks()
    for n in (1, 4, 9):
        z = tokens(batch(n=n))
        for net in nets.values():
            assert net(z).shape == (7,)
    assert nets["linear"].KQ.shape == (3, 3, channels(6, 3), channels(6, 3)) == (3, 3, 10, 10)
    with pytest.raises(ValueError, match="divisible"):
        SoftmaxTransformer(TransformerShape(6, 2, 5, 12))


def test_interleave_orders_x_then_y_tokens_with_the_label_in_its_own_channel():
    b = batch(n=4)
    z = interleave(b)
    assert z.shape == (7, 9, SHAPE.d + 1)
    assert torch.equal(z[:, 0:8:2, :-1], b.x) and not z[:, 0:8:2, -1].any()
    assert torch.equal(z[:, 1:8:2, -1], b.y) and not z[:, 1:8:2, :-1].any()
    assert torch.equal(z[:, 8, :-1], b.xq) and not z[:, 8, -1].any()
    assert torch.equal(labels(b), torch.cat([b.y, b.yq[:, None]], 1))


def test_each_interleaved_prediction_is_the_query_prediction_of_its_prefix():
    """Causality and alignment: the output at x_i equals the prediction for a prompt made of
    the i - 1 examples before it with x_i as the query."""
    net, b = networks()["interleaved"], batch(n=6)
    every = net.predict_all(interleave(b))
    assert every.shape == (7, 7)
    x_all, y_all = torch.cat([b.x, b.xq[:, None]], 1), labels(b)
    for i in range(7):
        prefix = SparseBatch(x=b.x[:, :i], y=b.y[:, :i], xq=x_all[:, i], yq=y_all[:, i],
                             beta=b.beta, support=b.support)
        torch.testing.assert_close(every[:, i], net(interleave(prefix)), rtol=1e-10,
                                   atol=1e-12)

