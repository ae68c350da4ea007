"""Sampler for n-gram Markov-chain tasks (reduced_models/markov_chains.py, docs/theory/induction.md)."""

import itertools

import torch

torch.set_num_threads(1)

from reduced_models.markov_chains import (
    MarkovDataset,
    fresh_batch,
    make_dataset,
    one_hot_inputs,
    sample_kernels,
    sample_sequences,
    targets,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_kernels_are_float64_stochastic_rows():
    kernels = sample_kernels(50, 3, 2, 0.1, gen(0))
    assert kernels.shape == (50, 9, 3) and kernels.dtype == torch.float64
    assert (kernels >= 0).all()
    torch.testing.assert_close(kernels.sum(-1), torch.ones(50, 9, dtype=torch.float64))


def test_kernel_moments_match_dirichlet():
    # Dirichlet(alpha 1_d): E p = 1/d, E p^2 = Var + 1/d^2 with Var = (1/d)(1 - 1/d)/(d alpha + 1).
    d, alpha = 3, 0.1
    p = sample_kernels(20000, d, 1, alpha, gen(1)).reshape(-1, d)
    var = (1 / d) * (1 - 1 / d) / (d * alpha + 1)
    for moment, expected in [(p, 1 / d), (p**2, var + 1 / d**2)]:
        mean = moment.mean(0)
        stderr = moment.std(0) / len(moment) ** 0.5
        assert ((mean - expected).abs() < 4 * stderr).all(), (mean, expected, stderr)


def test_tiny_alpha_never_gives_empty_rows():
    kernels = sample_kernels(200, 4, 2, 0.002, gen(2))
    assert torch.isfinite(kernels).all()
    torch.testing.assert_close(kernels.sum(-1), torch.ones(200, 16, dtype=torch.float64))


def test_sequences_shape_dtype_range():
    kernels = sample_kernels(7, 4, 2, 0.5, gen(3))
    tokens = sample_sequences(kernels, (1, 3), 25, gen(4))
    assert tokens.shape == (7, 25) and tokens.dtype == torch.int64
    assert tokens.min() >= 0 and tokens.max() < 4


def test_history_encoding_and_per_sequence_kernels():
    # Deterministic kernels: sequence 0 follows x_t = (x_{t-1} + 2 x_{t-2}) mod 3,
    # sequence 1 follows x_t = x_{t-2}; row of history (x_{t-1}, x_{t-2}) is 3 x_{t-1} + x_{t-2}.
    rules = [lambda h1, h2: (h1 + 2 * h2) % 3, lambda h1, h2: h2]
    kernels = torch.zeros(2, 9, 3, dtype=torch.float64)
    for i, rule in enumerate(rules):
        for h1, h2 in itertools.product(range(3), repeat=2):
            kernels[i, 3 * h1 + h2, rule(h1, h2)] = 1.0
    tokens = sample_sequences(kernels, (1, 2), 30, gen(5))
    for i, rule in enumerate(rules):
        for t in range(2, 30):
            assert tokens[i, t] == rule(tokens[i, t - 1], tokens[i, t - 2])


def test_transition_frequencies_match_kernel():
    vocab, parents = 3, (1, 2)
    kernel = sample_kernels(1, vocab, 2, 1.0, gen(6))[0]
    tokens = sample_sequences(kernel.expand(2000, 9, 3), parents, 60, gen(7))
    rows = 3 * tokens[:, 1:-1] + tokens[:, :-2]
    counts = torch.zeros(9, 3, dtype=torch.float64)
    counts.index_put_(
        (rows.reshape(-1), tokens[:, 2:].reshape(-1)),
        torch.tensor(1.0, dtype=torch.float64),
        accumulate=True,
    )
    visits = counts.sum(1, keepdim=True)
    assert (visits > 1000).all()
    freq = counts / visits
    stderr = (kernel * (1 - kernel) / visits).sqrt()
    assert ((freq - kernel).abs() <= 4 * stderr + 1e-12).all(), (freq, kernel)


def test_first_tokens_uniform_and_independent():
    vocab, n = 3, 30000
    kernels = sample_kernels(1, vocab, 2, 0.1, gen(8)).expand(n, 9, vocab)
    tokens = sample_sequences(kernels, (1, 3), 5, gen(9))
    first = tokens[:, 0] * 9 + tokens[:, 1] * 3 + tokens[:, 2]
    freq = torch.bincount(first, minlength=27).double() / n
    p = 1 / 27
    assert ((freq - p).abs() < 4 * (p * (1 - p) / n) ** 0.5).all(), freq


def test_reproducible_from_generator_seed():
    a = make_dataset(20, 3, (1, 2), 0.1, 30, gen(10))
    b = make_dataset(20, 3, (1, 2), 0.1, 30, gen(10))
    c = make_dataset(20, 3, (1, 2), 0.1, 30, gen(11))
    assert torch.equal(a.kernels, b.kernels) and torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_one_hot_inputs_hide_the_target():
    tokens = torch.tensor([[0, 2, 1, 1], [2, 2, 0, 1]])
    inputs = one_hot_inputs(tokens, 3)
    assert inputs.shape == (2, 4, 3) and inputs.dtype == torch.float32
    assert (inputs[:, -1] == 0).all()
    assert torch.equal(inputs[:, :-1].argmax(-1), tokens[:, :-1])
    assert (inputs[:, :-1].sum(-1) == 1).all()
    assert torch.equal(targets(tokens), torch.tensor([1, 1]))


def test_dataset_and_fresh_batch_shapes():
    for data in [
        make_dataset(12, 3, (1, 2), 0.1, 40, gen(12)),
        fresh_batch(5, 4, (2,), 0.2, 9, gen(13)),
    ]:
        assert isinstance(data, MarkovDataset)
        n, length = data.tokens.shape
        assert data.kernels.shape == (n, data.vocab ** len(data.parents), data.vocab)
        assert data.inputs(torch.float64).shape == (n, length, data.vocab)
        assert torch.equal(data.targets(), data.tokens[:, -1])
    assert make_dataset(12, 3, (1, 2), 0.1, 40, gen(12)).tokens.shape == (12, 41)


def test_sequences_are_the_inverse_cdf_draws_of_their_uniforms():
    """Element by element: x_t is the number of CDF entries of its history's row at or
    below the t-th uniform of the sequence (the first max(parents) tokens: floor(V u))."""
    vocab, parents, length = 3, (1, 3), 12
    kernels = sample_kernels(5, vocab, len(parents), 0.4, gen(30))
    tokens = sample_sequences(kernels, parents, length, gen(31))
    uniform = torch.rand((5, length), generator=gen(31), dtype=torch.float64)
    for i in range(5):
        for t in range(length):
            if t < max(parents):
                expected = min(int(uniform[i, t] * vocab), vocab - 1)
            else:
                row = sum(int(tokens[i, t - p]) * vocab ** (len(parents) - 1 - j)
                          for j, p in enumerate(parents))
                cdf = kernels[i, row].cumsum(0)[:-1]
                expected = int((uniform[i, t] >= cdf).sum())
            assert int(tokens[i, t]) == expected, (i, t)
