"""Experiment `induction`: induction heads on in-context n-gram Markov chains (THEORY.md B).

One run, from the authors' start (w_plus on each head's own offset, C_S = c_init, a = a_init):
- "ode": the symbolic three-stage model (reduced_models/induction.py, docs/induction.md);
- "population": gradient flow of the simplified network's loss on a fixed Monte-Carlo
  sample of `samples` chains and sequences (the same sample the ode is averaged over);
- "sgd": the simplified network TF(M, H, d, D), plain SGD on fresh sequences each step.
All three start at the same point; t = lr x step (G = I). The summary holds the
chi-square mutual information of every candidate set, S*, and the stage figures.
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
from reduced_models import induction as theory
from reduced_models.markov import (
    best_set,
    candidate_sets,
    expected_chi2_mi,
    gih_optimal_a,
    set_label,
)

from ..experiment import Experiment, RunResult, comparisons, generator, seeds
from .network import SimplifiedInductionNet, project
from .plots import plot_induction
from .stages import stage_figures
from .task import make_dataset

SCHEMA = Schema((
    Key("vocab", "int", 3, "vocabulary size d", low=2, high=8),
    Key("L", "int", 100, "context length (training)", low=1),
    Key("parents", "ints", [1, 2], "parent offsets of the chain", low=1),
    Key("window", "int", 3, "copier window M (offsets 1..M)", low=1, high=6),
    Key("heads", "int", 3, "copier heads H (head h starts on offset h; H <= M)", low=1),
    Key("degree", "int", 2, "largest candidate set |S| <= D", low=1),
    Key("alpha", "float", 0.1, "Dirichlet prior of each kernel row", low=0.0, low_open=True),
    Key("model", "str", "simplified", "network trained by SGD", choices=("simplified",)),
    Key("loss", "str", "ce", "'ce' true cross-entropy, 'logsoftmax' the authors' variant",
        choices=theory.LOSSES),
    Key("schedule", "str", "joint", "training schedule (all parameters at once)",
        choices=("joint",)),
    Key("lr", "float", 0.1, "SGD learning rate; t = lr x step", low=0.0, low_open=True),
    Key("batch", "int", 512, "fresh sequences per SGD step", low=1),
    Key("t_max", "float", 200.0, "gradient-flow time to reach; SGD steps = t_max / lr",
        low=0.0, low_open=True),
    Key("samples", "int", 4000, "Monte-Carlo sequences of the population loss and the ode "
        "(also the SGD evaluation sample)", low=10),
    Key("mi_chains", "int", 2000, "kernels averaged for the chi-square MI", low=2),
    Key("w_plus", "float", 3.0, "initial copier logit on each head's own offset"),
    Key("w_minus", "float", 0.1, "initial copier logit on the other offsets"),
    Key("c_init", "float", 0.01, "initial selector amplitude C_S", low=0.0, low_open=True),
    Key("a_init", "float", 0.01, "initial classifier scale a"),
    Key("records", "int", 80, "log-spaced recording points", low=2, high=100_000),
    Key("rtol", "float", 1e-6, "ODE relative tolerance", low=0.0, low_open=True),
    Key("atol", "float", 1e-9, "ODE absolute tolerance", low=0.0, low_open=True),
    Key("seed", "int", 0, "random seed (samples, SGD batches, MI kernels)", low=0),
))

MAX_STEPS = 2_000_000


class InductionExperiment(Experiment):
    name = "induction"
    description = ("induction heads on n-gram Markov chains: copier/selector/classifier "
                   "(symbolic three-stage model, population flow, SGD)")
    schema = SCHEMA

    def validate(self, config: dict) -> None:
        if config["heads"] > config["window"]:
            raise UsageError(f"key 'heads': {config['heads']} heads need window >= heads "
                             f"(head h starts on offset h), window is {config['window']}")
        if config["degree"] > config["heads"]:
            raise UsageError(f"key 'degree': must be <= heads ({config['heads']})")
        if config["L"] < max(config["window"], max(config["parents"])):
            raise UsageError("key 'L': must be at least window and max(parents)")
        if len(set(config["parents"])) != len(config["parents"]):
            raise UsageError("key 'parents': offsets must be distinct")
        steps = config["t_max"] / config["lr"]
        if steps > MAX_STEPS:
            raise UsageError(f"key 't_max': t_max / lr = {steps:.3g} SGD steps exceeds {MAX_STEPS}")
        size = (config["vocab"] + 1) ** config["window"] * config["vocab"]
        for key in ("samples", "batch"):
            if config[key] * size > 5e7:
                raise UsageError(f"key '{key}': needs about {8e-9 * config[key] * size:.1f} GB")

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        V, M, H, D = (config[k] for k in ("vocab", "window", "heads", "degree"))
        parents, variant = tuple(sorted(config["parents"])), config["loss"]
        seed_mc, seed_sgd, seed_mi = seeds(config["seed"], 3)
        seconds = {}
        start = time.perf_counter()
        mi = expected_chi2_mi(V, parents, config["alpha"], M, D, config["mi_chains"],
                              generator(seed_mi), modified=True)
        mi_standard = expected_chi2_mi(V, parents, config["alpha"], M, D, config["mi_chains"],
                                       generator(seed_mi), modified=False)
        s_star = best_set(mi)
        seconds["chi2_mi"] = time.perf_counter() - start

        sample = make_dataset(config["samples"], V, parents, config["alpha"], config["L"],
                              generator(seed_mc))
        counts = theory.WindowCounts.from_tokens(sample.tokens, M, V)
        sets = candidate_sets(H, D)
        manifold = theory.manifold(H, M, len(sets))
        state0 = manifold.pack(theory.standard_start(H, M, len(sets), config["w_plus"],
                                                     config["w_minus"], config["c_init"],
                                                     config["a_init"]))
        t, steps = record_times(config["t_max"], config["lr"], config["records"])
        solver = {"rtol": config["rtol"], "atol": config["atol"]}
        trajs, parts = {}, None
        if ode:
            symbolic, parts = theory.three_stage_model(sample.tokens, H, M, V, D, s_star, variant)
            flows = {"ode": symbolic,
                     "population": theory.population_model(counts, H, M, V, D, variant)}
            for name, model in flows.items():
                start = time.perf_counter()
                with bar(float(t[-1]), f"{name} flow", unit="t") as progress:
                    def advance(now, progress=progress):
                        progress.update(now - progress.n)
                    trajs[name] = theory.integrate_log_selector(model, state0, t, project,
                                                                on_chunk=advance, **solver)
                seconds[name] = time.perf_counter() - start
        if sgd:
            start = time.perf_counter()
            net = SimplifiedInductionNet(V, M, H, D)
            net.load(manifold.lift(state0))
            trajs["sgd"] = self._train(net, config, parents, steps, counts, generator(seed_sgd))
            seconds["sgd"] = time.perf_counter() - start

        labels = [set_label(s) for s in sets]
        a_opt = gih_optimal_a(sample.tokens, s_star, V, variant)
        a_grid = np.linspace(0.0, max(12.0, 1.5 * a_opt), 61)
        limit_fn = theory.limit_loss_function(sample.tokens, s_star, V, variant)
        limit = limit_fn._imp_(torch.as_tensor(a_grid)).numpy()
        summary = {
            "chi2_mi": {k: v[0] for k, v in mi.items()},
            "chi2_mi_stderr": {k: v[1] for k, v in mi.items()},
            "chi2_mi_standard": {k: v[0] for k, v in mi_standard.items()},
            "S_star": list(s_star),
            "p_labels": labels,
            "limit": {"a_optimum": a_opt, "loss_at_optimum": float(np.interp(a_opt, a_grid, limit))},
        }
        if parts is not None:
            summary["sharp_gains"] = {set_label(k): v for k, v in parts.gains.items()}
        for name, tr in trajs.items():
            tr.attrs["p_labels"] = labels
            summary[name] = tr.summary()
            summary[name]["stages"] = stage_figures(tr, labels, s_star, summary["chi2_mi"],
                                                    parts.gains if parts else None, a_opt)
        summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
        summary["comparison"] = comparisons(
            trajs, [("sgd", "population"), ("ode", "population"), ("sgd", "ode")])
        extra = {"limit_loss": {"a": a_grid, "loss": limit}}
        return RunResult(trajs, summary, extra)

    def plot(self, path: str, run_id: str, out: str | None = None) -> str:
        return plot_induction(path, run_id, out)

    @staticmethod
    def _train(net, config, parents, steps, eval_counts, gen):
        V, M, L, variant = config["vocab"], config["window"], config["L"], config["loss"]
        optimizer = torch.optim.SGD(net.parameters(), lr=config["lr"])

        def batch_loss(step: int) -> torch.Tensor:
            batch = make_dataset(config["batch"], V, parents, config["alpha"], L, gen)
            return net.loss(theory.WindowCounts.from_tokens(batch.tokens, M, V), variant)

        def eval_loss() -> float:
            return float(net.loss(eval_counts, variant))

        def observe() -> dict[str, np.ndarray]:
            with torch.no_grad():
                return {k: v.cpu().numpy() for k, v in project(net.weights()).items()}

        with bar(int(steps[-1]), "sgd", unit="step") as progress:
            traj = train(net, batch_loss, optimizer, steps, observe, config["lr"],
                         on_step=lambda s: progress.update(1), eval_loss=eval_loss)
        traj.attrs["model"] = (f"simplified TF(M={M}, H={config['heads']}, d={V}, "
                               f"D={config['degree']}), plain SGD, {config['batch']} fresh "
                               f"sequences per step; loss on the {len(eval_counts)} "
                               "Monte-Carlo sequences")
        return traj
