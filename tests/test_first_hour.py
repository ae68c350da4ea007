"""What a researcher meets first: every experiment's run prints a results table and draws a
figure with labelled axes; show prints text; the example configs and the Python example run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import dynamics.plots
from dynamics.config import load_toml
from sims import registry
from sims.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
# On top of each example config: a run of a few seconds for the figure and table checks.
FAST = {
    "linreg": ["t_max=1", "mc_samples=300", "eval_samples=256", "records=20", "lr=0.05"],
    "linreg-risk": ["samples=1000"],
    "linreg-length": ["steps=60", "samples=500", "eval_samples=256"],
    "linreg-multitask": ["t_max=0.2", "eval_samples=256", "records=15"],
    "induction": ["t_max=2", "samples=200", "mi_chains=100", "test_samples=50", "records=12",
                  "corrected=false"],
    "sparse": ["steps=30", "eval_samples=50", "probe_samples=40"],
    "sparse-flow": ["t_max=0.05", "mc_samples=200", "records=8", "flow_batch=64"],
    "sparse-risk": ["trials=100", "tune_trials=100"],
}


def test_every_experiment_has_an_example_config():
    for name, exp in registry.EXPERIMENTS.items():
        path = os.path.join(EXAMPLES, f"{name}.toml")
        assert os.path.exists(path), f"examples/{name}.toml missing"
        exp.schema.resolve(load_toml(path, name))


@pytest.mark.parametrize("name", sorted(registry.EXPERIMENTS))
def test_run_prints_a_table_and_draws_labelled_axes(name, tmp_path, capsys, monkeypatch):
    figures = []
    save = dynamics.plots.save_figure

    def capture(fig, out, dpi=110):
        figures.append((fig, [(ax, ax.get_xlabel(), ax.get_ylabel(), ax.get_title())
                              for ax in fig.axes if ax.axison]))
        return save(fig, out, dpi)

    for module in list(sys.modules.values()):
        if getattr(module, "save_figure", None) is save:
            monkeypatch.setattr(module, "save_figure", capture)
    sets = [arg for pair in FAST.get(name, []) for arg in ("--set", pair)]
    out = tmp_path / "r.h5"
    code = main(["run", name, "--config", os.path.join(EXAMPLES, f"{name}.toml"), *sets,
                 "--out", str(out)])
    stdout, _ = capsys.readouterr()
    assert code == 0, stdout
    lines = stdout.splitlines()
    assert lines[0].startswith(f"{name} run {name}-0001: complete")
    tables = [line for line in lines if line.endswith(":") and not line.startswith(" ")]
    assert tables, f"no results table in:\n{stdout}"
    assert len(figures) == 1
    fig, axes = figures[0]
    width, height = fig.get_size_inches() * 110
    assert 400 <= width <= 2400 and 300 <= height <= 2000, (width, height)
    for ax, xlabel, ylabel, title in axes:
        if ax.get_label() == "<colorbar>":
            assert xlabel or ylabel, f"{name}: unlabelled colorbar"
        else:
            assert xlabel and ylabel, f"{name}: panel {title!r} lacks an axis label"


def test_show_prints_text_and_json_on_request(tmp_path, capsys):
    out = tmp_path / "r.h5"
    sets = [arg for pair in FAST["linreg"] for arg in ("--set", pair)]
    assert main(["run", "linreg", *sets, "--set", "heads=3", "--no-plot", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    assert not text.lstrip().startswith("{")
    assert "run linreg-0001: linreg, complete" in text and "heads=3" in text
    assert "sgd_vs_population" in text
    assert main(["show", str(out), "--json"]) == 0
    assert capsys.readouterr().out.startswith("{")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(registry.EXPERIMENTS))
def test_example_config_runs_as_written(name, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sims.cli", "run", name, "--config",
                           os.path.join(EXAMPLES, f"{name}.toml"), "--out", str(tmp_path / "r.h5")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0 and proc.stderr.count("Warning") == 0, proc.stderr


def test_python_example_runs_and_reads_trajectories(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, "run_and_read.py"),
                           str(tmp_path / "example.h5")], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=False,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    assert "sgd: 15 records up to t = 1" in proc.stdout and "Warning" not in proc.stderr


def test_plot_redraws_a_sweep_as_a_compact_labelled_grid(tmp_path, capsys, monkeypatch):
    out = tmp_path / "s.h5"
    code = main(["sweep", "linreg", "--grid", "init_scale=0.01,0.05", "--grid", "heads=1,2",
                 "--grid", "L=10,20,40", "--set", "t_max=0.5", "--set", "records=10", "--no-sgd", "--no-plot",
                 "--out", str(out)])
    capsys.readouterr()
    assert code == 0
    figures = []
    save = dynamics.plots.save_figure

    def capture(fig, path, dpi=110):
        figures.append(fig)
        return save(fig, path, dpi)

    monkeypatch.setattr("dynamics.sweep_plots.save_figure", capture)
    assert main(["plot", str(out), "--out", str(tmp_path / "fig" / "sweep.png")]) == 0
    printed = capsys.readouterr().out
    assert printed == f"figure:  {tmp_path / 'fig' / 'sweep.png'}\n"
    assert (tmp_path / "fig" / "sweep.png").stat().st_size > 10_000
    combined = figures[0]
    panels = [ax for ax in combined.axes if ax.get_label() != "<colorbar>" and ax.axison]
    bars = [ax for ax in combined.axes if ax.get_label() == "<colorbar>"]
    # 3 metrics x 3 facets (L): one row per metric, its facets side by side
    assert len(panels) == 9 and len(bars) == len(panels)
    assert len({round(ax.get_position().x0, 3) for ax in panels}) == 3
    assert len({round(ax.get_position().y0, 3) for ax in panels}) == 3
    assert all(ax.get_xlabel() == "init_scale" and ax.get_ylabel() == "heads" for ax in panels)
    assert all(bar.get_ylabel() for bar in bars)
    assert "grey cells" in combined._suptitle.get_text()  # no escape by t_max = 0.5: NaN
