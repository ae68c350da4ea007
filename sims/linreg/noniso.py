"""Non-isotropic covariates (docs/theory/linreg.md, section 7): alignment of KQ_xx with Sigma^-1, GD baselines.

With x ~ N(0, Sigma) and beta ~ N(0, I_d / d), a one-step predictor
y_hat = eta (1/L) sum_l y_l x_l^T P x_q is plain GD for P = I and
preconditioned GD for P = Sigma^-1 (which whitens the query: the step
(1/L) sum_l y_l x_l estimates Sigma beta, and Sigma^-1 undoes it). Each
baseline is taken at its optimal step eta* = E[y_q p] / E[p^2] (p the predictor
at eta = 1), fitted on one Monte-Carlo sample and evaluated on another, so the
reported risk is not biased low by the fit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .estimators import dgd_direction, gd_direction
from .task import RegressionBatch


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<A, B>_F / (|A|_F |B|_F) over the last two dimensions: (..., d, d) -> (...)."""
    inner = (a * b).sum((-2, -1))
    return inner / (a.flatten(-2).norm(dim=-1) * b.flatten(-2).norm(dim=-1))


def head_alignment(kq_xx: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., H) cosine similarity of sign(tr KQ_xx,h) KQ_xx,h with target (d, d): 1 when
    the head's score matrix is a multiple omega_h target of either sign of omega_h."""
    sign = torch.sign(torch.diagonal(kq_xx, dim1=-2, dim2=-1).sum(-1))
    return cosine_similarity(sign[..., None, None] * kq_xx, target)


def one_step_predictors(precondition: torch.Tensor) -> dict[str, Callable]:
    """Unit-step predictors batch -> (B,): gd, dgd (centred covariates), and their
    preconditioned versions pgd, pdgd with P = precondition (d, d)."""
    def along(direction, P):
        return lambda batch: torch.einsum("bi,ij,bj->b", direction(batch), P, batch.xq)

    eye = torch.eye(len(precondition), dtype=precondition.dtype)
    return {"gd": along(gd_direction, eye), "dgd": along(dgd_direction, eye),
            "pgd": along(gd_direction, precondition), "pdgd": along(dgd_direction, precondition)}


def risk(errors: torch.Tensor) -> tuple[float, float]:
    """(mean, standard error) of per-prompt squared errors (B,)."""
    return float(errors.mean()), float(errors.std() / len(errors) ** 0.5)


def baseline_risks(fit: RegressionBatch, test: RegressionBatch,
                   precondition: torch.Tensor) -> dict[str, dict]:
    """Each one-step baseline at its optimal step (fitted on `fit`): {name: {risk, stderr, step}}.

    Risks are MSE against the noisy query label of `test`."""
    out = {}
    for name, predict in one_step_predictors(precondition.to(fit.x.dtype)).items():
        p = predict(fit)
        step = float((fit.yq * p).sum() / (p * p).sum())
        mean, se = risk((step * predict(test) - test.yq) ** 2)
        out[name] = {"risk": mean, "stderr": se, "step": step}
    return out
