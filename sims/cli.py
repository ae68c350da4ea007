"""The `icldyn` command line (docs/design.md, command-line contract).

Exit status (dynamics/errors.py, docs/reliability.md): 0 success; 1 a theory
check failed; 2 bad input (one line on stderr naming the key or path, nothing
written); 3 results written but a trajectory diverged or stalled; 4 an output
could not be written (one line saying what was kept); 70 an unexpected error
(one line; --debug shows the traceback); 130 interrupted (Ctrl-C); 141 stdout
closed by its reader (silent). No traceback reaches the screen without --debug.

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
import traceback
from importlib import metadata

from dynamics import errors
from dynamics.config import Schema, load_toml, parse_assignments
from dynamics.errors import OutputError, UsageError
from dynamics.progress import STATUS, heartbeat
from dynamics.tables import fmt

from . import registry


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2
        raise UsageError(message)


def _debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an error (also ICLDYN_DEBUG=1)")


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
    p = sub.add_parser("plot", help="draw a stored run or sweep again")
    p.add_argument("file")
    p.add_argument("--run", help="run id (default: the newest)")
    p.add_argument("--sweep", nargs="?", const="", metavar="SWEEP_ID",
                   help="draw a sweep's phase diagrams (default: the newest sweep; also when "
                        "the file holds no runs)")
    p.add_argument("--out", metavar="FILE.png", help="figure path (.png, .pdf or .svg)")
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
    _debug(parser)
    for p in sub.choices.values():
        _debug(p)
    return parser


def _keys_epilog(argv: list[str]) -> str | None:
    """The keys of the experiment named after run/check/sweep in argv, for its --help (only
    asked for help: listing them reads every system's declaration)."""
    if (len(argv) < 2 or argv[0] not in ("run", "check", "sweep")
            or not {"-h", "--help"} & set(argv)):
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
        schema, name = exp.schema, exp.name
    else:
        info = registry.info(args.experiment)
        schema, name = info.schema, info.name
    layers = [load_toml(args.config, name)] if args.config else []
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
    args.checkpoints = str(checkpoint.root(out))
    STATUS.set(f"run {exp.name}: computing")
    try:
        with checkpoint.checkpointing(out, key, config.get("checkpoint_every", 0)):
            result = exp.run(config, ode=not args.no_ode, sgd=not args.no_sgd)
    except OSError as exc:  # a checkpoint that cannot be written: no space, no permission
        raise OutputError(f"{exc.filename or args.checkpoints}: cannot write a checkpoint "
                          f"({exc.strerror}); {out} is unchanged") from None
    STATUS.set(f"run {exp.name}: writing {out}")
    if not result.trajectories and not result.extra:
        raise UsageError(f"experiment {exp.name!r} with --no-ode and --no-sgd computes nothing; "
                         "nothing written")
    try:
        run_id = store.write_run(out, exp.name, values, config.seed, result.trajectories,
                                 result.status, result.summary, result.extra, result.axes)
    except OutputError as exc:
        raise OutputError(f"{exc}{_resumable(args)}") from None
    checkpoint.discard(out, key)
    args.written.append(f"{out} (run {run_id})")
    summary = {"experiment": exp.name, "run_id": run_id, "file": out, "status": result.status,
               "failures": result.failures(), "seed": config.seed,
               "wall_seconds": round(time.perf_counter() - start, 3),
               "command": shlex.join(["icldyn", *sys.argv[1:]]), "config": values}
    if not args.no_plot and (result.trajectories or result.extra):
        try:
            STATUS.set(f"run {exp.name}: drawing the figure")
            summary["plot"] = exp.plot(out, run_id)
        except OSError as exc:
            raise OutputError(f"figure not written ({exc.strerror}); results kept in {out} "
                              f"as run {run_id} (icldyn plot {out} --run {run_id} redraws it)"
                              ) from None
    summary.update(result.summary)
    return summary


def cmd_check(args) -> dict:
    if is_model_file(args.experiment):
        exp, config = resolve_config(args)
        checks = exp.check
    else:
        checks = registry.checks(registry.info(args.experiment).name)
        exp, config = resolve_config(args)
    STATUS.set(f"check {exp.name}: computing theory and measurements")
    rows = [row.as_dict() for row in checks(config)]
    return {"experiment": exp.name, "passed": all(r["passed"] for r in rows), "rows": rows}


def cmd_show(args) -> dict:
    from dynamics import store

    return store.describe(args.file) if args.json else store.overview(args.file)


def cmd_plot(args) -> dict:
    from dynamics import store
    from dynamics.plots import check_figure_path, plot_run

    if args.out:
        check_figure_path(args.out)
    try:
        if args.sweep is not None or not store.describe(args.file)["runs"]:
            from dynamics.sweep_plots import plot_sweep

            plots = plot_sweep(args.file, args.sweep or None, out=args.out)
            return {"file": args.file, "plot": plots[0], "plots": plots}
        run_id, attrs, _ = store.read_run(args.file, args.run)
        name = str(attrs.get("experiment"))
        draw = registry.get(name).plot if name in registry.experiments() else plot_run
        plot = draw(args.file, run_id, args.out)
    except OSError as exc:
        raise OutputError(f"{args.out or args.file}: figure not written ({exc.strerror}); "
                          f"{args.file} is unchanged") from None
    return {"file": args.file, "run_id": run_id, "plot": plot}


def cmd_sweep(args) -> dict:
    from dynamics.sweep import check_grid_size

    check_grid_size(args.grid)  # before the heavy imports: a huge grid is refused at once
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
        failed = "; ".join(f"{f['trajectory']} {f['status']} at t = {f['t']:.4g}"
                           for f in payload.get("failures", []))
        print(f"{payload['experiment']} run {payload['run_id']}: {payload['status']} "
              f"in {payload['wall_seconds']:.1f} s" + (f" ({failed})" if failed else ""))
        exp = registry.get(payload["experiment"])
        for line in exp.tables(payload, payload.get("config", {})):
            print(line)
        print(f"results: {payload['file']}" + (f"\nfigure:  {payload['plot']}" if "plot" in payload else ""))
        return
    if command == "show":
        _print_show(payload)
        return
    if command == "plot":
        print(f"figure:  {payload['plot']}")
        return
    if command == "sweep":
        print(f"{payload['experiment']} sweep {payload['sweep_id']}: {payload['points_total']} "
              f"points, {payload['points_computed']} computed, {payload['points_reused']} reused")
        print(f"results: {payload['file']}"
              + "".join(f"\nfigure:  {p}" for p in payload.get("plots", [])[:1]))
        return
    print(json.dumps(payload, indent=2, default=str))


def _changed(config: dict, defaults: dict) -> str:
    """The keys of config whose values differ from the defaults, as KEY=VALUE."""
    pairs = [f"{k}={fmt(v)}" for k, v in config.items() if defaults.get(k, v) != v]
    return " ".join(pairs) if pairs else "(all defaults)"


def _print_show(payload: dict) -> None:
    """A readable summary of each run and sweep of a file."""
    print(f"{payload['file']}: {len(payload['runs'])} run(s), {len(payload['sweeps'])} sweep(s)")
    for run_id, run in payload["runs"].items():
        exp = registry.get(run["experiment"]) if run["experiment"] in registry.experiments() else None
        defaults = exp.schema.defaults() if exp else {}
        print(f"\nrun {run_id}: {run['experiment']}, {run['status']}, seed {run['seed']}, "
              f"created {run['created']}")
        print(f"  config: {_changed(run['config'], defaults)}")
        lines = exp.tables(run["summary"], run["config"]) if exp else []
        for line in lines:
            print("  " + line)
    for sid, sw in payload["sweeps"].items():
        known = sw["experiment"] in registry.experiments()
        defaults = registry.info(sw["experiment"]).schema.defaults() if known else {}
        grid = " x ".join(f"{a['name']} ({len(a['values'])})" for a in sw["grid"])
        print(f"\nsweep {sid}: {sw['experiment']}, {sw['status']}, {sw['points_done']}/"
              f"{sw['points_total']} points over {grid}, created {sw['created']}")
        print(f"  config: {_changed(sw['config'], defaults)}")
    if payload["runs"] or payload["sweeps"]:
        print("\n(icldyn show FILE --json: the datasets of each run; icldyn plot FILE: its figure)")


COMMANDS = {"list": cmd_list, "run": cmd_run, "check": cmd_check, "show": cmd_show,
            "plot": cmd_plot, "sweep": cmd_sweep}


def _emit(args, payload: dict) -> None:
    STATUS.clear()
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str, allow_nan=True))
    else:
        _print_human(args.command, payload)
    sys.stdout.flush()  # a closed pipe shows here, inside main's handlers


