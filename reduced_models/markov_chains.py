"""n-gram Markov-chain tasks for induction heads (docs/theory/induction.md, section 1).

Setting of Chen, Sheen, Wang, Yang, "Unveiling Induction Heads: Provable
Training Dynamics and Feature Learning in Transformers" (NeurIPS 2024,
arXiv 2409.10559): a vocabulary {0..vocab-1}, a parent set of positive
offsets (token t depends on the tokens t - p, p in parents), one transition
kernel per sequence with each row drawn from Dirichlet(alpha 1), the first
max(parents) tokens uniform.

Conventions:
- `parents` is a sorted tuple of positive offsets, e.g. (1, 2).
- A history h = (x_{t-p} for p in parents, in that order) is the kernel row
  sum_j h_j * vocab**(len(parents) - 1 - j).
- A kernel has shape (vocab**len(parents), vocab), dtype float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def history_index(histories: torch.Tensor, vocab: int) -> torch.Tensor:
    """Kernel row of each history.

    histories: (..., n_parents) int64, tokens ordered as `parents`.
    Returns (...,) int64.
    """
    n_parents = histories.shape[-1]
    weights = vocab ** torch.arange(n_parents - 1, -1, -1, device=histories.device)
    return (histories * weights).sum(-1)


def sample_kernels(
    n: int, vocab: int, n_parents: int, alpha: float, generator: torch.Generator
) -> torch.Tensor:
    """(n, vocab**n_parents, vocab) float64 kernels, each row ~ Dirichlet(alpha 1).

    Normalised gamma draws, computed in log space: for small alpha a
    Gamma(alpha) draw can underflow to 0, so it is written as
    Gamma(alpha + 1) * U**(1/alpha) and the row is a softmax of the logs
    (never an all-zero row).
    """
    shape = (n, vocab**n_parents, vocab)
    shifted = torch._standard_gamma(
        torch.full(shape, alpha + 1.0, dtype=torch.float64), generator=generator
    )
    # 1 - U lies in (0, 1], so its log is finite.
    uniform = 1.0 - torch.rand(shape, generator=generator, dtype=torch.float64)
    log_gamma = shifted.log() + uniform.log() / alpha
    return torch.softmax(log_gamma, dim=-1)


def sample_sequences(
    kernels: torch.Tensor, parents: tuple[int, ...], length: int, generator: torch.Generator
) -> torch.Tensor:
    """(n, length) int64 sequences, sequence i driven by kernels[i].

    kernels: (n, vocab**len(parents), vocab). The first max(parents) tokens
    are i.i.d. uniform; each later token x_t is drawn from the row of the
    history (x_{t-p}, p in parents).
    """
    n, n_rows, vocab = kernels.shape
    burn_in = max(parents)
    # Inverse-CDF sampling from one block of uniforms. The loop over positions runs on
    # numpy arrays (time-major, so each position is a contiguous row): a few small array
    # operations per position, without torch's per-operation dispatch.
    # Columns 0 .. vocab - 2 of the kernels' CDFs, one flat array per column (the last is 1:
    # never below a draw): token = number of columns at or below the draw.
    columns = kernels.cumsum(-1).reshape(n * n_rows, vocab)[:, :-1].T.contiguous().numpy()
    uniform = np.ascontiguousarray(
        torch.rand((n, length), generator=generator, dtype=torch.float64).numpy().T)
    tokens = np.empty((length, n), dtype=np.int64)
    head = min(burn_in, length)
    tokens[:head] = np.minimum((uniform[:head] * vocab).astype(np.int64), vocab - 1)
    first_row = np.arange(n, dtype=np.int64) * n_rows
    weights = [vocab ** (len(parents) - 1 - j) for j in range(len(parents))]  # history_index
    rows = np.empty(n, dtype=np.int64)
    for t in range(burn_in, length):
        np.copyto(rows, first_row)
        for p, weight in zip(parents, weights):
            rows += weight * tokens[t - p]
        drawn = tokens[t]
        drawn[:] = 0
        for column in columns:
            drawn += uniform[t] >= column.take(rows)
    return torch.from_numpy(np.ascontiguousarray(tokens.T))


def one_hot_inputs(
    tokens: torch.Tensor, vocab: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(n, L + 1, vocab) network input for tokens (n, L + 1) int64.

    Rows 1..L are the one-hot context x_1..x_L; row L + 1 (the query
    position) is zero, hiding the target x_{L+1} (docs/theory/induction.md, section 1).
    """
    inputs = torch.nn.functional.one_hot(tokens, vocab).to(dtype)
    inputs[:, -1] = 0
    return inputs


def targets(tokens: torch.Tensor) -> torch.Tensor:
    """(n,) int64 targets x_{L+1} of tokens (n, L + 1)."""
    return tokens[:, -1]


@dataclass
class MarkovDataset:
    """A set of n sequences, each with its own kernel.

    - kernels: (n, vocab**len(parents), vocab) float64
    - tokens: (n, L + 1) int64, context x_1..x_L then the target x_{L+1}
    """

    kernels: torch.Tensor
    tokens: torch.Tensor
    vocab: int
    parents: tuple[int, ...]

    def inputs(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(n, L + 1, vocab) one-hot context with a zero query row."""
        return one_hot_inputs(self.tokens, self.vocab, dtype)

    def targets(self) -> torch.Tensor:
        """(n,) int64 next tokens x_{L+1}."""
        return targets(self.tokens)


def make_dataset(
    n: int,
    vocab: int,
    parents: tuple[int, ...],
    alpha: float,
    L: int,
    generator: torch.Generator,
) -> MarkovDataset:
    """A fixed finite set of n sequences of L + 1 tokens, one kernel each."""
    kernels = sample_kernels(n, vocab, len(parents), alpha, generator)
    tokens = sample_sequences(kernels, parents, L + 1, generator)
    return MarkovDataset(kernels=kernels, tokens=tokens, vocab=vocab, parents=tuple(parents))


def fresh_batch(
    batch: int,
    vocab: int,
    parents: tuple[int, ...],
    alpha: float,
    L: int,
    generator: torch.Generator,
) -> MarkovDataset:
    """A new batch of fresh sequences and kernels, for per-step (population) sampling.

    Same law as `make_dataset`; named for the training loop that calls it
    every step instead of reusing a fixed set.
    """
    return make_dataset(batch, vocab, parents, alpha, L, generator)
