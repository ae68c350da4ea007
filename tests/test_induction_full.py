"""The full induction model, its projection, the schedules and SGD's growth of |C|."""

from functools import partial

import numpy as np
import pytest
import torch

from reduced_models import induction as theory
from reduced_models.markov import candidate_sets
from reduced_models.markov_chains import make_dataset
from sims.induction.full_network import FullInductionNet, position_law, project_full
from sims.induction.network import SimplifiedInductionNet, project
from sims.induction.training import Stage, flow_segments, train_schedule

V, M, H, D = 3, 3, 3, 2
SETS = candidate_sets(H, D)
SHAPE = theory.InductionShape(vocab=V, window=M, heads=H, degree=D)
MAN = theory.manifold(shape=SHAPE)


def start(w_plus=3.0, w_minus=0.1, c=0.01, a=0.01):
    return theory.standard_start(shape=SHAPE, w_plus=w_plus, w_minus=w_minus, c_init=c,
                                 a_init=a)


@pytest.fixture(scope="module")
def sample():
    return make_dataset(300, V, (1, 2), 0.1, 60, torch.Generator().manual_seed(5))


def test_full_network_equals_its_window_count_form():
    gen = torch.Generator().manual_seed(3)
    data = make_dataset(40, V, (1, 2), 0.2, 15, gen)
    net = FullInductionNet(shape=SHAPE)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    direct = net(data.inputs(torch.float64))
    counts = theory.WindowCounts.from_tokens(data.tokens, M, V)
    assert torch.allclose(direct, net.predict_counts(counts), atol=1e-14)
    assert torch.allclose(direct.sum(-1), torch.ones(40, dtype=torch.float64))


def test_projection_at_the_start_is_the_simplified_state(sample):
    """Q K = 0, OV = I, LayerNorm mapping one-hot rows to themselves: the projection reads the
    RPE logits, p and a themselves; with sharp copiers the logits of every pair of full
    windows are the simplified network's."""
    counts = theory.WindowCounts.from_tokens(sample.tokens, M, V)
    law = position_law(counts)
    assert float(law.sum()) == pytest.approx(1.0, abs=1e-14)
    for point in (start(), start(w_plus=40.0, w_minus=0.0, c=0.3, a=2.0)):
        weights = {k: torch.as_tensor(v) for k, v in point.items()}
        full = FullInductionNet(shape=SHAPE)
        full.start(weights, 0.0, torch.Generator())
        simple = SimplifiedInductionNet(shape=SHAPE)
        simple.load(weights)
        with torch.no_grad():
            obs, ref = project_full(full, law), project(simple.weights())
            for name in ("w", "p", "a", "c_norm"):
                assert torch.allclose(obs[name], ref[name], rtol=1e-10, atol=1e-12)
    full_windows = (theory.pattern_symbols(M, V) < V).all(-1)
    with torch.no_grad():
        table = full.logit_table()
        reference = theory.logit_table(simple.w[None], project(simple.weights())["p"][None],
                                       simple.a, simple.inputs, SETS)[0]
    keep = full_windows[:, None] & full_windows[None, :]
    assert torch.allclose(table[keep], reference[keep][:, None].expand(-1, V), atol=1e-10)


