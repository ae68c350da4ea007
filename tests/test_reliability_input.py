"""Bad input, tried systematically: exit 2, one line on stderr, no traceback, nothing written.
Config values are data, never code; HDF5 files are never unpickled."""

import ast
import math
import pathlib
import pickle

import h5py
import numpy as np
import pytest
import tomllib
from fault_injection import TINY, icldyn
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dynamics.errors import UsageError
from dynamics.memory import ENV, GIB, total
from sims import registry
from sims.cli import main

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = [(name, key) for name, exp in sorted(registry.EXPERIMENTS.items()) for key in exp.schema.keys]
TEXT = st.one_of(st.text(max_size=30), st.sampled_from(
    ["nan", "inf", "-inf", "1e400", "-1", "0", "", "1,2", "9" * 30, "True", "0x10", "1_0"]))
TOML_VALUES = st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=10),
                        st.lists(st.integers(), max_size=3), st.dates(), st.none())


def _resolve(experiment, layer):
    exp = registry.EXPERIMENTS[experiment]
    config = exp.schema.resolve(layer)
    exp.admit(config)
    return config


def _conforms(key, value):
    values = value if key.type in ("ints", "floats") else [value]
    for v in values:
        if key.type in ("int", "ints", "float", "floats"):
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            assert key.low is None or v > key.low or (v == key.low and not key.low_open)
            assert key.high is None or v <= key.high
    if key.choices:
        assert value in key.choices


@pytest.mark.parametrize("experiment, key", KEYS, ids=[f"{e}.{k.name}" for e, k in KEYS])
@SETTINGS
@given(text=TEXT, toml_value=TOML_VALUES)
def test_any_value_is_refused_with_usage_error_or_valid(experiment, key, text, toml_value):
    for value in (text, toml_value):
        try:
            config = _resolve(experiment, {key.name: value})
        except UsageError as exc:
            assert "\n" not in str(exc)
            continue
        _conforms(key, config[key.name])


def _refused(experiment, layer):
    try:
        _resolve(experiment, layer)
    except UsageError:
        return True
    return False


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_set_values_exit_2_with_one_line_and_write_nothing(tmp_path_factory, capsys, data):
    experiment, key = data.draw(st.sampled_from(KEYS))
    value = data.draw(TEXT)
    assume(_refused(experiment, {key.name: value}))
    folder = tmp_path_factory.mktemp("out")
    code = main(["run", experiment, "--set", f"{key.name}={value}", "--out", str(folder / "x.h5")])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert list(folder.iterdir()) == []


@SETTINGS
@given(name=st.text(min_size=1, max_size=20).filter(
    lambda s: "=" not in s and s.strip() and not s.startswith("-")))  # "-x" is an option
def test_unknown_keys_exit_2(tmp_path_factory, capsys, name):
    exp = registry.EXPERIMENTS["linreg"]
    assume(name.strip() not in exp.schema.by_name)
    folder = tmp_path_factory.mktemp("out")
    code = main(["run", "linreg", "--set", f"{name}=1", "--out", str(folder / "x.h5")])
    _, err = capsys.readouterr()
    assert code == 2 and "unknown key" in err and err.count("\n") == 1
    assert list(folder.iterdir()) == []


@SETTINGS
@given(text=st.text(max_size=40))
def test_malformed_toml_exits_2_naming_the_file(tmp_path_factory, capsys, text):
    try:
        tomllib.loads(text)
        assume(False)
    except tomllib.TOMLDecodeError:
        pass
    folder = tmp_path_factory.mktemp("cfg")
    cfg = folder / "c.toml"
    cfg.write_text(text, encoding="utf-8")
    code = main(["run", "linreg", "--config", str(cfg), "--out", str(folder / "x.h5")])
    _, err = capsys.readouterr()
    assert code == 2 and "c.toml: malformed TOML" in err and err.count("\n") == 1
    assert sorted(p.name for p in folder.iterdir()) == ["c.toml"]


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "g.h5"
    assert main(["run", "linreg", *TINY["linreg"], "--no-plot", "--out", str(path)]) == 0
    return path.read_bytes()


