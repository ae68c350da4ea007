"""Figure of an induction run: p_S, log(p_S*/p_S), copier heat maps, a against log t,
the loss against the limiting model's."""

from __future__ import annotations

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from dynamics.plots import (
    check_figure_path,
    default_plot_path,
    outside_legend,
    save_figure,
    time_label,
)
from dynamics.store import read_run

_STYLE = {"ode": "--", "population": "-", "corrected": ":", "sgd": "o", "full": "x"}
P_FLOOR = 1e-12  # lower end of the p_S axis


def _handle(name: str):
    style = _STYLE.get(name, "-")
    if style in ("o", "x"):
        return plt.Line2D([], [], color="0.2", ls="none", marker=style, mfc="none")
    return plt.Line2D([], [], color="0.2", ls=style)


def _draw(ax, tr, name, y, color, label):
    keep = tr.t > 0
    if tr.kind == "sgd":
        ax.plot(tr.t[keep], y[keep], _STYLE.get(name, "o"), ms=2.5, mfc="none", alpha=0.7,
                color=color, label=label)
    else:
        ax.plot(tr.t[keep], y[keep], _STYLE.get(name, "-"), lw=1.3, color=color, label=label)


def plot_induction(path: str, run_id: str | None = None, out: str | None = None) -> str:
    """Save the figure of an induction run (default: the newest); returns the PNG path."""
    run_id, attrs, trajs = read_run(path, run_id)
    summary = attrs.get("summary", {})
    labels = summary.get("p_labels", [])
    star = ",".join(map(str, summary.get("S_star", [])))
    with h5py.File(path, "r") as fh:
        run = fh["runs"][run_id]
        group = run.get("limit_loss")
        limit = (group["a"][()], group["loss"][()]) if group is not None else None
        tests = {k: v[()] for k, v in run["generalise"].items()} if "generalise" in run else None
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    heat = trajs.get("sgd") or trajs.get("population") or next(iter(trajs.values()))
    heads = heat.params["w"].shape[1]
    columns = max(4, heads + 1)
    fig, axes = plt.subplots(2, columns, figsize=(4.2 * columns, 7.8), squeeze=False)
    ax_p, ax_r, ax_a, ax_l = axes[0][:4]
    for name, tr in trajs.items():
        p = tr.params["p"]
        for i, label in enumerate(labels):
            _draw(ax_p, tr, name, p[:, i], colors[i % len(colors)], f"{name} {{{label}}}")
            if star in labels and label != star:
                with np.errstate(divide="ignore"):
                    ratio = np.log(p[:, labels.index(star)]) - np.log(p[:, i])
                _draw(ax_r, tr, name, ratio, colors[i % len(colors)],
                      f"{name} {{{star}}}/{{{label}}}")
        _draw(ax_a, tr, name, tr.params["a"], "k", name)
        _draw(ax_l, tr, name, tr.loss, "k", name)
        if limit is not None:
            _draw(ax_l, tr, name, np.interp(tr.params["a"], *limit), "tab:red",
                  f"limiting model at {name}'s a")
    if limit is not None:
        ax_a.axhline(summary.get("limit", {}).get("a_optimum", np.nan), color="tab:red", lw=0.8,
                     label="optimum of the limiting model")
    for ax, title, ylabel in [(ax_p, "p_S", "selector weight p_S (log)"),
                              (ax_r, f"log(p_S*/p_S), S* = {{{star}}}", "log(p_S* / p_S)"),
                              (ax_a, "classifier a", "a"), (ax_l, "loss", "loss (cross-entropy)")]:
        ax.set_xscale("log")
        ax.set_xlabel(time_label(attrs), fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        if ax in (ax_a, ax_l):  # a rises, the loss falls: their empty corners
            ax.legend(fontsize=6, ncol=2, loc="upper left" if ax is ax_a else "upper right")
    ax_p.set_yscale("log")
    ax_p.set_ylim(P_FLOOR, 2.0)  # p of the losing sets falls to 1e-300: clipped
    ax_p.text(0.02, 0.02, f"clipped at {P_FLOOR:g}", transform=ax_p.transAxes, fontsize=7)
    # colours: candidate sets; line styles: trajectories (one legend below the panels)
    handles = [plt.Line2D([], [], color=colors[i % len(colors)], lw=3) for i in range(len(labels))]
    names = [f"{{{label}}}" for label in labels]
    handles += [_handle(n) for n in trajs]
    names += list(trajs)
    outside_legend(fig, handles, names)
    t = heat.t
    for h in range(heads):
        ax = axes[1][h]
        image = ax.pcolormesh(np.arange(len(t)), np.arange(1, heat.params["w"].shape[2] + 1),
                              heat.params["w"][:, h].T, shading="nearest")
        ticks = np.linspace(0, len(t) - 1, 5).astype(int)
        ax.set_xticks(ticks, [f"{t[i]:.2g}" for i in ticks])
        ax.set_xlabel("t (log-spaced records)")
        ax.set_ylabel("offset k")
        ax.set_yticks(np.arange(1, heat.params["w"].shape[2] + 1))
        ax.set_title(f"w of head {h + 1} ({'sgd' if 'sgd' in trajs else 'flow'})")
        fig.colorbar(image, ax=ax).set_label("copier logit w")
    if tests is not None:
        _generalisation(axes[1][heads], tests, colors)
    for ax in axes[1][heads + (tests is not None):]:
        ax.axis("off")
    fig.suptitle(f"{run_id} (induction, status {attrs.get('status')})", fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, check_figure_path(out or default_plot_path(path, run_id)), dpi=100)


def _generalisation(ax, tests: dict, colors: list) -> None:
    """Test loss against L, one colour per alpha: networks with +-2 stderr bars, the limiting
    model (S*, the simplified network's final a) dashed."""
    names = [k for k in tests if k not in ("alpha", "L", "counted", "limit")
             and not k.startswith("stderr_")]
    marks = {"sgd": "o", "full": "x"}
    for i, alpha in enumerate(tests["alpha"]):
        color = colors[i % len(colors)]
        for name in names:
            ax.errorbar(tests["L"], tests[name][i], yerr=2 * tests[f"stderr_{name}"][i],
                        fmt=marks.get(name, "s") + "-", ms=3, lw=0.8, capsize=2, color=color,
                        label=f"{name}, alpha {alpha:g}")
        ax.plot(tests["L"], tests["limit"][i], "--", lw=1, color=color,
                label=f"limiting model, alpha {alpha:g}")
    ax.set_xscale("log")
    ax.set_xlabel("test context length L")
    ax.set_ylabel("test loss")
    ax.set_title("generalisation (trained at the run's L, alpha)")
    ax.legend(fontsize=5, ncol=2)
