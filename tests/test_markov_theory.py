"""Theory of induction heads on Markov chains (reduced_models/markov.py, docs/theory/induction.md)."""

import itertools
import math

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from reduced_models.markov import (
    best_set,
    candidate_sets,
    chi2_mutual_information,
    chi2_table,
    chi2_tables,
    expected_chi2_mi,
    expected_chi2_mis,
    gih_counts,
    gih_loss,
    gih_optimal_a,
    gih_predict,
    next_token_joint,
    set_label,
    window_law,
)
from reduced_models.markov_chains import make_dataset, sample_kernels, sample_sequences


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def first_order(matrix) -> torch.Tensor:
    """Kernel (vocab, vocab) of a first-order chain, parents (1,)."""
    return torch.tensor(matrix, dtype=torch.float64)


def push_one_step(law: np.ndarray, kernel: np.ndarray, parents, vocab: int) -> np.ndarray:
    """Law of (x_2..x_{r+1}) from the law of (x_1..x_r), by explicit enumeration."""
    r = law.ndim
    pushed = np.zeros_like(law)
    for window in itertools.product(range(vocab), repeat=r):
        row = 0
        for p in parents:
            row = row * vocab + window[r - p]
        for e in range(vocab):
            pushed[window[1:] + (e,)] += law[window] * kernel[row, e]
    return pushed


# ------------------------------------------------------------ stationary law


