"""Experiment `sparse-flow`: the reduced preprocess-then-optimize flow against SGD on the
linear-attention stack (reduced_models/sparse.py).

One run integrates the reduced model (layer-1 scales alpha_h, step sizes eta_l)
as `population` (gradient flow of the Monte-Carlo population loss) and trains
the linear stack by SGD from the lift of the same start as `sgd`, read through
the same metric projection; t = lr x step.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from dynamics.errors import UsageError
from dynamics.progress import bar
from dynamics.sgd import train
from dynamics.times import record_times
from reduced_models import sparse as theory
from reduced_models.base import integrate_flow

from ..experiment import (
    F64,
    RUNTIME,
    Experiment,
    RunResult,
    check_device,
    comparisons,
    generator,
    lift_bytes,
    seeds,
)
from .config import FLOW as SCHEMA
from .network import LinearAttentionStack, TransformerShape, tokens
from .task import sample_sparse


class SparseFlowExperiment(Experiment):
    name = "sparse-flow"
    schema = SCHEMA

    def validate(self, config: dict) -> None:
        check_device(config["device"])
        if config["s"] > config["d"]:
            raise UsageError(f"key 's': sparsity {config['s']} exceeds d = {config['d']}")
        if config["heads"] > config["d"]:
            raise UsageError(f"key 'heads': {config['heads']} layer-1 heads exceed d = "
                             f"{config['d']} coordinates to preprocess")

    def memory(self, config: dict) -> dict[str, float]:
        """Peak bytes (float64; nf = n_flow + 1, K layers, H heads, C = d + H + 1 channels,
        T = records + 1):
        - population flow: mc_samples (nf d + d^2) moments, a loss with its graph
          4 K mc_samples d, and the losses of all records at once, 3 T K mc_samples d;
        - flow SGD: 3 x flow_batch nf K (H nf + 3 C); the stack; the symbolic lift;
          the records."""
        d, K, H = config["d"], config["layers"], config["heads"]
        C, T, nf = d + H + 1, config["records"] + 1, config["n_flow"] + 1
        stack = 2 * K * H * C * C
        M = config["mc_samples"]
        return {
            "runtime": RUNTIME,
            "population flow": F64 * M * (nf * d + d * d + 4 * K * d + 3 * T * K * d),
            "flow SGD": 3 * F64 * config["flow_batch"] * nf * K * (H * nf + 3 * C)
            + 3 * F64 * stack,
            "symbolic lift and records": lift_bytes(stack, H + K - 1) + 16 * F64 * T * (H + K),
        }

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        # the last two of the seven seeds of the `sparse` run that held this comparison
        seed_mc, seed_flow = seeds(config["seed"], 7)[5:]
        device = config["device"]
        trajs, seconds = {}, {}
        manifold = theory.manifold(config["d"], config["layers"], config["heads"])
        state0 = manifold.pack(theory.start_state(config["heads"], config["layers"],
                                                  config["init_alpha"], config["init_eta"]))
        t, steps = record_times(config["t_max"], config["lr"], config["records"])
        if ode:
            start = time.perf_counter()
            pop = sample_sparse(config["mc_samples"], config["n_flow"], config["d"], config["s"],
                                config["sigma2"], generator(seed_mc, device))
            model = theory.population_model(config["d"], config["layers"], config["heads"],
                                            theory.PromptSample(pop.x, pop.y, pop.beta,
                                                                config["sigma2"]))
            with bar(float(t[-1]), "population flow", unit="t") as progress:
                (trajs["population"],) = integrate_flow(
                    model, state0, t, {}, reduced_observables(manifold), rtol=config["rtol"],
                    atol=config["atol"], on_chunk=lambda now: progress.update(now - progress.n))
            seconds["population"] = time.perf_counter() - start
        if sgd:
            start = time.perf_counter()
            trajs["sgd"] = train_on_manifold(manifold, state0, steps,
                                             reduced_observables(manifold, True), config,
                                             seed_flow)
            seconds["sgd"] = time.perf_counter() - start
        summary = {name: tr.summary() for name, tr in trajs.items()}
        summary["comparison"] = comparisons(trajs, [("sgd", "population")])
        summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
        return RunResult(trajs, summary)


def train_on_manifold(manifold, state0, steps, observe, config, seed):
    """SGD of the linear stack from the lift of state0, recorded through `observe`."""
    device = config["device"]
    shape = TransformerShape(config["d"], config["layers"], config["heads"])
    net = LinearAttentionStack(shape).to(device)
    net.load({k: v.to(device) for k, v in manifold.lift(state0).items()})
    net.OV.requires_grad_(not config["freeze_values"])
    if config["kq_label_free"]:
        keep = torch.ones_like(net.KQ)
        keep[..., -1, :] = 0.0
        keep[..., :, -1] = 0.0
        net.KQ.register_hook(lambda grad: grad * keep)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config["lr"])
    gen = generator(seed, device)

    def batch_loss(step: int) -> torch.Tensor:
        batch = sample_sparse(config["flow_batch"], config["n_flow"], config["d"], config["s"],
                              config["sigma2"], gen, device=device)
        return ((net(tokens(batch)) - batch.yq) ** 2).mean()

    def read() -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {k: v.cpu().numpy() for k, v in observe(net.weights()).items()}

    with bar(int(steps[-1]), "linear stack sgd", unit="step") as progress:
        traj = train(net, batch_loss, optimizer, steps, read, config["lr"],
                     on_step=lambda s: progress.update(1))
    traj.attrs["model"] = (f"linear-attention stack, SGD batch {config['flow_batch']}, "
                           f"{'values frozen' if config['freeze_values'] else 'all weights'}; "
                           "minibatch loss")
    return traj


def reduced_observables(manifold, off_manifold: bool = False):
    """Weights -> alpha (H,), eta (layers - 1,) by the metric projection onto the manifold;
    with off_manifold, also |W - lift(projection)| / |W| over all KQ and OV entries (the
    network side only: on a flow it is 0 by construction)."""

    def observe(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        weights = {k: weights[k].to(torch.float64) for k in manifold.weight_shapes}
        state = manifold.project(weights)
        out = manifold.unpack(state)
        if off_manifold:
            back = manifold.lift(state)
            lead = state.shape[:-1]
            gap = sum(((weights[k] - back[k]) ** 2).reshape(*lead, -1).sum(-1) for k in back)
            norm = sum((weights[k] ** 2).reshape(*lead, -1).sum(-1) for k in back)
            out["off_manifold"] = (gap / norm).sqrt()
        return out

    return observe
