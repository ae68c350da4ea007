"""Theory of induction heads on n-gram Markov chains (docs/theory/induction.md, section 4).

From Chen, Sheen, Wang, Yang, "Unveiling Induction Heads: Provable Training
Dynamics and Feature Learning in Transformers" (NeurIPS 2024, arXiv
2409.10559):
- the selector picks the candidate parent set S* maximising the modified
  chi-square mutual information I(S) (power 2 on the history probability);
- the limiting model is a generalised induction head: a softmax over the
  context positions with logit a where the S*-history matches the query's.

Conventions follow `reduced_models.markov_chains`: kernels (vocab**len(parents),
vocab) float64, parents a sorted tuple of positive offsets. A law of r
consecutive tokens is a tensor of shape (vocab,)*r whose axis j is the
token at position j of the window, oldest first: the axis of offset s
before the next token is r - s.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.sparse.csgraph import connected_components

from .markov_chains import history_index, sample_kernels

# ---------------------------------------------------------------- stationary law


def tuple_transition_matrix(kernel: torch.Tensor, parents: tuple[int, ...]) -> np.ndarray:
    """(vocab**m, vocab**m) float64 transition matrix of the chain on m-tuples.

    m = max(parents). State (x_{t-m+1}, ..., x_t), oldest first, is encoded
    base vocab with the oldest token most significant; it moves to
    (x_{t-m+2}, ..., x_{t+1}).
    """
    vocab = kernel.shape[-1]
    m = max(parents)
    n_states = vocab**m
    states = torch.arange(n_states)
    digits = torch.stack([(states // vocab ** (m - 1 - j)) % vocab for j in range(m)], -1)
    rows = history_index(digits[:, [m - p for p in parents]], vocab)
    successors = (states[:, None] * vocab) % n_states + torch.arange(vocab)
    matrix = np.zeros((n_states, n_states))
    np.put_along_axis(matrix, successors.numpy(), kernel[rows].double().numpy(), axis=1)
    return matrix


def gth_stationary_law(matrix: np.ndarray) -> np.ndarray:
    """(n,) stationary law of an irreducible stochastic matrix (n, n).

    Grassmann-Taksar-Heyman state reduction (Oper. Res. 33, 1985): Gaussian
    elimination on pi (P - I) = 0 in which every pivot is a sum of
    off-diagonal probabilities, so nothing is subtracted and the law keeps
    full relative accuracy even for nearly reducible chains.
    """
    reduced = matrix.astype(np.float64, copy=True)
    n = len(reduced)
    for k in range(n - 1, 0, -1):
        exit_probability = reduced[k, :k].sum()
        reduced[:k, k] /= exit_probability
        reduced[:k, :k] += np.outer(reduced[:k, k], reduced[k, :k])
    law = np.zeros(n)
    law[0] = 1.0
    for k in range(1, n):
        law[k] = law[:k] @ reduced[:k, k]
    return law / law.sum()


def closed_classes(matrix: np.ndarray) -> list[np.ndarray]:
    """Closed communicating classes (state index arrays) of a stochastic matrix."""
    support = matrix > 0
    n_classes, labels = connected_components(support, directed=True, connection="strong")
    classes = []
    for c in range(n_classes):
        members = labels == c
        if not support[np.ix_(members, ~members)].any():
            classes.append(np.flatnonzero(members))
    return classes


def absorption_probabilities(
    matrix: np.ndarray, classes: list[np.ndarray], start: np.ndarray
) -> np.ndarray:
    """(len(classes),) probability that the chain from `start` ends in each class.

    Solves x (I - Q) = start_T on the transient states T (Q = P restricted to
    T), with the diagonal of I - Q written as the sum of the off-diagonal
    exits of each state to avoid cancellation in 1 - P_ii.
    """
    recurrent = np.zeros(len(matrix), dtype=bool)
    for members in classes:
        recurrent[members] = True
    transient = np.flatnonzero(~recurrent)
    weights = np.array([start[members].sum() for members in classes])
    if len(transient) == 0:
        return weights
    off_diagonal = matrix[transient].copy()
    off_diagonal[np.arange(len(transient)), transient] = 0.0
    q = off_diagonal[:, transient]
    i_minus_q = np.diag(off_diagonal.sum(1)) - q
    visits = np.linalg.solve(i_minus_q.T, start[transient])
    into_class = np.array([matrix[np.ix_(transient, members)].sum(1) for members in classes]).T
    return weights + visits @ into_class


def tuple_law(kernel: torch.Tensor, parents: tuple[int, ...]) -> np.ndarray:
    """(vocab**m,) float64 stationary law of the m-tuple chain, m = max(parents).

    Exact (direct solves, no iteration). If the chain has several closed
    classes, returns the Cesaro limit lim (1/T) sum_t u P^t from the uniform
    start u (the sampler's start law): sum over closed classes C of
    P(absorbed in C | start u) times the stationary law of C.
    """
    matrix = tuple_transition_matrix(kernel, parents)
    start = np.full(len(matrix), 1.0 / len(matrix))
    classes = closed_classes(matrix)
    weights = absorption_probabilities(matrix, classes, start)
    law = np.zeros(len(matrix))
    for members, weight in zip(classes, weights):
        law[members] = weight * gth_stationary_law(matrix[np.ix_(members, members)])
    return law


def extend_law(law: torch.Tensor, kernel: torch.Tensor, parents: tuple[int, ...]) -> torch.Tensor:
    """Law of k + 1 consecutive tokens from the law (vocab,)*k, k >= max(parents).

    Appends the next token drawn from the kernel given its parents; returns
    shape (vocab,)*(k + 1).
    """
    vocab = kernel.shape[-1]
    k = law.dim()
    windows = torch.cartesian_prod(*[torch.arange(vocab)] * k).reshape(-1, k)
    rows = history_index(windows[:, [k - p for p in parents]], vocab)
    joint = law.reshape(-1, 1) * kernel[rows].double()
    return joint.reshape((vocab,) * (k + 1))


def window_law(kernel: torch.Tensor, parents: tuple[int, ...], window: int) -> torch.Tensor:
    """Exact stationary law of the last r tokens, r = max(window, max(parents)).

    kernel: (vocab**len(parents), vocab). Returns float64 of shape
    (vocab,)*r, oldest token first. For a reducible chain this is the Cesaro
    limit from the uniform start (see `tuple_law`).
    """
    vocab = kernel.shape[-1]
    m = max(parents)
    law = torch.from_numpy(tuple_law(kernel, parents)).reshape((vocab,) * m)
    for _ in range(max(window, m) - m):
        law = extend_law(law, kernel, parents)
    return law


# ------------------------------------------------------- chi-square information


def candidate_sets(window: int, degree: int) -> list[tuple[int, ...]]:
    """Nonempty subsets of offsets {1..window} with at most `degree` elements.

    Sorted by size, then lexicographically.
    """
    offsets = range(1, window + 1)
    return [s for size in range(1, degree + 1) for s in itertools.combinations(offsets, size)]


EMPTY_LABEL = "{}"  # label of the empty set (the authors' constant selector term)


def set_label(offsets: tuple[int, ...]) -> str:
    """Label of a candidate set, e.g. (1, 2) -> "1,2"; the empty set -> "{}"."""
    return ",".join(str(s) for s in offsets) if offsets else EMPTY_LABEL


def parse_label(label: str) -> tuple[int, ...]:
    """Inverse of `set_label`."""
    return () if label == EMPTY_LABEL else tuple(int(s) for s in label.split(","))


def next_token_joint(kernel: torch.Tensor, parents: tuple[int, ...], window: int) -> torch.Tensor:
    """Stationary joint law of the last r tokens and the next token.

    Shape (vocab,)*(r + 1), r = max(window, max(parents)); the last axis is
    the next token e, the axis of offset s before e is r - s.
    """
    return extend_law(window_law(kernel, parents, window), kernel, parents)


def chi2_from_joint(joint: torch.Tensor, offsets: tuple[int, ...], modified: bool) -> float:
    """Chi-square information between the tokens at `offsets` and the next token.

    joint: law from `next_token_joint`. With z the tokens at the offsets,
    I = sum_z mu(z)^q (sum_e mu(e|z)^2 / mu(e) - 1), q = 2 if modified
    else 1 (docs/theory/induction.md, section 4). Histories or tokens of probability 0 contribute 0.
    """
    return float(chi2_from_joints(joint[None], offsets, modified)[0])


def chi2_from_joints(joints: torch.Tensor, offsets: tuple[int, ...],
                     modified: bool) -> torch.Tensor:
    """`chi2_from_joint` of a stack of joint laws (n, vocab, ..., vocab): (n,)."""
    r = joints.dim() - 2
    kept = sorted(r - s for s in offsets) + [r]
    dropped = [1 + axis for axis in range(r + 1) if axis not in kept]
    pair = joints.sum(dim=dropped) if dropped else joints
    pair = pair.reshape(len(joints), -1, joints.shape[-1])
    history = pair.sum(2, keepdim=True)
    token = pair.sum(1, keepdim=True)
    if modified:
        ratio = pair**2 / token
        return ratio.where(token > 0, 0.0).sum((1, 2)) - (history**2).sum((1, 2))
    ratio = pair**2 / (history * token)
    return ratio.where(pair > 0, 0.0).sum((1, 2)) - 1.0


def chi2_mutual_information(
    kernel: torch.Tensor,
    parents: tuple[int, ...],
    offsets: tuple[int, ...],
    window: int,
    modified: bool = True,
) -> float:
    """Chi-square mutual information I(S) of candidate set S = `offsets` for one kernel.

    mu is the exact stationary law (`window_law`); the power on mu(z_S) is 2
    if modified (the paper's criterion, which prefers the true parent set
    over its supersets) else 1 (standard chi-square MI).
    """
    return chi2_from_joint(next_token_joint(kernel, parents, window), offsets, modified)


def chi2_table(
    kernels: torch.Tensor,
    parents: tuple[int, ...],
    window: int,
    degree: int,
    modified: bool = True,
) -> dict[str, np.ndarray]:
    """I(S) per kernel: {label: (n_kernels,) float64} over `candidate_sets`."""
    return chi2_tables(kernels, parents, window, degree, (modified,))[0]


def chi2_tables(
    kernels: torch.Tensor,
    parents: tuple[int, ...],
    window: int,
    degree: int,
    modes: tuple[bool, ...],
) -> list[dict[str, np.ndarray]]:
    """`chi2_table` for each `modified` flag in modes, from one stationary law per kernel."""
    sets = candidate_sets(window, degree)
    joints = torch.stack([next_token_joint(kernel, parents, window) for kernel in kernels])
    return [{set_label(s): chi2_from_joints(joints, s, modified).numpy() for s in sets}
            for modified in modes]


def expected_chi2_mi(
    vocab: int,
    parents: tuple[int, ...],
    alpha: float,
    window: int,
    degree: int,
    n_chains: int,
    generator: torch.Generator,
    modified: bool = True,
) -> dict[str, tuple[float, float]]:
    """E_pi I(S) over kernels from the Dirichlet(alpha) prior: {label: (mean, stderr)}.

    stderr is the standard error of the mean over n_chains kernels.
    """
    return expected_chi2_mis(vocab, parents, alpha, window, degree, n_chains, generator,
                             (modified,))[0]


def expected_chi2_mis(
    vocab: int,
    parents: tuple[int, ...],
    alpha: float,
    window: int,
    degree: int,
    n_chains: int,
    generator: torch.Generator,
    modes: tuple[bool, ...],
) -> list[dict[str, tuple[float, float]]]:
    """`expected_chi2_mi` for each `modified` flag in modes, over the same kernels."""
    kernels = sample_kernels(n_chains, vocab, len(parents), alpha, generator)
    return [{label: (float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))))
             for label, v in table.items()}
            for table in chi2_tables(kernels, parents, window, degree, modes)]


def best_set(expected: dict[str, tuple[float, float]]) -> tuple[int, ...]:
    """S* = argmax of the mean in an `expected_chi2_mi` result."""
    return parse_label(max(expected, key=lambda label: expected[label][0]))


# ------------------------------------------------ generalised induction head


def gih_counts(
    context: torch.Tensor, offsets: tuple[int, ...], vocab: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """In-context counts for the generalised induction head.

    context: (n, L) int64 tokens x_1..x_L. With z = (x_{L+1-s}, s in offsets)
    the query's history, returns float64 (n, vocab) tensors
    - N(z, e): positions l whose history (x_{l-s}) equals z and x_l = e
      (positions whose history would start before x_1 never match);
    - N(e): occurrences of e among x_1..x_L.
    """
    n, L = context.shape
    reach = max(offsets)
    query_history = [context[:, L - s] for s in offsets]
    matches = torch.ones((n, L - reach), dtype=torch.bool)
    for s, z_s in zip(offsets, query_history):
        matches &= context[:, reach - s : L - s] == z_s[:, None]
    zeros = torch.zeros((n, vocab), dtype=torch.float64)
    matched_counts = zeros.scatter_add(1, context[:, reach:], matches.double())
    return matched_counts, zeros.scatter_add(1, context, torch.ones(context.shape,
                                                                     dtype=torch.float64))


def gih_log_predict_from_counts(
    matched_counts: torch.Tensor, token_counts: torch.Tensor, a: float | torch.Tensor
) -> torch.Tensor:
    """log y_hat(e), shape (*a.shape, n, vocab), from `gih_counts` outputs (n, vocab).

    y_hat(e) = [e^a N(z,e) + N(e) - N(z,e)] / [e^a N(z) + L - N(z)],
    evaluated in log space so that any real a is safe. Tokens absent from
    the context (N(e) = 0) get -inf; their counts are replaced by finite
    dummies before the logs so that gradients in a stay finite.
    """
    a = torch.as_tensor(a, dtype=torch.float64)[..., None, None]
    L = token_counts.sum(-1, keepdim=True)
    matched_total = matched_counts.sum(-1, keepdim=True)
    seen = token_counts > 0
    log_matched = matched_counts.where(seen, 1.0).log()
    log_unmatched = (token_counts - matched_counts).where(seen, 1.0).log()
    numerator = torch.logaddexp(a + log_matched, log_unmatched).where(seen, -torch.inf)
    # L - N(z) >= max(offsets) > 0: the denominator is always finite.
    denominator = torch.logaddexp(a + matched_total.log(), (L - matched_total).log())
    return numerator - denominator


def gih_predict(
    context: torch.Tensor, offsets: tuple[int, ...], a: float | torch.Tensor, vocab: int
) -> torch.Tensor:
    """Limiting generalised-induction-head prediction of the next token (docs/theory/induction.md, section 4).

    context: (n, L) int64; offsets: S*; a: classifier logit, a float or a
    tensor of any shape. Returns (*a.shape, n, vocab) float64 probabilities:
    a softmax over the L context positions with logit a where the
    S*-history matches the query's, copying the tokens (exact copier).
    Tends to N(z,e)/N(z) as a grows (if N(z) > 0); equals N(e)/L at a = 0.
    """
    matched_counts, token_counts = gih_counts(context, offsets, vocab)
    return gih_log_predict_from_counts(matched_counts, token_counts, a).exp()


def loss_from_log_predict(
    log_predict: torch.Tensor, target: torch.Tensor, variant: str
) -> torch.Tensor:
    """Mean loss over the last-but-one axis; log_predict (..., n, vocab), target (n,).

    "ce": -log y_hat[target] (infinite when the target never occurs in the
    context). "logsoftmax": the authors' code's variant, the negative
    log-likelihood of log_softmax(y_hat).
    """
    if variant == "logsoftmax":
        log_predict = torch.log_softmax(log_predict.exp(), dim=-1)
    elif variant != "ce":
        raise ValueError(f"unknown loss variant {variant!r}")
    index = target.expand(*log_predict.shape[:-1])[..., None]
    return -log_predict.gather(-1, index).squeeze(-1).mean(-1)


def gih_loss(
    a: float | torch.Tensor,
    tokens: torch.Tensor,
    offsets: tuple[int, ...],
    vocab: int,
    variant: str = "ce",
) -> torch.Tensor:
    """Mean loss of the limiting model over sequences tokens (n, L + 1) int64.

    Context x_1..x_L, target x_{L+1}; returns float64 of shape a.shape.
    """
    matched_counts, token_counts = gih_counts(tokens[:, :-1], offsets, vocab)
    log_predict = gih_log_predict_from_counts(matched_counts, token_counts, a)
    return loss_from_log_predict(log_predict, tokens[:, -1], variant)


def gih_optimal_a(
    tokens: torch.Tensor,
    offsets: tuple[int, ...],
    vocab: int,
    variant: str = "ce",
    bounds: tuple[float, float] = (0.0, 30.0),
) -> float:
    """Classifier logit a minimising `gih_loss` on tokens (n, L + 1), within `bounds`.

    Under "ce", sequences whose target never occurs in the context have
    y_hat = 0 for every a (an a-independent infinite term) and are left
    out. A result at the upper bound means the loss still decreases there
    (the "logsoftmax" case: no finite optimum).
    """
    context, target = tokens[:, :-1], tokens[:, -1]
    matched_counts, token_counts = gih_counts(context, offsets, vocab)
    if variant == "ce":
        seen = token_counts.gather(1, target[:, None]).squeeze(1) > 0
        matched_counts, token_counts, target = (
            matched_counts[seen],
            token_counts[seen],
            target[seen],
        )

    def loss(a: float) -> float:
        log_predict = gih_log_predict_from_counts(matched_counts, token_counts, a)
        return float(loss_from_log_predict(log_predict, target, variant))

    result = minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": 1e-6})
    return float(result.x)
