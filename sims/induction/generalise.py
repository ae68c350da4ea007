"""Length and prior generalisation of trained induction networks (docs/theory/induction.md).

The networks trained at (L, alpha) are evaluated, unchanged, on fresh sequences at every
test length L_test and prior alpha_test; beside them the limiting generalised induction head
with set S* and the simplified network's final a (the theory's account of the trained
network). All predictors see the same sequences at a point (common random numbers).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from reduced_models.induction import WindowCounts
from reduced_models.markov import gih_predict
from reduced_models.markov_chains import make_dataset

Predictor = Callable[[torch.Tensor], torch.Tensor]  # tokens (n, L + 1) -> y_hat (n, vocab)


def per_sequence_loss(y_hat: torch.Tensor, target: torch.Tensor, variant: str) -> torch.Tensor:
    """(n_used,) loss of each sequence the mean loss counts: "ce" -log y_hat[target] over the
    sequences whose target occurs in the context (y_hat[target] > 0 exactly then),
    "logsoftmax" -log softmax(y_hat)[target] over all."""
    if variant == "logsoftmax":
        return -torch.log_softmax(y_hat, -1).gather(1, target[:, None])[:, 0]
    picked = y_hat.gather(1, target[:, None])[:, 0]
    return -picked[picked > 0].log()


def network_predictor(net, window: int, vocab: int) -> Predictor:
    """y_hat of a trained network (anything with `predict_counts`), without autograd."""
    def predict(tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net.predict_counts(WindowCounts.from_tokens(tokens, window, vocab))
    return predict


def limit_predictor(offsets: tuple[int, ...], a: float, vocab: int) -> Predictor:
    """y_hat of the limiting generalised induction head with set `offsets` and logit a."""
    def predict(tokens: torch.Tensor) -> torch.Tensor:
        return gih_predict(tokens[:, :-1], offsets, a, vocab)
    return predict


def evaluate(predictors: dict[str, Predictor], vocab: int, parents: tuple[int, ...],
             L_test: list[int], alpha_test: list[float], samples: int, variant: str,
             generator: torch.Generator) -> dict[str, np.ndarray]:
    """Mean loss over `samples` fresh sequences at every (alpha, L).

    Returns the datasets of the run's group `generalise`: coordinates "alpha" (A,) and "L"
    (N,); per predictor its loss (A, N) and "stderr_<name>" (A, N), the standard error over
    sequences; "counted" (A, N), the fraction of sequences the loss counts ("ce": those whose
    target occurs in the context).
    """
    shape = (len(alpha_test), len(L_test))
    out = {"alpha": np.asarray(alpha_test, dtype=np.float64),
           "L": np.asarray(L_test, dtype=np.int64), "counted": np.zeros(shape)}
    for name in predictors:
        out[name], out[f"stderr_{name}"] = np.zeros(shape), np.zeros(shape)
    for i, alpha in enumerate(alpha_test):
        for j, L in enumerate(L_test):
            tokens = make_dataset(samples, vocab, parents, alpha, L, generator).tokens
            target = tokens[:, -1]
            for name, predict in predictors.items():
                losses = per_sequence_loss(predict(tokens), target, variant).numpy()
                out[name][i, j] = losses.mean()
                out[f"stderr_{name}"][i, j] = losses.std(ddof=1) / np.sqrt(len(losses))
                out["counted"][i, j] = len(losses) / samples
    return out
