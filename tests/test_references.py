"""Every reference points inside the repository: in its files and in what a run writes."""

import os
import re
from pathlib import Path

import h5py
import pytest

from sims.cli import main

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache",
             "build"}
# documents that live outside the repository, and absolute paths of a machine
OUTSIDE = re.compile(r"\b(?:THEORY|DESIGN)\b|(?<![\w.:/~-])/(?:work|home|Users|root|mnt|tmp)/")
# a document or module named by its path from the repository root, e.g. docs/theory/linreg.md
# (figures and data files may be outputs that a command named beside them writes)
REPO_PATH = re.compile(r"(?<![\w./-])((?:docs|tests|sims|dynamics|reduced_models|benchmarks)"
                       r"/[\w./-]*\w\.(?:md|py))\b")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def repository_files() -> list[Path]:
    """Text files of the repository: outside .git (a folder, or the file of a worktree),
    caches, build output and the git-ignored data folder (whose README is kept)."""
    out = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        here = Path(folder)
        for name in files:
            path = here / name
            if name in SKIP_DIRS or here == ROOT / "data" and name != "README.md":
                continue
            try:
                path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # binary: figures, HDF5
            out.append(path)
    return out


FILES = repository_files()


def test_the_walk_sees_the_repository():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "docs/theory/linreg.md", "reduced_models/base.py",
            "tests/test_references.py"} <= names


def test_no_file_references_a_path_outside_the_repository():
    bad = []
    for path in FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in OUTSIDE.finditer(line):
                if path.name == "test_references.py":
                    break  # the patterns themselves
                bad.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)}")
    assert not bad, bad


def test_every_repository_path_named_in_a_file_exists():
    missing = []
    for path in FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in REPO_PATH.finditer(line):
                if not (ROOT / match.group(1)).exists():
                    missing.append(f"{path.relative_to(ROOT)}:{number}: {match.group(1)}")
    assert not missing, missing


def test_every_markdown_link_resolves_inside_the_repository():
    bad = []
    for path in FILES:
        if path.suffix != ".md":
            continue
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue  # web addresses and anchors
            resolved = (path.parent / target.split("#")[0]).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                bad.append(f"{path.relative_to(ROOT)}: {target}")
    assert not bad, bad


def stored_strings(path: Path) -> list[tuple[str, str]]:
    """(HDF5 object name / attribute, text) of every string attribute in the file."""
    out = []

    def visit(name, obj):
        for key, value in obj.attrs.items():
            values = value.tolist() if hasattr(value, "tolist") else value
            for item in values if isinstance(values, list) else [values]:
                if isinstance(item, bytes):
                    item = item.decode()
                if isinstance(item, str):
                    out.append((f"{name}@{key}", item))

    with h5py.File(path) as fh:
        visit("/", fh)
        fh.visititems(visit)
    return out


RUNS = {
    "linreg": [],  # the default run
    "sparse-flow": ["layers=2", "heads=2", "d=6", "t_max=0.2", "lr=5e-4", "records=5",
                    "mc_samples=100", "flow_batch=32", "n_flow=8"],
    "induction": ["t_max=2", "lr=0.5", "samples=200", "mi_chains=50", "batch=64", "records=5",
                  "test_samples=0", "L=20"],
    str(ROOT / "docs" / "examples" / "linear_attention.py"): [],
}


@pytest.mark.parametrize("experiment", list(RUNS), ids=lambda e: Path(e).stem)
def test_stored_attributes_reference_only_the_repository(tmp_path, capsys, experiment):
    out = tmp_path / "run.h5"
    argv = ["run", experiment, "--out", str(out), "--no-plot", "--json"]
    for pair in RUNS[experiment]:
        argv += ["--set", pair]
    assert main(argv) == 0
    capsys.readouterr()
    strings = stored_strings(out)
    models = [text for name, text in strings if name.endswith("@model")]
    assert models  # every trajectory describes its model
    for name, text in strings:
        assert not OUTSIDE.search(text), (name, text)
        for ref in REPO_PATH.findall(text):
            assert (ROOT / ref).exists(), (name, ref)
