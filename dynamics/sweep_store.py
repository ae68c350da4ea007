"""Storage of a sweep in /sweeps/<sweep_id>/ of an icldyn HDF5 file.

Layout of the group (readable by `xarray.open_dataset(path, group="sweeps/<id>",
engine="h5netcdf")` with labelled coordinates):
- one dataset per swept axis, made an HDF5 dimension scale (int64, float64 or
  text values; attrs long_name, spacing "list" | "linear" | "log");
- one dataset per extra metric dimension (e.g. "head": 0..n-1), also a scale;
- one float64 dataset per metric, shaped (axis sizes..., extra sizes...),
  NaN where not computed (yet); a categorical metric (a phase) holds integer
  codes with CF attrs flag_values / flag_meanings;
- "done" (axis sizes) uint8: 1 where the point's metrics are stored.
Group attrs: experiment, sweep_id, config (JSON: the base config, swept keys
removed), grid (JSON), ode, sgd (0/1), phase_metric, status ("partial" |
"complete"), points_total, points_done, created, package_version, versions.

Resumability without O(N^2) copies: the main file is only ever replaced
atomically (dynamics.store writes a copy and renames it). Each finished point
is appended to a journal beside it, FILE.h5.<sweep_id>.journal (one JSON line
per point, fsync'd), and the journal is folded into the file in one atomic
write at the end of the sweep (and when it has grown as large as what the file
holds). kill -9 at any moment leaves a file that opens plus a journal whose
complete lines are finished points; the same command folds them in and
computes only the rest.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from .errors import UsageError
from .store import (
    _json_attr,
    _locked,
    _write_atomically,
    library_versions,
    open_store,
    package_version,
)

SWEEPS = "sweeps"
DONE = "done"
_METRIC_ATTRS = ("long_name", "flag_values", "flag_meanings", "scale")


@dataclass(frozen=True)
class Axis:
    """One swept config key.

    - name: the config key (also the dimension name)
    - type: the key's schema type ("int", "float", "bool", "str", "ints", "floats")
    - values: the swept values, in grid order
    - spacing: "log" (geometric), "linear" (evenly spaced numbers) or "list"
    """

    name: str
    type: str
    values: tuple
    spacing: str = "list"

    def coordinate(self) -> np.ndarray:
        """The values as an HDF5-storable array (lists become text labels "a,b")."""
        if self.type == "int":
            return np.asarray(self.values, dtype=np.int64)
        if self.type == "float":
            return np.asarray(self.values, dtype=np.float64)
        if self.type == "bool":
            return np.asarray(self.values, dtype=np.int8)
        return np.asarray([label(v) for v in self.values], dtype=object)

    def as_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "values": list(self.values),
                "spacing": self.spacing}


def label(value) -> str:
    """Text label of a grid value (lists comma-joined)."""
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Metric:
    """A per-point result of a sweep.

    - name: dataset name
    - doc: one line with units (stored as long_name)
    - dims: extra dimensions beyond the grid (e.g. ("head",) for one value per head);
      their sizes are the largest over the grid points, shorter values are NaN-padded
    - phases: labels of a categorical metric (value k means phases[k]); labels
      contain no spaces
    - log: whether the colour scale of its plot is logarithmic
    """

    name: str
    doc: str
    dims: tuple[str, ...] = ()
    phases: tuple[str, ...] = ()
    log: bool = False


@dataclass
class SweepData:
    """A stored sweep read back: axes, metrics (name -> array), their attrs, done mask."""

    sweep_id: str
    attrs: dict
    axes: list[Axis]
    metrics: dict[str, np.ndarray]
    metric_attrs: dict[str, dict] = field(default_factory=dict)
    done: np.ndarray | None = None


def sweep_id(experiment: str, base_config: dict, axes: list[Axis], ode: bool, sgd: bool) -> str:
    """Identity of a sweep: same experiment, base config, grid and flags -> same id (resume)."""
    swept = {a.name for a in axes}
    ident = {
        "experiment": experiment,
        "config": {k: v for k, v in sorted(base_config.items()) if k not in swept},
        "grid": [a.as_dict() for a in axes],
        "ode": bool(ode),
        "sgd": bool(sgd),
    }
    digest = hashlib.sha256(_json_attr(ident).encode()).hexdigest()[:12]
    return f"{experiment}-{digest}"


def journal_path(path: str, sid: str) -> str:
    return f"{path}.{sid}.journal"


def prepare(path: str, sid: str, attrs: dict, axes: list[Axis], metrics: list[Metric],
            extents: dict[str, int]) -> None:
    """Create /sweeps/<sid>/ (NaN metrics, done = 0) unless the file already holds it.

    - attrs: experiment, config, ode, sgd, phase_metric (stored as group attrs)
    - extents: size of every extra metric dimension
    Raises UsageError if an existing group of that id has another set of metrics.
    """
    names = {a.name for a in axes}
    clash = names & (set(extents) | {m.name for m in metrics} | {DONE})
    if clash:
        raise UsageError(f"key '{min(clash)}': clashes with a metric or dimension name")
    with _locked(path):
        if os.path.exists(path):
            with open_store(path) as fh:
                group = fh.get(f"{SWEEPS}/{sid}")
                if group is not None:
                    stored = {k for k in group if k not in names and k not in extents and k != DONE}
                    if stored != {m.name for m in metrics}:
                        raise UsageError(f"{path}: sweep {sid} holds other metrics "
                                         f"({', '.join(sorted(stored))}); write to another --out")
                    return

        def fill(fh: h5py.File) -> None:
            _create_group(fh.require_group(SWEEPS).create_group(sid), sid, attrs, axes,
                          metrics, extents)

        _write_atomically(path, fill)


def _create_group(group: h5py.Group, sid: str, attrs: dict, axes: list[Axis],
                  metrics: list[Metric], extents: dict[str, int]) -> None:
    shape = tuple(len(a.values) for a in axes)
    group.attrs["sweep_id"] = sid
    group.attrs["experiment"] = attrs["experiment"]
    group.attrs["config"] = _json_attr(attrs["config"])
    group.attrs["grid"] = _json_attr([a.as_dict() for a in axes])
    group.attrs["ode"] = int(attrs["ode"])
    group.attrs["sgd"] = int(attrs["sgd"])
    group.attrs["phase_metric"] = attrs.get("phase_metric") or ""
    group.attrs["status"] = "partial"
    group.attrs["points_total"] = int(np.prod(shape, dtype=np.int64))
    group.attrs["points_done"] = 0
    group.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    group.attrs["package_version"] = package_version()
    group.attrs["versions"] = _json_attr(library_versions())
    scales = {}
    for axis in axes:
        coord = axis.coordinate()
        kwargs = {"dtype": h5py.string_dtype()} if coord.dtype == object else {}
        ds = group.create_dataset(axis.name, data=coord, **kwargs)
        ds.attrs["long_name"] = f"config key {axis.name}"
        ds.attrs["spacing"] = axis.spacing
        ds.make_scale(axis.name)
        scales[axis.name] = ds
    for dim, size in extents.items():
        ds = group.create_dataset(dim, data=np.arange(size, dtype=np.int64))
        ds.attrs["long_name"] = f"{dim} index (0-based)"
        ds.make_scale(dim)
        scales[dim] = ds
    done = group.create_dataset(DONE, data=np.zeros(shape, dtype=np.uint8))
    done.attrs["long_name"] = "1 where the point's metrics are stored"
    _attach(done, [scales[a.name] for a in axes])
    for metric in metrics:
        full = shape + tuple(extents[d] for d in metric.dims)
        ds = group.create_dataset(metric.name, data=np.full(full, np.nan))
        ds.attrs["long_name"] = metric.doc
        if metric.phases:
            ds.attrs["flag_values"] = np.arange(len(metric.phases), dtype=np.int64)
            ds.attrs["flag_meanings"] = " ".join(metric.phases)
        if metric.log:
            ds.attrs["scale"] = "log"
        _attach(ds, [scales[a.name] for a in axes] + [scales[d] for d in metric.dims])


def _attach(ds: h5py.Dataset, scales: list[h5py.Dataset]) -> None:
    for i, scale in enumerate(scales):
        ds.dims[i].attach_scale(scale)


def stored_points(path: str, sid: str) -> set[int]:
    """Flat indices (C order) of the points the file already holds."""
    with open_store(path) as fh:
        done = fh[f"{SWEEPS}/{sid}/{DONE}"][()]
    return set(np.flatnonzero(done.ravel()).tolist())


class Journal:
    """Append-only record of finished points of one sweep, beside the file.

    Use as a context manager: it holds an exclusive lock (one process per
    sweep), drops a torn last line left by a crash, and `commit` makes each
    batch of points durable (fsync) before returning.
    """

    def __init__(self, path: str, sid: str):
        self.path = path
        self.sid = sid
        self.file = journal_path(path, sid)
        self._fd: int | None = None

    def __enter__(self):
        self._fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise UsageError(f"{self.path}: another process is running sweep {self.sid}") from None
        data = self._read_all()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):  # a torn line from a crash
            os.ftruncate(self._fd, cut)
        return self

    def __exit__(self, *exc) -> None:
        if os.fstat(self._fd).st_size == 0:
            os.unlink(self.file)
        os.close(self._fd)
        self._fd = None

    def _read_all(self) -> bytes:
        os.lseek(self._fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def records(self) -> dict[int, dict]:
        """Flat index -> metrics of every point in the journal."""
        out = {}
        for line in self._read_all().splitlines():
            entry = json.loads(line)
            out[int(entry["i"])] = entry["m"]
        return out

    def commit(self, records: list[tuple[int, dict]]) -> None:
        text = "".join(json.dumps({"i": int(i), "m": m}, default=_json_float) + "\n"
                       for i, m in records)
        os.write(self._fd, text.encode())
        os.fsync(self._fd)

    def fold(self) -> int:
        """Write the journal's points into the file (one atomic replace), then empty
        the journal. Idempotent if a crash hits between the two. Returns points folded."""
        records = self.records()
        if records:
            with _locked(self.path):
                _write_atomically(self.path, lambda fh: _fill_points(fh[f"{SWEEPS}/{self.sid}"],
                                                                    records))
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        return len(records)


def _json_float(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-able: {type(obj).__name__}")


def _fill_points(group: h5py.Group, records: dict[int, dict]) -> None:
    done = group[DONE][()]
    shape = done.shape
    arrays = {name: group[name][()] for name in next(iter(records.values()))}
    for index, metrics in records.items():
        at = np.unravel_index(index, shape)
        for name, value in metrics.items():
            target = arrays[name][at]
            if np.ndim(target) == 0:
                arrays[name][at] = np.nan if value is None else value
            else:
                row = np.full(target.shape, np.nan)
                values = np.asarray(value, dtype=np.float64)
                row[tuple(slice(0, n) for n in values.shape)] = values
                arrays[name][at] = row
        done[at] = 1
    for name, values in arrays.items():
        group[name][...] = values
    group[DONE][...] = done
    points = int(done.sum())
    group.attrs["points_done"] = points
    group.attrs["status"] = "complete" if points == done.size else "partial"


def list_sweeps(path: str) -> list[str]:
    with open_store(path) as fh:
        return list(fh.get(SWEEPS, {}).keys())


def read_sweep(path: str, sid: str | None = None) -> SweepData:
    """Read a stored sweep (default: the newest) into numpy arrays."""
    with open_store(path) as fh:
        sweeps = fh.get(SWEEPS)
        if sweeps is None or not len(sweeps):
            raise UsageError(f"{path}: holds no sweeps")
        if sid is None:
            sid = max(sweeps, key=lambda s: sweeps[s].attrs["created"])
        if sid not in sweeps:
            raise UsageError(f"{path}: no sweep {sid!r} (sweeps: {', '.join(sweeps)})")
        group = sweeps[sid]
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in group.attrs.items()}
        for key in ("config", "grid", "versions"):
            attrs[key] = json.loads(attrs[key])
        axes = [Axis(a["name"], a["type"], tuple(a["values"]), a["spacing"])
                for a in attrs["grid"]]
        skip = {a.name for a in axes} | {DONE}
        metrics, metric_attrs = {}, {}
        for name, ds in group.items():
            if name in skip or ds.attrs.get("CLASS") == b"DIMENSION_SCALE":
                continue
            metrics[name] = ds[()]
            metric_attrs[name] = {k: ds.attrs[k] for k in _METRIC_ATTRS if k in ds.attrs}
        return SweepData(sid, attrs, axes, metrics, metric_attrs, group[DONE][()])

