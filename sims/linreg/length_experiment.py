"""Experiment `linreg-length`: length generalisation of trained attention (docs/linreg-theory.md).

Softmax attention networks with H heads for each H in `heads`, and a
linear-attention baseline (sims.linreg.linear_attention), are trained the
same way (same start, optimiser, steps, batch and training length L) on
in-context linear regression, then evaluated at every test length in
L_test on the same prompts (common random numbers). Stored per network: the
training trajectory ("sgd": loss on fixed prompts, projected omega_h, mu_h)
and the risk curve; beside them, on the same prompts, the reduced softmax
predictor at each softmax network's final projection ("<name>_reduced"),
optimal-step debiased GD ("dgd") and ridge (lambda = sigma2 d, "ridge"), and
the closed-form risk of the plain GD step the linear network's projection
implements at each L ("<name>_reduced" under theory/).

Softmax normalises over the context, so its effective step 2 omega mu_+
does not change with L and the risk keeps falling at longer contexts;
linear attention with "sum" normalisation scales its step with L and
overshoots beyond the training length. Time is t = lr x step (nominal for Adam).
"""

from __future__ import annotations

import time

import h5py
import numpy as np
import torch

from dynamics.errors import UsageError
from dynamics.fit import fit
from dynamics.plots import save_run_figure
from dynamics.store import open_store, read_run
from dynamics.tables import Headline, Records
from dynamics.times import log_steps
from reduced_models import linreg as theory
from reduced_models.linreg_theory import plain_gd_risk_at_step

from ..experiment import (
    F64,
    RUNTIME,
    Experiment,
    RunResult,
    check_device,
    generator,
    lift_bytes,
    seeds,
)
from .config import LENGTH as SCHEMA
from .config import LinregLengthConfig
from .estimators import risk_curves
from .linear_attention import LinearAttentionRegressor, gd_step
from .network import SoftmaxAttentionRegressor, project
from .task import sample_regression

CHUNK = 5_000  # test prompts evaluated at once
MAX_DRAWS = 1e10  # test covariate entries per run (the defaults draw 6.8e7)


def network_specs(config: LinregLengthConfig) -> dict[str, tuple[str, int]]:
    """name -> (kind "softmax" | "linear", heads) of the networks a run trains."""
    specs = {f"softmax_H{h}": ("softmax", h) for h in dict.fromkeys(config.heads)}
    if config.linear:
        specs[f"linear_H{config.linear_heads}"] = ("linear", config.linear_heads)
    return specs


def build_network(kind: str, heads: int, config: LinregLengthConfig, gen: torch.Generator):
    """A network at its start: the lift of the symmetric point, or N(0, init_scale^2) weights."""
    d, param, dtype = config.d, config.param, getattr(torch, config.sgd_dtype)
    net = (SoftmaxAttentionRegressor(d, heads, param, dtype=dtype) if kind == "softmax"
           else LinearAttentionRegressor(d, heads, param, config.linear_norm, dtype=dtype))
    net = net.to(config.device)
    if config.init == "symmetric":
        manifold = theory.manifold(d, heads, param)
        state = manifold.pack(theory.symmetric_start(d, heads, config.init_scale, param))
        net.load({k: v.to(config.device) for k, v in manifold.lift(state).items()})
    else:
        net.init_normal(config.init_scale, gen)
    return net


def train_network(net, config: LinregLengthConfig, gen: torch.Generator, eval_batch, desc: str):
    """Train on fresh minibatches at the training length; an "sgd" Trajectory with the loss on
    eval_batch and the projection (omega, mu) at log-spaced steps."""
    d, L, sigma2 = config.d, config.L, config.sigma2
    eval_tokens = eval_batch.tokens()

    def batch_loss(step: int) -> torch.Tensor:
        batch = sample_regression(config.batch, L, d, sigma2, gen, dtype=eval_batch.y.dtype,
                                  device=eval_batch.y.device)
        return ((net(batch.tokens()) - batch.yq) ** 2).mean()

    def eval_loss() -> float:
        return float(((net(eval_tokens) - eval_batch.yq) ** 2).mean())

    def observe() -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {k: v.double().cpu().numpy() for k, v in project(net.weights()).items()}

    return fit(net, batch_loss, observe, log_steps(config.steps, config.records),
               optimizer=config.optimizer, lr=config.lr, eval_loss=eval_loss, name=desc,
               generators=[gen],
               model=f"{type(net).__name__} ({net.param}, H={net.heads}), {config.optimizer} "
                     f"lr {config.lr}, batch {config.batch}, trained at L={L}; loss on "
                     f"{config.eval_samples} fixed prompts").trajectory


