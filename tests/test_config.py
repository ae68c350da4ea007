import pytest

from dynamics.config import Key, Schema, load_toml, parse_assignments
from dynamics.errors import UsageError

SCHEMA = Schema((
    Key("d", "int", 5, "dim", low=1),
    Key("lr", "float", 0.1, "step", low=0.0, low_open=True),
    Key("sigma2", "float", 0.1, "noise", low=0.0),
    Key("param", "str", "merged", "p", choices=("merged", "factored")),
    Key("flag", "bool", False, "b"),
    Key("L_test", "ints", [10, 40], "lengths", low=1),
    Key("omega", "floats", [0.1], "values"),
))


def test_defaults_and_overrides_in_order():
    cfg = SCHEMA.resolve({"d": 3, "lr": 1}, {"d": "7", "L_test": "10,20,30", "flag": "yes"})
    assert cfg["d"] == 7 and cfg["lr"] == 1.0 and isinstance(cfg["lr"], float)
    assert cfg["L_test"] == [10, 20, 30] and cfg["flag"] is True
    assert cfg["omega"] == [0.1] and cfg["param"] == "merged"


@pytest.mark.parametrize("layer, fragment", [
    ({"dd": 1}, "unknown key 'dd'"),
    ({"d": 0}, "key 'd': must be >= 1"),
    ({"d": "2.5"}, "key 'd': expected int"),
    ({"d": True}, "key 'd': expected int"),
    ({"d": 2.0}, "key 'd': expected int"),
    ({"lr": 0}, "key 'lr': must be > 0"),
    ({"sigma2": -0.1}, "key 'sigma2': must be >= 0"),
    ({"sigma2": "nan"}, "key 'sigma2': must be finite"),
    ({"lr": "inf"}, "key 'lr': must be finite"),
    ({"param": "both"}, "key 'param': 'both' is not one of"),
    ({"L_test": "10,0"}, "key 'L_test': must be >= 1"),
    ({"L_test": ""}, "key 'L_test': expected int"),
    ({"L_test": []}, "key 'L_test': the list is empty"),
    ({"flag": "maybe"}, "key 'flag': expected bool"),
    ({"param": 3}, "key 'param': expected str"),
])
def test_bad_values_name_the_key(layer, fragment):
    with pytest.raises(UsageError) as err:
        SCHEMA.resolve(layer)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_assignments_and_toml(tmp_path):
    assert parse_assignments(["a=1", " b =x,y"]) == {"a": "1", "b": "x,y"}
    assert parse_assignments(["a=1"]) == {"a": "1"}
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_assignments(["novalue"])
    good = tmp_path / "c.toml"
    good.write_text('d = 4\nparam = "factored"\nL_test = [5, 6]\n')
    assert SCHEMA.resolve(load_toml(str(good)))["L_test"] == [5, 6]
    bad = tmp_path / "bad.toml"
    bad.write_text("d = = 4\n")
    with pytest.raises(UsageError, match="bad.toml: malformed TOML"):
        load_toml(str(bad))
    with pytest.raises(UsageError, match="missing.toml: cannot read"):
        load_toml(str(tmp_path / "missing.toml"))
