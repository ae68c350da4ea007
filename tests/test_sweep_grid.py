"""Grid parsing and validation: every form of --grid, and bad grids exit 2 before any work."""

import numpy as np
import pytest

from dynamics.config import Key, Schema
from dynamics.errors import UsageError
from dynamics.sweep import Sweep, parse_grid
from sims.cli import main
from sims.linreg.experiment import SCHEMA


def axis(spec):
    (a,) = parse_grid(SCHEMA, [spec])
    return a


def test_explicit_values_are_parsed_by_the_schema():
    a = axis("L=10, 40,100")
    assert a.values == (10, 40, 100) and all(type(v) is int for v in a.values)
    assert a.spacing == "linear"  # ratios 4 and 2.5: not geometric
    assert axis("param=merged,factored").values == ("merged", "factored")
    assert axis("sigma2=0,0.1,0.2").spacing == "linear"


def test_geometric_lists_are_detected_as_log():
    assert axis("init_scale=0.001,0.01,0.1").spacing == "log"
    assert axis("init_scale=0.001,0.01").spacing == "linear"  # two points: no evidence


def test_linear_range_includes_both_ends():
    a = axis("sigma2=0:1:5")
    np.testing.assert_allclose(a.values, [0, 0.25, 0.5, 0.75, 1.0], rtol=0, atol=1e-15)
    assert a.spacing == "linear"
    assert axis("L=10:100:10").values == tuple(range(10, 101, 10))


def test_logspace_takes_endpoint_values_not_exponents():
    a = axis("init_scale=logspace:1e-3:1e-1:5")
    np.testing.assert_allclose(a.values, [1e-3, 10**-2.5, 1e-2, 10**-1.5, 1e-1], rtol=1e-12)
    assert a.spacing == "log"
    assert axis("L=logspace:10:1000:3").values == (10, 100, 1000)


def test_list_valued_keys_are_swept_in_brackets():
    schema = Schema((Key("L_test", "ints", [10], "test lengths", low=1),))
    (a,) = parse_grid(schema, ["L_test=[10,40],[100]"])
    assert a.values == ([10, 40], [100])
    assert list(a.coordinate()) == ["10,40", "100"]
    with pytest.raises(UsageError, match="key 'L_test': a list-valued key"):
        parse_grid(schema, ["L_test=10,40"])
    with pytest.raises(UsageError, match="key 'L_test'"):
        parse_grid(schema, ["L_test=[10,0]"])


def test_points_enumerate_in_c_order():
    axes = parse_grid(SCHEMA, ["L=10,20", "heads=1,2,3"])
    sweep = Sweep("linreg", SCHEMA.defaults(), tuple(axes))
    pts = sweep.points()
    assert sweep.shape == (2, 3) and len(pts) == 6
    assert [(c["L"], c["heads"]) for _, c in pts] == [
        (10, 1), (10, 2), (10, 3), (20, 1), (20, 2), (20, 3)]
    assert [i for i, _ in pts] == list(range(6))


def test_sweep_id_depends_on_grid_and_base_but_not_on_the_base_value_of_a_swept_key():
    axes = tuple(parse_grid(SCHEMA, ["L=10,20"]))
    base = SCHEMA.defaults()
    sid = Sweep("linreg", base, axes).sweep_id
    assert Sweep("linreg", {**base, "L": 77}, axes).sweep_id == sid
    assert Sweep("linreg", {**base, "d": 3}, axes).sweep_id != sid
    assert Sweep("linreg", base, tuple(parse_grid(SCHEMA, ["L=10,21"]))).sweep_id != sid
    assert Sweep("linreg", base, axes, sgd=False).sweep_id != sid


@pytest.mark.parametrize("specs, fragment", [
    (["nosuch=1,2"], "unknown key 'nosuch'"),
    (["L="], "key 'L': the grid is empty"),
    (["L=10,,20"], "key 'L': empty value"),
    (["L=10,forty"], "key 'L': expected int"),
    (["heads=1.5"], "key 'heads': expected int"),
    (["L=0,10"], "key 'L': must be >"),
    (["param=merged,both"], "key 'param'"),
    (["L=10,20", "L=30"], "key 'L': swept twice"),
    (["L=10,10"], "key 'L': repeated value"),
    (["L=10:15:3"], "key 'L': 10:15:3 gives non-integer values"),
    (["init_scale=logspace:0:1:3"], "key 'init_scale': logspace needs"),
    (["L"], "--grid 'L': expected KEY=V1,V2"),
])
def test_bad_grids_raise_usage_error_naming_the_key(specs, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_grid(SCHEMA, specs)


@pytest.mark.parametrize("argv, fragment", [
    (["--grid", "dd=1,2"], "unknown key 'dd'"),
    (["--grid", "L="], "key 'L'"),
    (["--grid", "sigma2=0.1,abc"], "key 'sigma2'"),
    (["--grid", "t_max=1e9"], "key 't_max'"),  # cross-key check of one point (t_max / lr)
    ([], "--grid"),
    (["--grid", "L=10", "--no-ode", "--no-sgd"], "nothing to compute"),
    (["--grid", "L=10", "--workers", "0"], "--workers"),
])
def test_cli_bad_sweep_exits_2_and_writes_nothing(tmp_path, capsys, argv, fragment):
    out = tmp_path / "s.h5"
    code = main(["sweep", "linreg", *argv, "--out", str(out), "--json"])
    stdout, stderr = capsys.readouterr()
    assert code == 2 and stdout == ""
    assert fragment in stderr and len(stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
