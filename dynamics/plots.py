"""Figures of a stored run: each reduced parameter and the loss against time.

ODE trajectories are lines, SGD trajectories markers, on a log time axis.
"""

from __future__ import annotations

import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .errors import UsageError
from .store import read_run

_LINESTYLES = ["-", "--", ":", "-."]
MAX_COLUMNS = 4


def default_plot_path(h5_path: str, run_id: str) -> str:
    stem, _ = os.path.splitext(h5_path)
    return f"{stem}_{run_id}.png"


FORMATS = ("png", "pdf", "svg")


def check_figure_path(out: str) -> str:
    """Before drawing: a figure path must end in .png, .pdf or .svg and not be a folder;
    its folder is created if missing (as `run --out` does). UsageError naming the path."""
    ext = os.path.splitext(out)[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise UsageError(f"{out}: a figure is written as {', '.join('.' + f for f in FORMATS)} "
                         f"(got {'.' + ext if ext else 'no extension'})")
    if os.path.isdir(out):
        raise UsageError(f"{out}: is a folder, not a figure file")
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{folder}: cannot create the figure's folder ({exc.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{folder}: not writable")
    return out


def save_figure(fig, out: str, dpi: int = 110) -> str:
    """Save fig to out atomically (a temp file beside it, renamed over it: a failed write,
    e.g. a full disk, leaves no partial file and any earlier figure intact) and close it.
    OSError on failure."""
    ext = os.path.splitext(out)[1].lower().lstrip(".") or "png"
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(out)))
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=ext, dpi=dpi)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_run_figure(fig, path: str, run_id: str, out: str | None = None, dpi: int = 110) -> str:
    """Lay out, save (default: a PNG next to the HDF5 file) and close a run's figure;
    returns the figure's path."""
    fig.tight_layout()
    return save_figure(fig, check_figure_path(out or default_plot_path(path, run_id)), dpi)


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


def time_label(attrs: dict) -> str:
    """The x-axis label of a run: gradient-flow time, or a nominal time under Adam (whose
    steps follow no gradient flow)."""
    if (attrs.get("config") or {}).get("optimizer") == "adam":
        return "lr x step (Adam: a nominal time, not gradient flow)"
    return "t (gradient-flow time = lr x step)"


def is_constant(trajs, panel: str) -> bool:
    """Whether every recorded value of a parameter is the same (nothing to plot)."""
    values = [tr.params[panel] for tr in trajs.values() if panel in tr.params]
    flat = np.concatenate([v.ravel() for v in values]) if values else np.zeros(0)
    finite = flat[np.isfinite(flat)]
    return finite.size == flat.size and (finite.size == 0 or np.ptp(finite) == 0)


def outside_legend(fig, handles: list, labels: list[str]) -> None:
    """One legend for the whole figure, below the panels (it never covers data)."""
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.0))


def plot_run(path: str, run_id: str | None = None, out: str | None = None) -> str:
    """Save the figure of a run (default: the newest); returns its path.

    One panel per reduced parameter (components coloured by index) and the loss (log
    scale); flows are lines (one style each), SGD hollow markers; time on a log axis.
    Parameters that never change are named in the title instead of drawn."""
    run_id, attrs, trajs = read_run(path, run_id)
    names = list(dict.fromkeys(n for tr in trajs.values() for n in tr.params))
    constant = [n for n in names if is_constant(trajs, n)]
    names = [n for n in names if n not in constant]
    shared = [n for n in names if sum(n in tr.params for tr in trajs.values()) > 1]
    # compared parameters and the loss first, then what only one trajectory records
    panels = shared + ["loss"] + [n for n in names if n not in shared]
    cols = min(len(panels), MAX_COLUMNS)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows + 1.3), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ode_names = [n for n, tr in trajs.items() if tr.kind == "ode"]
    styles = {n: {"ls": _LINESTYLES[ode_names.index(n) % len(_LINESTYLES)], "lw": 1.4}
              if tr.kind == "ode"
              else {"ls": "none", "marker": "o", "ms": 2.5, "alpha": 0.6, "mfc": "none"}
              for n, tr in trajs.items()}
    components = 1
    for ax, panel in zip(axes.flat, panels):
        for tname, tr in trajs.items():
            keep = tr.t > 0
            series = ([("", tr.loss)] if panel == "loss"
                      else _components(tr.params[panel]) if panel in tr.params else [])
            components = max(components, len(series) if panel != "loss" else 1)
            for j, (_, y) in enumerate(series):
                color = colors[j % len(colors)] if panel != "loss" else "0.2"
                ax.plot(tr.t[keep], y[keep], color=color, **styles[tname])
        ax.set_xscale("log")
        ax.set_xlabel(time_label(attrs), fontsize=8)
        ax.set_ylabel("loss (MSE)" if panel == "loss" else panel)
        ax.set_title(panel, fontsize=10)
        if panel == "loss":
            ax.set_yscale("log")
        else:
            ax.ticklabel_format(axis="y", useOffset=False)
    handles = [plt.Line2D([], [], color="0.2", **styles[n]) for n in trajs]
    labels = [f"{n} ({'flow' if trajs[n].kind == 'ode' else 'network'})" for n in trajs]
    handles += [plt.Line2D([], [], color=colors[j % len(colors)], lw=4) for j in range(min(components, 10))]
    labels += [f"component [{j + 1}]" for j in range(min(components, 10))]
    outside_legend(fig, handles, labels)
    title = _title(run_id, attrs)
    if constant:
        title += "\nconstant, not drawn: " + ", ".join(
            f"{n} = {_constant_value(trajs, n)}" for n in constant)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0.06 if rows > 1 else 0.1, 1, 1))
    return save_figure(fig, check_figure_path(out or default_plot_path(path, run_id)))


def _constant_value(trajs, name: str) -> str:
    value = next(tr.params[name] for tr in trajs.values() if name in tr.params)
    return f"{value.ravel()[0]:g}" if value.size else "-"


def _title(run_id: str, attrs: dict) -> str:
    lines = [f"{run_id} ({attrs.get('experiment')}, status {attrs.get('status')})"]
    for pair, cmp in attrs.get("summary", {}).get("comparison", {}).items():
        esc = cmp.get("escape_time", {})
        lines.append(
            f"{pair}: pointwise gap {cmp['pointwise']['max']:.2%}, path gap {cmp['path']:.2%}"
            + (f", escape {esc['a']:.3g} vs {esc['b']:.3g}" if esc.get("a") and esc.get("b") else "")
        )
    return "\n".join(lines)