@pytest.mark.parametrize("parents, window", [((1, 2), 3), ((1, 3), 2), ((2,), 4)])
def test_window_law_is_invariant(parents, window):
    vocab = 3
    for kernel in sample_kernels(20, vocab, len(parents), 0.1, gen(20)):
        law = window_law(kernel, parents, window)
        assert law.shape == (vocab,) * max(window, max(parents)) and law.dtype == torch.float64
        assert (law >= 0).all() and abs(float(law.sum()) - 1) < 1e-12
        pushed = push_one_step(law.numpy(), kernel.numpy(), parents, vocab)
        np.testing.assert_allclose(pushed, law.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("a, b", [(0.3, 0.6), (0.9, 0.05), (1e-7, 3e-7), (1e-13, 4e-12)])
def test_two_state_chain_closed_form(a, b):
    law = window_law(first_order([[1 - a, a], [b, 1 - b]]), (1,), 1)
    np.testing.assert_allclose(law.numpy(), [b / (a + b), a / (a + b)], rtol=1e-12)


def test_nearly_reducible_chain_solved_where_power_iteration_is_not():
    a, b = 1e-6, 3e-6
    matrix = np.array([[1 - a, a], [b, 1 - b]])
    exact = np.array([b, a]) / (a + b)
    power = np.full(2, 0.5)
    for _ in range(1000):
        power = power @ matrix
    assert np.abs(power - exact).max() > 0.2
    np.testing.assert_allclose(window_law(torch.tensor(matrix), (1,), 1).numpy(), exact, rtol=1e-12)


def test_periodic_chain_gets_its_unique_law():
    cycle = first_order([[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    np.testing.assert_allclose(window_law(cycle, (1,), 1).numpy(), np.full(3, 1 / 3), rtol=1e-14)


def test_reducible_chain_gives_cesaro_limit_from_uniform_start():
    # Closed classes {0, 1} (law (2/3, 1/3)) and {2}; state 3 is transient and
    # splits evenly. From uniform: P({0,1}) = 1/2 + 1/8 = 5/8, P({2}) = 3/8.
    kernel = first_order([[0.7, 0.3, 0, 0], [0.6, 0.4, 0, 0], [0, 0, 1, 0], [0.5, 0, 0.5, 0]])
    law = window_law(kernel, (1,), 1).numpy()
    np.testing.assert_allclose(law, [5 / 12, 5 / 24, 3 / 8, 0], rtol=1e-14, atol=1e-16)


def test_window_law_matches_simulated_windows():
    vocab, parents, n = 3, (1, 2), 20000
    kernel = sample_kernels(1, vocab, 2, 1.0, gen(21))[0]
    tokens = sample_sequences(kernel.expand(n, 9, vocab), parents, 60, gen(22))
    # One window per sequence after burn-in: independent samples of the stationary law.
    last = tokens[:, -3:]
    freq = torch.bincount(last[:, 0] * 9 + last[:, 1] * 3 + last[:, 2], minlength=27).double() / n
    law = window_law(kernel, parents, 3).reshape(-1)
    stderr = (law * (1 - law) / n).sqrt()
    assert ((freq - law).abs() < 4 * stderr).all(), (freq, law)


# ---------------------------------------------------- chi-square information


def test_candidate_sets_and_labels():
    assert candidate_sets(3, 2) == [(1,), (2,), (3,), (1, 2), (1, 3), (2, 3)]
    assert len(candidate_sets(4, 4)) == 15
    assert set_label((1, 2)) == "1,2" and set_label((3,)) == "3"


def test_iid_tokens_carry_no_information():
    q = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)
    kernel = q.expand(9, 3)
    for s in candidate_sets(3, 3):
        for modified in (True, False):
            assert abs(chi2_mutual_information(kernel, (1, 2), s, 3, modified)) < 1e-14


def test_permutation_cycle_by_hand():
    # x_{t+1} = sigma(x_t), sigma a 3-cycle: uniform law, the next token is a function
    # of any history, mu(e|z) = 1 on one e: I = sum_z mu(z)^q (3 - 1) over the 3
    # histories of probability 1/3: 2/3 (modified, q = 2), 2 (standard).
    cycle = first_order([[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    for s in candidate_sets(3, 3):
        assert chi2_mutual_information(cycle, (1,), s, 3, True) == pytest.approx(2 / 3, rel=1e-13)
        assert chi2_mutual_information(cycle, (1,), s, 3, False) == pytest.approx(2, rel=1e-13)


def test_symmetric_two_state_chain_by_hand():
    # P = [[0.8, 0.2], [0.2, 0.8]], mu = (1/2, 1/2), sum_e P(z,e)^2 / mu(e) - 1 = 0.36;
    # two steps: P^2 = [[0.68, 0.32], [0.32, 0.68]] gives 0.1296. The pair
    # (x_{t-1}, x_{t-2}) has probabilities 0.4, 0.4, 0.1, 0.1 (sum of squares 0.34).
    kernel = first_order([[0.8, 0.2], [0.2, 0.8]])
    expected = {
        (1,): (0.25 * 2 * 0.36, 0.36),
        (2,): (0.25 * 2 * 0.1296, 0.1296),
        (1, 2): (0.34 * 0.36, 0.36),
    }
    for s, (modified, standard) in expected.items():
        assert chi2_mutual_information(kernel, (1,), s, 2, True) == pytest.approx(
            modified, rel=1e-12
        )
        assert chi2_mutual_information(kernel, (1,), s, 2, False) == pytest.approx(
            standard, rel=1e-12
        )


def test_joint_law_convention():
    # Last axis is the next token; the axis of offset s is r - s.
    kernel = sample_kernels(1, 3, 2, 0.5, gen(23))[0]
    joint = next_token_joint(kernel, (1, 2), 3)
    assert joint.shape == (3, 3, 3, 3)
    conditional = joint / joint.sum(-1, keepdim=True)
    for x3, x2, x1 in itertools.product(range(3), repeat=3):
        torch.testing.assert_close(conditional[x3, x2, x1], kernel[3 * x1 + x2])


def paired_gap(table: dict, winner: str, other: str) -> tuple[float, float]:
    """Mean and standard error of I(winner) - I(other) over the same kernels."""
    gap = table[winner] - table[other]
    return gap.mean(), gap.std(ddof=1) / math.sqrt(len(gap))


def test_modified_criterion_selects_true_parents():
    kernels = sample_kernels(500, 3, 2, 0.1, gen(24))
    table = chi2_table(kernels, (1, 2), 3, 2, modified=True)
    for label in table:
        if label != "1,2":
            mean, stderr = paired_gap(table, "1,2", label)
            assert mean > 6 * stderr, (label, mean, stderr)


def test_standard_criterion_cannot_separate_a_superset():
    kernels = sample_kernels(300, 3, 2, 0.1, gen(25))
    standard = chi2_table(kernels, (1, 2), 3, 3, modified=False)
    # The next token is independent of x_{t-3} given its parents: equality per kernel.
    np.testing.assert_allclose(standard["1,2,3"], standard["1,2"], rtol=1e-10)
    modified = chi2_table(kernels, (1, 2), 3, 3, modified=True)
    for label in modified:
        if label != "1,2":
            mean, stderr = paired_gap(modified, "1,2", label)
            assert mean > 6 * stderr, (label, mean, stderr)


def test_expected_chi2_mi_and_best_set():
    expected = expected_chi2_mi(3, (1, 2), 0.1, 3, 2, 300, gen(26))
    assert list(expected) == [set_label(s) for s in candidate_sets(3, 2)]
    assert all(stderr > 0 for _, stderr in expected.values())
    assert best_set(expected) == (1, 2)


def test_both_criteria_from_one_pass_equal_each_alone():
    kernels = sample_kernels(40, 3, 2, 0.2, gen(27))
    both = chi2_tables(kernels, (1, 2), 3, 2, (True, False))
    for table, modified in zip(both, (True, False)):
        alone = chi2_table(kernels, (1, 2), 3, 2, modified=modified)
        assert table.keys() == alone.keys()
        assert all(np.array_equal(table[k], alone[k]) for k in table)
    assert not np.array_equal(both[0]["1"], both[1]["1"])
    pair = expected_chi2_mis(3, (1, 2), 0.1, 3, 2, 50, gen(28), (True, False))
    assert pair == [expected_chi2_mi(3, (1, 2), 0.1, 3, 2, 50, gen(28), modified=m)
                    for m in (True, False)]


# ----------------------------------------------- generalised induction head


def brute_force_predict(context: torch.Tensor, offsets, a: float, vocab: int) -> torch.Tensor:
    """Softmax over positions l = 1..L, logit a where (x_{l-s}) equals the query's history."""
    L = len(context)
    query = [int(context[L - s]) for s in offsets]
    logits = torch.zeros(L, dtype=torch.float64)
    for i in range(L):
        if all(i - s >= 0 and int(context[i - s]) == z for s, z in zip(offsets, query)):
            logits[i] = a
    weights = torch.softmax(logits, 0)
    return weights @ torch.nn.functional.one_hot(context, vocab).double()


def test_gih_predict_hand_example():
    # x_1..x_8 = 0 1 0 2 0 1 1 0, N(e) = (4, 3, 1), L = 8.
    context = torch.tensor([[0, 1, 0, 2, 0, 1, 1, 0]])
    # S* = {1}: z = x_8 = 0, followed by 1 (l = 2), 2 (l = 4), 1 (l = 6): N(z, .) = (0, 2, 1).
    # At e^a = 2: (2 (0, 2, 1) + (4, 1, 0)) / (2 * 3 + 5) = (4, 5, 2) / 11.
    y = gih_predict(context, (1,), math.log(2), 3)
    torch.testing.assert_close(y[0], torch.tensor([4, 5, 2], dtype=torch.float64) / 11)
    # S* = {1, 2}: z = (x_8, x_7) = (0, 1), matched only at l = 4: N(z, .) = (0, 0, 1).
    # At e^a = 3: (3 (0, 0, 1) + (4, 3, 0)) / (3 + 7) = (4, 3, 3) / 10.
    y = gih_predict(context, (1, 2), math.log(3), 3)
    torch.testing.assert_close(y[0], torch.tensor([4, 3, 3], dtype=torch.float64) / 10)


def test_gih_predict_matches_brute_force_softmax():
    data = make_dataset(30, 3, (1, 2), 0.1, 25, gen(27))
    context = data.tokens[:, :-1]
    a_values = torch.tensor([-2.0, 0.0, 0.7, 4.0], dtype=torch.float64)
    for offsets in [(1,), (1, 2), (2, 3), (1, 4)]:
        batched = gih_predict(context, offsets, a_values, 3)
        assert batched.shape == (4, 30, 3)
        for k, a in enumerate(a_values.tolist()):
            expected = torch.stack([brute_force_predict(c, offsets, a, 3) for c in context])
            torch.testing.assert_close(batched[k], expected, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(
                gih_predict(context, offsets, a, 3), expected, rtol=1e-12, atol=1e-14
            )


def test_gih_predict_limits():
    data = make_dataset(200, 3, (1, 2), 0.1, 50, gen(28))
    context = data.tokens[:, :-1]
    matched, counts = gih_counts(context, (1, 2), 3)
    torch.testing.assert_close(
        gih_predict(context, (1, 2), 0.0, 3), counts / 50, rtol=1e-14, atol=0
    )
    seen = matched.sum(1) > 0
    assert seen.sum() > 150
    conditional = matched[seen] / matched[seen].sum(1, keepdim=True)
    torch.testing.assert_close(
        gih_predict(context, (1, 2), 50.0, 3)[seen], conditional, rtol=0, atol=1e-12
    )
    # No match: the prediction stays the context frequency for every a.
    torch.testing.assert_close(gih_predict(context, (1, 2), 50.0, 3)[~seen], counts[~seen] / 50)


def test_gih_loss_variants_against_direct_formulas():
    data = make_dataset(300, 3, (1, 2), 0.1, 40, gen(29))
    context, target = data.tokens[:, :-1], data.tokens[:, -1]
    for a in (0.5, 3.0):
        y = gih_predict(context, (1, 2), a, 3)
        authors = torch.nn.functional.cross_entropy(y, target)
        torch.testing.assert_close(gih_loss(a, data.tokens, (1, 2), 3, "logsoftmax"), authors)
        ce = -y.gather(1, target[:, None]).log().mean()
        torch.testing.assert_close(gih_loss(a, data.tokens, (1, 2), 3, "ce"), ce)


def test_ce_optimum_is_finite_and_logsoftmax_keeps_decreasing():
    data = make_dataset(2000, 3, (1, 2), 0.1, 100, gen(30))
    tokens = data.tokens
    _, counts = gih_counts(tokens[:, :-1], (1, 2), 3)
    seen = counts.gather(1, tokens[:, -1:]).squeeze(1) > 0
    a_star = gih_optimal_a(tokens, (1, 2), 3, "ce")
    assert 1.0 < a_star < 29.0
    a = torch.tensor([a_star - 0.3, a_star, a_star + 0.3], dtype=torch.float64, requires_grad=True)
    loss = gih_loss(a, tokens[seen], (1, 2), 3, "ce")
    (slope,) = torch.autograd.grad(loss[1], a)
    assert loss[1] < loss[0] and loss[1] < loss[2]
    assert abs(float(slope[1])) < 1e-6
    # Authors' variant: strictly decreasing on a grid, optimum pushed to the bound.
    grid = torch.arange(0.0, 16.0, 0.5, dtype=torch.float64, requires_grad=True)
    authors = gih_loss(grid, tokens, (1, 2), 3, "logsoftmax")
    (slopes,) = torch.autograd.grad(authors.sum(), grid)
    assert torch.isfinite(slopes).all() and (slopes < 0).all()
    assert gih_optimal_a(tokens, (1, 2), 3, "logsoftmax", bounds=(0.0, 12.0)) > 11.99
