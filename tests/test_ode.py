"""The integrator on problems with known solutions, over solvers and dtypes."""

import numpy as np
import pytest
import torch

from dynamics.ode import integrate


# torchdiffeq's dense output (values between steps) is of lower order than the
# step itself for bosh3 and dopri8, so their output error exceeds the step tolerance.
@pytest.mark.parametrize("method, factor", [("dopri5", 10), ("bosh3", 1e5), ("dopri8", 1e5)])
def test_linear_decay_batched(method, factor):
    rates = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    y0 = torch.tensor([[1.0], [2.0], [-3.0]], dtype=torch.float64)
    t = np.concatenate([[0.0], np.logspace(-2, 1, 30)])
    rtol, atol = 1e-10, 1e-12
    sol = integrate(lambda y: -rates[:, None] * y, y0, t, method=method, rtol=rtol, atol=atol)
    exact = y0[None, :, 0] * torch.exp(-rates[None] * torch.as_tensor(t)[:, None])
    assert sol.status == ["complete"] * 3
    assert sol.valid.all()
    assert ((sol.y[..., 0] - exact).abs() <= factor * (atol + rtol * exact.abs())).all()


def test_fixed_grid_rk4_on_its_grid():
    t = np.linspace(0, 2, 21)
    sol = integrate(lambda y: -y, torch.ones(1, 1, dtype=torch.float64), t, method="rk4",
                    step_size=0.1)
    assert np.allclose(sol.y[:, 0, 0].numpy(), np.exp(-t), rtol=1e-5)


def test_rotation_conserves_norm_and_phase():
    t = np.linspace(0, 2 * np.pi, 9)
    sol = integrate(lambda y: torch.stack([-y[:, 1], y[:, 0]], dim=1),
                    torch.tensor([1.0, 0.0], dtype=torch.float64), t, rtol=1e-11, atol=1e-13)
    assert sol.y.shape == (9, 1, 2)
    assert torch.allclose(sol.y[:, 0, 0], torch.cos(torch.as_tensor(t)), atol=1e-9)


def test_blow_up_marks_diverged_and_keeps_last_good_state():
    # dy/dt = y^2 from y0: y = y0 / (1 - y0 t), infinite at t = 1 / y0
    y0 = torch.tensor([[0.5], [2.0]], dtype=torch.float64)
    t = np.linspace(0, 1.0, 21)
    sol = integrate(lambda y: y**2, y0, t, bound=1e6)
    assert sol.status == ["complete", "diverged"]
    assert sol.valid[:, 0].all()
    good = sol.valid[:, 1]
    assert 0 < good.sum() < len(t)
    t_good = t[good]
    assert t_good[-1] < 0.5 and np.isfinite(sol.y[:, 1]).all()
    exact = 2.0 / (1 - 2.0 * t_good)
    assert np.allclose(sol.y[good, 1, 0].numpy(), exact, rtol=1e-5)
    assert np.allclose(sol.y[:, 0, 0].numpy(), 0.5 / (1 - 0.5 * t), rtol=1e-6)


def test_step_budget_marks_stalled_without_raising():
    t = np.linspace(0, 10, 5)
    sol = integrate(lambda y: -1000 * (y - torch.cos(y)), torch.ones(1, 1, dtype=torch.float64),
                    t, method="dopri5", max_steps=3, chunks=4)
    assert sol.status == ["stalled"]
    assert not sol.valid[-1, 0]


def test_batched_error_control_is_per_member():
    """One moving member among 99 constant ones: with a norm over the whole batch its
    error would hide among the others' zeros (10x looser); per member it takes the same
    steps as alone, so it matches the single integration to rounding."""
    t = np.linspace(0, 20, 11)
    omega = torch.zeros(100, 1, dtype=torch.float64)
    omega[0] = 1.0

    def rotation(y):
        return torch.cat([-omega * y[:, 1:], omega * y[:, :1]], dim=1)

    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64).repeat(100, 1)
    alone = integrate(lambda y: torch.cat([-y[:, 1:], y[:, :1]], dim=1), y0[:1], t,
                      rtol=1e-6, atol=1e-9)
    batched = integrate(rotation, y0, t, rtol=1e-6, atol=1e-9)
    assert torch.allclose(batched.y[:, 0], alone.y[:, 0], rtol=0, atol=1e-12)
    assert (batched.y[:, 1:] == y0[1:]).all()
