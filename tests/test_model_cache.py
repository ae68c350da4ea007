"""The on-disk cache of compiled reduced models (reduced_models/cache.py): a model read
back gives bit-identical numbers without sympy; stale, unreadable or tampered files
are ignored; concurrent builders leave only complete files."""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from reduced_models import cache
from reduced_models import linreg as theory
from reduced_models.base import Manifold, Param, ReducedModel, SymbolicLoss


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("ICLDYN_CACHE", str(folder))
    return folder


def lt_model(d=3, heads=2, param="merged"):
    """A fresh (not lru-cached) symbolic Lt model."""
    return ReducedModel(theory.manifold(d, heads, param), theory.observables(d, param),
                        theory.large_L_loss(d), hyper=("L", "sigma2"))


def outputs(model, states):
    hyper = {"L": 20.0, "sigma2": 0.3}
    rhs = model.rhs(hyper)
    return [model.loss(states, hyper), model.gradient(states, hyper),
            *model.observe(states).values(), rhs(states[:1]), rhs(states)]


@pytest.mark.parametrize("param", ["merged", "factored"])
def test_a_model_read_back_gives_the_same_numbers_bit_for_bit(cache_dir, param):
    states = torch.randn(7, 4 * (1 if param == "merged" else 2), dtype=torch.float64,
                         generator=torch.Generator().manual_seed(3)) * 0.5
    built = lt_model(2, 2, param)
    reference = outputs(built, states)  # the scalar path compiles and caches its gradient too
    assert built._functions["loss"].__code__.co_filename != cache.SOURCE_NAME  # sympy's
    assert len(list(cache_dir.glob("*.json"))) == 2  # the manifold, the model
    loaded = lt_model(2, 2, param)
    assert loaded._functions["loss"].__code__.co_filename == cache.SOURCE_NAME  # from the file
    assert {"observe", "loss", "grad", "scalar_grad"} <= set(loaded._functions)
    for a, b in zip(reference, outputs(loaded, states)):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(loaded.manifold.jacobian, built.manifold.jacobian)
    # the symbolic form is still there on demand
    assert str(loaded.loss_expr) == str(built.loss_expr)


LOADER = """
import json, sys, torch
from reduced_models import linreg as theory
model = theory.symbolic_model(3, 2, "merged")
pop = theory.population_model(3, 2, 10, 50, torch.Generator().manual_seed(0))
state = torch.tensor([[0.1, -0.2, 0.3, -0.1]], dtype=torch.float64)
values = model.rhs({"L": 10.0, "sigma2": 0.1})(state).tolist()
values += pop.rhs({"sigma2": 0.1})(state).tolist()
print(json.dumps({"sympy": "sympy" in sys.modules, "values": values}))
"""


