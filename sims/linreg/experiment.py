"""Experiment `linreg`: multi-head softmax attention on in-context linear regression.

One run integrates two reduced flows from the same start and trains the full
network there:
- "ode": gradient flow of the symbolic large-L loss Lt;
- "population": gradient flow of the exact population loss of the reduced
  predictor (Monte Carlo, fixed covariate sample);
- "sgd": the network (merged or factored), lifted from the same point (init
  "symmetric"), or drawn at random with the flows started from its metric
  projection onto the manifold (init "random").
Time is t = lr x step; both flows use the metric of the lift (THEORY.md D).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from dynamics.config import Key, Schema
from dynamics.errors import UsageError
from dynamics.progress import bar
from dynamics.sgd import train
from dynamics.times import record_times
from reduced_models import linreg as theory
from reduced_models.base import integrate_flow

from ..experiment import Experiment, RunResult, check_device, comparisons, generator, seeds
from .network import SoftmaxAttentionRegressor, project
from .task import sample_regression

SCHEMA = Schema((
    Key("d", "int", 5, "covariate dimension", low=1),
    Key("L", "int", 40, "context length (training)", low=1),
    Key("sigma2", "float", 0.1, "label-noise variance", low=0.0),
    Key("heads", "int", 2, "attention heads H", low=1),
    Key("init", "str", "symmetric", "start: 'symmetric' (+-init_scale alternating by head, "
        "lifted) or 'random' (network weights N(0, init_scale^2))",
        choices=("symmetric", "random")),
    Key("init_scale", "float", 0.05, "start scale (omega = mu = +-init_scale when symmetric)",
        low=0.0, low_open=True),
    Key("param", "str", "merged", "network parameterisation", choices=("merged", "factored")),
    Key("optimizer", "str", "sgd", "full-network optimiser", choices=("sgd", "adam")),
    Key("lr", "float", 0.02, "learning rate; t = lr x step", low=0.0, low_open=True),
    Key("batch", "int", 512, "SGD minibatch size (fresh samples each step)", low=1),
    Key("t_max", "float", 20.0, "gradient-flow time to reach; SGD steps = t_max / lr",
        low=0.0, low_open=True),
    Key("mc_samples", "int", 8000, "covariate draws of the population loss", low=1),
    Key("eval_samples", "int", 4096, "fixed prompts on which the network's recorded loss "
        "is measured", low=1),
    Key("records", "int", 150, "log-spaced recording points", low=2, high=100_000),
    Key("rtol", "float", 1e-7, "ODE relative tolerance", low=0.0, low_open=True),
    Key("atol", "float", 1e-9, "ODE absolute tolerance", low=0.0, low_open=True),
    Key("sgd_dtype", "str", "float64", "network dtype", choices=("float32", "float64")),
    Key("device", "str", "cpu", "torch device of the network and the flows ('cpu', 'cuda', ...)"),
    Key("seed", "int", 0, "random seed (sampling, init, Monte-Carlo sample)", low=0),
))

MAX_STEPS = 10_000_000


class LinregExperiment(Experiment):
    name = "linreg"
    description = "multi-head softmax attention on in-context linear regression (omega, mu flows vs SGD)"
    schema = SCHEMA

    def validate(self, config: dict) -> None:
        check_device(config["device"])
        steps = config["t_max"] / config["lr"]
        if steps > MAX_STEPS:
            raise UsageError(f"key 't_max': t_max / lr = {steps:.3g} SGD steps exceeds {MAX_STEPS}")
        floats = config["batch"] * (config["L"] + 1) * (config["d"] + 1) * config["heads"]
        mc = config["mc_samples"] * config["L"] * (config["d"] + config["heads"])
        if max(floats, mc) > 2e8:
            key = "batch" if floats > mc else "mc_samples"
            raise UsageError(f"key '{key}': needs about {8 * max(floats, mc) / 1e9:.1f} GB per step")

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        d, L, sigma2, H, param = (config[k] for k in ("d", "L", "sigma2", "heads", "param"))
        device = config["device"]
        seed_init, seed_mc, seed_sgd, seed_eval = seeds(config["seed"], 4)
        t, steps = record_times(config["t_max"], config["lr"], config["records"])
        manifold = theory.manifold(d, H, param)
        dtype = getattr(torch, config["sgd_dtype"])
        net = SoftmaxAttentionRegressor(d, H, param, dtype=dtype).to(device)
        if config["init"] == "symmetric":
            state0 = manifold.pack(theory.symmetric_start(d, H, config["init_scale"], param))
            net.load(manifold.lift(state0))
        else:
            net.init_normal(config["init_scale"], generator(seed_init, device))
            state0 = manifold.project({k: v.cpu() for k, v in net.weights().items()})
        state0 = state0.to(device)
        trajs, seconds = {}, {}
        solver = {"rtol": config["rtol"], "atol": config["atol"]}
        if ode:
            models = {
                "ode": (theory.symbolic_model(d, H, param), {"L": L, "sigma2": sigma2}),
                "population": (
                    theory.population_model(d, H, L, config["mc_samples"],
                                            generator(seed_mc, device), param),
                    {"sigma2": sigma2},
                ),
            }
            for name, (model, hyper) in models.items():
                start = time.perf_counter()
                with bar(float(t[-1]), f"{name} flow", unit="t") as progress:
                    def advance(now, progress=progress):
                        progress.update(now - progress.n)
                    (trajs[name],) = integrate_flow(model, state0, t, hyper, project,
                                                    on_chunk=advance, **solver)
                seconds[name] = time.perf_counter() - start
        if sgd:
            start = time.perf_counter()
            eval_batch = sample_regression(config["eval_samples"], L, d, sigma2,
                                           generator(seed_eval, device), dtype=dtype, device=device)
            trajs["sgd"] = self._train(net, config, steps, generator(seed_sgd, device), eval_batch)
            seconds["sgd"] = time.perf_counter() - start
        summary = {name: tr.summary() for name, tr in trajs.items()}
        summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
        summary["comparison"] = comparisons(
            trajs, [("sgd", "population"), ("ode", "population"), ("sgd", "ode")]
        )
        return RunResult(trajs, summary)

    @staticmethod
    def _train(net, config, steps, gen, eval_batch):
        d, L, sigma2 = config["d"], config["L"], config["sigma2"]
        opt_class = torch.optim.SGD if config["optimizer"] == "sgd" else torch.optim.Adam
        optimizer = opt_class(net.parameters(), lr=config["lr"])

        def batch_loss(step: int) -> torch.Tensor:
            batch = sample_regression(config["batch"], L, d, sigma2, gen, dtype=eval_batch.y.dtype,
                                      device=eval_batch.y.device)
            return ((net(batch.tokens()) - batch.yq) ** 2).mean()

        eval_tokens = eval_batch.tokens()

        def eval_loss() -> float:
            return float(((net(eval_tokens) - eval_batch.yq) ** 2).mean())

        def observe() -> dict[str, np.ndarray]:
            with torch.no_grad():
                return {k: v.double().cpu().numpy() for k, v in project(net.weights()).items()}

        with bar(int(steps[-1]), "sgd", unit="step") as progress:
            traj = train(net, batch_loss, optimizer, steps, observe, config["lr"],
                         on_step=lambda s: progress.update(1), eval_loss=eval_loss)
        traj.attrs["model"] = (f"{net.param} network, {config['optimizer']}, batch {config['batch']}; "
                               f"loss on {config['eval_samples']} fixed prompts")
        return traj