def test_sequential_stages_freeze_the_other_blocks(sample):
    """Each stage moves its own block only, exactly, for the networks and for a flow."""
    counts = theory.WindowCounts.from_tokens(sample.tokens, M, V)
    stages = [Stage("selector", ("selector",), 0.5, 2.0), Stage("copier", ("copier",), 50.0, 500.0),
              Stage("classifier", ("classifier",), 1.0, 5.0)]
    weights = {k: torch.as_tensor(v) for k, v in start().items()}
    law = position_law(counts)
    gen = torch.Generator().manual_seed(1)
    simple, full = SimplifiedInductionNet(shape=SHAPE), FullInductionNet(shape=SHAPE)
    simple.load(weights)
    full.start(weights, 0.1, gen)
    readers = {simple: lambda: project(simple.weights()), full: lambda: project_full(full, law)}
    for net, read in readers.items():
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        traj = train_schedule(net, stages, 4, partial(net.loss, counts, "ce"),
                              lambda read=read: {k: v.detach().numpy() for k, v in read().items()},
                              lambda net=net: float(net.loss(counts, "ce")))
        assert traj.t[-1] == pytest.approx(507.0) and traj.step[-1] == 4 + 10 + 5
        assert np.all(np.diff(traj.t) > 0)
        ends = [np.flatnonzero(np.isclose(traj.t, x))[0] for x in (0.0, 2.0, 502.0, 507.0)]
        p, w, a = traj.params["p"], traj.params["w"], traj.params["a"]
        assert np.array_equal(w[: ends[1] + 1], np.repeat(w[:1], ends[1] + 1, 0))
        # the full model's a also reads OV (a copier parameter) and, through the LayerNorm's
        # eps, p: frozen in the selector stage up to 1e-12
        if isinstance(net, FullInductionNet):
            assert np.allclose(a[: ends[1] + 1], a[0], rtol=1e-10, atol=0)
        else:
            assert np.all(a[: ends[2] + 1] == a[0])
        assert np.all(p[ends[1]:] == p[ends[1]])
        assert np.array_equal(w[ends[2]:], np.repeat(w[ends[2]:ends[2] + 1], len(w) - ends[2], 0))
        moved = {n for n, p0 in before.items() if not torch.equal(p0, net.get_parameter(n))}
        assert moved == set(before)
    model = theory.population_model(counts, shape=SHAPE)
    grids, masks = flow_segments(stages, MAN, 4)
    flow = theory.integrate_log_selector(model, MAN.pack(start()), grids, project, active=masks,
                                         rtol=1e-7, atol=1e-10)
    cut = np.flatnonzero(np.isclose(flow.t, 2.0))[0]
    assert np.array_equal(flow.params["w"][: cut + 1], np.repeat(flow.params["w"][:1], cut + 1, 0))
    assert np.allclose(flow.params["p"][cut:], flow.params["p"][cut], rtol=1e-14, atol=1e-16)
    assert flow.params["p"][cut, 3] > 0.9


def test_sgd_step_grows_c_by_exactly_the_squared_step(sample):
    """The loss depends on C only through p: every gradient is orthogonal to C, and a step
    adds lr^2 |grad_C|^2 to |C|^2. The per-sequence gradients average to the population one."""
    counts = theory.WindowCounts.from_tokens(sample.tokens, M, V)
    net = SimplifiedInductionNet(shape=SHAPE)
    net.load({k: torch.as_tensor(v) for k, v in start(w_plus=2.0, c=0.02, a=1.5).items()})
    net.loss(counts, "ce").backward()
    grad = net.C.grad.clone()
    C = net.C.detach()
    assert abs(float(grad @ C)) < 1e-14 * float(grad.norm() * C.norm())
    before = float((net.C.detach() ** 2).sum())
    lr = 0.3
    with torch.no_grad():
        net.C -= lr * grad
    after = float((net.C.detach() ** 2).sum())
    assert after - before == pytest.approx(lr**2 * float(grad @ grad), rel=1e-12)
    drift = theory.SgdSelectorDrift(counts, shape=SHAPE, variant="ce", lr=lr, batch=64)
    state = MAN.pack(start(w_plus=2.0, c=0.02, a=1.5))[None]
    per_sequence, _ = drift.per_sequence_gradients(state)
    population = theory.population_model(counts, shape=SHAPE).gradient(state, {})
    assert torch.allclose(per_sequence.mean(1)[0], population[0, H * M: H * M + len(SETS)],
                          rtol=1e-10, atol=1e-15)


def test_selector_speed_scales_as_one_over_c_squared(sample):
    """Scaling C scales d log(p_S*/p_S)/dt by 1/|C|^2 (p, w and a unchanged): exact."""
    counts = theory.WindowCounts.from_tokens(sample.tokens, M, V)
    rhs = theory.population_model(counts, shape=SHAPE).rhs({})
    c = slice(H * M, H * M + len(SETS))
    rates = []
    for scale in (1.0, 3.0):
        x = MAN.pack(start(w_plus=2.0, c=0.02 * scale, a=1.5))[None]
        dlog = rhs(x)[0, c] / x[0, c]
        rates.append(dlog[3] - dlog)
    assert torch.allclose(rates[1] * 9, rates[0], rtol=1e-12, atol=1e-14)
