"""Figures of a stored run: each reduced parameter and the loss against time.

ODE trajectories are lines, SGD trajectories markers, on a log time axis.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .store import read_run

_LINESTYLES = ["-", "--", ":", "-."]
MAX_COLUMNS = 4


def default_plot_path(h5_path: str, run_id: str) -> str:
    stem, _ = os.path.splitext(h5_path)
    return f"{stem}_{run_id}.png"


def save_run_figure(fig, path: str, run_id: str, out: str | None = None, dpi: int = 110) -> str:
    """Lay out, save as PNG (default: next to the HDF5 file) and close a run's figure;
    returns the PNG path."""
    fig.tight_layout()
    out = out or default_plot_path(path, run_id)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _components(values: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(T, ...) -> [(label suffix, (T,) series)] over all trailing indices (1-indexed)."""
    flat = values.reshape(len(values), -1)
    if flat.shape[1] == 1:
        return [("", flat[:, 0])]
    shape = values.shape[1:]
    return [
        ("[" + ",".join(str(i + 1) for i in np.unravel_index(j, shape)) + "]", flat[:, j])
        for j in range(flat.shape[1])
    ]


def plot_run(path: str, run_id: str | None = None, out: str | None = None) -> str:
    """Save the figure of a run (default: the newest) as PNG; returns the PNG path."""
    run_id, attrs, trajs = read_run(path, run_id)
    names = list(dict.fromkeys(n for tr in trajs.values() for n in tr.params))
    shared = [n for n in names if sum(n in tr.params for tr in trajs.values()) > 1]
    # compared parameters and the loss first, then what only one trajectory records
    panels = shared + ["loss"] + [n for n in names if n not in shared]
    cols = min(len(panels), MAX_COLUMNS)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ode_names = [n for n, tr in trajs.items() if tr.kind == "ode"]
    for ax, panel in zip(axes.flat, panels):
        for tname, tr in trajs.items():
            keep = tr.t > 0
            series = ([("", tr.loss)] if panel == "loss"
                      else _components(tr.params[panel]) if panel in tr.params else [])
            for j, (suffix, y) in enumerate(series):
                label = f"{tname}{suffix}" if panel == "loss" or j < 12 else None
                color = colors[j % len(colors)] if panel != "loss" else None
                if tr.kind == "sgd":
                    ax.plot(tr.t[keep], y[keep], "o", ms=2.5, alpha=0.6, color=color,
                            label=label, mfc="none")
                else:
                    style = _LINESTYLES[ode_names.index(tname) % len(_LINESTYLES)]
                    ax.plot(tr.t[keep], y[keep], style, lw=1.4, color=color, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("t (gradient-flow time = lr x step)")
        ax.set_title(panel)
        if panel == "loss":
            ax.set_yscale("log")
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(_title(run_id, attrs), fontsize=8)
    return save_run_figure(fig, path, run_id, out)


def _title(run_id: str, attrs: dict) -> str:
    lines = [f"{run_id} ({attrs.get('experiment')}, status {attrs.get('status')})"]
    for pair, cmp in attrs.get("summary", {}).get("comparison", {}).items():
        esc = cmp.get("escape_time", {})
        lines.append(
            f"{pair}: pointwise gap {cmp['pointwise']['max']:.2%}, path gap {cmp['path']:.2%}"
            + (f", escape {esc['a']:.3g} vs {esc['b']:.3g}" if esc.get("a") and esc.get("b") else "")
        )
    return "\n".join(lines)
