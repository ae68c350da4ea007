"""The command-line contract: JSON on stdout, exit 2 and nothing written on bad input."""

import json
import subprocess
import sys

import h5py
import pytest

from sims.cli import main

SMALL = ["--set", "t_max=1", "--set", "lr=0.05", "--set", "batch=64", "--set", "mc_samples=300",
         "--set", "records=20", "--set", "eval_samples=256"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_json_show_plot(tmp_path, capsys):
    out = tmp_path / "r.h5"
    code, stdout, _ = run_cli(capsys, "run", "linreg", *SMALL, "--out", str(out), "--json", "--seed", "7")
    assert code == 0
    payload = json.loads(stdout)
    assert payload["status"] == "complete" and payload["seed"] == 7
    assert set(payload["comparison"]) == {"sgd_vs_population", "ode_vs_population", "sgd_vs_ode"}
    assert len(payload["sgd"]["final"]["omega"]) == 2
    with h5py.File(out, "r") as fh:
        run = fh["runs"][payload["run_id"]]
        assert {"ode", "population", "sgd"} <= set(run)
        assert run["sgd/params/mu"].shape[1] == 2 and run["sgd"].attrs["kind"] == "sgd"
        assert json.loads(run.attrs["config"])["seed"] == 7
    assert (tmp_path / f"r_{payload['run_id']}.png").stat().st_size > 10_000
    code, stdout, _ = run_cli(capsys, "show", str(out), "--json")
    assert code == 0 and payload["run_id"] in json.loads(stdout)["runs"]
    code, stdout, _ = run_cli(capsys, "plot", str(out), "--out", str(tmp_path / "p.png"), "--json")
    assert code == 0 and json.loads(stdout)["plot"].endswith("p.png")


def test_no_sgd_and_toml_config(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("t_max = 1.0\nlr = 0.1\nmc_samples = 200\nrecords = 10\nheads = 3\n")
    out = tmp_path / "r.h5"
    code, stdout, _ = run_cli(capsys, "run", "linreg", "--config", str(cfg), "--no-sgd",
                              "--no-plot", "--out", str(out), "--json")
    payload = json.loads(stdout)
    assert code == 0 and "sgd" not in payload and len(payload["ode"]["final"]["mu"]) == 3


@pytest.mark.parametrize("argv, fragment", [
    (["run", "nosuch"], "unknown experiment 'nosuch'"),
    (["run", "linreg", "--set", "dd=3"], "unknown key 'dd'"),
    (["run", "linreg", "--set", "d=0"], "key 'd'"),
    (["run", "linreg", "--set", "L=0"], "key 'L'"),
    (["run", "linreg", "--set", "sigma2=-1"], "key 'sigma2'"),
    (["run", "linreg", "--set", "lr=0"], "key 'lr'"),
    (["run", "linreg", "--set", "heads=two"], "key 'heads'"),
    (["run", "linreg", "--set", "param=both"], "key 'param'"),
    (["run", "linreg", "--set", "batch=100000000"], "key 'batch'"),
    (["run", "linreg", "--config", "/nonexistent/c.toml"], "/nonexistent/c.toml"),
    (["run", "linreg", "--bogus"], "unrecognized arguments"),
    (["show", "/nonexistent.h5"], "/nonexistent.h5"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, fragment):
    out = tmp_path / "never.h5"
    extra = ["--out", str(out)] if argv[0] == "run" else []
    code, stdout, stderr = run_cli(capsys, *argv, *extra)
    assert code == 2 and stdout == ""
    assert fragment in stderr and stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_not_an_icldyn_file_is_refused_for_output(tmp_path, capsys):
    foreign = tmp_path / "foreign.h5"
    foreign.write_bytes(b"not hdf5 at all")
    code, _, stderr = run_cli(capsys, "run", "linreg", *SMALL, "--out", str(foreign))
    assert code == 2 and "foreign.h5" in stderr
    assert foreign.read_bytes() == b"not hdf5 at all"


def test_console_script_list_json():
    proc = subprocess.run([sys.executable, "-m", "sims.cli", "list", "--json"],
                          capture_output=True, text=True, check=True)
    listing = json.loads(proc.stdout)
    assert listing["linreg"]["keys"]["d"]["default"] == 5


PROBE = """
import json, sys
from sims.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(m for m in ("torch", "sympy") if m in sys.modules)}))
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["list"], ["list", "linreg"],
                                  ["list", "--json"], ["run", "linreg", "--help"],
                                  ["check", "linreg", "--help"], ["sweep", "sparse", "--help"]])
def test_answers_without_torch_or_sympy(argv):
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}


def test_list_and_run_help_show_the_experiments_keys_with_defaults_and_choices(capsys):
    code, out, _ = run_cli(capsys, "list", "linreg")
    assert code == 0 and out.startswith("linreg: ") and "linreg-risk" not in out
    assert "param" in out and "[choices: merged, factored]" in out and "[0 < lr]" in out
    with pytest.raises(SystemExit) as exc:
        main(["run", "linreg-multitask", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "config keys (--set KEY=VALUE)" in out
    assert "tasks" in out and "default" in out
def test_list_one_experiment_shows_its_keys(capsys):
    code, stdout, _ = run_cli(capsys, "list", "induction", "--json")
    payload = json.loads(stdout)
    assert code == 0 and list(payload) == ["induction"]
    assert {"empty_set", "shifted", "full_batch"} <= set(payload["induction"]["keys"])
    code, _, err = run_cli(capsys, "list", "nosuch")
    assert code == 2 and "unknown experiment 'nosuch'" in err
