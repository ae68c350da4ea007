"""The induction-head system: network vs window counts, reduced flows, the symbolic model."""

import numpy as np
import pytest
import torch

from reduced_models import induction as theory
from reduced_models.base import integrate_flow
from reduced_models.markov import candidate_sets
from reduced_models.markov_chains import make_dataset
from sims.induction.network import SimplifiedInductionNet, project

V, M, H, D = 3, 3, 3, 2
SETS = candidate_sets(H, D)
SHAPE = theory.InductionShape(vocab=V, window=M, heads=H, degree=D)


@pytest.fixture(scope="module")
def sample():
    return make_dataset(600, V, (1, 2), 0.1, 100, torch.Generator().manual_seed(11))


def start(w_plus=3.0, w_minus=0.1, c=0.01, a=0.01):
    man = theory.manifold(shape=SHAPE)
    return man.pack(theory.standard_start(shape=SHAPE, w_plus=w_plus, w_minus=w_minus,
                                          c_init=c, a_init=a))


def test_network_equals_its_window_count_form_and_the_lift():
    gen = torch.Generator().manual_seed(3)
    data = make_dataset(40, V, (1, 2), 0.2, 15, gen)
    man = theory.manifold(shape=SHAPE)
    state = torch.randn(man.dim, generator=gen, dtype=torch.float64)
    net = SimplifiedInductionNet(shape=SHAPE)
    net.load(man.lift(state))
    direct = net(data.inputs(torch.float64))
    counts = theory.WindowCounts.from_tokens(data.tokens, M, V)
    assert torch.allclose(direct, net.predict_counts(counts), atol=1e-14)
    assert torch.allclose(direct.sum(-1), torch.ones(40, dtype=torch.float64))
    # the one observable function, on the network and on the reduced model's observables
    model = theory.population_model(counts, shape=SHAPE)
    obs, proj = model.observe(state[None]), project(net.weights())
    for name in ("w", "p", "a"):
        assert torch.allclose(obs[name][0], proj[name], atol=1e-14)
    assert np.array_equal(man.metric, np.eye(man.dim))


def test_prediction_over_visited_patterns_is_the_softmax_over_all_patterns(sample):
    """WindowCounts.predict (packed to the patterns each sequence visits) against the
    softmax over every pattern, values and gradients, for random logit tables."""
    counts = theory.WindowCounts.from_tokens(sample.tokens, M, V)
    assert counts.visited[0].shape[1] < counts.log_visits.shape[1]
    table = torch.randn((2, *counts.log_visits.shape[1:2] * 2), dtype=torch.float64,
                        generator=torch.Generator().manual_seed(5), requires_grad=True)
    weights = torch.softmax(table[:, counts.query, :] + counts.log_visits, -1)
    dense = torch.einsum("bnp,npe->bne", weights, counts.ratio)
    packed = counts.predict(table)
    torch.testing.assert_close(packed, dense, rtol=0, atol=1e-14)
    grads = [torch.autograd.grad(counts.loss(y, "ce").sum(), table)[0] for y in (packed, dense)]
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-14)


def test_population_loss_is_the_network_loss(sample):
    counts = theory.WindowCounts.from_tokens(sample.tokens, M, V)
    state = start(w_plus=2.0, a=1.5)
    net = SimplifiedInductionNet(shape=SHAPE)
    net.load(theory.manifold(shape=SHAPE).lift(state))
    with torch.no_grad():
        y = net(sample.inputs(torch.float64))
    seen = counts.target_seen
    direct = -y[seen].gather(1, sample.tokens[seen, -1:]).log().mean()
    for variant, reference in [("ce", direct),
                               ("logsoftmax", -torch.log_softmax(y, -1).gather(
                                   1, sample.tokens[:, -1:]).mean())]:
        model = theory.population_model(counts, shape=SHAPE, variant=variant)
        loss = float(model.loss(state[None], {})[0])
        assert loss == pytest.approx(float(reference), rel=1e-12)


def test_symbolic_rhs_matches_population_gradient_to_first_order_in_a(sample):
    """Sharp copiers, small a: the gap is O(a) (it shrinks tenfold with a)."""
    ode, _ = theory.three_stage_model(sample.tokens, shape=SHAPE, s_star=(1, 2))
    pop = theory.population_model(theory.WindowCounts.from_tokens(sample.tokens, M, V),
                                  shape=SHAPE)
    gaps = []
    for a in (1e-3, 1e-2):
        x = start(w_plus=40.0, w_minus=0.0, a=a)[None]
        g_pop, g_ode = pop.gradient(x, {})[0], ode.gradient(x, {})[0]
        c = slice(H * M, H * M + len(SETS))
        gaps.append(max(float((g_pop[c] - g_ode[c]).abs().max() / g_pop[c].abs().max()),
                        float(abs(g_pop[-1] / g_ode[-1] - 1))))
    assert gaps[0] < 2e-3
    assert gaps[0] < 0.15 * gaps[1]


def test_symbolic_gains_approach_the_chi2_information(sample):
    """Sharp gains G(T) at L = 100 against I(T) of the same chains (finite-L gap a few %)."""
    from reduced_models.markov import chi2_table, set_label

    _, parts = theory.three_stage_model(sample.tokens, shape=SHAPE, s_star=(1, 2))
    table = chi2_table(sample.kernels[:300], (1, 2), M, D)
    for offsets, gain in parts.gains.items():
        mi = table[set_label(offsets)].mean()
        assert abs(gain / mi - 1) < 0.15
    best = max(parts.gains, key=parts.gains.get)
    assert best == (1, 2) and parts.d_star == pytest.approx(parts.gains[(1, 2)], rel=0.05)


def test_log_selector_chart_is_the_same_flow(sample):
    counts = theory.WindowCounts.from_tokens(sample.tokens[:200], M, V)
    model = theory.population_model(counts, shape=SHAPE)
    t = np.linspace(0.0, 0.3, 7)
    plain = integrate_flow(model, start(), t, {}, project, rtol=1e-9, atol=1e-12)[0]
    chart = theory.integrate_log_selector(model, start(), t, project, rtol=1e-9, atol=1e-12)
    for name in ("w", "p", "a"):
        assert np.allclose(plain.params[name], chart.params[name], rtol=1e-6, atol=1e-10)
    # gradient flow conserves |C|: the loss depends on C only through p
    assert np.allclose(chart.params["c_norm"], chart.params["c_norm"][0], rtol=1e-6)
