"""The lean solver path (dynamics.dopri5) against torchdiffeq's dopri5 on every built-in flow.

Both take the same steps (same tableau, first-step rule, controller, dense output and
restarts), so they agree to rounding, far inside the tolerance."""

import numpy as np
import pytest
import torch

from dynamics.dopri5 import MAX_DIM
from dynamics.ode import integrate
from reduced_models import induction, linreg
from sims.experiment import generator
from sims.registry import conformance_cases

CASES = list(conformance_cases())
T = np.concatenate([[0.0], np.logspace(-2, 1, 25)])


def both(rhs, y0, t, **solver):
    return (integrate(rhs, y0, t, backend="lean", **solver),
            integrate(rhs, y0, t, backend="torchdiffeq", **solver))


def relative_gap(a, b) -> float:
    return float((a.y - b.y).abs().max() / b.y.abs().max().clamp(min=1.0))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_built_in_flow_integrates_alike_on_both_paths(case):
    _, model, hyper, start = case
    lean, reference = both(model.rhs(hyper), start[None], T, rtol=1e-8, atol=1e-10)
    assert lean.status == reference.status
    assert (lean.valid == reference.valid).all()
    assert relative_gap(lean, reference) < 1e-9


def test_population_flow_integrates_alike_on_both_paths():
    model = linreg.population_model(3, 2, 10, 400, generator(3))
    start = model.manifold.pack(linreg.symmetric_start(3, 2, 0.05, "merged"))[None]
    lean, reference = both(model.rhs({"sigma2": 0.1}), start, T, rtol=1e-5, atol=1e-8,
                           chunks=2)
    assert lean.status == reference.status == ["complete"]
    assert relative_gap(lean, reference) < 1e-9


def test_induction_log_selector_flow_integrates_alike_on_both_paths():
    _, model, _, start = next(c for c in CASES if c[0].startswith("induction-three-stage"))
    t = np.linspace(0.0, 5.0, 11)
    runs = [induction.integrate_log_selector(model, start, t, lambda w: w,
                                             rtol=1e-8, atol=1e-10, backend=b)
            for b in ("lean", "torchdiffeq")]
    assert runs[0].status == runs[1].status
    assert np.allclose(runs[0].loss, runs[1].loss, rtol=1e-9, atol=0)


def test_the_lean_path_is_taken_only_where_it_applies():
    y = torch.ones(2, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="lean"):
        integrate(lambda v: -v, y, T, backend="lean")
    with pytest.raises(ValueError, match="lean"):
        integrate(lambda v: -v, y[:1].float(), T, backend="lean")
    with pytest.raises(ValueError, match="backend"):
        integrate(lambda v: -v, y[:1], T, backend="scipy")


def test_a_float_right_hand_side_is_used_on_the_lean_path():
    """An rhs with an `on_floats` method is evaluated through it (no tensor per call)."""
    calls = {"floats": 0, "tensor": 0}

    class Decay:
        def __call__(self, y):
            calls["tensor"] += 1
            return -y

        def on_floats(self, y):
            calls["floats"] += 1
            return [-v for v in y]

    sol = integrate(Decay(), torch.ones(1, 1, dtype=torch.float64), T)
    assert calls["tensor"] == 0 and calls["floats"] > 0
    assert np.allclose(sol.y[:, 0, 0].numpy(), np.exp(-T), rtol=1e-6)


@pytest.mark.parametrize("dim", [1, 7, MAX_DIM])
def test_the_generated_step_agrees_with_torchdiffeq_at_every_size(dim):
    """The lean step is generated per state size; a coupled linear flow y' = A y at the
    smallest, an odd and the largest size it is made for, starting at zero in one entry
    (the error scale there is atol alone)."""
    gen = torch.Generator().manual_seed(dim)
    a = -torch.eye(dim, dtype=torch.float64) + 0.3 * torch.randn(dim, dim, generator=gen,
                                                                 dtype=torch.float64) / dim**0.5
    y0 = torch.randn(1, dim, generator=gen, dtype=torch.float64)
    y0[0, 0] = 0.0
    lean, reference = both(lambda y: y @ a.T, y0, T, rtol=1e-8, atol=1e-10)
    assert lean.status == reference.status == ["complete"]
    assert relative_gap(lean, reference) < 1e-9
    exact = torch.stack([torch.linalg.matrix_exp(a * t) @ y0[0] for t in T])
    assert float((lean.y[:, 0] - exact).abs().max()) < 1e-6


def test_beyond_the_generated_sizes_auto_takes_torchdiffeq():
    y0 = torch.ones(1, MAX_DIM + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="lean"):
        integrate(lambda v: -v, y0, T, backend="lean")
    sol = integrate(lambda v: -v, y0, T)
    assert np.allclose(sol.y[:, 0, 0].numpy(), np.exp(-T), rtol=1e-6)


def test_a_zero_entry_with_zero_atol_is_handled_in_ieee_arithmetic():
    """atol = 0 at an entry that stays 0: its error scale is 0, so 0/0 enters the error
    norm in IEEE arithmetic (NaN: a step size that is not finite), as on torchdiffeq's
    path; the integration stalls instead of raising."""
    y0 = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    lean, reference = both(lambda y: y * torch.tensor([0.0, -1.0], dtype=torch.float64), y0, T,
                           rtol=1e-6, atol=0.0)
    assert lean.status == reference.status == ["stalled"]
    assert lean.valid.sum() == reference.valid.sum() == 1
