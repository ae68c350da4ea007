"""Sweeps over hyper-parameter grids: grid parsing, points, execution, resume.

Model-agnostic: an experiment's sweep hooks (sims/sweeps.py) declare the
metrics and cut the grid into Tasks, each a top-level callable with picklable
arguments that returns [(flat point index, {metric: value})]. Tasks run
in-process, on a local Dask cluster of worker processes, or on an existing
Dask scheduler; all three go through `execute`, and every finished task is
committed to the store's journal (dynamics/sweep_store.py) as it arrives, so
an interrupted sweep resumes with the same command.

Grid syntax (one --grid per key; the grid is the Cartesian product, points in
C order, first axis slowest):
- KEY=V1,V2,...                  explicit values, each parsed by the key's schema
- KEY=START:STOP:NUM             NUM evenly spaced values, both ends included
- KEY=logspace:START:STOP:NUM    NUM geometrically spaced values from START to
                                 STOP (the values themselves, not exponents;
                                 int keys round to the nearest integer)
- KEY=[1,2],[3]                  values of a list-valued key
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .config import Schema
from .errors import UsageError
from .progress import bar
from .sweep_store import Axis, Journal, Metric, prepare, stored_points, sweep_id

__all__ = ["Axis", "Metric", "Sweep", "Task", "execute", "parse_grid", "run_sweep"]

_NUMBER = r"[-+0-9.eE]+"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*:\s*({_NUMBER})\s*:\s*(\d+)\s*$")
_LOG_RANGE = re.compile(rf"^\s*logspace\s*:\s*({_NUMBER})\s*:\s*({_NUMBER})\s*:\s*(\d+)\s*$")
_LIST_ITEM = re.compile(r"\[([^\[\]]*)\]")
CONNECT_TIMEOUT = "10s"  # to an existing Dask scheduler
# Most points a sweep may have: planning holds every point's config and task (measured
# +48 MB at 50,000 linreg points); a larger study is several sweeps (or a coarser grid).
MAX_POINTS = 50_000


def parse_grid(schema: Schema, specs: list[str]) -> list[Axis]:
    """['KEY=VALUES', ...] -> axes, every value validated by the key's schema.

    Raises UsageError naming the key: unknown key, key swept twice, empty list,
    a value of the wrong type or out of range, repeated values.
    """
    check_grid_size(specs)
    axes, seen = [], set()
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--grid {spec!r}: expected KEY=V1,V2,...")
        if name not in schema.by_name:
            raise UsageError(f"unknown key '{name}' (known: {', '.join(schema.by_name)})")
        if name in seen:
            raise UsageError(f"key '{name}': swept twice (one --grid per key)")
        seen.add(name)
        axes.append(_parse_axis(schema.by_name[name], text))
    return axes


def _count(text: str) -> int:
    """Number of values a grid spec gives, read from its text alone (nothing allocated)."""
    match = _LOG_RANGE.match(text) or _RANGE.match(text)
    if match:
        return int(match.group(3))
    items = _LIST_ITEM.findall(text)
    return len(items) if items else text.count(",") + 1


def check_grid_size(specs: list[str]) -> None:
    """UsageError naming the grid when its point count exceeds MAX_POINTS, read from the
    specs' text before any value is generated (and before any key is looked up)."""
    counts = {}
    for spec in specs:
        name, _, text = spec.partition("=")
        counts[name.strip()] = _count(text)
    points = math.prod(counts.values())
    if points > MAX_POINTS:
        sizes = " x ".join(f"{n} {k}" for k, n in counts.items())
        raise UsageError(f"--grid {sizes} = {points:.3g} points, more than the {MAX_POINTS} a "
                         "sweep may have: coarsen the grid or split it into several sweeps")


def _parse_axis(key, text: str) -> Axis:
    if not text.strip():
        raise UsageError(f"key '{key.name}': the grid is empty")
    numeric = key.type in ("int", "float")
    log, lin = _LOG_RANGE.match(text), _RANGE.match(text)
    if numeric and (log or lin):
        values, spacing = _range_values(key, *(log or lin).groups(), log=bool(log)), \
            "log" if log else "linear"
    elif key.type in ("ints", "floats"):
        items = _LIST_ITEM.findall(text)
        if not items or _LIST_ITEM.sub("", text).replace(",", "").strip():
            raise UsageError(f"key '{key.name}': a list-valued key is swept as "
                             f"{key.name}=[a,b],[c], got {text!r}")
        values, spacing = [key.parse(item) for item in items], "list"
    else:
        items = [item.strip() for item in text.split(",")]
        if any(not item for item in items):
            raise UsageError(f"key '{key.name}': empty value in the grid {text!r}")
        values = [key.parse(item) for item in items]
        spacing = _spacing(values) if numeric else "list"
    labels = [repr(v) for v in values]
    if len(set(labels)) < len(labels):
        raise UsageError(f"key '{key.name}': repeated value in the grid {text!r}")
    return Axis(key.name, key.type, tuple(values), spacing)


