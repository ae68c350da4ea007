"""HDF5 store, format version 1 (docs/hdf5-format.md).

Writes never modify a file in place: the new content (the old file plus the new
run) is built in memory, written to a temporary file in the same folder,
flushed to disk, then renamed over the old one. HDF5 itself never writes to
disk, so a full disk or any other write error is one OutputError naming the
path, with the old file untouched and the temporary file removed. A crash at any moment leaves
the old file or the new one, never a half-written one. Writers of one file
take an exclusive lock on FILE.lock, so concurrent writers queue up. The
renamed file keeps the mode of the file it replaces; a new file gets the
usual mode of new files (0666 less the umask).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import io
import json
import os
import re
import secrets
import stat
import string
from collections.abc import Iterator
from importlib import metadata

import h5py
import numpy as np

from .errors import OutputError, UsageError
from .trajectory import Trajectory

FORMAT = "icldyn"
FORMAT_VERSION = 1
TEMP_SUFFIX = ".tmp"
_TEMP_CHARS = string.ascii_letters + string.digits + "_"


def package_version() -> str:
    try:
        return metadata.version("icl-dynamics")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    import platform

    out = {"python": platform.python_version()}
    for name in ("torch", "torchdiffeq", "sympy", "numpy", "scipy", "h5py"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


@contextlib.contextmanager
def _locked(path: str, timeout: float = 600.0) -> Iterator[None]:
    """Exclusive lock on path + '.lock' (waits for another writer)."""
    import time

    try:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"{path}.lock: cannot create the lock file ({exc.strerror}); "
                          "nothing written") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UsageError(f"{path}: another process is writing to it") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def check_writable(path: str) -> None:
    """Before any work: the output path must be a new file in a writable folder,
    or an existing icldyn file of this format version."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a folder, not an output file")
    if os.path.exists(path):
        open_store(path).close()
    elif not os.path.isdir(folder):
        if os.path.exists(folder):
            raise UsageError(f"{folder}: not a folder")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{folder}: cannot create output folder ({exc.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{folder}: not writable")
    lock = path + ".lock"
    try:  # the lock every writer takes (_locked): a bad one costs no work; none created here
        if os.path.lexists(lock):
            os.close(os.open(lock, os.O_RDWR))
    except OSError as exc:
        raise UsageError(f"{lock}: cannot open the lock file ({exc.strerror})") from None


def open_store(path: str) -> h5py.File:
    """Open an existing icldyn file read-only; UsageError naming the path otherwise."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    try:
        fh = h5py.File(path, "r")
    except OSError:
        raise UsageError(f"{path}: not a readable HDF5 file") from None
    fmt, version = fh.attrs.get("format"), fh.attrs.get("format_version")
    if fmt != FORMAT:
        fh.close()
        raise UsageError(f"{path}: not an icldyn file (format attribute {fmt!r})")
    if version != FORMAT_VERSION:
        fh.close()
        raise UsageError(f"{path}: format version {version}, this icldyn reads {FORMAT_VERSION}")
    return fh


def _next_run_id(fh: h5py.File, experiment: str) -> str:
    existing = set(fh["runs"].keys()) if "runs" in fh else set()
    n = 1
    while f"{experiment}-{n:04d}" in existing:
        n += 1
    return f"{experiment}-{n:04d}"


def _json_attr(value) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-able: {type(obj).__name__}")


def write_trajectory(group: h5py.Group, traj: Trajectory) -> None:
    """Write one trajectory's datasets and attributes into an empty group (param_attrs
    become attributes of the params/<name> datasets: strings, numbers, lists of either)."""
    group.attrs["kind"] = traj.kind
    group.attrs["status"] = str(traj.status)  # the plain string (h5py refuses str subclasses)
    for key, value in traj.attrs.items():
        group.attrs[key] = value if isinstance(value, (str, int, float)) else _json_attr(value)
    group.create_dataset("t", data=traj.t.astype(np.float64))
    group.create_dataset("loss", data=traj.loss.astype(np.float64))
    if traj.step is not None:
        group.create_dataset("step", data=traj.step.astype(np.int64))
    params = group.create_group("params")
    for name, values in traj.params.items():
        dataset = params.create_dataset(name, data=values.astype(np.float64))
        for key, value in traj.param_attrs.get(name, {}).items():
            dataset.attrs[key] = list(value) if isinstance(value, tuple) else value


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


def _remove_stale_temps(path: str) -> None:
    """Delete temp files a killed writer of path left behind (the caller holds the lock,
    so no live writer of path owns one)."""
    folder = os.path.dirname(os.path.abspath(path))
    # exactly the 8 random characters of _create_temp: never another file's temp (".a.h5.x.h5.*")
    stale = re.compile(re.escape(_temp_prefix(path)) + r"[A-Za-z0-9_]{8}" + re.escape(TEMP_SUFFIX))
    for name in os.listdir(folder):
        if stale.fullmatch(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))


def _create_temp(path: str) -> str:
    """A new empty temp file .<file name>.<8 random characters>.tmp beside path, with the
    mode of path if it exists, else 0666 less the umask (the kernel applies it)."""
    folder = os.path.dirname(os.path.abspath(path))
    while True:
        name = "".join(secrets.choice(_TEMP_CHARS) for _ in range(8))
        tmp = os.path.join(folder, f"{_temp_prefix(path)}{name}{TEMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            if os.path.exists(path):
                os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        finally:
            os.close(fd)
        return tmp


def _write_atomically(path: str, fill) -> None:
    """Let fill(h5py.File) add to a copy of path (if any) built in memory, write it to a
    temp file, flush and rename it over path.

    The caller holds _locked(path). Temp files are named .<file name>.<random>.tmp
    in the same folder; those of a killed writer are removed here. A write error (no
    space, no permission) raises OutputError naming path; path is then unchanged and
    the temp file removed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    buffer = io.BytesIO()
    if os.path.exists(path):
        with open(path, "rb") as old:
            buffer.write(old.read())
    with h5py.File(buffer, "r+" if buffer.tell() else "w") as fh:
        if "format" not in fh.attrs:
            fh.attrs["format"] = FORMAT
            fh.attrs["format_version"] = FORMAT_VERSION
        fill(fh)
    tmp = None
    try:
        _remove_stale_temps(path)
        tmp = _create_temp(path)
        with open(tmp, "rb+") as raw:
            raw.write(buffer.getbuffer())
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror}); the file is unchanged") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_run(
    path: str,
    experiment: str,
    config: dict,
    seed: int,
    trajectories: dict[str, Trajectory],
    status: str,
    summary: dict,
    extra: dict[str, dict[str, np.ndarray]] | None = None,
    axes: dict[str, tuple[str, ...]] | None = None,
) -> str:
    """Append one run to the file (created if absent); returns its run id.

    - extra: optional groups of further datasets, name -> {dataset: array}, stored
      beside the trajectories (e.g. risk curves)
    - axes: per extra group, the names of its 1-D datasets that are coordinates
      (e.g. {"risk": ("L_test",)}), in the order of the dimensions they label;
      they become HDF5 dimension scales attached to the group's other datasets
      (`attach_axes`), so that xarray opens the group with labelled coordinates
    """
    result = {}

    def fill(fh: h5py.File) -> None:
        run_id = _next_run_id(fh, experiment)
        run = fh.require_group("runs").create_group(run_id)
        run.attrs["experiment"] = experiment
        run.attrs["config"] = _json_attr(config)
        run.attrs["seed"] = int(seed)
        run.attrs["status"] = str(status)
        run.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        run.attrs["package_version"] = package_version()
        run.attrs["versions"] = _json_attr(library_versions())
        run.attrs["summary"] = _json_attr(summary)
        for name, traj in trajectories.items():
            write_trajectory(run.create_group(name), traj)
        for name, datasets in (extra or {}).items():
            group = run.create_group(name)
            for key, values in datasets.items():
                group.create_dataset(key, data=np.asarray(values))
            attach_axes(group, (axes or {}).get(name, ()))
        result["run_id"] = run_id

    with _locked(path):
        _write_atomically(path, fill)
    return result["run_id"]