@SETTINGS
@given(fraction=st.floats(0.0, 0.999), command=st.sampled_from(["show", "plot", "run"]))
def test_truncated_hdf5_exits_2_and_is_left_as_it_was(tmp_path_factory, capsys, good_file,
                                                       fraction, command):
    folder = tmp_path_factory.mktemp("trunc")
    path = folder / "t.h5"
    path.write_bytes(good_file[: int(len(good_file) * fraction)])
    extra = (["linreg", *TINY["linreg"], "--out", str(path)] if command == "run" else [str(path)])
    code = main([command, *extra])
    _, err = capsys.readouterr()
    assert code == 2 and "t.h5" in err and err.count("\n") == 1
    assert path.read_bytes() == good_file[: int(len(good_file) * fraction)]
    assert sorted(p.name for p in folder.iterdir()) == ["t.h5"]


@pytest.mark.parametrize("attrs, fragment", [
    ({"format": "icldyn", "format_version": 2}, "format version 2"),
    ({"format": "netcdf"}, "not an icldyn file"),
    ({}, "not an icldyn file"),
])
@pytest.mark.parametrize("command", ["show", "plot", "run"])
def test_foreign_or_future_hdf5_exits_2(tmp_path, capsys, attrs, fragment, command):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs.update(attrs)
    before = path.read_bytes()
    extra = ["linreg", *TINY["linreg"], "--out", str(path)] if command == "run" else [str(path)]
    assert main([command, *extra]) == 2
    assert fragment in capsys.readouterr().err
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]


def test_damaged_run_group_exits_2_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs.update({"format": "icldyn", "format_version": 1})
        fh.create_group("runs/linreg-0001")
    for command in ("show", "plot"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert "d.h5: damaged icldyn file" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["run", "linreg", "--set", "lr=nan"],
    ["run", "linreg", "--seed", "1180591620717411303424"],
    ["show", "README.md"],
])
def test_real_process_bad_input_exits_2_without_traceback(tmp_path, argv):
    out = ["--out", str(tmp_path / "x.h5")] if argv[0] == "run" else []
    proc = icldyn(*argv, *out)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("icldyn: error: ") and list(tmp_path.iterdir()) == []


# Memory guards: every integer size key at an absurd value is refused by admit() (the memory
# estimate, before anything is allocated) with one line naming that key.
# integer keys that size nothing: a seed, a checkpoint interval, the curriculum's starts and
# interval (each capped by the sizes it grows towards)
NOT_SIZES = {"seed", "checkpoint_every", "curriculum_d_start", "curriculum_n_start",
             "curriculum_interval"}
SIZE_KEYS = [(e, k.name) for e, k in KEYS if k.type in ("int", "ints") and k.name not in NOT_SIZES]


@pytest.mark.parametrize("experiment, name", SIZE_KEYS, ids=[f"{e}.{n}" for e, n in SIZE_KEYS])
def test_absurd_sizes_are_refused_before_allocation(experiment, name):
    key = registry.EXPERIMENTS[experiment].schema.by_name[name]
    with pytest.raises(UsageError) as refused:
        _resolve(experiment, {name: [10**12] if key.type == "ints" else 10**12})
    message = str(refused.value)  # a memory refusal names the key; others may name a partner
    assert "\n" not in message and (message.startswith(f"key '{name}'") or "GiB" not in message)


@pytest.mark.parametrize("experiment", sorted(registry.EXPERIMENTS))
def test_defaults_fit_in_a_few_gib(experiment):
    """The estimates stay usable: every default run is estimated below 4 GiB."""
    exp = registry.EXPERIMENTS[experiment]
    assert 0 < total(exp.memory(exp.schema.defaults())) < 4 * GIB


@pytest.mark.parametrize("key, value", [("d", 10**6), ("L", 10**6), ("heads", 10**6),
                                        ("batch", 10**9), ("mc_samples", 10**9),
                                        ("eval_samples", 10**9)])
