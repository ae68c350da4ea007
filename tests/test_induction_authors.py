"""The authors' architecture options, keyword-only shapes and the soft-copier symbolic model."""

import numpy as np
import pytest
import torch

from reduced_models import induction as theory
from reduced_models.markov_chains import make_dataset
from sims.experiment import seeds
from sims.induction.experiment import copier_error
from sims.induction.network import SimplifiedInductionNet, project
from sims.registry import get

V, M, H, D = 3, 3, 3, 2


@pytest.fixture(scope="module")
def sample():
    return make_dataset(400, V, (1, 2), 0.1, 100, torch.Generator().manual_seed(21))


def random_net(shape, seed):
    net = SimplifiedInductionNet(shape=shape)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return net


def test_shapes_are_keyword_only_and_a_swap_is_caught():
    with pytest.raises(TypeError):
        theory.InductionShape(4, 3, 2, 1)
    shape = theory.InductionShape(vocab=4, window=3, heads=2, degree=1)
    with pytest.raises(TypeError):
        SimplifiedInductionNet(shape)
    with pytest.raises(TypeError):
        theory.population_model(None, shape)
    # vocab 4 != window 3 != heads 2: a swapped size shows in every shape
    net = SimplifiedInductionNet(shape=shape)
    assert net.w.shape == (2, 3) and net.C.shape == (2,)
    assert shape.copier_inputs().shape == (2, 5**3, 3, 4)
    data = make_dataset(7, 4, (1,), 0.5, 12, torch.Generator().manual_seed(1))
    assert net(data.inputs(torch.float64)).shape == (7, 4)
    assert theory.manifold(shape=shape).dim == 2 * 3 + 2 + 1


def test_authors_options_network_equals_its_window_count_form():
    shape = theory.InductionShape(vocab=V, window=M, heads=H, degree=D, empty_set=True,
                                  shifted=True)
    assert shape.span == H + M - 1 and shape.sets[0] == () and len(shape.sets) == 7
    data = make_dataset(30, V, (1, 2), 0.2, 20, torch.Generator().manual_seed(4))
    net = random_net(shape, 5)
    counts = theory.WindowCounts.from_tokens(data.tokens, shape.span, V)
    direct = net(data.inputs(torch.float64))
    assert torch.allclose(direct, net.predict_counts(counts), atol=1e-14)


def test_empty_set_only_rescales_the_classifier():
    """The empty set's kernel term is a constant: the network with it equals the one without
    it at a (1 - p_empty) (planted: same C on the other sets)."""
    with_empty = theory.InductionShape(vocab=V, window=M, heads=H, degree=D, empty_set=True)
    without = theory.InductionShape(vocab=V, window=M, heads=H, degree=D)
    data = make_dataset(25, V, (1, 2), 0.2, 30, torch.Generator().manual_seed(6))
    net = random_net(with_empty, 7)
    p_empty = float(project(net.weights())["p"][0].detach())
    plain = SimplifiedInductionNet(shape=without)
    with torch.no_grad():
        plain.w.copy_(net.w)
        plain.C.copy_(net.C[1:])
        plain.a.copy_(net.a * (1 - p_empty))
    inputs = data.inputs(torch.float64)
    assert 0.01 < p_empty < 0.99
    assert torch.allclose(net(inputs), plain(inputs), atol=1e-14)


def test_shifted_heads_read_their_own_offsets():
    """Head h with shifted offsets is the unshifted head over offsets 1..H+M-1 whose logits
    outside h..h+M-1 are -inf (an independent construction of the same offsets)."""
    shifted = theory.InductionShape(vocab=V, window=2, heads=3, degree=2, shifted=True)
    wide = theory.InductionShape(vocab=V, window=4, heads=3, degree=2)
    data = make_dataset(20, V, (1, 2), 0.2, 25, torch.Generator().manual_seed(8))
    net = random_net(shifted, 9)
    reference = SimplifiedInductionNet(shape=wide)
    w = torch.full((3, 4), -1e4, dtype=torch.float64)
    for h in range(3):
        w[h, h:h + 2] = net.w[h].detach()
    with torch.no_grad():
        reference.w.copy_(w)
        reference.C.copy_(net.C)
        reference.a.copy_(net.a)
    inputs = data.inputs(torch.float64)
    assert torch.allclose(net(inputs), reference(inputs), atol=1e-14)
    start = theory.standard_start(shape=shifted, w_plus=3.0, w_minus=0.1, c_init=0.01,
                                  a_init=0.01)
    assert np.array_equal(start["w"][:, 0], [3.0, 3.0, 3.0])      # own offset h = first logit


