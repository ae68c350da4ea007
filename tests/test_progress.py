"""Never silent: plain progress lines in logs, a status line on a terminal that errors erase."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from fault_injection import ENV, ICLDYN, ROOT, TINY


def test_a_log_gets_periodic_plain_lines_and_stdout_stays_clean(tmp_path):
    env = dict(ENV, ICLDYN_PROGRESS_SECONDS="0.5")
    proc = subprocess.run([*ICLDYN, "run", "linreg", *TINY["linreg"], "--no-plot", "--json",
                           "--out", str(tmp_path / "r.h5")], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=170, check=False)
    assert proc.returncode == 0
    lines = proc.stderr.splitlines()
    assert lines and all(re.fullmatch(r"icldyn: \d+ s, .+", line) for line in lines), lines
    assert any("run linreg" in line or "sgd" in line for line in lines)
    assert "\r" not in proc.stderr and proc.stdout.startswith("{")


def test_on_a_terminal_the_status_line_is_erased_before_an_error(tmp_path):
    """`script` gives the command a terminal: the status shows at once and the error replaces it."""
    if shutil.which("script") is None:
        pytest.skip("no `script` (util-linux) to give the command a terminal")
    log = tmp_path / "tty.txt"
    command = " ".join([*ICLDYN, "run", "linreg", "--set", "lr=0", "--out", str(tmp_path / "x.h5")])
    subprocess.run(["script", "-qec", command, str(log)], capture_output=True, text=True,
                   env=dict(ENV, PYTHONPATH=ROOT), cwd=ROOT, timeout=170, check=False)
    screen = log.read_bytes().decode()  # read_text would turn \r into newlines
    assert "\r\x1b[Kicldyn: run linreg: loading" in screen
    assert "\r\x1b[Kicldyn: error: key 'lr'" in screen
    assert not (tmp_path / "x.h5").exists()
