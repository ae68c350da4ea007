"""The `icldyn` command line (docs/design.md, command-line contract).

Exit status: 0 success; 1 a theory check failed; 2 bad input (one line on
stderr naming the key or path, nothing written).

`--help`, `--version`, `list [EXP]` and `EXP --help` import neither torch nor
sympy: they read the systems' declarations (sims.registry); the numerical stack
is imported by the commands that compute or read results.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from importlib import metadata

from dynamics.config import Schema, load_toml, parse_assignments
from dynamics.errors import UsageError

from . import registry


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2
        raise UsageError(message)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="a registered experiment, or a reduced-model file "
                   "PATH.py (docs/user-models.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (lists comma-separated)")
    p.add_argument("--config", metavar="FILE.toml", help="config file (keys at top level)")
    p.add_argument("--seed", type=int, help="random seed (overrides the seed key)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def version() -> str:
    try:
        return metadata.version("icl-dynamics")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `run|check|sweep EXP` in argv, those commands' help lists the keys
    of EXP."""
    parser = _Parser(prog="icldyn", description="In-context-learning dynamics engine",
                     epilog="icldyn COMMAND --help: that command's options; "
                            "icldyn run EXP --help: also the config keys of EXP")
    parser.add_argument("--version", action="version", version=f"icldyn {version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    keys = _keys_epilog(argv or [])
    p = sub.add_parser("list", help="registered experiments and their keys")
    p.add_argument("experiment", nargs="?", help="only this experiment")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("run", help="run an experiment and store it in HDF5", epilog=keys,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--out", metavar="FILE.h5", help="output file (default data/EXP.h5)")
    p.add_argument("--no-ode", action="store_true", help="skip the reduced flows")
    p.add_argument("--no-sgd", action="store_true", help="skip the full network")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p = sub.add_parser("check", help="theory checks; exit 1 if one fails", epilog=keys,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p = sub.add_parser("show", help="what a file holds")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("plot", help="plot a stored run")
    p.add_argument("file")
    p.add_argument("--run", help="run id (default: the newest)")
    p.add_argument("--out", metavar="FILE.png")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("sweep", help="phase diagram: a grid of configs into /sweeps/ of a file",
                       epilog=keys, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a swept key: V1,V2,..., START:STOP:NUM or logspace:START:STOP:NUM")
    p.add_argument("--out", metavar="FILE.h5", help="output file (default data/EXP_sweep.h5)")
    p.add_argument("--workers", type=int, metavar="N", help="local Dask cluster of N processes")
    p.add_argument("--scheduler", metavar="ADDRESS", help="existing Dask scheduler to run on")
    p.add_argument("--no-ode", action="store_true", help="skip the reduced flows")
    p.add_argument("--no-sgd", action="store_true", help="skip the full network")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNGs")
    return parser


def _keys_epilog(argv: list[str]) -> str | None:
    """The keys of the experiment named after run/check/sweep in argv, for its --help."""
    if len(argv) < 2 or argv[0] not in ("run", "check", "sweep"):
        return None
    info = registry.experiments().get(argv[1])
    if info is None:
        return None
    return f"{info.name}: {info.description}\n\nconfig keys (--set KEY=VALUE):\n" + "\n".join(
        _key_lines(info.schema))


def _key_lines(schema: Schema) -> list[str]:
    """One line per key: name, type, default, doc, then its choices or range."""
    lines = []
    for k in schema.keys:
        line = f"  {k.name:<18} {k.type:<6} default {k.default!s:<10} {k.doc}"
        if k.choices:
            line += f" [choices: {', '.join(map(str, k.choices))}]"
        elif k.low is not None or k.high is not None:
            low = "" if k.low is None else f"{k.low:g} {'<' if k.low_open else '<='} "
            high = "" if k.high is None else f" <= {k.high:g}"
            line += f" [{low}{k.name}{high}]"
        lines.append(line)
    return lines


def resolve_config(args) -> tuple:
    """(experiment, admitted config) from --config, --set and --seed: validated, and
    within the memory limit (Experiment.admit)."""
    if is_model_file(args.experiment):
        from . import user_model  # torch and sympy load only for a model file

        exp = user_model.load(args.experiment)
        schema = exp.schema
    else:
        info = registry.info(args.experiment)
        schema = info.schema
    layers = [load_toml(args.config)] if args.config else []
    layers.append(parse_assignments(args.set))
    if args.seed is not None:
        layers.append({"seed": args.seed})
    config = schema.resolve(*layers)
    _threads()
    if not is_model_file(args.experiment):
        exp = registry.get(info.name)
    exp.admit(config)
    return exp, config


def is_model_file(name: str) -> bool:
    """Whether an experiment argument names a reduced model's Python file (docs/user-models.md)
    rather than a registered experiment."""
    return name.endswith(".py") or os.sep in name


def _threads() -> None:
    """torch's thread count, from ICLDYN_THREADS (default 1: small tensors)."""
    import torch

    torch.set_num_threads(int(os.environ.get("ICLDYN_THREADS", "1")))


def cmd_list(args) -> dict:
    infos = ([registry.info(args.experiment)] if args.experiment
             else list(registry.experiments().values()))
    return {
        info.name: {
            "description": info.description,
            "keys": {k.name: {"type": k.type, "default": k.default, "doc": k.doc,
                              **({"choices": list(k.choices)} if k.choices else {}),
                              **({"low": k.low, "low_open": k.low_open} if k.low is not None
                                 else {}),
                              **({"high": k.high} if k.high is not None else {})}
                     for k in info.schema.keys},
        }
        for info in infos
    }


def cmd_run(args) -> dict:
    from dynamics import checkpoint, store

    exp, config = resolve_config(args)
    out = args.out or os.path.join("data", f"{exp.name}.h5")
    store.check_writable(out)
    start = time.perf_counter()
    values = dict(config)
    key = checkpoint.run_key(exp.name, values, {"ode": not args.no_ode, "sgd": not args.no_sgd})
    with checkpoint.checkpointing(out, key, config.get("checkpoint_every", 0)):
        result = exp.run(config, ode=not args.no_ode, sgd=not args.no_sgd)
    run_id = store.write_run(out, exp.name, values, config.seed, result.trajectories,
                             result.status, result.summary, result.extra, result.axes)
    checkpoint.discard(out, key)
    summary = {"experiment": exp.name, "run_id": run_id, "file": out, "status": result.status,
               "seed": config.seed, "wall_seconds": round(time.perf_counter() - start, 3),
               "command": shlex.join(["icldyn", *sys.argv[1:]]), "config": values}
    if not args.no_plot and (result.trajectories or result.extra):
        summary["plot"] = exp.plot(out, run_id)
    summary.update(result.summary)
    return summary


def cmd_check(args) -> dict:
    if is_model_file(args.experiment):
        exp, config = resolve_config(args)
        checks = exp.check
    else:
        checks = registry.checks(registry.info(args.experiment).name)
        exp, config = resolve_config(args)
    rows = [row.as_dict() for row in checks(config)]
    return {"experiment": exp.name, "passed": all(r["passed"] for r in rows), "rows": rows}


def cmd_show(args) -> dict:
    from dynamics import store

    return store.describe(args.file)


def cmd_plot(args) -> dict:
    from dynamics import store
    from dynamics.plots import plot_run

    run_id, attrs, _ = store.read_run(args.file, args.run)
    name = str(attrs.get("experiment"))
    if name not in registry.experiments():
        return {"plot": plot_run(args.file, run_id, args.out)}
    return {"plot": registry.get(name).plot(args.file, run_id, args.out)}


def cmd_sweep(args) -> dict:
    from . import sweeps  # the sweep machinery (and Dask) load only when sweeping

    exp, config = resolve_config(args)
    out = args.out or os.path.join("data", f"{exp.name}_sweep.h5")
    return sweeps.sweep(exp, config, args.grid, out, ode=not args.no_ode, sgd=not args.no_sgd,
                        workers=args.workers, scheduler=args.scheduler, plot=not args.no_plot)


def _print_human(command: str, payload: dict) -> None:
    if command == "list":
        for name, info in payload.items():
            print(f"{name}: {info['description']}")
            print("\n".join(_key_lines(registry.info(name).schema)))
        return
    if command == "check":
        width = max((len(r["name"]) for r in payload["rows"]), default=4)
        for r in payload["rows"]:
            mark = "pass" if r["passed"] else "FAIL"
            print(f"{mark}  {r['name']:<{width}}  expected {r['expected']:.6g}  measured "
                  f"{r['measured']:.6g}  tolerance {r['tolerance']:.2g}  {r['detail']}")
        print(f"{payload['experiment']}: {'all checks passed' if payload['passed'] else 'FAILED'}")
        return
    if command == "run":
        print(f"{payload['experiment']} run {payload['run_id']}: {payload['status']} "
              f"in {payload['wall_seconds']:.1f} s")
        for name, cmp in payload.get("comparison", {}).items():
            esc = cmp["escape_time"]
            print(f"  {name:<22} pointwise gap {cmp['pointwise']['max']:7.2%}   path gap "
                  f"{cmp['path']:7.2%}   escape t {_fmt(esc['a'])} vs {_fmt(esc['b'])}")
        print(f"results: {payload['file']}" + (f"\nfigure:  {payload['plot']}" if "plot" in payload else ""))
        return
    if command == "sweep":
        print(f"{payload['experiment']} sweep {payload['sweep_id']}: {payload['points_total']} "
              f"points, {payload['points_computed']} computed, {payload['points_reused']} reused")
        print(f"results: {payload['file']}"
              + "".join(f"\nfigure:  {p}" for p in payload.get("plots", [])[:1]))
        return
    print(json.dumps(payload, indent=2, default=str))


def _fmt(x) -> str:
    return f"{x:.3g}" if x is not None else "-"


COMMANDS = {"list": cmd_list, "run": cmd_run, "check": cmd_check, "show": cmd_show,
            "plot": cmd_plot, "sweep": cmd_sweep}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
        payload = COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"icldyn: error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str, allow_nan=True))
    else:
        _print_human(args.command, payload)
    return 1 if payload.get("passed") is False else 0


if __name__ == "__main__":
    sys.exit(main())
