import numpy as np

from dynamics.compare import compare, escape_time, path_gap, pointwise_gap
from dynamics.trajectory import Trajectory


def _traj(t, x, loss=None, kind="ode"):
    x = np.asarray(x, dtype=float)
    return Trajectory(kind=kind, t=t, loss=np.ones_like(t) if loss is None else loss,
                      params={"a": x[:, None], "b": 2 * x[:, None]})


def test_pointwise_gap_relative_to_reference_maximum():
    t = np.linspace(0, 1, 11)
    ref = _traj(t, t)
    other = _traj(t, t + 0.05 * np.sin(np.pi * t))
    gaps = pointwise_gap(other, ref)
    assert np.isclose(gaps["a"], 0.05) and np.isclose(gaps["b"], 0.05)
    assert np.isclose(gaps["max"], 0.05)


def test_interpolates_onto_reference_times():
    ref = _traj(np.linspace(0, 1, 5), np.linspace(0, 1, 5))
    fine = _traj(np.linspace(0, 2, 201), np.linspace(0, 2, 201))
    assert pointwise_gap(fine, ref)["max"] < 1e-12


def test_path_gap_ignores_time_shift_but_pointwise_does_not():
    t = np.linspace(0, 20, 2001)
    curve = lambda s: np.tanh(s - 10)
    ref, late = _traj(t, curve(t)), _traj(t, curve(t - 0.5))
    assert pointwise_gap(late, ref)["max"] > 0.4
    assert path_gap(late, ref) < 1e-3
    # a different path is seen by both
    assert path_gap(_traj(t, 0.9 * curve(t)), ref) > 0.09


def test_escape_time_of_a_sigmoid_drop():
    t = np.logspace(-2, 2, 400)
    loss = 1.0 - 0.8 / (1 + np.exp(-(t - 7.0) * 3))
    assert abs(escape_time(_traj(t, t, loss)) - 7.0) < 0.05
    assert escape_time(_traj(t, t, np.linspace(1, 0.9, 400))) is None
    result = compare(_traj(t, t, loss), _traj(t, t, loss))
    assert result["escape_shift"] == 0.0 and result["path"] == 0.0
