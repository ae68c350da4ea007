"""Symbolic reduced models: one module per system, plus the base machinery."""

from . import induction, linreg, sparse
from .base import (
    Manifold,
    Param,
    ReducedModel,
    SymbolicLoss,
    TorchLoss,
    flow_eigenvalues,
    flow_jacobian,
    integrate_flow,
    stationary_point,
)

SYSTEMS = {"linreg": linreg, "sparse": sparse, "induction": induction}


def conformance_cases():
    """Every registered system's cases for the conformance suite."""
    for module in SYSTEMS.values():
        yield from module.conformance_cases()


__all__ = [
    "SYSTEMS",
    "Manifold",
    "Param",
    "ReducedModel",
    "SymbolicLoss",
    "TorchLoss",
    "conformance_cases",
    "flow_eigenvalues",
    "flow_jacobian",
    "integrate_flow",
    "stationary_point",
]
