"""The system registry: one declaration per system, found by its package; every
experiment can be swept; adding a system touches no other file."""

import json
import sys
import textwrap

import h5py
import pytest

from sims import registry
from sims.sweeps import GenericHooks, TrajectoryHooks, sweep
from sims.system import ExperimentInfo, System


def table() -> dict:
    """system -> {experiment: {"hooks": class name, "checks": function name or None}}."""
    out = {}
    for name, system in registry.systems().items():
        out[name] = {
            info.name: {"hooks": type(registry.hooks(info.name)).__name__,
                        "checks": system.checks.get(info.name)}
            for info in system.experiments
        }
    return out


def test_registry_lists_each_systems_experiments_hooks_and_checks():
    listing = table()
    print(json.dumps(listing, indent=2))  # pytest -s shows the registry
    assert listing == {
        "induction": {"induction": {"hooks": "InductionHooks",
                                    "checks": "sims.induction.checks:induction_checks"}},
        "linreg": {
            "linreg": {"hooks": "LinregHooks", "checks": "sims.linreg.checks:linreg_checks"},
            "linreg-risk": {"hooks": "GenericHooks", "checks": None},
            "linreg-length": {"hooks": "GenericHooks", "checks": None},
            "linreg-multitask": {"hooks": "MultitaskHooks", "checks": None},
        },
        "sparse": {"sparse": {"hooks": "GenericHooks",
                              "checks": "sims.sparse.checks:sparse_checks"},
                   "sparse-risk": {"hooks": "SparseRiskHooks", "checks": None},
                   "sparse-flow": {"hooks": "SparseFlowHooks", "checks": None},
                   "sparse-rates": {"hooks": "GenericHooks", "checks": None}},
    }
    # every experiment resolves to an implementation with the declared name and schema
    for name, info in registry.experiments().items():
        exp = registry.get(name)
        assert exp.name == name and exp.schema is info.schema
        assert isinstance(registry.hooks(name), TrajectoryHooks)
    assert callable(registry.checks("linreg"))
    ids = [case[0] for case in registry.conformance_cases()]
    assert {i.split("-")[0] for i in ids} == {"linreg", "induction", "sparse"}


def test_unknown_experiment_and_missing_checks_name_the_experiment():
    with pytest.raises(Exception, match="unknown experiment 'nosuch'"):
        registry.info("nosuch")
    with pytest.raises(Exception, match="'sparse-rates' has no theory checks"):
        registry.checks("sparse-rates")


def test_declaration_rejects_hooks_for_an_experiment_it_does_not_have():
    with pytest.raises(ValueError, match="unknown experiment"):
        System("x", (), hooks={"y": "m:C"})


def test_a_new_system_is_one_package_and_touches_no_other_file(tmp_path, monkeypatch):
    import sims

    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent('''
        from dynamics.config import Key, Schema
        from sims.system import ExperimentInfo, System

        SYSTEM = System("toy", (ExperimentInfo(
            "toy", "a toy", Schema((Key("n", "int", 3, "size", low=1),)),
            "sims.linreg.risk_experiment:LinregRiskExperiment"),))
    '''))
    monkeypatch.setattr(sims, "__path__", [*sims.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "sims.toy", raising=False)
    for fn in (registry.systems, registry.experiments, registry.get):
        fn.cache_clear()
    try:
        assert "toy" in registry.systems()
        info = registry.info("toy")
        assert isinstance(info, ExperimentInfo) and info.schema.defaults() == {"n": 3}
        assert isinstance(registry.hooks("toy"), GenericHooks)
    finally:
        for fn in (registry.systems, registry.experiments, registry.get):
            fn.cache_clear()


def test_schema_constants_match_the_modules_that_use_them():
    from reduced_models import induction
    from sims.induction import config as induction_config

    assert induction_config.LOSSES == induction.LOSSES


FLOW_SMALL = {"d": 6, "layers": 2, "heads": 2, "t_max": 0.5, "lr": 5e-4, "records": 8,
              "mc_samples": 200, "flow_batch": 64, "n_flow": 8}


def test_sparse_flow_sweeps_with_generic_hooks_and_each_point_equals_its_run(tmp_path):
    exp = registry.get("sparse-flow")
    config = exp.schema.resolve(FLOW_SMALL)
    out = tmp_path / "s.h5"
    report = sweep(exp, config, ["heads=1,2"], str(out), plot=False)
    assert report["points_computed"] == 2
    with h5py.File(out, "r") as fh:
        group = fh["sweeps"][report["sweep_id"]]
        loss = group["population_loss_final"][()]
        gap = group["sgd_vs_population_gap"][()]
    for i, heads in enumerate((1, 2)):
        result = exp.run(exp.schema.resolve({**FLOW_SMALL, "heads": heads}))
        assert loss[i] == result.trajectories["population"].loss[-1]
        assert gap[i] == result.summary["comparison"]["sgd_vs_population"]["pointwise"]["max"]


def test_sparse_risk_sweeps_the_risk_at_the_largest_n_test(tmp_path):
    exp = registry.get("sparse-risk")
    small = {"d": 6, "s": 2, "n_test": [4, 12], "trials": 200, "tune_trials": 50}
    config = exp.schema.resolve(small)
    out = tmp_path / "r.h5"
    report = sweep(exp, config, ["sigma2=0.1,0.5"], str(out), plot=False)
    with h5py.File(out, "r") as fh:
        risk = fh["sweeps"][report["sweep_id"]]["risk_pto"][()]
    assert risk.shape == (2,)
    for i, sigma2 in enumerate((0.1, 0.5)):
        result = exp.run(exp.schema.resolve({**small, "sigma2": sigma2}))
        assert risk[i] == result.summary["risk"]["pto"][-1]
