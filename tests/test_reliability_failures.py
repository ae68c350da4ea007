"""Every failure a user meets is one line on stderr, a documented exit status, no traceback,
no temporary file, earlier results byte-identical (docs/reliability.md, "Exit status")."""

from __future__ import annotations

import json
import os
import pathlib
import resource
import signal
import subprocess
import sys
import time

import pytest
from fault_injection import ENV, ICLDYN, LONGER, ROOT, TINY, icldyn, refused, temp_files

from dynamics import errors

# A child that runs argv, prints the child's exit status and its peak resident memory (KiB).
MEASURE = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
           "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "sys.stderr.write(p.stderr); "
           "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
           "time.perf_counter() - t)")


def one_line(proc: subprocess.CompletedProcess, status: int, fragment: str) -> bool:
    return (proc.returncode == status and proc.stderr.count("\n") == 1
            and fragment in proc.stderr and "Traceback" not in proc.stderr)


def test_huge_grid_is_refused_at_once_in_little_memory(tmp_path):
    out = tmp_path / "huge.h5"
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, *ICLDYN, "sweep", "linreg",
         "--grid", "init_scale=logspace:1e-4:1e-1:1000000", "--grid", "sigma2=0:1:1000",
         "--no-sgd", "--no-plot", "--out", str(out)],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=60, check=True)
    status, peak_kib, seconds = proc.stdout.split()
    assert int(status) == errors.EXIT_USAGE
    assert proc.stderr.count("\n") == 1 and "init_scale" in proc.stderr and "sigma2" in proc.stderr
    assert int(peak_kib) < 200 * 1024, f"peak RSS {int(peak_kib) / 1024:.0f} MB"
    assert float(seconds) < 5.0
    assert list(tmp_path.iterdir()) == []


def test_unopenable_lock_is_refused_before_work(tmp_path):
    out = tmp_path / "r.h5"
    os.symlink(tmp_path / "no" / "such" / "folder", tmp_path / "r.h5.lock")
    start = time.perf_counter()
    proc = icldyn("run", "linreg", *LONGER["linreg"], "--out", str(out))
    assert one_line(proc, errors.EXIT_USAGE, "r.h5.lock")
    assert not out.exists() and time.perf_counter() - start < 30


