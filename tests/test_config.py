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


def test_a_schema_resolves_to_its_frozen_typed_config_class():
    import dataclasses

    schema = Schema((Key("n", "int", 3, "size", low=1),
                     Key("mode", "str", "a", "mode", choices=("a", "b")),
                     Key("xs", "floats", [0.5], "values")), name="ToyConfig")
    config = schema.resolve({"n": "7"})
    assert type(config) is schema.config_class and type(config).__name__ == "ToyConfig"
    assert config.n == 7 and config["n"] == 7 and config.mode == "a" and config.xs == [0.5]
    assert dict(config) == {"n": 7, "mode": "a", "xs": [0.5]} and config == dict(config)
    assert {**config, "n": 8}["n"] == 8 and config.get("nosuch") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n = 9
    with pytest.raises(KeyError):
        config["nosuch"]
    fields = {f.name: f for f in dataclasses.fields(config)}
    assert fields["mode"].metadata["key"].choices == ("a", "b") and fields["n"].type is int
    assert config.replace(n=2).n == 2 and config.n == 7
    assert schema.typed({"n": 1, "mode": "b", "xs": []}).mode == "b"
    assert schema.typed(config) is config


def test_every_experiment_has_a_config_class_of_its_keys():
    from sims import registry

    for name, info in registry.experiments().items():
        config = info.schema.resolve()
        assert list(config) == [k.name for k in info.schema.keys]
        assert type(config).__name__.endswith("Config"), name