def _status(payload: dict) -> int:
    if payload.get("passed") is False:
        return errors.EXIT_CHECK_FAILED
    if payload.get("status", "complete") != "complete":
        return errors.EXIT_INCOMPLETE
    return errors.EXIT_OK


def _resumable(args) -> str:
    """A note that the same command resumes, when trainings left checkpoints."""
    folder = getattr(args, "checkpoints", None)
    return (f"; the same command resumes from the checkpoints in {folder}"
            if folder and os.path.isdir(folder) else "")


def _fail(message: str, status: int) -> int:
    STATUS.clear()
    print(f"icldyn: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and an exit status.

    As the program (argv None: the icldyn script, python -m sims.cli) an unexpected
    exception is one line too (exit 70); called with an argv list, in-process, it is
    raised to the caller."""
    program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ICLDYN_DEBUG") == "1"
    args = argparse.Namespace(command=None, written=[])
    try:
        args = build_parser(argv).parse_args(argv, namespace=args)
        with heartbeat():
            STATUS.set(f"{args.command} {getattr(args, 'experiment', '')}: loading".replace("  ", " "))
            payload = COMMANDS[args.command](args)
        _emit(args, payload)
        return _status(payload)
    except UsageError as exc:
        if debug:
            traceback.print_exc()
        return _fail(f"error: {exc}", errors.EXIT_USAGE)
    except OutputError as exc:
        if debug:
            traceback.print_exc()
        return _fail(f"error: {exc}", errors.EXIT_OUTPUT)
    except KeyboardInterrupt:
        kept = (f"results kept in {', '.join(args.written)}" if args.written
                else "nothing written, earlier results intact" + _resumable(args))
        return _fail(f"interrupted; {kept}", errors.EXIT_INTERRUPTED)
    except BrokenPipeError:
        # the reader (e.g. `| head`) has gone: no message; keep Python from failing again
        # when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return errors.EXIT_BROKEN_PIPE
    except Exception as exc:  # a bug: one line, the traceback on request
        if not program:
            raise
        if debug:
            traceback.print_exc()
        reason = (str(exc).splitlines() or [""])[0]
        kept = f"; results kept in {', '.join(args.written)}" if args.written else ""
        return _fail(f"internal error: {type(exc).__name__}: {reason}{kept} "
                     "(--debug shows the traceback)", errors.EXIT_INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