def _limited(limit_bytes: int):
    """preexec_fn: files may not grow past limit_bytes (EFBIG, as a full disk gives ENOSPC;
    Python ignores SIGXFSZ)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


def _run_limited(argv: list[str], limit: int) -> subprocess.CompletedProcess:
    return subprocess.run([*ICLDYN, *argv], capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=170, check=False, preexec_fn=_limited(limit))


def test_full_disk_when_appending_leaves_the_file_intact(tmp_path):
    out = tmp_path / "r.h5"
    assert icldyn("run", "linreg", *TINY["linreg"], "--no-plot", "--out", str(out)).returncode == 0
    before = out.read_bytes()
    proc = _run_limited(["run", "linreg", *TINY["linreg"], "--no-plot", "--out", str(out)],
                        len(before) + 1000)
    assert one_line(proc, errors.EXIT_OUTPUT, "r.h5: cannot write")
    assert "unchanged" in proc.stderr and "the same command resumes" in proc.stderr
    assert out.read_bytes() == before and not temp_files(str(tmp_path))
    # with room again, the same command stores the run from its checkpoints
    proc = icldyn("run", "linreg", *TINY["linreg"], "--no-plot", "--out", str(out))
    assert proc.returncode == 0 and "linreg-0002" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5", "r.h5.lock"]


def test_full_disk_at_the_figure_keeps_the_results(tmp_path):
    out = tmp_path / "r.h5"
    proc = _run_limited(["run", "linreg", *TINY["linreg"], "--out", str(out)], 80_000)
    assert one_line(proc, errors.EXIT_OUTPUT, "figure not written")
    assert f"results kept in {out} as run linreg-0001" in proc.stderr
    show = icldyn("show", str(out), "--json")
    assert json.loads(show.stdout)["runs"]["linreg-0001"]["status"] == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5", "r.h5.lock"]


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("stored") / "r.h5"
    assert icldyn("run", "linreg", *TINY["linreg"], "--no-plot", "--out", str(out)).returncode == 0
    return out


def test_plot_out_creates_folders_and_refuses_unknown_formats(stored, tmp_path):
    before = stored.read_bytes()
    proc = icldyn("plot", str(stored), "--out", str(tmp_path / "missing" / "dir" / "p.png"))
    assert proc.returncode == 0 and proc.stdout.startswith("figure:")
    assert (tmp_path / "missing" / "dir" / "p.png").stat().st_size > 10_000
    proc = icldyn("plot", str(stored), "--out", str(tmp_path / "p.xyz"))
    assert one_line(proc, errors.EXIT_USAGE, "p.xyz")
    assert not (tmp_path / "p.xyz").exists() and stored.read_bytes() == before


def test_show_into_a_closed_pipe_is_silent(stored, tmp_path):
    err = tmp_path / "err.txt"
    command = " ".join([*ICLDYN, "show", str(stored)]) + f" 2>{err} | head -1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=120, check=False)
    assert proc.stdout.count("\n") == 1
    assert err.read_text() == "" and proc.returncode in (0, errors.EXIT_BROKEN_PIPE)


def test_ctrl_c_is_one_line_and_keeps_the_file(stored, tmp_path):
    out = tmp_path / "r.h5"
    out.write_bytes(stored.read_bytes())
    # t_max 60: 6000 SGD steps, so that the interrupt lands in SGD even on a loaded machine.
    # A handler in this process for the spawn: the child then starts with SIGINT's default,
    # as from a terminal (a suite started in the background, `cmd &` in a script, ignores
    # SIGINT, and its children would inherit that)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([*ICLDYN, "run", "linreg", *LONGER["linreg"], "--set",
                                 "t_max=60", "--set", "checkpoint_every=20", "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=ENV, cwd=ROOT)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "r.h5.ckpt").rglob("*.pt")):  # inside SGD, not before it
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == errors.EXIT_INTERRUPTED
    assert stderr.count("\n") == 1 and "interrupted" in stderr and "Traceback" not in stderr
    assert out.read_bytes() == stored.read_bytes() and not temp_files(str(tmp_path))


def test_blow_up_is_named_with_its_time(tmp_path):
    out = tmp_path / "d.h5"
    argv = ["run", "linreg", "--set", "lr=50", "--set", "t_max=100", "--set", "eval_samples=256",
            "--no-ode", "--no-plot", "--out", str(out)]
    proc = icldyn(*argv)
    assert proc.returncode == errors.EXIT_INCOMPLETE and "Traceback" not in proc.stderr
    assert "diverged" in proc.stdout.splitlines()[0] and "sgd diverged at t = 100" in proc.stdout
    payload = json.loads(icldyn(*argv, "--json").stdout)
    assert payload["status"] == "diverged"
    assert payload["failures"] == [{"trajectory": "sgd", "status": "diverged", "t": 100.0}]


def test_a_run_that_computes_nothing_is_refused(tmp_path):
    proc = icldyn("run", "linreg", "--no-ode", "--no-sgd", "--out", str(tmp_path / "e.h5"))
    assert refused(proc, "computes nothing") and list(tmp_path.iterdir()) == []


def test_config_errors_name_file_line_and_close_keys(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("t_max = 1.0\nlrr = 0.1\n")
    proc = icldyn("run", "linreg", "--config", str(cfg), "--out", str(tmp_path / "n.h5"))
    assert refused(proc, f"{cfg}, line 2: unknown key 'lrr' (did you mean 'lr'?)")
    cfg.write_text("[linreg]\nt_max = 1.0\nlr = -1\n")
    proc = icldyn("run", "linreg", "--config", str(cfg), "--out", str(tmp_path / "n.h5"))
    assert refused(proc, f"{cfg}, line 3: key 'lr'")
    proc = icldyn("run", "linreg-risk", "--config", str(cfg), "--out", str(tmp_path / "n.h5"))
    assert refused(proc, "table [linreg]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]