def run_loader(env) -> dict:
    proc = subprocess.run([sys.executable, "-c", LOADER], capture_output=True, text=True,
                          check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_repeated_process_does_not_import_sympy(cache_dir):
    env = {**os.environ, "ICLDYN_CACHE": str(cache_dir)}
    first, second = run_loader(env), run_loader(env)
    assert first["sympy"] and not second["sympy"]
    assert first["values"] == second["values"]


def test_the_key_changes_with_what_the_model_is_built_from(cache_dir, tmp_path, monkeypatch):
    base = cache.key("model", [Param("a", (2,))], theory.observables(3, "merged"), ("L",))
    assert base is not None
    assert cache.key("model", [Param("a", (3,))], theory.observables(3, "merged"), ("L",)) != base
    assert cache.key("model", [Param("a", (2,))], theory.observables(3, "factored"),
                     ("L",)) != base
    assert cache.key("model", [Param("a", (2,))], theory.observables(3, "merged"),
                     ("sigma2",)) != base
    assert lt_model(3).key != lt_model(4).key  # d enters through the closures
    # the source text of the builder's module
    module = tmp_path / "toy_builder.py"
    module.write_text("def lift(s):\n    return {'W': s['a']}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = importlib.import_module("toy_builder")
    before = cache.key("manifold", [Param("a", (2,))], toy.lift)
    module.write_text("def lift(s):\n    return {'W': s['a']}  # changed\n")
    cache._file_hash.cache_clear()
    assert cache.key("manifold", [Param("a", (2,))], toy.lift) != before
    # library versions are part of every key
    cache._environment.cache_clear()
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert cache.key("manifold", [Param("a", (2,))], toy.lift) != before
    cache._environment.cache_clear()


def test_what_cannot_be_fingerprinted_is_not_cached(cache_dir):
    weights = torch.ones(2)
    manifold = Manifold([Param("a", (2,))], lambda s: {"W": s["a"] * 1})
    assert manifold.key is not None
    model = ReducedModel(manifold, lambda s: {"a": s["a"]},
                         SymbolicLoss(lambda obs, h: sum((obs["a"] - 1) ** 2) * float(weights[0]),
                                      "closes over a tensor"))
    assert model.key is None
    assert float(model.loss(torch.tensor([[1.0, 3.0]], dtype=torch.float64), {})[0]) == 4.0


def test_unreadable_or_tampered_files_are_ignored_and_rewritten(cache_dir, tmp_path):
    states = torch.tensor([[0.2, -0.1, 0.4, 0.3]], dtype=torch.float64)
    reference = outputs(lt_model(), states)
    files = sorted(cache_dir.glob("*.json"), key=os.path.getsize)
    model_file = files[-1]
    model_file.write_text("{not json")
    assert all(torch.equal(a, b) for a, b in zip(reference, outputs(lt_model(), states)))
    art = json.loads(model_file.read_text())  # rewritten, complete
    assert art["key"] == model_file.stem
    # generated code that is anything but arithmetic is refused, never run
    marker = tmp_path / "ran"
    art["functions"]["loss"]["source"] = (
        f"def _lambdifygenerated(*a):\n    open({str(marker)!r}, 'w')\n    return [0.0]\n")
    model_file.write_text(json.dumps(art))
    assert all(torch.equal(a, b) for a, b in zip(reference, outputs(lt_model(), states)))
    assert not marker.exists()
    art["functions"]["loss"]["names"]["exp"] = ["os", "system"]
    with pytest.raises(cache.Uncacheable):
        cache.rebuild(art["functions"]["loss"])


def test_an_unwritable_location_only_disables_the_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ICLDYN_CACHE", str(blocker / "cache"))
    model = lt_model()
    assert model.key is not None and torch.isfinite(
        model.loss(torch.zeros(1, 4, dtype=torch.float64), {"L": 5.0, "sigma2": 0.1})).all()


BUILDER = """
import json, sys
from reduced_models import linreg as theory
import torch
model = theory.symbolic_model(4, 3, "factored")
print(json.dumps(model.rhs({"L": 7.0, "sigma2": 0.2})(
    0.1 * torch.arange(12, dtype=torch.float64)[None]).tolist()))
"""


def test_concurrent_builders_all_succeed_and_leave_only_complete_files(cache_dir):
    env = {**os.environ, "ICLDYN_CACHE": str(cache_dir)}
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER], stdout=subprocess.PIPE,
                              text=True, env=env) for _ in range(4)]
    results = [json.loads(p.communicate()[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all(r == results[0] for r in results)
    names = sorted(p.name for p in cache_dir.iterdir())
    assert len(names) == 2 and all(n.endswith(".json") for n in names)
    for path in cache_dir.iterdir():
        assert json.loads(path.read_text())["key"] == path.stem


def test_a_model_read_back_compiles_its_float_gradient_later_and_caches_it(cache_dir):
    states = torch.tensor([[0.2, -0.1, 0.4, 0.3]], dtype=torch.float64)
    hyper = {"L": 20.0, "sigma2": 0.3}
    lt_model().loss(states, hyper)  # built and cached without the float gradient
    loaded = lt_model()
    assert "scalar_grad" not in loaded._functions
    single = loaded.rhs(hyper)(states)  # the float path: compiled now, added to the file
    fresh = lt_model()
    assert fresh._functions["scalar_grad"].__code__.co_filename == cache.SOURCE_NAME
    assert torch.equal(fresh.rhs(hyper)(states), single)