def attach_axes(group: h5py.Group, names: tuple[str, ...]) -> None:
    """Make the named 1-D datasets of group dimension scales (named after themselves) and
    attach them to its other datasets: each dimension gets the first axis, in the given
    order, of its length that the dataset has not used yet (a (3, 4) dataset with axes
    ("sigma2_test", "n_test") of lengths 3 and 4 gets both, and so does a (4, 4) one)."""
    for name in names:
        if name not in group or group[name].ndim != 1:
            raise ValueError(f"axis {name!r} is not a 1-D dataset of {group.name}")
        group[name].make_scale(name)
    for key, dataset in group.items():
        if key in names or not isinstance(dataset, h5py.Dataset):
            continue
        free = [group[name] for name in names]
        for dim, size in enumerate(dataset.shape):
            match = next((scale for scale in free if len(scale) == size), None)
            if match is not None:
                dataset.dims[dim].attach_scale(match)
                free.remove(match)


@contextlib.contextmanager
def _readable(path: str) -> Iterator[None]:
    """Turn a missing group or attribute of a damaged file into a UsageError naming it."""
    try:
        yield
    except (KeyError, OSError, TypeError, ValueError) as exc:  # ValueError: bad JSON too
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].strip("\"'")
        raise UsageError(f"{path}: damaged icldyn file ({reason})") from None


