"""Experiment `sparse-risk`: Monte-Carlo risks of the sparse-regression estimators.

Every estimator of sims/sparse/estimators.py (OLS, ridge tuned and Bayes,
k-step GD, preprocess-then-optimize: `pto` with a normalised step and the
fixed-step variants a linear-attention stack computes, Lasso, averaging) is tuned on
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
from dynamics.store import open_store, read_run
from dynamics.tables import Headline

from ..experiment import F64, RUNTIME, Experiment, RunResult, check_device, generator, seeds
from .config import RATES as RATES_SCHEMA
from .config import RISK as SCHEMA
from .estimators import (
    ESTIMATORS,
    POINTS_1D,
    POINTS_2D,
    paired_difference,
    risk_samples,
    summarize,
)

# GD steps (d^2 multiply-adds per prompt) of a run: the grid search tunes gd and
# pto_fixed on 2 POINTS_1D step sizes each and pto, pto_split, pto_reduced on 2 POINTS_2D^2
# points each, then all five are evaluated once.
MAX_GD_WORK = 1e13


def gd_work(config: dict) -> float:
    """Multiply-adds of the k-step GD runs of gd and the pto variants over all n in n_test."""
    runs = 4 * POINTS_1D + 6 * POINTS_2D**2
    per_n = config["k_steps"] * config["d"] ** 2 * (runs * config["tune_trials"]
                                                    + 5 * config["trials"])
    return float(len(config["n_test"]) * per_n)


# Orderings the theory predicts (docs/theory/sparse.md, section 3), (better, worse), and each
# implementable PTO variant against GD and ridge.
ORDERINGS = (("pto", "gd"), ("pto", "ridge"), ("lasso", "pto"), ("lasso", "ridge_bayes"),
             ("pto_fixed", "gd"), ("pto_fixed", "ridge"), ("pto_split", "gd"),
             ("pto_split", "ridge"), ("pto_reduced", "gd"), ("pto_reduced", "ridge"))


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
        if config["heads"] > config["d"]:
            raise UsageError(f"key 'heads': {config['heads']} layer-1 heads exceed d = "
                             f"{config['d']} coordinates")
        if gd_work(config) > MAX_GD_WORK:
            key = dominant_key(lambda c: {"work": gd_work(c)}, config, self.schema.defaults())
            raise UsageError(f"key '{key}': the GD runs of tuning and evaluation would take "
                             f"{gd_work(config):.2g} multiply-adds, more than {MAX_GD_WORK:.0e} "
                             "(hours on a CPU)")

    def memory(self, config: dict) -> dict[str, float]:
        """Peak bytes at the largest n (float64, P = max(trials, tune_trials) prompts,
        n1 = max(n_test) + 1): the prompts with OLS's pseudo-inverse and its SVD,
        6 P n1 d; the moments and the estimators' solves and iterates, 8 P d^2; the
        iterates of a whole two-parameter PTO grid, 4 POINTS_2D^2 tune_trials d."""
        d, P = config["d"], max(config["trials"], config["tune_trials"])
        n1 = max(config["n_test"]) + 1
        return {"runtime": RUNTIME, "prompts": 6 * F64 * P * n1 * d,
                "moments": 8 * F64 * P * d * d,
                "pto grid": 4 * F64 * POINTS_2D**2 * config["tune_trials"] * d}

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        d, sigma2 = config["d"], config["sigma2"]
        samples = risk_samples(d, config["s"], sigma2, config["n_test"], config["k_steps"],
                               config["trials"], config["tune_trials"],
                               generator(config["seed"], config["device"]), config["heads"])
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


# ---------------------------------------------------------------------------
# Rates: risks over n at several d



# Estimators whose rates are fitted and drawn.
RATE_ESTIMATORS = ("ridge", "gd", "pto", "pto_fixed", "pto_split", "pto_reduced", "lasso")


def fitted_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log x (NaN with fewer than 2 finite points)."""
    keep = np.isfinite(y) & (y > 0)
    if keep.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


