"""Manifold: lift, unpack, pack and project for every parameter shape, scalars included."""

import numpy as np
import pytest
import torch

from reduced_models.base import Manifold, Param


def _manifold():
    """A scalar a (shape ()), a vector w (2,); a scalar weight A and a matrix B."""
    return Manifold([Param("a", ()), Param("w", (2,))],
                    lambda s: {"A": 3 * s["a"], "B": [[s["a"] + 1, s["w"][0]], [0, 2 * s["w"][1]]]})


@pytest.mark.parametrize("lead", [(), (4,), (2, 3)], ids=["single", "batch", "grid"])
def test_scalar_parameters_lift_unpack_and_project(lead):
    m = _manifold()
    state = torch.arange(np.prod(lead, dtype=int) * 3, dtype=torch.float64).reshape(*lead, 3)
    parts = m.unpack(state)
    assert parts["a"].shape == lead and parts["w"].shape == (*lead, 2)
    assert torch.equal(m.pack(parts), state)
    weights = m.lift(state)
    assert weights["A"].shape == lead and weights["B"].shape == (*lead, 2, 2)
    assert torch.equal(weights["A"], 3 * state[..., 0])
    assert torch.equal(weights["B"][..., 0, 0], state[..., 0] + 1)
    assert torch.allclose(m.project(weights), state, atol=1e-12)


def test_metric_of_the_scalar_lift():
    m = _manifold()
    assert np.array_equal(m.metric, np.diag([10.0, 1.0, 4.0]))  # a in A (x3) and B (x1)


def test_a_lift_that_is_not_affine_is_refused():
    with pytest.raises(ValueError, match="affine"):
        Manifold([Param("a", ())], lambda s: {"A": s["a"] ** 2})
