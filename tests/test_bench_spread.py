"""The benchmarks' statistics (benchmarks/spread.py), result files and report: a ratio is the
median of per-repetition ratios, a target is met on the conservative quartile. No timing
is asserted; the one measured child process checks what its CPU time counts."""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """The modules of benchmarks/ (scripts that import each other by bare name)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield {name: importlib.import_module(name)
               for name in ("spread", "common", "report", "bench_runs")}
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_quartiles_match_numpy_percentile(bench):
    rng = np.random.default_rng(0)
    for n in (2, 3, 4, 5, 7, 8, 11, 20):
        values = rng.lognormal(size=n).tolist()
        expected = np.percentile(values, [25, 50, 75])  # linear interpolation, independent
        np.testing.assert_allclose(bench["spread"].quartiles(values), expected, rtol=1e-12)


def test_quartiles_by_hand(bench):
    quartiles = bench["spread"].quartiles
    # seven values: q1 halfway between the 2nd and 3rd, q3 between the 5th and 6th
    assert quartiles([7.0, 1.0, 5.0, 3.0, 2.0, 6.0, 4.0]) == (2.5, 4.0, 5.5)
    assert quartiles([3.0]) == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError):
        quartiles([])


def test_median_meets_target_but_lower_quartile_does_not(bench):
    spread = bench["spread"]
    ratios = [8.0, 8.5, 9.0, 10.2, 10.5, 11.0, 12.0]
    q1, median, _ = spread.quartiles(ratios)
    assert median >= 10 > q1
    assert not spread.target_met(ratios, 10.0)


def test_lower_quartile_meets_target_with_one_slow_repetition(bench):
    ratios = [9.5, 10.4, 10.6, 11.0, 11.2, 11.5, 12.0]  # q1 = 10.5; the minimum misses
    assert bench["spread"].target_met(ratios, 10.0)
    assert not bench["spread"].target_met(ratios, 10.6)


def test_lower_is_better_is_judged_on_the_upper_quartile(bench):
    spread = bench["spread"]
    values = [1.2, 1.3, 1.4, 1.45, 1.6, 1.7, 1.9]  # median 1.45, q3 1.65
    assert not spread.target_met(values, 1.5, higher_is_better=False)
    assert spread.target_met(values, 1.65, higher_is_better=False)
    assert not spread.target_met(values, 1.64, higher_is_better=False)


def test_ratio_is_baseline_over_engine_per_repetition(bench):
    spread = bench["spread"]
    assert spread.ratios([1.0, 2.0], [4.0, 3.0]) == [4.0, 1.5]
    for engine, baseline in (([1.0], [1.0, 2.0]), ([], []), ([0.0], [1.0]), ([1.0], [-1.0])):
        with pytest.raises(ValueError):
            spread.ratios(engine, baseline)


def test_spread_is_the_median_of_ratios_not_the_ratio_of_medians(bench):
    fields = bench["spread"].spread([1.0, 2.0, 3.0], [3.0, 2.0, 6.0])
    assert fields["ratios"] == [3.0, 1.0, 2.0]
    assert fields["ratio"] == 2.0  # the ratio of the medians would be 2 / 2 = 1
    assert (fields["ratio_q1"], fields["ratio_q3"]) == (1.5, 2.5)
    assert (fields["engine_s"], fields["baseline_s"]) == (2.0, 3.0)
    assert fields["engine_s_range"] == [1.0, 3.0] and fields["baseline_s_range"] == [2.0, 6.0]
    assert fields["repeats"] == 3


def test_interleaved_alternates_which_goes_first(bench):
    calls = []
    times = bench["common"].interleaved({"a": lambda: calls.append("a"),
                                         "b": lambda: calls.append("b")}, repeats=4)
    assert "".join(calls) == "ab" + "ab" + "ba" + "ab" + "ba"  # warm-up, then 4 rounds
    assert [len(t) for t in times.values()] == [4, 4]


def test_result_file_is_met_by_lower_quartile(bench, tmp_path, monkeypatch):
    common, spread = bench["common"], bench["spread"]
    monkeypatch.setattr(common, "RESULTS", str(tmp_path))
    engine = [1.0] * 7
    baseline = [8.0, 8.5, 9.0, 10.2, 10.5, 11.0, 12.0]
    case = {"case": "c", **spread.spread(engine, baseline), "extra": 1}
    result = common.write("x", "a baseline", [case], target=10.0, target_case="c")
    on_disk = json.loads((tmp_path / "x.json").read_text())
    assert on_disk["ratio"] == pytest.approx(10.2) and on_disk["met"] is False
    assert on_disk["ratio_q1"] == pytest.approx(8.75) and on_disk["met_by"] == "q1 >= target"
    assert on_disk["cases"][0]["ratios"] == baseline and on_disk["schema"] == 2
    assert result == on_disk
    met = common.write("x", "a baseline", [case], target=8.75, target_case="c")
    assert met["met"] is True and met["cases"][0]["met"] is True
    # a second case with its own lower-is-better target: median 1.45 within 1.5, q3 1.65 not
    other = {"case": "d", **spread.spread([1.0] * 7, [1.2, 1.3, 1.4, 1.45, 1.6, 1.7, 1.9]),
             "target": 1.5, "higher_is_better": False}
    both = common.write("x", "a baseline", [case, other], target=10.0, target_case="c")
    assert [c["met"] for c in both["cases"]] == [False, False]
    assert both["cases"][0]["target"] == 10.0
    text = "\n".join(bench["report"].section(both))
    assert "| 10.20x | [8.75, 10.75] | 7 | >= 10x | no |" in text
    assert "| 1.45x | [1.35, 1.65] | 7 | <= 1.5x | no |" in text
    with pytest.raises(ValueError, match="no per-repetition ratios"):
        common.write("x", "a baseline", [{"case": "c", "engine_s": 1.0, "baseline_s": 2.0,
                                          "ratio": 2.0}], target=1.0, target_case="c")


def test_report_shows_spread_and_verdict(bench):
    spread = bench["spread"]
    case = {"case": "c", **spread.spread([1.0] * 7, [8.0, 8.5, 9.0, 10.2, 10.5, 11.0, 12.0])}
    result = {"name": "x", "baseline": "b", "ratio": case["ratio"], "ratio_q1": case["ratio_q1"],
              "ratio_q3": case["ratio_q3"], "repeats": 7, "target": 10.0, "target_case": "c",
              "higher_is_better": True, "met_by": "q1 >= target", "met": False, "cases": [case],
              "machine": "m", "peak_rss_mb": 1.0, "notes": ""}
    text = "\n".join(bench["report"].section(result))
    assert "| c | 1 [1, 1] | 10.2 [8, 12] | 10.20x | [8.75, 10.75] | 7 | - | - |" in text
    assert "judged on q1 >= target: **not met**" in text
    assert bench["report"]._met(result) == "no (q1)"
    legacy = {k: v for k, v in result.items() if k not in ("ratio_q1", "ratio_q3", "met_by")}
    legacy["cases"] = [{"case": "c", "engine_s": 1.0, "baseline_s": 10.2, "ratio": 10.2}]
    legacy["met"] = True
    assert "| c | 1 | 10.2 | 10.20x | - | - | - | - |" in "\n".join(bench["report"].section(legacy))
    assert bench["report"]._met(legacy) == "yes (median)"


def test_measure_counts_the_cpu_of_the_child_and_its_waited_children(bench, tmp_path):
    spin = "import time; t = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    child = "\n".join([
        "import resource, subprocess, sys",
        f"subprocess.run([sys.executable, '-c', {spin!r}], check=True)",
        spin,
        "own = resource.getrusage(resource.RUSAGE_SELF)",
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN)",
        "print(own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime)",
        "sys.exit(3)"])
    run = bench["bench_runs"].measure([sys.executable, "-c", child], {}, str(tmp_path),
                                      str(tmp_path / "log"))
    own, kids = map(float, run["stdout"].split())
    assert run["exit_status"] == 3
    assert own >= 0.3 and kids >= 0.3
    assert run["cpu_s"] == pytest.approx(run["user_s"] + run["sys_s"])
    assert own + kids <= run["cpu_s"] <= own + kids + 0.5  # only the exit after the print


def test_default_runs_resume_and_report(bench, tmp_path, monkeypatch):
    runs, report = bench["bench_runs"], bench["report"]
    monkeypatch.setattr(runs, "PATH", str(tmp_path / "default_runs.json"))
    monkeypatch.setattr(runs, "RESULTS", str(tmp_path))
    monkeypatch.setattr(runs, "experiments", lambda: ["fast", "induction", "slow"])
    measured = []

    def fake_run(name):  # what default_run records, without running anything
        measured.append(name)
        return {"wall_s": 40.0, "cpu_s": 31.0 if name == "induction" else 2.0, "user_s": 1.5,
                "sys_s": 0.5, "max_rss_mb": 100.0, "exit_status": 3 if name == "fast" else 0,
                "in_process_s": 1.0, "status": "complete", "load_before": [1.0, 1.0, 1.0],
                "load_after": [1.0, 1.0, 1.0], "measured_at": "2026-01-01 00:00",
                "cache": "empty", "command": f"icldyn run {name}"}

    monkeypatch.setattr(runs, "default_run", fake_run)
    runs.main(["--skip", "slow", "--reason", "too long here"])
    runs.main(["fast", "induction"])
    runs.main([])  # induction recorded; fast failed (exit 3), so run again; slow now runs
    runs.main(["induction", "--force"])
    assert measured == ["fast", "induction", "fast", "slow", "induction"]
    result = json.loads((tmp_path / "default_runs.json").read_text())
    assert result["cpu_target"] == {"experiment": "induction", "cpu_s_at_most": 30.0,
                                    "met": False}  # 31 s of CPU > 30 s
    assert result["not_measured"] == {} and set(result["runs"]) == {"fast", "induction", "slow"}
    text = "\n".join(report.runs_section(result))
    assert "| induction | 40.0 | 31.0 | 1.5 | 0.5 | 0.78 | 100 | 0 | 1 |" in text
    assert "target <= 30 s of CPU: **not met**" in text
    del result["runs"]["slow"]
    result["not_measured"]["slow"] = "too long here"
    assert "- slow: too long here" in "\n".join(report.runs_section(result))