def test_linreg_names_the_key_that_makes_a_run_large(key, value):
    with pytest.raises(UsageError, match=f"^key '{key}': {key} = {value} needs ~[0-9.e+]+ GiB "
                       r"\(largest term: [a-zA-Z -]+\), more than the limit [0-9.]+ GiB"):
        _resolve("linreg", {key: value, "records": 10})


def test_the_limit_comes_from_the_environment_and_the_cli_writes_nothing(tmp_path, capsys,
                                                                        monkeypatch):
    out = tmp_path / "x.h5"
    monkeypatch.setenv(ENV, "0.25")  # below the interpreter alone
    for argv in (["run", "linreg", "--out", str(out)], ["check", "linreg"],
                 ["sweep", "linreg", "--grid", "heads=1,2", "--out", str(out)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "more than the limit 0.25 GiB (ICLDYN_MEMORY_LIMIT)" in err
    monkeypatch.setenv(ENV, "lots")
    assert main(["run", "linreg", "--out", str(out)]) == 2
    assert f"{ENV}: expected a positive number of GiB, got 'lots'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_every_sweep_point_is_admitted_before_any_work(tmp_path, capsys):
    out = tmp_path / "s.h5"
    code = main(["sweep", "linreg", "--set", "records=10", "--grid", "mc_samples=100,1000000000",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("icldyn: error: key 'mc_samples': mc_samples = 1000000000")
    assert list(tmp_path.iterdir()) == []


MALICIOUS = "__import__('os').system('touch {marker}')"


@pytest.mark.parametrize("experiment, key", [(e, k) for e, k in KEYS if k.type == "str"],
                         ids=lambda v: getattr(v, "name", v))
def test_code_in_a_config_value_is_never_run(tmp_path, capsys, experiment, key):
    marker = tmp_path / "pwned"
    value = MALICIOUS.format(marker=marker)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'{key.name} = "{value}"\n')
    for argv in (["--set", f"{key.name}={value}"], ["--config", str(cfg)]):
        try:
            config = _resolve(experiment, {key.name: value})
            assert config[key.name] == value  # accepted only as plain text
        except UsageError:
            code = main(["run", experiment, *argv, "--out", str(tmp_path / "x.h5")])
            assert code == 2
    capsys.readouterr()
    assert not marker.exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_pickled_data_in_an_hdf5_file_is_never_unpickled(tmp_path, capsys, good_file):
    marker = tmp_path / "pwned"
    path = tmp_path / "p.h5"
    path.write_bytes(good_file)
    blob = pickle.dumps(_Payload(marker))
    with h5py.File(path, "r+") as fh:
        run = fh["runs/linreg-0001"]
        run.attrs["summary"] = np.void(blob)
        run.create_dataset("payload/data", data=np.void(blob))
        run["ode"].attrs["model"] = np.void(blob)
    for command in (["show", str(path), "--json"], ["plot", str(path), "--out", str(tmp_path / "p.png")]):
        assert main(command) in (0, 2)  # read as data or refused, never a traceback
    capsys.readouterr()
    assert not marker.exists()


ALLOWED = {("reduced_models/base.py", "sympify"),  # sympy expressions built in code, not user text
           # a cached model's syntax tree, compiled only after cache._check has found nothing
           # but arithmetic on numbers and names and calls of torch and math functions in it
           ("reduced_models/cache.py", "exec"),
           # the lean solver's step, generated from its tableau and the state's size only
           ("dynamics/dopri5.py", "exec")}


def test_no_code_evaluation_or_unpickling_in_the_package():
    root = pathlib.Path(__file__).resolve().parents[1]
    found = set()
    for folder in ("dynamics", "reduced_models", "sims"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                    owner = getattr(getattr(node.func, "value", None), "id", "")
                    if name in ("eval", "exec", "sympify", "parse_expr", "Unpickler") or (
                            name in ("load", "loads") and owner in ("pickle", "marshal", "np", "numpy", "yaml")):
                        found.add((str(path.relative_to(root)), name))
                    if any(kw.arg == "allow_pickle" for kw in node.keywords):
                        found.add((str(path.relative_to(root)), "allow_pickle"))
    assert found <= ALLOWED, sorted(found - ALLOWED)
