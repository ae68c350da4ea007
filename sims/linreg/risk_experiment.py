"""Experiment `linreg-risk`: Monte-Carlo risks of in-context predictors over test lengths.

At each context length in L_test every estimator predicts the same prompts
(common random numbers, sims.linreg.estimators.risk_curves); the risk is the
mean squared error against the noisy query label y_q (the noise floor sigma2
counted once). Estimators:
- multihead: the reduced softmax predictor at the given omega, mu (default the
  values a trained H = 2 network reaches, as the paper reports);
- single_head: one softmax head at its large-L optimum for each L;
- gd, dgd: one step of plain / debiased GD at its optimal step for each L;
- gd_fixed, dgd_fixed (the paper's figure): the same with the one step
  eta = sum_h omega_h mu_h of the multihead point (2 omega mu for a +- pair) at
  every L; single_head_fixed: one softmax head at its large-L optimum for
  L = single_head_L (40, the training length) at every L;
- ridge: lambda = sigma2 d (the Bayes posterior mean);
- network (when `network` names a stored linreg run): the reduced softmax
  predictor at that run's final network projection (omega_h, mu_h) -- the
  projected reduced predictor, not the network's full weights, which runs do
  not store.
The closed forms (exact plain and debiased GD risks, the single-head large-L
formula, the proportional-limit Bayes risk) are stored beside the
measurements for the plot.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from dynamics.errors import UsageError
from dynamics.plots import save_run_figure
from dynamics.store import open_store, read_run
from dynamics.tables import Headline
from reduced_models.linreg_theory import (
    bayes_risk_proportional,
    debiased_gd_risk,
    debiased_gd_risk_at_step,
    plain_gd_risk,
    plain_gd_risk_at_step,
    single_head_risk_approx,
)

from ..experiment import F64, RUNTIME, Experiment, RunResult, generator
from .config import RISK as SCHEMA
from .estimators import risk_curves

CHUNK = 10_000  # prompts drawn at once by risk_curves
MAX_DRAWS = 1e10  # covariate entries per run (the defaults draw 1.6e8 in about 10 s)
THEORY_CURVES = {  # name -> (closed form, the estimator it describes)
    "gd": (plain_gd_risk, "gd"),
    "dgd": (debiased_gd_risk, "dgd"),
    "single_head": (single_head_risk_approx, "single_head"),
    "bayes_proportional": (bayes_risk_proportional, "ridge"),
}
FIXED_STEP_CURVES = {  # name -> exact risk at a given step eta, (d, L, sigma2, eta)
    "gd_fixed": plain_gd_risk_at_step,
    "dgd_fixed": debiased_gd_risk_at_step,
}


def stored_network_point(spec: str, d: int) -> dict:
    """The final network projection of a stored linreg run: {"source", "omega", "mu" (lists of
    length H), "status", "trained_L", "trained_sigma2"}.

    spec: "FILE.h5:RUN_ID" or "FILE.h5" (newest run). UsageError naming the key
    'network' when the file, run or trajectory is missing or does not fit d.
    """
    if not spec.isprintable():
        raise UsageError(f"key 'network': {spec!r} is not a file path")
    path, sep, run_id = spec.rpartition(":")
    if not sep or os.path.exists(spec):
        path, run_id = spec, ""
    try:
        run_id, attrs, trajs = read_run(path, run_id or None)
    except UsageError as exc:
        raise UsageError(f"key 'network': {exc}") from None
    where = f"key 'network': {path}:{run_id}"
    if attrs.get("experiment") != "linreg":
        raise UsageError(f"{where} is a {attrs.get('experiment')!r} run, not a linreg run")
    config = attrs.get("config", {})
    if config.get("covariance", "identity") != "identity":
        raise UsageError(f"{where} was trained on non-isotropic covariates")
    if config.get("d") != d:
        raise UsageError(f"{where} was trained at d = {config.get('d')}, this run has d = {d}")
    sgd = trajs.get("sgd")
    if sgd is None or not len(sgd.t) or not {"omega", "mu"} <= set(sgd.params):
        raise UsageError(f"{where} holds no network trajectory with params omega and mu")
    return {"source": f"{path}:{run_id}", "omega": sgd.params["omega"][-1].tolist(),
            "mu": sgd.params["mu"][-1].tolist(), "status": sgd.status,
            "trained_L": config.get("L"), "trained_sigma2": config.get("sigma2")}


class LinregRiskExperiment(Experiment):
    name = "linreg-risk"
    headlines = (Headline("prompts per L", "samples"),)
    schema = SCHEMA

    def validate(self, config: dict) -> None:
        if len(config["omega"]) != len(config["mu"]):
            raise UsageError(f"key 'mu': {len(config['mu'])} values for "
                             f"{len(config['omega'])} omega values")
        draws = config["samples"] * sum(L + 1 for L in config["L_test"]) * config["d"]
        if draws > MAX_DRAWS:
            raise UsageError(f"key 'samples': {draws:.3g} covariate draws exceed {MAX_DRAWS:.0e}")
        if config["network"] is not None:
            stored_network_point(config["network"], config["d"])

    def memory(self, config: dict) -> dict[str, float]:
        """Peak bytes of one chunk of c = min(CHUNK, samples) prompts at the longest test
        length L1 = max(L_test) + 1 (float64): the prompts and their centred copies,
        3 c L1 d; the estimators on them, c (4 H L1 + 3 d^2 + 4 d) (attention of the H
        heads, ridge's Gram matrix and its solve)."""
        d, H = config["d"], max(len(config["omega"]), 1)
        c, L1 = min(CHUNK, config["samples"]), max(config["L_test"]) + 1
        return {"runtime": RUNTIME,
                "prompts of a chunk": 3 * F64 * c * L1 * d,
                "estimators on a chunk": F64 * c * (4 * H * L1 + 3 * d * d + 4 * d)}

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        d, sigma2, L_test = config["d"], config["sigma2"], config["L_test"]
        points = {"multihead": {"omega": config["omega"], "mu": config["mu"]}}
        eta = float(np.dot(config["omega"], config["mu"]))
        estimators = {"multihead": {"kind": "multihead", **points["multihead"]},
                      "single_head": None, "gd": None, "dgd": None, "ridge": None,
                      "gd_fixed": {"eta": eta}, "dgd_fixed": {"eta": eta},
                      "single_head_fixed": {"L": config["single_head_L"]}}
        if config["network"] is not None:
            points["network"] = stored_network_point(config["network"], d)
            estimators["network"] = {"kind": "multihead", "omega": points["network"]["omega"],
                                     "mu": points["network"]["mu"]}
        curves = risk_curves(L_test, d, sigma2, estimators, config["samples"],
                             generator(config["seed"]), chunk=CHUNK)
        theory = {name: [formula(d, L, sigma2) for L in L_test]
                  for name, (formula, _) in THEORY_CURVES.items()}
        theory.update({name: [formula(d, L, sigma2, eta) for L in L_test]
                       for name, formula in FIXED_STEP_CURVES.items()})
        summary = {**curves, "theory": theory, "points": points, "fixed_step": eta,
                   "samples": config["samples"]}
        L_axis = np.asarray(L_test, dtype=np.int64)
        risk = {"L_test": L_axis}
        for name in estimators:
            risk[name] = np.asarray(curves["risk"][name])
            risk[f"stderr_{name}"] = np.asarray(curves["stderr"][name])
        extra = {"risk": risk,
                 "theory": {"L_test": L_axis, **{k: np.asarray(v) for k, v in theory.items()}}}
        return RunResult({}, summary, extra, {"risk": ("L_test",), "theory": ("L_test",)})

    def plot(self, path: str, run_id: str, out: str | None = None) -> str:
        """Risk against L: Monte-Carlo points with +-2 stderr bars, closed forms as lines."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with open_store(path) as fh:
            run = fh["runs"][run_id]
            risk = {k: v[()] for k, v in run["risk"].items() if isinstance(v, h5py.Dataset)}
            theory = {k: v[()] for k, v in run["theory"].items() if isinstance(v, h5py.Dataset)}
        L = risk.pop("L_test")
        theory.pop("L_test")
        names = [k for k in risk if not k.startswith("stderr_")]
        colors = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
        fig, ax = plt.subplots(figsize=(9.0, 4.4))
        for name in names:
            ax.errorbar(L, risk[name], yerr=2 * risk[f"stderr_{name}"], marker="o", ms=3, lw=0,
                        elinewidth=1, capsize=2, color=colors[name], label=f"{name} (Monte Carlo)")
        styles = {"gd": "-", "dgd": "-", "single_head": ":", "bayes_proportional": "--",
                  "gd_fixed": "-", "dgd_fixed": "-"}
        for name, values in theory.items():
            described = THEORY_CURVES[name][1] if name in THEORY_CURVES else name
            ax.plot(L, values, styles[name], lw=1, color=colors[described],
                    label=f"{name} (closed form)")
        ax.set_xlabel("test context length L")
        ax.set_ylabel("risk E (y_hat - y_q)^2")
        ax.set_yscale("log")
        ax.set_title(f"{run_id}: +-2 stderr; lines: exact GD risks, large-L single head, "
                     "proportional Bayes", fontsize=8)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        return save_run_figure(fig, path, run_id, out)
