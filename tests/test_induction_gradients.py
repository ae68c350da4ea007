"""The induction system's closed-form gradients against autograd of the plain forward pass.

Each closed form (reduced_models/induction_kernel.py, WindowCounts.table_loss_gradient,
sequence_logit_gradients, the soft gains' slopes) is checked at random points against
torch.autograd through the definitions it replaces, on the default architecture and on
the authors' variant (empty-set term, shifted heads)."""

from functools import partial

import pytest
import sympy as sp
import torch

from reduced_models import induction as theory
from reduced_models.induction_kernel import LogitTable, logit_table
from reduced_models.markov_chains import make_dataset
from sims.induction.network import SimplifiedInductionNet, project

V = 3
SHAPES = {"default": theory.InductionShape(vocab=V, window=3, heads=3, degree=2),
          "authors": theory.InductionShape(vocab=V, window=2, heads=2, degree=2,
                                           empty_set=True, shifted=True)}
VARIANTS = ("ce", "logsoftmax")


@pytest.fixture(scope="module")
def tokens():
    return make_dataset(300, V, (1, 2), 0.1, 40, torch.Generator().manual_seed(21)).tokens


def weights(shape, batch, seed, scale=2.0):
    """Random (w, p, a): w (B, H, M), p (B, n_sets) on the simplex, a (B,)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn((batch, shape.heads, shape.window), generator=gen, dtype=torch.float64)
    p = torch.softmax(torch.randn((batch, len(shape.sets)), generator=gen,
                                  dtype=torch.float64), -1)
    a = scale * (1.0 + torch.rand(batch, generator=gen, dtype=torch.float64))
    return w, p, a


def autograd(f, *xs):
    """Gradients of f(*xs).sum() w.r.t. each x, by autograd."""
    xs = [x.detach().requires_grad_(True) for x in xs]
    return torch.autograd.grad(f(*xs).sum(), xs)


@pytest.mark.parametrize("name", SHAPES)
def test_logit_table_vjp_is_autograd(name):
    shape = SHAPES[name]
    inputs, sets = shape.copier_inputs(), shape.sets
    w, p, a = weights(shape, 2, seed=1)
    w[0, 0] = torch.tensor([30.0, -30.0, 0.0][: shape.window])  # a nearly sharp copier
    table = LogitTable(w, p, a, inputs, sets)
    P = table.table.shape[-1]
    probe = torch.randn((2, P, P), generator=torch.Generator().manual_seed(2),
                        dtype=torch.float64)
    torch.testing.assert_close(table.table, logit_table(w, p, a, inputs, sets), rtol=1e-14,
                               atol=1e-14)
    expected = autograd(lambda w, p, a: probe * logit_table(w, p, a, inputs, sets), w, p, a)
    got = table.vjp(probe)
    for key, reference in zip("wpa", expected):
        # rounding relative to the largest entry (the sharp copier's are ~1e-12)
        torch.testing.assert_close(got[key], reference, rtol=1e-12,
                                   atol=1e-13 * float(reference.abs().max()))


@pytest.mark.parametrize("variant", VARIANTS)
def test_table_loss_gradient_is_autograd(tokens, variant):
    counts = theory.WindowCounts.from_tokens(tokens, 3, V)
    P = counts.log_visits.shape[1]
    gen = torch.Generator().manual_seed(3)
    never = int(torch.isinf(counts.log_visits).all(0).nonzero()[0, 0])  # a pattern no key has
    for scale, far in ((0.1, 0.0), (5.0, 0.0), (5.0, -1000.0)):
        table = scale * torch.randn((2, P, P), generator=gen, dtype=torch.float64)
        table[..., never] = far  # rows spanning more than 600: autograd's path
        loss, grad = counts.table_loss_gradient(table, variant)
        (reference,) = autograd(lambda t: counts.table_loss(t, variant), table)
        torch.testing.assert_close(loss, counts.table_loss(table, variant), rtol=1e-13, atol=0)
        torch.testing.assert_close(grad, reference, rtol=1e-11, atol=1e-15)
        assert grad.abs().max() > 1e-4


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_network_backward_is_autograd_of_the_forward_pass(tokens, name, variant):
    """SGD's backward pass (network_loss) against autograd through the network's own
    position-by-position forward pass."""
    shape = SHAPES[name]
    counts = theory.WindowCounts.from_tokens(tokens, shape.span, V)
    net = SimplifiedInductionNet(shape=shape)
    w, p, a = weights(shape, 1, seed=4)
    net.load({"w": w[0], "C": p[0].sqrt() * 0.3, "a": a})
    batches = [counts] + ([theory.TargetCounts.from_tokens(tokens, shape.span, V)]
                          if variant == "ce" else [])
    grads = []
    for batch in batches:
        net.loss(batch, variant).backward()
        grads.append([prm.grad.clone() for prm in (net.w, net.C, net.a)])
        net.zero_grad()
    one_hot = torch.nn.functional.one_hot(tokens, V).double()
    one_hot[:, -1] = 0
    y_hat = net(one_hot)
    direct = theory.prediction_loss(y_hat, tokens[:, -1], counts.target_seen, variant)
    expected = torch.autograd.grad(direct, [net.w, net.C, net.a])
    for got in grads:
        for g, reference in zip(got, expected):
            torch.testing.assert_close(g, reference, rtol=1e-10, atol=1e-14)
    with pytest.raises(RuntimeError):  # first order only, and it says so
        obs = project(net.weights())
        loss = theory.network_loss(counts, net.w[None], obs["p"][None], obs["a"][None],
                                   net.inputs, net.sets, variant)
        (g,) = torch.autograd.grad(loss.sum(), net.w, create_graph=True)
        torch.autograd.grad(g.sum(), net.w)


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_population_gradient_is_autograd_of_its_loss(tokens, name, variant):
    shape = SHAPES[name]
    counts = theory.WindowCounts.from_tokens(tokens, shape.span, V)
    model = theory.population_model(counts, shape=shape, variant=variant)
    gen = torch.Generator().manual_seed(5)
    state = torch.randn((3, model.manifold.dim), generator=gen, dtype=torch.float64)
    (reference,) = autograd(lambda x: model.loss(x, {}), state)
    torch.testing.assert_close(model.gradient(state, {}), reference, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_logit_gradients_are_autograd_per_sequence(tokens, variant):
    counts = theory.WindowCounts.from_tokens(tokens, 3, V)
    used = counts.target_seen if variant == "ce" else torch.ones_like(counts.target_seen)
    position, log_visits, ratio = (x[used] for x in counts.visited)
    target = counts.target[used]
    gen = torch.Generator().manual_seed(6)
    logits = 3 * torch.randn((2, *position.shape), generator=gen, dtype=torch.float64)
    logits = logits + log_visits
    got = theory.sequence_logit_gradients(logits, ratio, target, variant)

    def total(x):  # sum over sequences of each one's own loss
        y_hat = (torch.softmax(x, -1)[:, :, None, :] * ratio).sum(-1)
        return theory.prediction_loss(y_hat, target, torch.ones_like(target, dtype=torch.bool),
                                      variant) * len(target)

    (reference,) = autograd(total, logits)
    finite = torch.isfinite(log_visits).expand_as(reference)
    torch.testing.assert_close(got[finite], reference[finite], rtol=1e-11, atol=1e-15)
    assert torch.all(got[~finite] == 0)


@pytest.mark.parametrize("name", SHAPES)
def test_soft_gain_slopes_are_autograd(tokens, name):
    """The symbolic model's soft-copier gains D_S(w): the slopes on floats and on tensors
    against autograd of exact_first_order_gains."""
    shape = SHAPES[name]
    counts = theory.WindowCounts.from_tokens(tokens, shape.span, V)
    omega = theory.first_order_gains_table(counts, "ce")
    inputs = shape.copier_inputs()
    copiers = theory.CopierCache(inputs)
    gen = torch.Generator().manual_seed(7)
    for heads in [s for s in shape.sets if s]:
        rows = [h - 1 for h in heads]
        fn = theory.soft_gain_function("G", omega, copiers, heads)
        w = torch.randn((2, len(heads), shape.window), generator=gen, dtype=torch.float64)
        one_set = [tuple(range(1, len(heads) + 1))]
        (reference,) = autograd(partial(theory.exact_first_order_gains, omega,
                                        inputs=inputs[rows], sets=one_set), w)
        reference = reference.reshape(2, -1)
        symbols = sp.symbols(f"x0:{w[0].numel()}")
        slopes = [type(fn(*symbols).diff(x)) for x in symbols]
        args = list(w.reshape(2, -1).unbind(-1))
        on_tensors = torch.stack([slope._imp_(*args) for slope in slopes], -1)
        torch.testing.assert_close(on_tensors, reference, rtol=1e-11, atol=1e-15)
        floats = w[0].reshape(-1).tolist()
        on_floats = [slope._imp_(*floats) for slope in slopes]
        assert all(type(x) is float for x in on_floats)
        torch.testing.assert_close(torch.tensor(on_floats, dtype=torch.float64), reference[0],
                                   rtol=1e-11, atol=1e-15)


def test_target_counts_give_the_window_counts_ce_loss_and_its_gradient(tokens):
    """SGD's lean batch statistics: the same "ce" loss as WindowCounts (sequences whose
    target is not in the context left out), its closed-form gradient against autograd."""
    counts = theory.WindowCounts.from_tokens(tokens, 3, V)
    lean = theory.TargetCounts.from_tokens(tokens, 3, V)
    assert len(lean) == int(counts.target_seen.sum()) < len(counts)
    P = counts.log_visits.shape[1]
    gen = torch.Generator().manual_seed(8)
    never = int(torch.isinf(counts.log_visits).all(0).nonzero()[0, 0])
    for scale, far in ((0.1, 0.0), (5.0, 0.0), (5.0, -1000.0)):
        table = scale * torch.randn((2, P, P), generator=gen, dtype=torch.float64)
        table[..., never] = far
        torch.testing.assert_close(lean.table_loss(table), counts.table_loss(table, "ce"),
                                   rtol=1e-13, atol=0)
        loss, grad = lean.table_loss_gradient(table)
        (reference,) = autograd(lambda t: counts.table_loss(t, "ce"), table)
        torch.testing.assert_close(loss, counts.table_loss(table, "ce"), rtol=1e-13, atol=0)
        torch.testing.assert_close(grad, reference, rtol=1e-11, atol=1e-15)
    with pytest.raises(ValueError, match="'ce' loss only"):
        lean.table_loss(table, "logsoftmax")