class SparseRatesExperiment(Experiment):
    name = "sparse-rates"
    schema = RATES_SCHEMA
    headlines = tuple(
        Headline(f"{name} slope in n", f"slope_n.{name}", "fitted log-log slope of the excess "
                 "risk over n >= 2d, one per d in d_list")
        for name in ("ridge", "gd", "pto", "lasso"))

    def _risk_config(self, config: dict, d: int) -> dict:
        keys = ("s", "sigma2", "n_test", "k_steps", "heads", "trials", "tune_trials", "device",
                "seed")
        return {"d": d, **{k: config[k] for k in keys}}

    def validate(self, config: dict) -> None:
        for d in config["d_list"]:
            try:
                RISK.validate(self._risk_config(config, d))
            except UsageError as exc:
                raise UsageError(f"key 'd_list' (d = {d}): {exc}") from None
        if sum(gd_work(self._risk_config(config, d)) for d in config["d_list"]) > MAX_GD_WORK:
            raise UsageError("key 'd_list': the GD runs would take hours on a CPU")

    def memory(self, config: dict) -> dict[str, float]:
        """The largest d's sparse-risk run (SparseRiskExperiment.memory)."""
        return RISK.memory(self._risk_config(config, max(config["d_list"])))

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        """Excess risk (risk - sigma2) per estimator, d and n; slopes in n over n >= 2d
        (`slope_n`) and over all n (`slope_n_all`), and in d at each n (`slope_d`)."""
        sigma2, n = config["sigma2"], np.asarray(config["n_test"], dtype=np.float64)
        streams = seeds(config["seed"], len(config["d_list"]))
        excess = {name: [] for name in ESTIMATORS}
        stderr = {name: [] for name in ESTIMATORS}
        for d, stream in zip(config["d_list"], streams):
            samples = risk_samples(d, config["s"], sigma2, config["n_test"], config["k_steps"],
                                   config["trials"], config["tune_trials"],
                                   generator(stream, config["device"]), config["heads"])
            table = summarize(samples, d, sigma2)
            for name in ESTIMATORS:
                excess[name].append([r - sigma2 for r in table["risk"][name]])
                stderr[name].append(table["stderr"][name])
        d_arr = np.asarray(config["d_list"], dtype=np.float64)
        summary = {"d_list": config["d_list"], "n_test": config["n_test"],
                   "excess": excess, "stderr": stderr,
                   "slope_n": {}, "slope_n_all": {}, "slope_d": {}}
        for name in RATE_ESTIMATORS:
            values = np.asarray(excess[name])
            summary["slope_n"][name] = [fitted_slope(n[n >= 2 * d], row[n >= 2 * d])
                                        for d, row in zip(d_arr, values)]
            summary["slope_n_all"][name] = [fitted_slope(n, row) for row in values]
            summary["slope_d"][name] = [fitted_slope(d_arr, col) for col in values.T]
        extra = {"rates": {"d_list": d_arr.astype(np.int64), "n_test": n.astype(np.int64),
                           **{f"excess_{k}": np.asarray(v) for k, v in excess.items()},
                           **{f"stderr_{k}": np.asarray(v) for k, v in stderr.items()}}}
        summary["settings"] = {k: config[k] for k in ("s", "sigma2", "k_steps", "heads",
                                                       "trials", "tune_trials")}
        return RunResult({}, summary, extra, {"rates": ("d_list", "n_test")})

    def plot(self, path: str, run_id: str, out: str | None = None) -> str:
        """Per d: excess risk against n (log-log) with +-2 stderr, and the reference forms
        sigma2 d / n and sigma2 s log(d) / n."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter

        run_id, attrs, _ = read_run(path, run_id)
        with open_store(path) as fh:
            group = fh["runs"][run_id]["rates"]
            data = {k: v[()] for k, v in group.items() if isinstance(v, h5py.Dataset)}
        settings = attrs["summary"]["settings"]
        s, sigma2 = settings["s"], settings["sigma2"]
        n = data["n_test"].astype(np.float64)
        d_list = data["d_list"]
        fig, axes = plt.subplots(1, len(d_list), figsize=(4.6 * len(d_list), 4), sharey=True,
                                 squeeze=False)
        for ax, i in zip(axes[0], range(len(d_list))):
            d = float(d_list[i])
            for j, name in enumerate(RATE_ESTIMATORS):
                mean, err = data[f"excess_{name}"][i], data[f"stderr_{name}"][i]
                finite = np.isfinite(mean) & (mean > 0)
                ax.errorbar(n[finite], mean[finite], yerr=2 * err[finite], marker="o", ms=3,
                            capsize=2, color=f"C{j}", label=name)
            ax.plot(n, sigma2 * d / n, "k--", lw=1, label="sigma2 d / n")
            ax.plot(n, sigma2 * s * math.log(d) / n, "k:", lw=1.5, label="sigma2 s log(d) / n")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(n, [f"{v:g}" for v in n])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("n (in-context examples)")
            ax.set_ylabel("excess risk E|beta_hat - beta|^2")
            ax.set_title(f"d = {int(d)}, s = {s}, sigma2 = {sigma2:g}", fontsize=9)
        # the unstable fixed-step variants reach 1e9: the axis shows the stable estimators
        stable = np.concatenate([data[f"excess_{name}"].ravel() for name in ("ridge", "lasso")])
        stable = stable[np.isfinite(stable) & (stable > 0)]
        if stable.size:
            axes[0][0].set_ylim(stable.min() / 3, stable.max() * 30)
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle(f"{run_id}: tuned estimators, +-2 stderr", fontsize=9)
        return save_run_figure(fig, path, run_id, out)


RISK = SparseRiskExperiment()
