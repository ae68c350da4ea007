"""Sweeps of the induction system: the winning candidate set per grid point."""

import numpy as np
import pytest

from dynamics.sweep_store import read_sweep
from reduced_models.markov import best_set, set_label
from sims import sweeps
from sims.experiment import seeds
from sims.induction.experiment import chi2_information
from sims.induction.sweep import InductionHooks
from sims.registry import get

EXP = get("induction")
QUICK = {"samples": 300, "t_max": 20.0, "mi_chains": 200, "records": 20}


def test_labels_cover_every_candidate_set_of_the_grid():
    config = EXP.schema.resolve(QUICK)
    spec = sweeps.plan(EXP, config, ["window=3,4", "degree=1,2"], ode=True, sgd=False)
    labels = InductionHooks().labels(spec)
    assert labels == ("1", "2", "3", "4", "1,2", "1,3", "1,4", "2,3", "2,4", "3,4")
    metrics = {m.name: m for m in InductionHooks().sweep_metrics(spec)}
    assert set(metrics) == {"mi_S_star", "mi_standard_S_star", "mi_margin", "ode_S_star",
                            "ode_p_star_final", "ode_a_final", "ode_loss_final"}
    assert metrics["ode_S_star"].phases == labels


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sweep") / "ind.h5")
    config = EXP.schema.resolve(QUICK)
    report = sweeps.sweep(EXP, config, ["alpha=0.1,1", "degree=1,2"], out, sgd=False, plot=False)
    return config, report, read_sweep(out, report["sweep_id"])


def test_winning_sets_match_the_criterion_point_by_point(swept):
    config, report, data = swept
    assert report["points_computed"] == 4
    labels = str(data.metric_attrs["mi_S_star"]["flag_meanings"]).split()
    assert labels == ["1", "2", "3", "1,2", "1,3", "2,3"]
    assert data.attrs["phase_metric"] == "mi_S_star"
    seed_mi = seeds(config["seed"], 3)[2]
    for i, alpha in enumerate((0.1, 1.0)):
        for j, degree in enumerate((1, 2)):
            mi, standard = chi2_information({**config, "alpha": alpha, "degree": degree}, seed_mi)
            assert labels[int(data.metrics["mi_S_star"][i, j])] == set_label(best_set(mi))
            assert labels[int(data.metrics["mi_standard_S_star"][i, j])] == \
                set_label(best_set(standard))
    # with pairs allowed, the parents {1,2} win, by the criterion and at the end of the flow
    assert [labels[int(k)] for k in data.metrics["mi_S_star"][:, 1]] == ["1,2", "1,2"]
    assert [labels[int(k)] for k in data.metrics["ode_S_star"][:, 1]] == ["1,2", "1,2"]
    assert (data.metrics["ode_p_star_final"] > 0.9).all()
    assert (data.metrics["mi_margin"] > 0).all()
    assert np.isfinite(data.metrics["ode_loss_final"]).all()
