"""Experiment `sparse-risk`: Monte-Carlo risks of the sparse-regression estimators.

Every estimator of sims/sparse/estimators.py (OLS, ridge tuned and Bayes,
k-step GD, preprocess-then-optimize, Lasso, averaging) is tuned on
`tune_trials` prompts and evaluated on `trials` fresh prompts at each n in
`n_test`; the risk is E (y_q - x_q.beta_hat)^2 = sigma2 + |beta_hat - beta|^2
(noise included). Orderings are judged by paired differences on the same
evaluation trials (z = mean difference / its standard error). Where the
expected OLS risk is infinite (|n - d| <= 1) its mean is inf and its median is
reported instead.
"""

from __future__ import annotations

import math

import h5py
import numpy as np

from dynamics.errors import UsageError
from dynamics.memory import dominant_key
from dynamics.plots import save_run_figure
from dynamics.store import open_store
from dynamics.tables import Headline

from ..experiment import F64, RUNTIME, Experiment, RunResult, check_device, generator
from .config import RISK as SCHEMA
from .estimators import (
    ESTIMATORS,
    POINTS_1D,
    POINTS_2D,
    paired_difference,
    risk_samples,
    summarize,
)

# GD steps (d^2 multiply-adds per prompt) of a run: the grid search tunes gd on
# 2 POINTS_1D and pto on 2 POINTS_2D^2 step sizes, then both are evaluated once.
MAX_GD_WORK = 1e13


def gd_work(config: dict) -> float:
    """Multiply-adds of the k-step GD runs of gd and pto over all n in n_test."""
    runs = 2 * POINTS_1D + 2 * POINTS_2D**2
    per_n = config["k_steps"] * config["d"] ** 2 * (runs * config["tune_trials"]
                                                    + 2 * config["trials"])
    return float(len(config["n_test"]) * per_n)


# Orderings the theory predicts (THEORY.md C): (better, worse).
ORDERINGS = (("pto", "gd"), ("pto", "ridge"), ("lasso", "pto"), ("lasso", "ridge_bayes"))


class SparseRiskExperiment(Experiment):
    name = "sparse-risk"
    headlines = (Headline("pto below gd at every n", "orderings.pto_below_gd.holds"),
                 Headline("pto below ridge at every n", "orderings.pto_below_ridge.holds"),
                 Headline("lasso below pto at every n", "orderings.lasso_below_pto.holds"),
                 Headline("lasso below Bayes ridge", "orderings.lasso_below_ridge_bayes.holds"))
    schema = SCHEMA

    def validate(self, config: dict) -> None:
        check_device(config["device"])
        if config["s"] > config["d"]:
            raise UsageError(f"key 's': sparsity {config['s']} exceeds d = {config['d']}")
        if gd_work(config) > MAX_GD_WORK:
            key = dominant_key(lambda c: {"work": gd_work(c)}, config, self.schema.defaults())
            raise UsageError(f"key '{key}': the GD runs of tuning and evaluation would take "
                             f"{gd_work(config):.2g} multiply-adds, more than {MAX_GD_WORK:.0e} "
                             "(hours on a CPU)")

    def memory(self, config: dict) -> dict[str, float]:
        """Peak bytes at the largest n (float64, P = max(trials, tune_trials) prompts,
        n1 = max(n_test) + 1): the prompts with OLS's pseudo-inverse and its SVD,
        6 P n1 d; the moments and the estimators' solves and iterates, 8 P d^2."""
        d, P = config["d"], max(config["trials"], config["tune_trials"])
        n1 = max(config["n_test"]) + 1
        return {"runtime": RUNTIME, "prompts": 6 * F64 * P * n1 * d,
                "moments": 8 * F64 * P * d * d}

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        d, sigma2 = config["d"], config["sigma2"]
        samples = risk_samples(d, config["s"], sigma2, config["n_test"], config["k_steps"],
                               config["trials"], config["tune_trials"],
                               generator(config["seed"], config["device"]))
        table = summarize(samples, d, sigma2)
        table["orderings"] = {
            f"{a}_below_{b}": ordering(samples, a, b) for a, b in ORDERINGS
        }
        extra = {"risk": {"n_test": np.asarray(table["n_test"], dtype=np.int64),
                          "ols_median": np.asarray(table["ols_median"])}}
        for name in ESTIMATORS:
            extra["risk"][f"mean_{name}"] = np.asarray(table["risk"][name])
            extra["risk"][f"stderr_{name}"] = np.asarray(table["stderr"][name])
        return RunResult({}, table, extra, {"risk": ("n_test",)})

    def plot(self, path: str, run_id: str, out: str | None = None) -> str:
        """Risk against n (log-log), one line per estimator with +-2 stderr bars."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with open_store(path) as fh:
            group = fh["runs"][run_id]["risk"]
            data = {k: v[()] for k, v in group.items() if isinstance(v, h5py.Dataset)}
        n = data["n_test"]
        fig, ax = plt.subplots(figsize=(8.4, 4.2))
        for name in ESTIMATORS:
            mean, err = data[f"mean_{name}"], data[f"stderr_{name}"]
            finite = np.isfinite(mean)
            ax.errorbar(n[finite], mean[finite], yerr=2 * err[finite], marker="o", ms=3,
                        capsize=2, label=name)
        ax.plot(n, data["ols_median"], "k:", lw=1, label="ols median")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (in-context examples)")
        ax.set_ylabel("risk sigma2 + |beta_hat - beta|^2")
        ax.set_title(f"{run_id}: tuned estimators, +-2 stderr", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        return save_run_figure(fig, path, run_id, out)


def ordering(samples, better: str, worse: str) -> dict:
    """Paired difference risk[better] - risk[worse] per n: means, stderrs, z = mean / stderr
    (negative z: `better` has the lower risk), and whether it holds at every n by 3 stderrs."""
    diffs = [paired_difference(s.risks[better], s.risks[worse]) for s in samples]
    z = [mean / err if err > 0 else math.copysign(math.inf, mean) for mean, err in diffs]
    return {"diff": [m for m, _ in diffs], "stderr": [e for _, e in diffs], "z": z,
            "holds": bool(all(value < -3 for value in z))}
