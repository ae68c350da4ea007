"""Experiment `linreg-multitask`: which heads serve which task (docs/theory/linreg.md, section 7).

Trains the N-output attention network of sims.linreg.multitask from random
weights N(0, init_scale^2) and records, per head h and task k, omega_hk, mu_hk
and the strength |omega_hk mu_hk|; at the end it classifies the heads
(`classify_heads`) and stores the classification in the run (group "heads")
and in the summary. There is no reduced flow: the run is the network only.
Time is t = lr x step (for Adam a nominal clock).
"""

from __future__ import annotations

import numpy as np
import torch

from dynamics.errors import UsageError
from dynamics.fit import fit
from dynamics.tables import Headline
from dynamics.times import record_times

from ..experiment import (
    F64,
    RUNTIME,
    Experiment,
    RunResult,
    check_device,
    generator,
    seeds,
)
from .config import MULTITASK as SCHEMA
from .config import MultitaskConfig
from .multitask import (
    MultitaskAttention,
    classify_heads,
    resolve_supports,
    sample_multitask,
    task_observables,
)

MAX_STEPS = 10_000_000


class MultitaskExperiment(Experiment):
    name = "linreg-multitask"
    headlines = (Headline("head layout", "heads.layout", "split: each task its own +- heads; "
                          "superposition: a head serves several tasks"),
                 Headline("tasks of each head", "heads.tasks_of_head"),
                 Headline("final loss per task", "loss_per_task"))
    schema = SCHEMA

    def validate(self, config: MultitaskConfig) -> None:
        config = SCHEMA.typed(config)
        check_device(config.device)
        resolve_supports(config.supports, config.d, config.tasks)
        steps = config.t_max / config.lr
        if steps > MAX_STEPS:
            raise UsageError(f"key 't_max': t_max / lr = {steps:.3g} steps exceeds {MAX_STEPS}")

    def memory(self, config: MultitaskConfig) -> dict[str, float]:
        """Peak bytes (float64, N tasks, D = d + N, L1 = L + 1): the weights (H D^2 + H D N)
        with gradients and two Adam moments; the minibatch with its autograd graph,
        4 x batch L1 (D + H + N); the evaluation prompts and their forward pass,
        3 x eval_samples L1 (D + H + N)."""
        config = SCHEMA.typed(config)
        H, N = config.heads, config.tasks
        D, L1 = config.d + N, config.L + 1
        return {"runtime": RUNTIME,
                "network": 4 * F64 * H * D * (D + N),
                "SGD minibatch": 4 * F64 * config.batch * L1 * (D + H + N),
                "evaluation prompts": 3 * F64 * config.eval_samples * L1 * (D + H + N)}

    def run(self, config: MultitaskConfig, *, ode: bool = True, sgd: bool = True) -> RunResult:
        config = SCHEMA.typed(config)
        if not sgd:
            raise UsageError(f"{self.name} has only the network: drop --no-sgd")
        d, L, sigma2, H = config.d, config.L, config.sigma2, config.heads
        supports = resolve_supports(config.supports, d, config.tasks)
        device, dtype = config.device, getattr(torch, config.sgd_dtype)
        seed_init, seed_sgd, seed_eval = seeds(config.seed, 3)
        _, steps = record_times(config.t_max, config.lr, config.records)
        net = MultitaskAttention(d, len(supports), H, dtype=dtype).to(device)
        net.init_normal(config.init_scale, generator(seed_init, device))
        gen = generator(seed_sgd, device)
        evaluation = sample_multitask(config.eval_samples, L, d, supports, sigma2,
                                      generator(seed_eval, device), dtype, device)
        eval_tokens = evaluation.tokens()

        def batch_loss(step: int) -> torch.Tensor:
            batch = sample_multitask(config.batch, L, d, supports, sigma2, gen, dtype, device)
            return ((net(batch.tokens()) - batch.yq) ** 2).mean(0).sum()

        def task_losses() -> torch.Tensor:
            return ((net(eval_tokens) - evaluation.yq) ** 2).mean(0)

        def observe() -> dict[str, np.ndarray]:
            with torch.no_grad():
                obs = task_observables(net.KQ, net.OV, supports, d)
            return {k: v.detach().double().cpu().numpy() for k, v in obs.items()}

        trained = fit(net, batch_loss, observe, steps, optimizer=config.optimizer, lr=config.lr,
                      eval_loss=lambda: float(task_losses().sum()), generators=[gen],
                      model=f"{H}-head attention, {len(supports)} outputs, {config.optimizer}, "
                            f"batch {config.batch}; loss summed over tasks on "
                            f"{config.eval_samples} fixed prompts")
        traj, seconds = trained.trajectory, trained.seconds
        final = {k: v[-1] for k, v in traj.params.items()}
        heads = classify_heads(final["omega"], final["mu"], config.active_fraction)
        with torch.no_grad():
            per_task = task_losses().double().cpu().numpy()
        summary = {
            "sgd": traj.summary(),
            "seconds": {"sgd": round(seconds, 3)},
            "supports": supports,
            "loss_per_task": per_task.tolist(),
            "heads": {"layout": heads["layout"], "tasks_of_head": heads["tasks_of_head"],
                      "serves": heads["serves"].tolist()},
        }
        extra = {"heads": {"serves": heads["serves"].astype(np.int8),
                           "omega": final["omega"], "mu": final["mu"],
                           "strength": final["strength"]}}
        return RunResult({"sgd": traj}, summary, extra)
