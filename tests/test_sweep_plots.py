"""Phase-diagram figures: cell edges, log axes, facets, files next to the h5 file."""

import matplotlib.pyplot as plt
import numpy as np

from dynamics.sweep import Metric, Sweep, Task, run_sweep
from dynamics.sweep_plots import _boundaries, _edges, figure, plot_sweep
from dynamics.sweep_store import Axis, read_sweep


def test_log_axis_edges_are_geometric_midpoints():
    edges = _edges(Axis("s", "float", (1e-3, 1e-2, 1e-1), "log"))
    np.testing.assert_allclose(edges, [10**-3.5, 10**-2.5, 10**-1.5, 10**-0.5], rtol=1e-12)
    np.testing.assert_allclose(_edges(Axis("x", "int", (0, 2, 6), "linear")), [-1, 1, 4, 8])
    np.testing.assert_allclose(_edges(Axis("p", "str", ("a", "b"))), [-0.5, 0.5, 1.5])


def phase_task(points):
    """phase 1 above the diagonal y > x, else 0; 'value' = x * y."""
    return [(i, {"value": c["x"] * c["y"], "phase": float(c["y"] > c["x"])}) for i, c in points]


def test_plot_sweep_writes_one_png_per_metric_and_an_overview(tmp_path):
    path = str(tmp_path / "g.h5")
    axes = (Axis("x", "float", tuple(np.geomspace(0.1, 10, 6)), "log"),
            Axis("y", "float", tuple(np.geomspace(0.1, 10, 5)), "log"),
            Axis("H", "int", (1, 2), "linear"))
    sweep = Sweep("toy", {}, axes)
    points = sweep.points()
    metrics = [Metric("value", "x y", log=True), Metric("phase", "y > x", phases=("below", "above"))]
    run_sweep(path, sweep, metrics, [Task(phase_task, (points,), tuple(range(len(points))))],
              {}, "phase")
    paths = plot_sweep(path)
    assert sorted(p.rsplit("_", 1)[-1] for p in paths[1:]) == ["phase.png", "value.png"]
    for p in paths:
        assert p.startswith(str(tmp_path)) and (tmp_path / p.split("/")[-1]).stat().st_size > 10_000
    fig = figure(read_sweep(path), ["value", "phase"])
    panels = fig.axes
    main_panels = [ax for ax in panels if ax.get_xlabel() == "x"]
    assert len(main_panels) == 4  # 2 metrics x 2 facets (H = 1, 2)
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in main_panels)
    assert main_panels[0].get_title() == "value   H = 1"
    assert any(ax.collections and len(ax.collections) > 1 for ax in main_panels)  # contour
    plt.close(fig)


def test_phase_boundaries_run_along_cell_edges():
    p = np.array([[0.0, 0.0, 1.0], [0.0, np.nan, 1.0]])  # (ny=2, nx=3)
    x, y = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 10.0, 20.0])
    segments = sorted(map(tuple, (tuple(map(tuple, s)) for s in _boundaries(p, x, y))))
    # one vertical edge between columns 1 and 2 in row 0; NaN cells draw no boundary
    assert segments == [((2.0, 0.0), (2.0, 10.0))]
