"""Checks every reduced model must pass (run by tests/test_conformance.py).

- its gradient equals an independent derivative of its loss: autograd through
  the compiled loss for symbolic models (to ~1e-10), central finite
  differences for torch losses;
- its metric equals J^T J of the numeric lift (autograd Jacobian);
- its loss never increases along a computed flow.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Hyper, ReducedModel


def gradient_error(model: ReducedModel, points: torch.Tensor, hyper: Hyper) -> float:
    """Max |grad - reference| / max(1, |reference|) over (B, P) points."""
    grad = model.gradient(points, hyper)
    if model.symbolic:
        x = points.detach().clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(model.loss(x, hyper).sum(), x)
    else:
        eps = 1e-6
        ref = torch.zeros_like(points)
        for i in range(points.shape[1]):
            step = torch.zeros_like(points)
            step[:, i] = eps
            ref[:, i] = (model.loss(points + step, hyper) - model.loss(points - step, hyper)) / (2 * eps)
    return float(((grad - ref).abs() / ref.abs().clamp(min=1.0)).max())


def metric_error(model: ReducedModel, point: torch.Tensor) -> float:
    """Max |G - J^T J| with J the autograd Jacobian of the lift at point (P,)."""
    def flat_lift(s):
        return torch.cat([w.reshape(-1) for w in model.manifold.lift(s).values()])

    J = torch.func.jacrev(flat_lift)(point.to(torch.float64))
    return float((torch.as_tensor(model.manifold.metric) - J.T @ J).abs().max())


def worst_loss_increase(model: ReducedModel, state0: torch.Tensor, hyper: Hyper,
                        t: np.ndarray) -> float:
    """Largest relative increase of the loss between consecutive output times of the flow."""
    from dynamics.ode import integrate

    sol = integrate(model.rhs(hyper), state0.reshape(1, -1), t, rtol=1e-9, atol=1e-11)
    loss = model.loss(sol.y[:, 0], hyper).detach().numpy()
    return float((np.diff(loss) / np.abs(loss[:-1])).max())
