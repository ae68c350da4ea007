"""`icldyn check induction`: every row passes at a small config, and a wrong formula fails
its row (the rows can fail)."""

import contextlib
import io
import json

import pytest

from reduced_models import induction as theory
from reduced_models import markov
from sims.cli import main
from sims.experiment import seeds
from sims.induction import checks
from sims.induction.experiment import FlowSetup, chi2_information
from sims.registry import get

SMALL = {"t_max": 5.0, "samples": 400, "mi_chains": 200, "records": 20}


@pytest.fixture(scope="module")
def small():
    exp = get("induction")
    config = exp.schema.resolve(SMALL)
    mi, _ = chi2_information(config, seeds(0, 5)[2])
    return config, mi, FlowSetup(config, seeds(0, 5)[0]), markov.best_set(mi)


def test_check_induction_passes_and_exits_0():
    args = ["check", "induction", "--json"]
    for key, value in SMALL.items():
        args += ["--set", f"{key}={value}"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(args) == 0
    payload = json.loads(buffer.getvalue())
    names = [row["name"] for row in payload["rows"]]
    assert payload["passed"] and all(row["passed"] for row in payload["rows"])
    for prefix in ("chi2 MI", "S* is the parent set", "limit optimum", "selector rate",
                   "copier error head 1", "copier error head 2"):
        assert any(name.startswith(prefix) for name in names)


def test_standard_chi2_in_place_of_the_modified_fails_the_mi_rows(small, monkeypatch):
    config, mi, _, _ = small
    original = markov.chi2_from_joints  # what the engine's chi2_table computes with
    monkeypatch.setattr(markov, "chi2_from_joints",
                        lambda joints, offsets, modified: original(joints, offsets, False))
    rows = [r for r in checks.mi_rows(config, mi, seeds(0, 5)[2]) if r.name.startswith("chi2")]
    assert rows and not any(row.passed for row in rows)


def test_a_shifted_limit_slope_fails_the_limit_rows(small, monkeypatch):
    config, _, setup, s_star = small
    assert all(row.passed for row in checks.limit_rows(config, setup, s_star))
    original = theory.limit_loss_function

    def wrong(*args, **kwargs):
        limit = original(*args, **kwargs)
        slope = limit.slope
        limit.slope = staticmethod(lambda b: slope(b) + 0.01)
        return limit

    monkeypatch.setattr(theory, "limit_loss_function", wrong)
    rows = checks.limit_rows(config, setup, s_star)
    assert len(rows) == 2 and not any(row.passed for row in rows)


def test_wrong_gains_fail_the_selector_rows(small, monkeypatch):
    config, _, setup, s_star = small
    original = theory.exact_first_order_gains
    monkeypatch.setattr(theory, "exact_first_order_gains",
                        lambda *args: original(*args) * 1.05)
    rows = checks.selector_rows(config, setup, s_star)
    assert rows and not any(row.passed for row in rows)