def read_trajectory(group: h5py.Group) -> Trajectory:
    attrs = {k: v for k, v in group.attrs.items() if k not in ("kind", "status")}
    params = group["params"]
    return Trajectory(
        kind=str(group.attrs["kind"]),
        t=group["t"][()],
        loss=group["loss"][()],
        params={k: v[()] for k, v in params.items()},
        step=group["step"][()] if "step" in group else None,
        status=str(group.attrs.get("status", "complete")),
        attrs=attrs,
        param_attrs={k: {a: _attr_value(x) for a, x in v.attrs.items()}
                     for k, v in params.items() if len(v.attrs)},
    )


def _attr_value(value):
    """An HDF5 attribute as written: arrays become (nested) lists, numpy scalars Python ones."""
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value


def read_run(path: str, run_id: str | None = None) -> tuple[str, dict, dict[str, Trajectory]]:
    """(run_id, run attributes, trajectories) of run_id, or of the newest run."""
    with open_store(path) as fh, _readable(path):
        runs = list(fh["runs"].keys()) if "runs" in fh else []
        if not runs:
            raise UsageError(f"{path}: holds no runs")
        if run_id is None:
            run_id = max(runs, key=lambda r: fh["runs"][r].attrs["created"])
        if run_id not in fh["runs"]:
            raise UsageError(f"{path}: no run {run_id!r} (runs: {', '.join(runs)})")
        run = fh["runs"][run_id]
        attrs = dict(run.attrs)
        for key in ("config", "summary", "versions"):
            if key in attrs:
                attrs[key] = json.loads(attrs[key])
        trajs = {
            name: read_trajectory(g)
            for name, g in run.items()
            if isinstance(g, h5py.Group) and "kind" in g.attrs
        }
    return run_id, attrs, trajs


def describe(path: str) -> dict:
    """JSON-able listing of what a file holds."""
    with open_store(path) as fh, _readable(path):
        out = {"file": path, "format": FORMAT, "format_version": FORMAT_VERSION, "runs": {}}
        for run_id, run in fh.get("runs", {}).items():
            entry = {k: run.attrs[k] for k in ("experiment", "seed", "status", "created")}
            entry["seed"] = int(entry["seed"])
            entry["trajectories"] = {}
            for name, g in run.items():
                if not isinstance(g, h5py.Group):
                    continue
                if "kind" in g.attrs:
                    entry["trajectories"][name] = {
                        "kind": str(g.attrs["kind"]),
                        "status": str(g.attrs.get("status", "complete")),
                        "T": int(g["t"].shape[0]),
                        "params": {k: list(v.shape) for k, v in g["params"].items()},
                    }
                else:
                    entry.setdefault("data", {})[name] = {k: list(v.shape) for k, v in g.items()}
            out["runs"][run_id] = entry
        out["sweeps"] = list(fh.get("sweeps", {}).keys())
    return out


def overview(path: str) -> dict:
    """What `icldyn show` prints: per run its experiment, status, seed, created, config and
    summary; per sweep its experiment, status, points done of the total, grid and config."""
    with open_store(path) as fh, _readable(path):
        runs = {}
        for run_id, run in fh.get("runs", {}).items():
            entry = {k: _attr_value(run.attrs[k]) for k in ("experiment", "status", "seed", "created")}
            for key in ("config", "summary"):
                entry[key] = json.loads(run.attrs[key]) if key in run.attrs else {}
            runs[run_id] = entry
        sweeps = {}
        for sid, group in fh.get("sweeps", {}).items():
            entry = {k: _attr_value(group.attrs[k])
                     for k in ("experiment", "status", "points_done", "points_total", "created")}
            entry["grid"] = json.loads(group.attrs["grid"])
            entry["config"] = json.loads(group.attrs["config"])
            sweeps[sid] = entry
    return {"file": path, "runs": runs, "sweeps": sweeps}
