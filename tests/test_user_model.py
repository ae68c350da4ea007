"""Reduced models from a user's own file (sims/user_model.py), on the example
docs/examples/linear_attention.py: its flow against the closed-form logistic solution,
its loss against a Monte-Carlo estimate on the network, the CLI contract."""

import ast
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from dynamics.store import read_run
from reduced_models.linreg_theory import plain_gd_optimal_step, plain_gd_risk
from sims import user_model
from sims.cli import main
from sims.linreg.linear_attention import LinearAttentionRegressor
from sims.linreg.task import sample_regression

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "linear_attention.py"


def risk_curvature(d, L, sigma2):
    """a of Loss(eta) = 1 + sigma2 - 2 eta + a eta^2 (E tr S^2 = d (1 + (d+1)/L))."""
    return 1 + (d + 1) / L + sigma2 * d / L


def logistic(t, eta0, d, L, sigma2):
    """Balanced flow: d eta/dt = (4 / sqrt(d)) eta (1 - a eta)."""
    a = risk_curvature(d, L, sigma2)
    return (1 / a) / (1 + (1 / (a * eta0) - 1) * np.exp(-4 / math.sqrt(d) * t))


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("d, L, sigma2", [(5, 40.0, 0.1), (2, 7.0, 0.5)])
def test_flow_follows_the_closed_form_logistic_solution(d, L, sigma2):
    exp = user_model.load(str(EXAMPLE))
    config = exp.schema.resolve({"d": d, "L": L, "sigma2": sigma2})
    result = exp.run(config)
    traj = result.trajectories["ode"]
    assert traj.status == "complete" and traj.t[-1] == 20.0
    eta0 = math.sqrt(d) * 0.02**2
    expected = logistic(traj.t, eta0, d, L, sigma2)
    np.testing.assert_allclose(traj.params["eta"], expected, rtol=1e-6, atol=1e-9)
    # balance d gamma^2 = v^2 holds along the flow; gamma^2 = eta / sqrt(d)
    np.testing.assert_allclose(traj.params["gamma"] ** 2, expected / math.sqrt(d), rtol=1e-6)
    a = risk_curvature(d, L, sigma2)
    np.testing.assert_allclose(traj.loss, 1 + sigma2 - 2 * expected + a * expected**2, rtol=1e-7)


def test_stationary_point_and_flow_eigenvalues_are_the_closed_forms():
    exp = user_model.load(str(EXAMPLE))
    found = exp.run(exp.schema.resolve()).summary["stationary"]
    a = risk_curvature(5, 40.0, 0.1)
    assert found["converged"] and found["stability"] == "neutral"
    assert found["observables"]["eta"] == pytest.approx(1 / a, rel=1e-12)
    assert found["loss"] == pytest.approx(1.1 - 1 / a, rel=1e-12)
    np.testing.assert_allclose(found["flow_eigenvalues"], [-4 / math.sqrt(5), 0.0], atol=1e-10)
    # an independent implementation: optimal one-step GD at finite L (reduced_models.linreg_theory)
    assert found["observables"]["eta"] == pytest.approx(plain_gd_optimal_step(5, 40, 0.1), rel=1e-12)
    assert found["loss"] == pytest.approx(plain_gd_risk(5, 40, 0.1), rel=1e-12)
    # the origin is a saddle with flow eigenvalues +- 2 / sqrt(d)
    model, hyper, _ = exp.model(exp.schema.resolve())
    saddle = exp.stationary(model, hyper, torch.zeros(2, dtype=torch.float64))
    assert saddle["stability"] == "unstable"
    np.testing.assert_allclose(saddle["flow_eigenvalues"], [-2 / math.sqrt(5), 2 / math.sqrt(5)],
                               rtol=1e-12)


def test_closed_form_loss_against_monte_carlo_on_the_network():
    """The file's loss at a lifted point against the MSE of LinearAttentionRegressor (mean
    normalisation) carrying the lifted weights, over 2^17 prompts (4 standard errors)."""
    exp = user_model.load(str(EXAMPLE))
    config = exp.schema.resolve()
    model, hyper, _ = exp.model(config)
    state = model.manifold.pack({"gamma": 0.6, "v": 2.0})
    net = LinearAttentionRegressor(5, 1, "merged", "mean")
    net.load({k: v[None] for k, v in model.manifold.lift(state).items()})
    batch = sample_regression(2**17, 40, 5, 0.1, torch.Generator().manual_seed(3),
                              dtype=torch.float64)
    with torch.no_grad():
        pred = net(batch.tokens())
        errors = (pred - batch.yq) ** 2
    # on the manifold the network is one GD step of size eta = gamma v
    gd = 0.6 * 2.0 * torch.einsum("bl,bld,bd->b", batch.y, batch.x, batch.xq) / 40
    torch.testing.assert_close(pred, gd, rtol=1e-12, atol=1e-12)
    mean, se = float(errors.mean()), float(errors.std() / math.sqrt(len(errors)))
    assert abs(float(model.loss(state[None], hyper)[0]) - mean) < 4 * se