def _range_values(key, start: str, stop: str, num: str, log: bool) -> list:
    try:
        a, b, n = float(start), float(stop), int(num)
    except ValueError:
        raise UsageError(f"key '{key.name}': bad range {start}:{stop}:{num}") from None
    if n < 1:
        raise UsageError(f"key '{key.name}': a range needs NUM >= 1, got {n}")
    if log:
        if a <= 0 or b <= 0:
            raise UsageError(f"key '{key.name}': logspace needs START, STOP > 0")
        grid = np.geomspace(a, b, n)
    else:
        grid = np.linspace(a, b, n)
    if key.type == "int":
        rounded = np.rint(grid)
        if not log and np.abs(rounded - grid).max() > 1e-9:
            raise UsageError(f"key '{key.name}': {start}:{stop}:{num} gives non-integer values")
        grid = rounded.astype(np.int64)
        return [key.parse(int(v)) for v in grid]
    return [key.parse(float(v)) for v in grid]


def _spacing(values: list) -> str:
    """'log' for >= 3 positive geometrically spaced values, else 'linear'."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) >= 3 and (v > 0).all():
        ratios = v[1:] / v[:-1]
        if abs(ratios[0] - 1) > 1e-9 and np.allclose(ratios, ratios[0], rtol=1e-6):
            return "log"
    return "linear"


@dataclass(frozen=True)
class Sweep:
    """A sweep: an experiment, its base config, the grid and the run flags.

    - base: the validated config every point starts from (swept keys overridden)
    - axes: the grid; points are enumerated in C order (first axis slowest)
    """

    experiment: str
    base: dict
    axes: tuple[Axis, ...]
    ode: bool = True
    sgd: bool = True

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.values) for a in self.axes)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def sweep_id(self) -> str:
        return sweep_id(self.experiment, self.base, list(self.axes), self.ode, self.sgd)

    def points(self) -> list[tuple[int, dict]]:
        """[(flat index, config)] for every grid point, in C order."""
        names = [a.name for a in self.axes]
        return [(i, {**self.base, **dict(zip(names, combo))})
                for i, combo in enumerate(itertools.product(*(a.values for a in self.axes)))]


@dataclass(frozen=True)
class Task:
    """Work for one or more points: fn(*args) -> [(flat index, {metric: value})].

    fn must be a module-level callable and args picklable (Dask ships them to
    worker processes). indices are the points the task computes.
    """

    fn: Callable
    args: tuple
    indices: tuple[int, ...]


@contextlib.contextmanager
def _dask_client(workers: int | None, scheduler: str | None):
    """A dask.distributed Client: a LocalCluster of `workers` processes (one thread
    each), or a connection to the scheduler at `scheduler`."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise UsageError("--workers/--scheduler need dask[distributed] installed") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise UsageError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def execute(workers: int | None = None, scheduler: str | None = None):
    """Context giving run(tasks) -> iterator of task results, in completion order.

    In-process when neither workers nor scheduler is given; otherwise the same
    submit / as-completed path on a Dask cluster (LocalCluster or scheduler).
    The cluster is connected on entry, so a bad address fails before any work.
    """
    if workers is not None and workers < 1:
        raise UsageError(f"--workers: must be >= 1, got {workers}")
    if workers is None and scheduler is None:
        yield lambda tasks: (task.fn(*task.args) for task in tasks)
        return
    from dask.distributed import as_completed

    with _dask_client(workers, scheduler) as client:
        def run(tasks: list[Task]) -> Iterator:
            futures = [client.submit(t.fn, *t.args, pure=False) for t in tasks]
            for future in as_completed(futures):
                yield future.result()
        yield run


def run_sweep(
    path: str,
    sweep: Sweep,
    metrics: list[Metric],
    tasks: list[Task],
    extents: dict[str, int],
    phase_metric: str | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    fold_min: int = 256,
) -> dict:
    """Compute the grid points not yet stored and store them in /sweeps/<id>/ of path.

    Args:
    - sweep: experiment, base config, axes, flags (its id decides what resumes)
    - metrics: what each point reports; extents: sizes of their extra dimensions
    - tasks: the whole grid cut into tasks; a task whose points are all stored
      is skipped (tasks must not depend on which points are missing, so a
      resumed sweep gives the numbers an uninterrupted one gives)
    - workers / scheduler: Dask execution (see `execute`)
    - fold_min: the journal is folded into the file once it holds this many
      points and as many as the file holds (amortised O(N log N) copying)

    Returns {"file", "sweep_id", "points_total", "points_computed", "points_reused"}.
    """
    sid = sweep.sweep_id
    swept = {a.name for a in sweep.axes}
    base = {k: v for k, v in sweep.base.items() if k not in swept}
    attrs = {"experiment": sweep.experiment, "config": base, "ode": sweep.ode,
             "sgd": sweep.sgd, "phase_metric": phase_metric}
    with execute(workers, scheduler) as run:
        prepare(path, sid, attrs, list(sweep.axes), metrics, extents)
        with Journal(path, sid) as journal:
            folded = stored_points(path, sid)
            done = folded | set(journal.records())
            pending = [t for t in tasks if not set(t.indices) <= done]
            reused = len(done)
            computed, in_file, unfolded = 0, len(folded), len(done - folded)
            with bar(sweep.size, f"sweep {sid}", unit="point") as progress:
                progress.update(reused)
                for records in run(pending):
                    journal.commit(records)
                    computed += len(records)
                    unfolded += len(records)
                    progress.update(len(records))
                    if unfolded >= max(fold_min, in_file):
                        in_file += journal.fold()
                        unfolded = 0
            journal.fold()
    return {"file": path, "sweep_id": sid, "points_total": sweep.size,
            "points_computed": computed, "points_reused": reused}
