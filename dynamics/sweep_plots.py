"""Phase diagrams of a stored sweep.

Per scalar metric: a pcolormesh over the first two axes (cells centred on the
grid values, edges at the midpoints, geometric midpoints on log axes), white
lines along the cell edges where the phase metric changes, log axes where the grid
is logarithmic, one facet per value of a third axis. Axes beyond the third
are held at their first value (named in the title). A one-axis sweep is a line
plot. Metrics with extra dimensions (one value per head, ...) are not plotted.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm

from .plots import check_figure_path, save_figure
from .sweep_store import Axis, SweepData, label, read_sweep


def _positions(axis: Axis) -> np.ndarray:
    """Plot coordinates of an axis: its values if numeric, else 0..n-1."""
    if axis.type in ("int", "float"):
        return np.asarray(axis.values, dtype=np.float64)
    return np.arange(len(axis.values), dtype=np.float64)


def _edges(axis: Axis) -> np.ndarray:
    """(n+1,) cell edges around the axis positions (in log space for log axes)."""
    x = _positions(axis)
    log = axis.spacing == "log"
    u = np.log(x) if log else x
    if len(u) == 1:
        mid = np.array([u[0] - 0.5, u[0] + 0.5]) if not log else np.array([u[0] - 0.1, u[0] + 0.1])
    else:
        inner = (u[1:] + u[:-1]) / 2
        mid = np.concatenate([[2 * u[0] - inner[0]], inner, [2 * u[-1] - inner[-1]]])
    return np.exp(mid) if log else mid


def _style_axis(ax, axis: Axis, which: str) -> None:
    getattr(ax, f"set_{which}label")(axis.name)
    if axis.spacing == "log":
        getattr(ax, f"set_{which}scale")("log")
    if axis.type not in ("int", "float") or (axis.type == "int" and len(axis.values) <= 12):
        getattr(ax, f"set_{which}ticks")(_positions(axis), [label(v) for v in axis.values])


def _slices(data: SweepData) -> tuple[list, str]:
    """Index tuples of the facets (over the third axis) and a note on held axes."""
    held = data.axes[3:]
    note = ", ".join(f"{a.name}={label(a.values[0])}" for a in held)
    if len(data.axes) < 3:
        return [()], note
    return [(k,) for k in range(len(data.axes[2].values))], note


def _boundaries(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> list:
    """Segments along the cell edges between neighbouring cells of different phase.
    p: (ny, nx) phases (NaN: unknown, no boundary); x: (nx+1,), y: (ny+1,) cell edges."""
    segments = []
    differs_x = np.isfinite(p[:, 1:]) & np.isfinite(p[:, :-1]) & (p[:, 1:] != p[:, :-1])
    for j, i in zip(*np.nonzero(differs_x)):
        segments.append([(x[i + 1], y[j]), (x[i + 1], y[j + 1])])
    differs_y = np.isfinite(p[1:]) & np.isfinite(p[:-1]) & (p[1:] != p[:-1])
    for j, i in zip(*np.nonzero(differs_y)):
        segments.append([(x[i], y[j + 1]), (x[i + 1], y[j + 1])])
    return segments


def _panel(ax, fig, data: SweepData, name: str, facet: tuple, phase: np.ndarray | None) -> None:
    values = data.metrics[name]
    attrs = data.metric_attrs[name]
    index = (slice(None), slice(None)) + facet + (0,) * (len(data.axes) - 2 - len(facet))
    z = values[index].T  # rows: second axis (y), columns: first axis (x)
    ax_x, ax_y = data.axes[0], data.axes[1]
    meanings = str(attrs.get("flag_meanings", "")).split()
    if meanings:
        cmap = ListedColormap(plt.get_cmap("tab10").colors[: len(meanings)])
        norm = BoundaryNorm(np.arange(len(meanings) + 1) - 0.5, len(meanings))
    else:
        cmap = "viridis"
        positive = z[np.isfinite(z) & (z > 0)]
        log = attrs.get("scale") == "log" and positive.size and (z[np.isfinite(z)] > 0).all()
        norm = LogNorm(positive.min(), positive.max()) if log else None
    ax.set_facecolor("0.8")  # grey: points not computed, or no value (NaN, e.g. no escape)
    mesh = ax.pcolormesh(_edges(ax_x), _edges(ax_y), np.ma.masked_invalid(z), cmap=cmap,
                         norm=norm, shading="flat")
    bar = fig.colorbar(mesh, ax=ax)
    bar.set_label("phase" if meanings else name, fontsize=8)
    if meanings:
        bar.set_ticks(np.arange(len(meanings)), labels=meanings)
    if phase is not None:
        ax.add_collection(LineCollection(_boundaries(phase[index].T, _edges(ax_x), _edges(ax_y)),
                                         colors="white", linewidths=1.5))
    _style_axis(ax, ax_x, "x")
    _style_axis(ax, ax_y, "y")
    title = name
    if facet:
        third = data.axes[2]
        title += f"   {third.name} = {label(third.values[facet[0]])}"
    ax.set_title(title, fontsize=9)


def _line(ax, data: SweepData, name: str) -> None:
    axis = data.axes[0]
    ax.plot(_positions(axis), data.metrics[name], "o-", ms=3)
    _style_axis(ax, axis, "x")
    ax.set_ylabel(name)
    ax.set_title(name, fontsize=9)
    if data.metric_attrs[name].get("scale") == "log":
        ax.set_yscale("log")


def scalar_metrics(data: SweepData) -> list[str]:
    return [n for n, v in data.metrics.items() if v.ndim == len(data.axes)]


MAX_COLUMNS = 4


def figure(data: SweepData, names: list[str]):
    """A grid of panels, one per metric and facet (a metric's facets side by side, at most
    MAX_COLUMNS panels a row); returns the figure. Grey cells are explained in the title."""
    facets, note = _slices(data)
    phase_name = data.attrs.get("phase_metric") or None
    phase = data.metrics.get(phase_name) if phase_name else None
    panels = [(name, facet) for name in names for facet in facets]
    cols = min(len(panels), len(facets) if 1 < len(facets) <= MAX_COLUMNS else MAX_COLUMNS)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows + 0.6), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    grey = False
    for ax, (name, facet) in zip(axes.flat, panels):
        if len(data.axes) == 1:
            _line(ax, data, name)
        else:
            _panel(ax, fig, data, name, facet, phase)
            grey = grey or not np.isfinite(data.metrics[name]).all()
    title = f"{data.sweep_id} ({data.attrs['experiment']}, {int(data.done.sum())}/{data.done.size} points)"
    if note:
        title += f"; held at {note}"
    if grey:
        title += "\ngrey cells: not computed yet, or no value there (NaN, e.g. no escape by t_max)"
    if phase is not None and len(data.axes) > 1:
        title += "\nwhite lines: boundaries between phases"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_sweep(path: str, sweep_id: str | None = None, out_dir: str | None = None,
               metrics: list[str] | None = None, out: str | None = None) -> list[str]:
    """Phase diagrams next to the file: <stem>_<sweep_id>.png with every scalar metric and
    <stem>_<sweep_id>_<metric>.png per metric (out: the first one's path, the others
    beside it with _<metric> added). Returns the paths, the combined figure first."""
    data = read_sweep(path, sweep_id)
    names = metrics or scalar_metrics(data)
    if out is None:
        stem = os.path.splitext(os.path.basename(path))[0]
        folder = out_dir or os.path.dirname(os.path.abspath(path))
        out = os.path.join(folder, f"{stem}_{data.sweep_id}.png")
    base, ext = os.path.splitext(check_figure_path(out))
    paths = [save_figure(figure(data, names), out, dpi=100)]
    for name in names:
        paths.append(save_figure(figure(data, [name]), f"{base}_{name}{ext}", dpi=100))
    return paths
