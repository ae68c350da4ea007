"""Experiment linreg-risk: Monte-Carlo risks over test lengths against independent estimates."""

import json
import math

import h5py
import pytest

from reduced_models.linreg_theory import (
    debiased_gd_risk,
    debiased_gd_risk_at_step,
    plain_gd_risk,
    plain_gd_risk_at_step,
    single_head_large_L_optimum,
)
from sims.cli import main
from sims.experiment import generator
from sims.linreg.checks import coefficient_risk_samples, mean_and_stderr, softmax_risk

D, S2 = 5, 0.1
L_TEST = [10, 40]
SAMPLES = 20_000
NETWORK_RUN = ["--set", "t_max=1", "--set", "lr=0.05", "--set", "batch=64", "--set", "records=10",
               "--set", "eval_samples=256", "--no-ode", "--no-plot"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def network_file(tmp_path_factory):
    """A stored linreg run with a (briefly) trained network."""
    path = tmp_path_factory.mktemp("net") / "net.h5"
    assert main(["run", "linreg", *NETWORK_RUN, "--out", str(path), "--json"]) == 0
    return path


def _independent(name: str, L: int, points: dict, seed: int, eta: float) -> tuple[float, float]:
    """Risk of an estimator from a different estimator of the same mean and a separate seed:
    the query integrated out (coefficient predictors) or beta and the noise (softmax); the
    fixed-step GD risks exactly (closed forms, no error)."""
    if name in ("gd", "dgd", "ridge"):
        return mean_and_stderr(coefficient_risk_samples(D, L, S2, 20_000, generator(seed))[name])
    if name == "gd_fixed":
        return plain_gd_risk_at_step(D, L, S2, eta), 0.0
    if name == "dgd_fixed":
        return debiased_gd_risk_at_step(D, L, S2, eta), 0.0
    if name in ("single_head", "single_head_fixed"):
        omega, mu = single_head_large_L_optimum(D, L if name == "single_head" else 40, S2)
    else:
        omega, mu = points[name]["omega"], points[name]["mu"]
    return softmax_risk(omega, mu, D, L, S2, 16_000, generator(seed))


def test_risks_agree_with_independent_monte_carlo(tmp_path, capsys, network_file):
    out = tmp_path / "risk.h5"
    code, stdout, _ = run_cli(
        capsys, "run", "linreg-risk", "--set", "L_test=10,40", "--set", "omega=0.13,-0.13",
        "--set", "mu=3.45,-3.45", "--set", f"samples={SAMPLES}", "--set", f"network={network_file}",
        "--out", str(out), "--json", "--seed", "3")
    assert code == 0
    payload = json.loads(stdout)
    names = {"multihead", "single_head", "gd", "dgd", "ridge", "network", "gd_fixed",
             "dgd_fixed", "single_head_fixed"}
    assert payload["L_test"] == L_TEST and set(payload["risk"]) == set(payload["stderr"]) == names
    with h5py.File(network_file, "r") as fh:
        (run,) = fh["runs"].values()
        trained = {k: run[f"sgd/params/{k}"][-1].tolist() for k in ("omega", "mu")}
    assert payload["points"]["network"]["omega"] == trained["omega"]
    assert payload["points"]["network"]["mu"] == trained["mu"]
    for name in sorted(names):
        for i, L in enumerate(L_TEST):
            mean, err = payload["risk"][name][i], payload["stderr"][name][i]
            assert 0 < err < 0.02 * mean
            other = _independent(name, L, payload["points"], seed=100 + 10 * i + len(name),
                                 eta=payload["fixed_step"])
            assert abs(mean - other[0]) <= 4 * math.hypot(err, other[1]), (name, L)
    for i, L in enumerate(L_TEST):
        assert payload["theory"]["gd"][i] == plain_gd_risk(D, L, S2)
        assert payload["theory"]["dgd"][i] == debiased_gd_risk(D, L, S2)
    with h5py.File(out, "r") as fh:
        group = fh["runs"][payload["run_id"]]["risk"]
        assert group["L_test"][()].tolist() == L_TEST
        for name in names:
            assert group[name][()].tolist() == payload["risk"][name]
            assert group[f"stderr_{name}"][()].tolist() == payload["stderr"][name]
    code, stdout, _ = run_cli(capsys, "plot", str(out), "--out", str(tmp_path / "p.png"), "--json")
    assert code == 0 and (tmp_path / "p.png").stat().st_size > 10_000


def test_network_given_as_file_and_run_id(tmp_path, capsys, network_file):
    with h5py.File(network_file, "r") as fh:
        (run_id,) = fh["runs"].keys()
    code, stdout, _ = run_cli(capsys, "run", "linreg-risk", "--set", "L_test=20",
                              "--set", "samples=200", "--set", f"network={network_file}:{run_id}",
                              "--out", str(tmp_path / "r.h5"), "--json")
    payload = json.loads(stdout)
    assert code == 0 and payload["points"]["network"]["source"] == f"{network_file}:{run_id}"


@pytest.mark.parametrize("setting, fragment", [
    (["--set", "omega=0.1,0.2,0.3"], "key 'mu'"),
    (["--set", "L_test=1,10"], "key 'L_test'"),
    (["--set", "network=/nonexistent/n.h5"], "key 'network': /nonexistent/n.h5"),
    (["--set", "network={net}:linreg-9999"], "no run 'linreg-9999'"),
    (["--set", "network={net}", "--set", "d=3"], "trained at d = 5"),
    (["--set", "network={other}"], "not a linreg run"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, network_file, setting, fragment):
    other = tmp_path / "other.h5"
    if "{other}" in " ".join(setting):
        assert main(["run", "linreg-risk", "--set", "L_test=10", "--set", "samples=100",
                     "--out", str(other)]) == 0
        capsys.readouterr()
    argv = [a.format(net=network_file, other=other) for a in setting]
    out = tmp_path / "never.h5"
    code, stdout, stderr = run_cli(capsys, "run", "linreg-risk", *argv, "--out", str(out))
    assert code == 2 and stdout == "" and fragment in stderr and stderr.count("\n") == 1
    assert not out.exists()


def test_run_writes_the_risk_figure_next_to_the_file(tmp_path, capsys):
    """A run whose results are extras only (no trajectories) still gets its PNG."""
    out = tmp_path / "r.h5"
    code, stdout, _ = run_cli(capsys, "run", "linreg-risk", "--set", "L_test=10,20",
                              "--set", "samples=200", "--out", str(out), "--json")
    payload = json.loads(stdout)
    assert code == 0 and payload["plot"].endswith(".png")
    assert (tmp_path / payload["plot"].rsplit("/", 1)[-1]).stat().st_size > 10_000
