"""The commands and snippets of README.md and docs/ stay true: each documented command is
accepted as written (and refused where the docs show its error), the Python snippets run."""

from __future__ import annotations

import glob
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from dynamics.errors import UsageError
from sims import sweeps
from sims.cli import build_parser, main, resolve_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
PLACEHOLDER = re.compile(r"\b(EXP|FILE|KEY|ADDR|ADDRESS|N|RUN_ID|SWEEP_ID)\b|\.\.\.")


def documented_commands() -> list[tuple[str, str, str | None]]:
    """(doc file, command, expected error or None) for every `icldyn ...` line of an
    indented code block; continuation lines joined, comments, [--optional] brackets and a
    trailing `> FILE` dropped; the error is the next line's `icldyn: error: ...` if there is one."""
    out = []
    for path in DOCS:
        lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            if lines[i].startswith("    ") and re.match(r"^(\$ )?icldyn ", line):
                command = line.removeprefix("$ ")
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command[:-1].rstrip() + " " + lines[i].strip()
                command = re.sub(r"\s+#.*$", "", command)
                command = re.sub(r"\s{2,}\S.*$", "", command)  # a synopsis's description
                command = re.sub(r"\s+>\s*\S+$", "", command)  # output redirected to a file
                while re.search(r"\[(-[^\[\]]*)\]", command):  # [--optional] parts
                    command = re.sub(r"\[(-[^\[\]]*)\]", r"\1", command)
                nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
                error = nxt.removeprefix("icldyn: error: ") if nxt.startswith("icldyn: error") else None
                if not PLACEHOLDER.search(command):
                    out.append((os.path.relpath(path, ROOT), command, error))
            i += 1
    return out


COMMANDS = documented_commands()


def test_the_docs_have_commands():
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("doc, command, error", COMMANDS,
                         ids=[f"{d}:{c[:60]}" for d, c, _ in COMMANDS])
def test_documented_command_is_accepted(doc, command, error):
    argv = shlex.split(command)[1:]
    try:
        args = build_parser().parse_args(argv)
        if args.command in ("run", "check", "sweep"):
            exp, config = resolve_config(args)
            if args.command == "sweep":
                sweeps.plan(exp, config, args.grid, not args.no_ode, not args.no_sgd)
    except UsageError as exc:
        assert error is not None, f"{doc}: `{command}` is refused: {exc}"
        assert str(exc) == error
        return
    assert error is None, f"{doc}: `{command}` should be refused with {error!r}"


def test_readme_python_snippet_reads_a_run(tmp_path, monkeypatch, capsys):
    readme = pathlib.Path(ROOT, "README.md").read_text(encoding="utf-8")
    section = readme.split("## Reading results from Python", 1)[1]
    snippet = "\n".join(line[4:] for line in section.split("\n\n", 2)[1].splitlines())
    assert "h5py" in snippet
    monkeypatch.chdir(tmp_path)
    small = ["--set", "t_max=1", "--set", "lr=0.05", "--set", "batch=64", "--set",
             "mc_samples=300", "--set", "records=20", "--set", "eval_samples=256"]
    assert main(["run", "linreg", *small, "--no-plot", "--out", "data/linreg.h5"]) == 0
    capsys.readouterr()
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 -- the README's own code
    assert scope["omega"].shape == (15, 2) and scope["t"][-1] == pytest.approx(1.0)


def test_sweeps_doc_xarray_snippet(tmp_path, monkeypatch, capsys):
    pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    doc = pathlib.Path(ROOT, "docs", "sweeps.md").read_text(encoding="utf-8")
    block = doc.split("    import h5py\n", 1)[1].split("\n\n", 1)[0]
    snippet = "import h5py\n" + "\n".join(line[4:] for line in block.splitlines())
    monkeypatch.chdir(tmp_path)
    code = main(["sweep", "linreg", "--grid", "init_scale=0.01,0.05", "--grid", "L=10,20",
                 "--grid", "heads=1,2", "--set", "t_max=0.5", "--set", "records=10",
                 "--no-sgd", "--no-plot", "--out", "data/sweep-linreg-escape.h5"])
    capsys.readouterr()
    assert code == 0
    scope: dict = {}
    exec(compile(snippet, "docs/sweeps.md", "exec"), scope)  # noqa: S102
    assert scope["ds"].ode_escape_time.sel(heads=2, L=10).shape == (2,)


@pytest.mark.slow
@pytest.mark.parametrize("doc, command, error",
                         [c for c in COMMANDS if c[1].split()[1] == "run" and c[2] is None],
                         ids=[f"{d}:{c[:60]}" for d, c, e in COMMANDS
                              if c.split()[1] == "run" and e is None])
def test_documented_run_runs(doc, command, error, tmp_path):
    argv = shlex.split(command)[1:]
    if "--out" in argv:
        k = argv.index("--out")
        del argv[k:k + 2]
    proc = subprocess.run([sys.executable, "-m", "sims.cli", *argv, "--no-plot",
                           "--out", str(tmp_path / "r.h5")], capture_output=True, text=True,
                          cwd=ROOT, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr
