"""Write BENCHMARKS.md (repository root) from benchmarks/results/*.json: a summary of the
targets, one table per benchmark with each ratio's spread, and the default runs of every
experiment (bench_runs.py). Run by `make bench` and `make bench-runs`."""

from __future__ import annotations

import glob
import json
import os

from common import MEMORY_METHOD, RESULTS, TIMING
from spread import METHOD

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ["sgd_throughput", "ensemble_seeds", "population_flow", "ode_vs_sgd", "sweep_grid", "startup",
         "gpt2_step"]
RUNS = "default_runs"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


def _spread(c: dict) -> str:
    """'[q1, q3]' of a case, '-' for a result written before spreads were recorded."""
    return f"[{c['ratio_q1']:.2f}, {c['ratio_q3']:.2f}]" if "ratio_q1" in c else "-"


def _seconds(c: dict, side: str) -> str:
    span = c.get(f"{side}_s_range")
    return f"{c[f'{side}_s']:.4g}" + (f" [{span[0]:.4g}, {span[1]:.4g}]" if span else "")


def _target(r: dict) -> str:
    if r.get("target") is None:
        return "-"
    return f"{'<=' if r.get('higher_is_better') is False else '>='} {r['target']:g}x"


def _met(r: dict) -> str:
    if r["met"] is None:
        return "-"
    verdict = "yes" if r["met"] else "no"
    return f"{verdict} ({r['met_by'].split()[0]})" if "met_by" in r else f"{verdict} (median)"


def section(result: dict) -> list[str]:
    met = "no target" if result["target"] is None else (
        f"target {_target(result)} on {result['target_case']}, judged on "
        f"{result.get('met_by', 'the median (recorded before spreads)')}: "
        f"**{'met' if result['met'] else 'not met'}** (median {result['ratio']:.2f}x, "
        f"[q1, q3] {_spread(result)})")
    lines = [f"## {result['name']}", "", f"Engine against {result['baseline']}. {met}.", "",
             ("| case | engine (s) [min, max] | baseline (s) [min, max] | median ratio "
              "| [q1, q3] | reps | target | met |"), "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c['case']} | {_seconds(c, 'engine')} | {_seconds(c, 'baseline')} | "
              f"{c['ratio']:.2f}x | {_spread(c)} | {c.get('repeats', '-')} | {_target(c)} | "
              f"{'-' if c.get('met') is None else 'yes' if c['met'] else 'no'} |"
              for c in result["cases"]]
    for c in result["cases"]:
        extra = {k: v for k, v in c.items() if k not in TIMING}
        if "ratios" in c:
            extra = {"per-repetition ratios": [round(x, 3) for x in c["ratios"]], **extra}
        if extra:
            lines += ["", f"{c['case']}:", *(f"- {k}: {_cell(v)}" for k, v in extra.items())]
    load = result.get("load_average")
    lines += ["", f"Machine: {result['machine']}" + (
        f"; load average {', '.join(f'{x:g}' for x in load)} (1, 5, 15 min) when written"
        if load else "") + f". Process peak RSS {result['peak_rss_mb']} MB. {result['notes']}",
        ""]
    return lines


def runs_summary(result: dict) -> str:
    t = result["cpu_target"]
    run = result["runs"].get(t["experiment"])
    if run is None:
        return f"the default {t['experiment']} run is not measured yet"
    return (f"the default {t['experiment']} run took {run['cpu_s']:.1f} s of CPU "
            f"({run['wall_s']:.1f} s wall), target <= {t['cpu_s_at_most']:g} s of CPU: "
            f"**{'met' if t['met'] else 'not met'}**")


def runs_section(result: dict) -> list[str]:
    """The default run of every experiment: wall and CPU time of the whole process."""
    summary = runs_summary(result)
    lines = [f"## {RUNS}", "", result["method"], "", summary[0].upper() + summary[1:] + ".", "",
             ("| experiment | wall (s) | CPU (s) | user (s) | sys (s) | CPU / wall "
              "| peak RSS (MB) | exit | load before | measured (UTC) |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in result["experiments"]:
        r = result["runs"].get(name)
        if r is None:
            continue
        lines.append(f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['user_s']:.1f} | "
                     f"{r['sys_s']:.1f} | {r['cpu_s'] / r['wall_s']:.2f} | {r['max_rss_mb']:.0f} "
                     f"| {r['exit_status']} | {r['load_before'][0]:g} | {r['measured_at']} |")
    missing = [n for n in result["experiments"] if n not in result["runs"]]
    if missing:
        lines += ["", "Not measured:"]
        lines += [f"- {n}: {result['not_measured'].get(n, 'not run yet (make bench-runs)')}"
                  for n in missing]
    lines += ["", f"Machine: {result['machine']}. {result['notes']}", ""]
    return lines


def main():
    results = {}
    for path in glob.glob(os.path.join(RESULTS, "*.json")):
        with open(path) as fh:
            result = json.load(fh)
        results[result["name"]] = result
    runs = results.pop(RUNS, None)
    names = [n for n in ORDER if n in results] + sorted(set(results) - set(ORDER))
    first = results[names[0]]
    lines = ["# Benchmarks", "",
             ("Generated by `make bench` and `make bench-runs` (benchmarks/report.py) from "
              "benchmarks/results/*.json; torch at 1 thread. Ratio = baseline time / engine "
              f"time (higher: the engine is faster). Method: {METHOD}. A result without "
              "[q1, q3] was written before spreads were recorded; its target is judged on the "
              "median."), "",
             f"Machine: {first['machine']}.", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in first["versions"].items()) + ".", "",
             f"Memory: {MEMORY_METHOD}.", "",
             "| benchmark | median ratio | [q1, q3] | reps | target | met |",
             "|---|---|---|---|---|---|"]
    for n in names:
        r = results[n]
        lines.append(f"| {n} | {r['ratio']:.2f}x | {_spread(r)} | {r.get('repeats', '-')} | "
                     f"{_target(r)} | {_met(r)} |")
    if runs is not None:
        lines += ["", f"Default runs of every experiment ([{RUNS}](#{RUNS})): "
                  + runs_summary(runs) + "."]
    lines.append("")
    for n in names:
        lines += section(results[n])
    if runs is not None:
        lines += runs_section(runs)
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as fh:
        fh.write("\n".join(lines))


if __name__ == "__main__":
    main()