def test_example_imports_only_the_public_api():
    tree = ast.parse(EXAMPLE.read_text())
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update({a.name: None for a in node.names})
        elif isinstance(node, ast.ImportFrom):
            imported[node.module] = [a.name for a in node.names]
    import reduced_models

    assert set(imported) <= {"math", "numpy", "sympy", "reduced_models"}
    assert set(imported["reduced_models"]) <= set(reduced_models.__all__)


def test_cli_run_check_and_sweep(tmp_path, capsys):
    out = tmp_path / "la.h5"
    code, stdout, _ = cli(capsys, "run", EXAMPLE, "--set", "L=20", "--out", out, "--json")
    assert code == 0
    payload = json.loads(stdout)
    assert payload["experiment"] == "linear-attention" and payload["status"] == "complete"
    run_id, attrs, trajs = read_run(str(out))
    assert attrs["config"]["L"] == 20.0 and attrs["experiment"] == "linear-attention"
    assert "linear_attention.py" in trajs["ode"].attrs["model"]
    with h5py.File(out) as fh:
        eig = fh["runs"][run_id]["stationary/flow_eigenvalues"][()]
    np.testing.assert_allclose(eig, [-4 / math.sqrt(5), 0.0], atol=1e-10)
    assert Path(payload["plot"]).stat().st_size > 10_000

    code, stdout, _ = cli(capsys, "check", EXAMPLE, "--json")
    rows = json.loads(stdout)["rows"]
    assert code == 0 and all(r["passed"] for r in rows)
    assert {"limit eta", "limit loss", "stationary point reached: |gradient|"} <= \
        {r["name"] for r in rows}

    sweep = tmp_path / "sweep.h5"
    code, stdout, _ = cli(capsys, "sweep", EXAMPLE, "--grid", "L=10,40", "--grid", "d=2,5",
                          "--out", sweep, "--no-plot", "--json")
    assert code == 0 and json.loads(stdout)["points_computed"] == 4
    with h5py.File(sweep) as fh:
        group = next(iter(fh["sweeps"].values()))
        final = group["ode_eta_final"][()]
    expected = [[1 / risk_curvature(d, L, 0.1) for d in (2, 5)] for L in (10, 40)]
    np.testing.assert_allclose(final, expected, rtol=1e-8)


def test_a_failing_closed_form_fails_the_check(tmp_path, capsys):
    wrong = tmp_path / "wrong.py"
    wrong.write_text(EXAMPLE.read_text().replace('"eta": 1 / a', '"eta": 1.01 / a'))
    code, stdout, _ = cli(capsys, "check", wrong, "--json")
    failed = [r["name"] for r in json.loads(stdout)["rows"] if not r["passed"]]
    assert code == 1 and failed == ["limit eta"]


GOOD = "HYPER = {'d': 2}\ndef reduced_model(h):\n    return None\ndef start(h):\n    return {}\n"


@pytest.mark.parametrize("name, text, message", [
    ("missing.py", None, "no such file"),
    ("syntax.py", "x = (\n", "syntax error"),
    ("names.py", "HYPER = {}\n", "defines no 'reduced_model'"),
    ("imports.py", "import no_such_module_here\n", "ModuleNotFoundError"),
    ("raises.py", GOOD.replace("return None", "raise RuntimeError('boom')"), "boom"),
    ("returns.py", GOOD, "not a ReducedModel"),
    ("clash.py", GOOD.replace("'d'", "'t_max'"), "engine key"),
    ("types.py", GOOD.replace("2}", "[2]}"), "HYPER['d']"),
])
def test_bad_files_exit_2_with_one_line_naming_the_path(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    out = tmp_path / "out.h5"
    for command in ("run", "check", "sweep"):
        extra = ["--grid", "seed=0,1"] if command == "sweep" else []
        extra += ["--out", out] if command != "check" else []
        code, stdout, err = cli(capsys, command, path, *extra)
        assert code == 2 and stdout == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and message in lines[0], lines
    assert not out.exists()


def test_bad_hyper_parameter_value_names_the_path(tmp_path, capsys):
    code, _, err = cli(capsys, "run", EXAMPLE, "--set", "d=0", "--out", tmp_path / "o.h5")
    assert code == 2 and str(EXAMPLE) in err and "d must be >= 1" in err
    code, _, err = cli(capsys, "run", EXAMPLE, "--set", "nope=1", "--out", tmp_path / "o.h5")
    assert code == 2 and "nope" in err
    assert not (tmp_path / "o.h5").exists()