@pytest.mark.parametrize("options", [{}, {"empty_set": True, "shifted": True}])
def test_symbolic_gradient_matches_population_at_the_authors_start(sample, options):
    """At w_plus = 3 (soft copiers) the symbolic model's gradient in w, C and a equals the
    population loss's (autograd of the network) up to O(a): the gap shrinks tenfold with a."""
    shape = theory.InductionShape(vocab=V, window=M, heads=H, degree=D, **options)
    counts = theory.WindowCounts.from_tokens(sample.tokens, shape.span, V)
    ode, _ = theory.three_stage_model(sample.tokens, shape=shape, s_star=(1, 2))
    pop = theory.population_model(counts, shape=shape)
    man = theory.manifold(shape=shape)
    gaps = []
    for a in (1e-3, 1e-2):
        x = man.pack(theory.standard_start(shape=shape, w_plus=3.0, w_minus=0.1, c_init=0.01,
                                           a_init=a))[None]
        g_pop, g_ode = (man.unpack(m.gradient(x, {})[0]) for m in (pop, ode))
        gaps.append(max(float((g_pop[k] - g_ode[k]).norm() / g_pop[k].norm())
                        for k in ("w", "C", "a")))
    assert gaps[0] < 3e-3
    assert gaps[0] < 0.15 * gaps[1]


def test_copier_error_of_planted_moves():
    from dynamics.trajectory import Trajectory

    def traj(move):
        w = np.zeros((2, 3, 3))
        w[1] = move
        return Trajectory(kind="ode", t=np.array([0.0, 1.0]), loss=np.zeros(2),
                          params={"w": w}, status="complete")

    pop = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [5.0, 5.0, 5.0]])
    ode = pop.copy()
    ode[0, 0], ode[1] = 0.8, [0.0, 2.0, 1.0]
    errors = copier_error(traj(ode), traj(pop), (1, 2))
    assert errors == pytest.approx({"1": 0.2, "2": 0.5}, rel=1e-12)


def test_full_batch_steps_are_exact_gradient_descent():
    exp = get("induction")
    config = exp.schema.resolve({"train_size": 40, "full_batch": True, "lr": 0.5,
                                 "t_max": 1.5, "L": 30, "samples": 60, "mi_chains": 20,
                                 "test_samples": 0, "records": 3, "corrected": False,
                                 "empty_set": True, "shifted": True, "window": 2})
    exp.validate(config)
    result = exp.run(config, ode=False)
    traj = result.trajectories["sgd"]
    shape = theory.InductionShape(vocab=3, window=2, heads=3, degree=2, empty_set=True,
                                  shifted=True)
    fixed = make_dataset(40, 3, (1, 2), 0.1, 30,
                         torch.Generator().manual_seed(seeds(0, 5)[1])).tokens
    counts = theory.WindowCounts.from_tokens(fixed, shape.span, 3)
    net = SimplifiedInductionNet(shape=shape)
    net.load(theory.manifold(shape=shape).lift(theory.manifold(shape=shape).pack(
        theory.standard_start(shape=shape, w_plus=3.0, w_minus=0.1, c_init=0.01,
                              a_init=0.01))))
    for _ in range(3):
        grads = torch.autograd.grad(net.loss(counts, "ce"), list(net.parameters()))
        with torch.no_grad():
            for p, g in zip(net.parameters(), grads):
                p -= 0.5 * g
    final = {k: v.detach().numpy() for k, v in project(net.weights()).items()}
    assert traj.step[-1] == 3
    for name in ("w", "p", "a"):
        assert np.allclose(traj.params[name][-1], final[name], rtol=1e-12, atol=1e-14)


# The authors' public code (gszfwsb/Unveiling-Induction-Heads, RPE/train_simplified.py with
# their README's arguments: --n-gram 3 --w-plus 3 --c-alpha 0.01 --lr 1 --train-cmd CWa
# --low-degree 2, 10000 sequences of which 9000 train, full batch), run on CPU for 60
# epochs: p_S*, |C| / |C(0)| and a after steps 0..6 (docs/induction.md).
AUTHORS_P_STAR = [0.1429, 0.2647, 0.443, 0.668, 0.8572, 0.8996, 0.9374]
AUTHORS_C_GROWTH = [1.0, 1.2041, 2.4914, 6.0736, 6.5706, 6.6059, 6.6291]
AUTHORS_A = [0.01, 0.06508, 0.1299, 0.1747, 0.23676, 0.31435, 0.3932]


def test_authors_readme_run_step_by_step():
    """The same configuration with the three options on, on the engine's own 9000 sequences:
    the first six full-batch GD steps follow the authors' code (largest gaps measured: p_S*
    1.5%, |C| 0.6%, a 0.2%; the two runs draw different sequences)."""
    exp = get("induction")
    config = exp.schema.resolve({
        "vocab": 3, "L": 100, "heads": 3, "window": 3, "degree": 2, "parents": [1, 2],
        "w_plus": 3.0, "w_minus": 0.1, "c_init": 0.01, "a_init": 0.01, "lr": 1.0,
        "t_max": 6.0, "loss": "logsoftmax", "train_size": 9000, "full_batch": True,
        "empty_set": True, "shifted": True, "records": 60, "samples": 200, "mi_chains": 20,
        "test_samples": 0, "corrected": False})
    exp.validate(config)
    result = exp.run(config, ode=False)
    traj = result.trajectories["sgd"]
    assert traj.step.tolist() == list(range(7))
    star = result.summary["p_labels"].index("1,2")
    p = traj.params["p"][:, star]
    growth = traj.params["c_norm"] / traj.params["c_norm"][0]
    assert np.allclose(p, AUTHORS_P_STAR, rtol=0.05)
    assert np.allclose(growth, AUTHORS_C_GROWTH, rtol=0.05)
    assert np.allclose(traj.params["a"], AUTHORS_A, rtol=0.02)