def network_predictor(net):
    """L -> predictor of a trained network (no autograd graph; float64 out)."""
    dtype = next(net.parameters()).dtype

    def at_length(L: int):
        def predict(batch):
            with torch.no_grad():
                return net(batch.tokens().to(dtype)).double()
        return predict

    return at_length


class LinregLengthExperiment(Experiment):
    name = "linreg-length"
    headlines = (Headline("trained at L", "train_L"),
                 Records("trained networks", "networks",
                         ("kind", "heads", "status", "loss_final", "gd_step_at_L")))
    schema = SCHEMA

    def validate(self, config: LinregLengthConfig) -> None:
        config = SCHEMA.typed(config)
        check_device(config.device)
        draws = config.samples * sum(L + 1 for L in config.L_test) * config.d
        if draws > MAX_DRAWS:
            raise UsageError(f"key 'samples': {draws:.3g} covariate draws exceed {MAX_DRAWS:.0e}")

    def memory(self, config: LinregLengthConfig) -> dict[str, float]:
        """Peak bytes (float64, D = d + 1, L1 = L + 1, W = the most heads of a network):
        - networks: every network's weights (H D^2, x3 factored, + H D) with gradients and
          two Adam moments, and the symbolic lift of each softmax start;
        - SGD minibatch with its autograd graph, 4 x batch L1 (D + W);
        - evaluation prompts and their forward pass, 3 x eval_samples L1 (D + W);
        - one test chunk of c = min(CHUNK, samples) prompts at max(L_test) + 1 = Lt:
          3 c Lt d prompts, 2 c Lt D tokens, 4 c W Lt + 2 c W D attention (networks and
          reduced predictors), 3 c d^2 ridge."""
        config = SCHEMA.typed(config)
        d, L1, D = config.d, config.L + 1, config.d + 1
        specs = network_specs(config).values()
        widest = max(heads for _, heads in specs)
        per_head = D * D * (3 if config.param == "factored" else 1) + D
        c, Lt = min(CHUNK, config.samples), max(config.L_test) + 1
        return {
            "runtime": RUNTIME,
            "networks": sum(4 * F64 * h * per_head + lift_bytes(h * per_head, 4 * h)
                            for _, h in specs),
            "SGD minibatch": 4 * F64 * config.batch * L1 * (D + widest),
            "evaluation prompts": 3 * F64 * config.eval_samples * L1 * (D + widest),
            "test chunk": F64 * c * (3 * Lt * d + 2 * Lt * D + 4 * widest * Lt
                                     + 2 * widest * D + 3 * d * d),
        }

    def run(self, config: LinregLengthConfig, *, ode: bool = True, sgd: bool = True) -> RunResult:
        config = SCHEMA.typed(config)
        if not sgd:
            raise UsageError("linreg-length trains networks; it cannot run with --no-sgd")
        d, L, sigma2, device = config.d, config.L, config.sigma2, config.device
        specs = network_specs(config)
        streams = iter(seeds(config.seed, 2 + 2 * len(specs)))
        seed_eval, seed_test = next(streams), next(streams)
        eval_batch = sample_regression(config.eval_samples, L, d, sigma2,
                                       generator(seed_eval, device),
                                       dtype=getattr(torch, config.sgd_dtype), device=device)
        trajs, nets, seconds = {}, {}, {}
        for name, (kind, heads) in specs.items():
            start = time.perf_counter()
            init_gen, sgd_gen = (generator(next(streams), device) for _ in range(2))
            nets[name] = build_network(kind, heads, config, init_gen)
            trajs[name] = train_network(nets[name], config, sgd_gen, eval_batch, name)
            seconds[name] = round(time.perf_counter() - start, 3)
        points = {name: tr.final() for name, tr in trajs.items()}
        estimators = {name: network_predictor(net) for name, net in nets.items()}
        for name, (kind, _) in specs.items():
            if kind == "softmax":
                estimators[f"{name}_reduced"] = {"kind": "multihead", **points[name]}
        estimators.update({"dgd": None, "ridge": None})
        start = time.perf_counter()
        curves = risk_curves(config.L_test, d, sigma2, estimators, config.samples,
                             generator(seed_test), chunk=CHUNK)
        seconds["evaluation"] = round(time.perf_counter() - start, 3)
        theory_curves = {
            f"{name}_reduced": [plain_gd_risk_at_step(
                d, Lt, sigma2, gd_step(points[name]["omega"], points[name]["mu"], Lt,
                                       config.linear_norm)) for Lt in config.L_test]
            for name, (kind, _) in specs.items() if kind == "linear"
        }
        networks = {name: {"kind": kind, "heads": heads, **points[name],
                           "loss_final": trajs[name].summary()["loss_final"],
                           "status": trajs[name].status}
                    for name, (kind, heads) in specs.items()}
        for name, (kind, _) in specs.items():
            if kind == "linear":
                networks[name]["gd_step_at_L"] = gd_step(points[name]["omega"], points[name]["mu"],
                                                         L, config.linear_norm)
        summary = {**curves, "theory": theory_curves, "networks": networks, "train_L": L,
                   "seconds": seconds}
        L_axis = np.asarray(config.L_test, dtype=np.int64)
        risk = {"L_test": L_axis}
        for name in estimators:
            risk[name] = np.asarray(curves["risk"][name])
            risk[f"stderr_{name}"] = np.asarray(curves["stderr"][name])
        extra = {"risk": risk}
        if theory_curves:
            extra["theory"] = {"L_test": L_axis,
                               **{k: np.asarray(v) for k, v in theory_curves.items()}}
        return RunResult(trajs, summary, extra, {name: ("L_test",) for name in extra})

    def plot(self, path: str, run_id: str, out: str | None = None) -> str:
        """Left: risk against test length (networks +-2 stderr, reduced predictors dashed,
        debiased GD and ridge grey); right: training loss against step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        _, attrs, trajs = read_run(path, run_id)
        with open_store(path) as fh:
            run = fh["runs"][run_id]
            risk = {k: v[()] for k, v in run["risk"].items() if isinstance(v, h5py.Dataset)}
            theory_curves = ({k: v[()] for k, v in run["theory"].items()
                              if isinstance(v, h5py.Dataset)} if "theory" in run else {})
        L = risk["L_test"]
        colors = dict(zip(trajs, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
        fig, (ax, ax_train) = plt.subplots(1, 2, figsize=(11, 5.2))
        for name, color in colors.items():
            ax.errorbar(L, risk[name], yerr=2 * risk[f"stderr_{name}"], marker="o", ms=3, lw=1,
                        capsize=2, color=color, label=name)
            reduced = risk.get(f"{name}_reduced", theory_curves.get(f"{name}_reduced"))
            if reduced is not None:
                ax.plot(L, reduced, "--", lw=1, color=color, alpha=0.7)
            tr = trajs[name]
            ax_train.plot(np.maximum(tr.step, 1), tr.loss, lw=1.2, color=color, label=name)
        ax.plot(L, risk["dgd"], ":", color="0.4", lw=1.2, label="debiased GD, optimal step per L")
        ax.plot(L, risk["ridge"], "-.", color="0.4", lw=1.2, label="ridge (Bayes)")
        ax.axvline(attrs["config"]["L"], color="0.7", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("test context length L (grey line: training length)")
        ax.set_ylabel("risk E (y_hat - y_q)^2")
        ax.set_title(f"{run_id}: dashed = reduced predictor at the network's projection",
                     fontsize=8)
        ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                  frameon=False)  # below the panel: off the curves
        ax_train.set_xscale("log")
        ax_train.set_yscale("log")
        ax_train.set_xlabel("step")
        ax_train.set_ylabel("loss on fixed prompts at the training length")
        ax_train.legend(fontsize=7, loc="upper right")  # losses fall: the corner is free
        return save_run_figure(fig, path, run_id, out)
