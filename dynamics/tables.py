"""Results tables on screen, read from a run's summary (the dict stored with the run).

One renderer for every experiment. What it shows is driven by the summary's
shape: per-trajectory status and final loss, the gaps of compared pairs, and
curves over an axis (risk per test length); an experiment adds its headline
figures as `Headline` declarations (a label and a path into the summary) and `Records` tables.
`icldyn run` prints these tables after a run and `icldyn show` for stored runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Headline:
    """One headline figure: label, the dotted path of its value in the summary
    (e.g. "heads.layout"), and what it means (units, what is compared)."""

    label: str
    path: str
    doc: str = ""


@dataclass(frozen=True)
class Records:
    """A table of the dict of dicts at `path` in the summary (one row per entry, e.g.
    per trained network), with the given columns of each entry."""

    title: str
    path: str
    columns: tuple[str, ...]


CURVE_AXES = ("L_test", "n_test")  # the axes of risk curves: test context lengths


def _get(summary: dict, path: str):
    value = summary
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def fmt(value) -> str:
    """A number in 4 significant digits; lists, dicts, bools and strings as they read."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "; ".join(f"{k} {fmt(v)}" for k, v in value.items())
    return str(value)


def _grid(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: indent + "  ".join(c.rjust(w) if i else c.ljust(w)
                                            for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header)] + [line(r) for r in rows]


def trajectory_rows(summary: dict) -> list[str]:
    """Status, time reached and final loss of each trajectory."""
    rows = [[name, s["kind"], s["status"] + (f" at t = {fmt(s['failed_at'])}"
                                             if "failed_at" in s else ""),
             fmt(s.get("t_final")), fmt(s.get("loss_final"))]
            for name, s in summary.items()
            if isinstance(s, dict) and "kind" in s and "status" in s]
    if not rows:
        return []
    return ["trajectories:"] + _grid(["name", "kind", "status", "t reached", "final loss"], rows)


def comparison_rows(summary: dict, x_label: str = "t") -> list[str]:
    """The gaps of each compared pair a_vs_b (b the reference), with the parameter that
    sets the pointwise gap."""
    pairs = summary.get("comparison") or {}
    if not pairs:
        return []
    out = [(f"gaps (pointwise: max over {x_label} and parameters of |a-b| / max|b|; "
            "path: Hausdorff distance / max|b|):")]
    for name, cmp in pairs.items():
        worst = max((k for k in cmp["pointwise"] if k != "max"),
                    key=lambda k: cmp["pointwise"][k], default="")
        esc = cmp.get("escape_time") or {}
        out.append(f"  {name:<22} pointwise gap {cmp['pointwise']['max']:7.2%}   path gap "
                   f"{cmp['path']:7.2%}   escape {x_label} {_esc(esc.get('a'))} vs "
                   f"{_esc(esc.get('b'))}   (largest in {worst})")
    return out


def _esc(x) -> str:
    return f"{x:.3g}" if x is not None else "-"


def curve_rows(summary: dict) -> list[str]:
    """Risk per test length: one row per axis value, one column per estimator
    (mean +- 2 standard errors when the summary has them)."""
    axis = next((a for a in CURVE_AXES if isinstance(summary.get(a), list)), None)
    risk = summary.get("risk")
    if axis is None or not isinstance(risk, dict):
        return []
    names = [n for n, v in risk.items() if isinstance(v, list) and len(v) == len(summary[axis])]
    stderr = summary.get("stderr") or {}
    rows = []
    for i, x in enumerate(summary[axis]):
        cells = [fmt(x)]
        for n in names:
            cell = fmt(risk[n][i])
            if n in stderr:
                cell += f" +-{2 * stderr[n][i]:.2g}"
            cells.append(cell)
        rows.append(cells)
    return [f"risk E(y_hat - y)^2 per {axis} (Monte Carlo, +- 2 standard errors):"] + \
        _grid([axis, *names], rows)


def records_rows(summary: dict, table: Records) -> list[str]:
    entries = _get(summary, table.path)
    if not isinstance(entries, dict) or not entries:
        return []
    rows = [[name, *(fmt(e.get(c)) for c in table.columns)] for name, e in entries.items()
            if isinstance(e, dict)]
    return [f"{table.title}:"] + _grid(["name", *table.columns], rows)


def headline_rows(summary: dict, headlines: tuple) -> list[str]:
    out = []
    for table in (h for h in headlines if isinstance(h, Records)):
        out += records_rows(summary, table)
    rows = [(h, _get(summary, h.path)) for h in headlines if isinstance(h, Headline)]
    rows = [(h, v) for h, v in rows if v is not None]
    if not rows:
        return out
    width = max(len(h.label) for h, _ in rows)
    return ["key figures:"] + [f"  {h.label:<{width}}  {fmt(v)}" + (f"   ({h.doc})" if h.doc else "")
                           for h, v in rows] + out


def results(summary: dict, headlines: tuple = (), x_label: str = "t") -> list[str]:
    """The lines of every table a summary supports, headline figures first."""
    return (headline_rows(summary, headlines) + curve_rows(summary)
            + trajectory_rows(summary) + comparison_rows(summary, x_label))
