"""Symbolic reduced models: one module per system, plus the base machinery.

A system's conformance cases are declared with the system (sims.system.System).
"""

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

__all__ = [
    "Manifold",
    "Param",
    "ReducedModel",
    "SymbolicLoss",
    "TorchLoss",
    "flow_eigenvalues",
    "flow_jacobian",
    "integrate_flow",
    "stationary_point",
]
