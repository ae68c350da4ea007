"""Experiment `induction`: induction heads on in-context n-gram Markov chains (docs/theory/induction.md).

One run, from the authors' start (w_plus on each head's own offset, C_S = c_init, a = a_init):
- "ode": the symbolic three-stage model (reduced_models/induction.py, docs/induction.md);
- "population": gradient flow of the simplified network's loss on a fixed Monte-Carlo
  sample of `samples` chains and sequences (the same sample the ode is averaged over);
- "sgd": the simplified network TF(M, H, d, D), plain SGD on fresh sequences each step;
- "corrected" (key `corrected`, with flows and SGD): the population flow with SGD's growth
  of |C| (minibatch noise and edge of stability, reduced_models.induction.SgdSelectorDrift);
- "full" (`model=full`): the full network (sims/induction/full_network.py), projected onto
  (w, p, a), trained on the same minibatches as "sgd".
All start at the same point; t = lr x step (G = I); the schedule is "joint" or
"sequential" (sims/induction/training.py). The summary holds the chi-square mutual
information of every candidate set, S*, the stage figures and times; the group
"generalise" the trained networks' losses at other L and alpha (sims/induction/generalise.py).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from dynamics.errors import UsageError
from dynamics.progress import bar
from dynamics.tables import Headline
from reduced_models import induction as theory
from reduced_models.markov import (
    best_set,
    expected_chi2_mis,
    gih_optimal_a,
    set_label,
)
from reduced_models.markov_chains import make_dataset

from ..experiment import F64, RUNTIME, Experiment, RunResult, comparisons, generator, seeds
from .config import INDUCTION as SCHEMA
from .full_network import FullInductionNet, position_law, project_full
from .generalise import evaluate, limit_predictor, network_predictor
from .network import SimplifiedInductionNet, project
from .stages import edge_of_stability, stage_figures
from .training import flow_segments, schedule, train_schedule

MAX_STEPS = 2_000_000
DRIFT_SAMPLES = 1000  # sequences over which SGD's gradient moments are averaged (`corrected`)


class InductionExperiment(Experiment):
    name = "induction"
    headlines = (Headline("winning parent set S*", "S_star", "largest chi-square MI"),
                 Headline("classifier optimum a*", "limit.a_optimum"),
                 Headline("loss at a*", "limit.loss_at_optimum"))
    schema = SCHEMA

    def validate(self, config: dict) -> None:
        if config["heads"] > config["window"] and not config["shifted"]:
            raise UsageError(f"key 'heads': {config['heads']} heads need window >= heads "
                             f"(head h starts on offset h), window is {config['window']}")
        if config["degree"] > config["heads"]:
            raise UsageError(f"key 'degree': must be <= heads ({config['heads']})")
        if config["shifted"] and config["model"] == "full":
            raise UsageError("key 'shifted': the full network (model=full) reads offsets "
                             "1..window in every head")
        if config["full_batch"] and not config["train_size"]:
            raise UsageError("key 'full_batch': needs a fixed training set (train_size > 0)")
        span = shape_of(config).span
        if config["L"] < max(span, max(config["parents"])):
            raise UsageError("key 'L': must be at least the largest offset a head reads "
                             f"({span}) and max(parents)")
        if len(set(config["parents"])) != len(config["parents"]):
            raise UsageError("key 'parents': offsets must be distinct")
        for stage in schedule(config):
            steps = stage.length / stage.lr
            if steps > MAX_STEPS:
                key = "t_max" if stage.name == "joint" else f"t_{stage.name}"
                raise UsageError(f"key '{key}': {steps:.3g} SGD steps exceed {MAX_STEPS}")
        if config["test_samples"] and min(config["L_test"]) <= max(span, max(config["parents"])):
            raise UsageError("key 'L_test': every test length must exceed the largest offset "
                             "a head reads and max(parents)")
        size = (config["vocab"] + 1) ** span * config["vocab"]
        for key in ("samples", "batch") + (("train_size",) if config["full_batch"] else ()):
            if config[key] * size > 5e7:
                raise UsageError(f"key '{key}': needs about {8e-9 * config[key] * size:.1f} GB")

    def memory(self, config: dict) -> dict[str, float]:
        """Peak bytes (float64; V vocab, P = (V + 1)^window patterns, K = V^len(parents)
        kernel rows, S candidate sets, T = records + 1): per sequence of the Monte-Carlo
        sample (and, with autograd, of an SGD batch) its tokens and codes 3 (L + 1), its
        kernel K V and its window counts 4 P V; the losses of all records at once,
        3 T samples (P + V) (T per stage of the schedule); the chi-square MI table,
        mi_chains (K V + S); SGD's per-sequence selector gradients (`corrected`),
        3 S min(samples, DRIFT_SAMPLES) P; a test point of the generalisation, test_samples sequences of
        max(L_test) + 1 tokens with their window counts; a fixed training set, train_size
        sequences with their kernels."""
        V, L1 = config["vocab"], config["L"] + 1
        T = (config["records"] + 1) * (1 if config["schedule"] == "joint" else 3)
        M = shape_of(config).span
        P, K = (V + 1) ** M, V ** len(config["parents"])
        S = sum(math.comb(M, k) for k in range(1, min(config["degree"], M) + 1))
        batch = config["train_size"] if config["full_batch"] else config["batch"]
        per_sequence = 3 * L1 + K * V + 4 * P * V
        per_test = 3 * (max(config["L_test"]) + 1) + K * V + 4 * P * V
        return {"runtime": RUNTIME,
                "Monte-Carlo sample": F64 * config["samples"] * per_sequence,
                "SGD batch": 3 * F64 * batch * per_sequence,
                "fixed training set": F64 * config["train_size"] * (L1 + K * V),
                "losses of all records": 3 * F64 * T * config["samples"] * (P + V),
                "chi-square MI": F64 * config["mi_chains"] * (K * V + S),
                "selector gradients": 3 * F64 * S * min(config["samples"], DRIFT_SAMPLES) * P,
                "test sequences": F64 * config["test_samples"] * per_test}

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        shape = shape_of(config)
        V = shape.vocab
        parents, variant = tuple(sorted(config["parents"])), config["loss"]
        seed_mc, seed_sgd, seed_mi, seed_full, seed_test = seeds(config["seed"], 5)
        seconds = {}
        start = time.perf_counter()
        mi, mi_standard = chi2_information(config, seed_mi)
        s_star = best_set(mi)
        seconds["chi2_mi"] = time.perf_counter() - start

        setup = FlowSetup(config, seed_mc)
        stages = schedule(config)
        grids, masks = flow_segments(stages, setup.manifold, config["records"])
        selector_lr = next(s.lr for s in stages if "selector" in s.blocks)
        solver = {"rtol": config["rtol"], "atol": config["atol"]}
        trajs, parts, drift = {}, None, None
        if ode:
            symbolic, parts = theory.three_stage_model(setup.sample.tokens, shape=shape,
                                                       s_star=s_star, variant=variant)
            population = theory.population_model(setup.counts, shape=shape, variant=variant)
            flows = {"ode": (symbolic, None), "population": (population, None)}
            if sgd and config["corrected"]:
                drift = theory.SgdSelectorDrift(setup.drift_counts, shape=shape, variant=variant,
                                                lr=selector_lr, batch=config["batch"])
                flows["corrected"] = (population, drift)
            for name, (model, radial) in flows.items():
                start = time.perf_counter()
                trajs[name] = integrate_named(name, model, setup.state0, grids, masks, radial,
                                              solver)
                seconds[name] = time.perf_counter() - start
            if drift is not None:
                trajs["corrected"].attrs["radial"] = (
                    f"d ln|C|/dt of SGD at lr {selector_lr}, batch {config['batch']}: "
                    "minibatch noise and edge of stability (SgdSelectorDrift)")
        nets = {}
        if sgd:
            start = time.perf_counter()
            nets["sgd"] = SimplifiedInductionNet(shape=shape)
            nets["sgd"].load(setup.manifold.lift(setup.state0))
            trajs["sgd"] = train_network(nets["sgd"], config, stages, setup.counts,
                                         lambda: project(nets["sgd"].weights()),
                                         generator(seed_sgd), "sgd")
            seconds["sgd"] = time.perf_counter() - start
            if config["model"] == "full":
                start = time.perf_counter()
                nets["full"] = FullInductionNet(shape=shape)
                nets["full"].start(setup.manifold.lift(setup.state0), config["qk_init"],
                                   generator(seed_full))
                law = position_law(setup.counts)
                trajs["full"] = train_network(nets["full"], config, stages, setup.counts,
                                              lambda: project_full(nets["full"], law),
                                              generator(seed_sgd), "full")
                seconds["full"] = time.perf_counter() - start

        labels = [set_label(s) for s in setup.sets]
        a_opt = gih_optimal_a(setup.sample.tokens, s_star, V, variant)
        a_grid = np.linspace(0.0, max(12.0, 1.5 * a_opt), 61)
        limit_fn = theory.limit_loss_function(setup.sample.tokens, s_star, V, variant)
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
            summary["copier_error"] = copier_error(trajs["ode"], trajs["population"], s_star)
        for name, tr in trajs.items():
            tr.param_attrs["p"] = {"labels": labels}
            summary[name] = tr.summary()
            summary[name]["stages"] = stage_figures(tr, labels, s_star, summary["chi2_mi"],
                                                    parts.gains if parts else None, a_opt,
                                                    shape.own_offset_index())
        if "sgd" in trajs:
            probe = drift or theory.SgdSelectorDrift(setup.drift_counts, shape=shape,
                                                     variant=variant, lr=selector_lr,
                                                     batch=config["batch"])
            last = max(i for i, s in enumerate(stages) if "selector" in s.blocks)
            summary["sgd"]["stages"]["edge_of_stability"] = edge_of_stability(
                trajs["sgd"], probe, until=sum(s.length for s in stages[: last + 1]))
        extra = {"limit_loss": {"a": a_grid, "loss": limit}}
        if nets and config["test_samples"]:
            start = time.perf_counter()
            predictors = {name: network_predictor(net, shape.span, V)
                          for name, net in nets.items()}
            predictors["limit"] = limit_predictor(s_star, float(trajs["sgd"].params["a"][-1]), V)
            extra["generalise"] = evaluate(predictors, V, parents, config["L_test"],
                                           config["alpha_test"], config["test_samples"],
                                           variant, generator(seed_test))
            summary["generalise"] = {k: v.tolist() for k, v in extra["generalise"].items()}
            seconds["generalise"] = time.perf_counter() - start
        summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
        summary["comparison"] = comparisons(
            trajs, [("sgd", "population"), ("ode", "population"), ("sgd", "ode"),
                    ("sgd", "corrected"), ("full", "sgd"), ("full", "population")])
        return RunResult(trajs, summary, extra)

    def plot(self, path: str, run_id: str, out: str | None = None) -> str:
        from .plots import plot_induction  # matplotlib only when a figure is drawn

        return plot_induction(path, run_id, out)


def shape_of(config: dict) -> theory.InductionShape:
    """The simplified network's shapes and architecture options from a config."""
    return theory.InductionShape(vocab=config["vocab"], window=config["window"],
                                 heads=config["heads"], degree=config["degree"],
                                 empty_set=config["empty_set"], shifted=config["shifted"])


def copier_error(ode, population, s_star: tuple[int, ...]) -> dict[str, float]:
    """Per head h of S* (heads named by the offset they start on): |dw_ode - dw_pop| / |dw_pop|,
    dw = w_h(end) - w_h(0) over the head's logits (Euclidean norms), at the last time both
    flows reached."""
    end = min(len(ode.t), len(population.t)) - 1
    out = {}
    for h in s_star:
        if h > ode.params["w"].shape[1]:
            continue
        moves = [tr.params["w"][end, h - 1] - tr.params["w"][0, h - 1] for tr in (ode, population)]
        out[str(h)] = float(np.linalg.norm(moves[0] - moves[1]) / np.linalg.norm(moves[1]))
    return out


def chi2_information(config: dict, seed: int) -> tuple[dict, dict]:
    """The modified and the standard chi-square MI of every candidate set of offsets
    1..span (the largest offset a head reads) with |S| <= degree: {label: (mean, stderr)}
    each, over the same mi_chains kernels."""
    args = (config["vocab"], tuple(sorted(config["parents"])), config["alpha"],
            shape_of(config).span, config["degree"], config["mi_chains"])
    modified, standard = expected_chi2_mis(*args, generator(seed), (True, False))
    return modified, standard


class FlowSetup:
    """What the flows share: the Monte-Carlo sample (`samples` sequences at L), its window
    counts (and those of its first DRIFT_SAMPLES sequences, over which SGD's per-sequence
    selector gradients are averaged), the candidate sets of heads, the manifold and the
    authors' start state (P,)."""

    def __init__(self, config: dict, seed: int):
        shape = shape_of(config)
        V, span = shape.vocab, shape.span
        self.sample = make_dataset(config["samples"], V, tuple(sorted(config["parents"])),
                                   config["alpha"], config["L"], generator(seed))
        self.counts = theory.WindowCounts.from_tokens(self.sample.tokens, span, V)
        self.drift_counts = theory.WindowCounts.from_tokens(
            self.sample.tokens[:DRIFT_SAMPLES], span, V)
        self.sets = shape.sets
        self.manifold = theory.manifold(shape=shape)
        self.state0 = self.manifold.pack(theory.standard_start(
            shape=shape, w_plus=config["w_plus"], w_minus=config["w_minus"],
            c_init=config["c_init"], a_init=config["a_init"]))


def integrate_named(name: str, model, state0: torch.Tensor, grids: list, masks: list, radial,
                    solver: dict):
    """One flow through the schedule's segments (log-selector chart), with a progress bar."""
    with bar(float(grids[-1][-1]), f"{name} flow", unit="t") as progress:
        def advance(now, progress=progress):
            progress.update(max(now - progress.n, 0.0))
        return theory.integrate_log_selector(model, state0, grids, project, active=masks,
                                             radial=radial, on_chunk=advance, **solver)


def train_network(net, config: dict, stages: list, eval_counts, observe, gen, name: str):
    """Plain SGD through the schedule, on fresh sequences, minibatches of one fixed set
    (key train_size) or the whole fixed set every step (full_batch: exact GD); the loss
    recorded on eval_counts."""
    V, L, variant = config["vocab"], config["L"], config["loss"]
    M = shape_of(config).span
    parents = tuple(sorted(config["parents"]))

    # the simplified network's "ce" loss reads only TargetCounts of a batch
    lean = variant == "ce" and isinstance(net, SimplifiedInductionNet)
    counts_of = theory.TargetCounts.from_tokens if lean else theory.WindowCounts.from_tokens
    fixed = (make_dataset(config["train_size"], V, parents, config["alpha"], L, gen).tokens
             if config["train_size"] else None)
    whole = (counts_of(fixed, M, V) if config["full_batch"] else None)

    def batch_loss() -> torch.Tensor:
        if whole is not None:
            return net.loss(whole, variant)
        if fixed is None:
            tokens = make_dataset(config["batch"], V, parents, config["alpha"], L, gen).tokens
        else:
            tokens = fixed[torch.randint(len(fixed), (config["batch"],), generator=gen)]
        return net.loss(counts_of(tokens, M, V), variant)

    def eval_loss() -> float:
        return float(net.loss(eval_counts, variant))

    def read() -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {k: v.cpu().numpy() for k, v in observe().items()}

    kind = "simplified" if isinstance(net, SimplifiedInductionNet) else "full"
    source = (f"drawn from a fixed set of {config['train_size']}" if config["train_size"]
              else "fresh")
    per_step = (f"full-batch GD on a fixed set of {config['train_size']} sequences"
                if config["full_batch"] else f"{config['batch']} sequences per step, {source}")
    options = "".join(f", {k}" for k in ("empty_set", "shifted") if config[k])
    model = (f"{kind} TF(M={config['window']}, H={config['heads']}, d={V}, "
             f"D={config['degree']}{options}), plain SGD ({config['schedule']}), "
             f"{per_step}; loss on the {len(eval_counts)} Monte-Carlo sequences")
    return train_schedule(net, stages, config["records"], batch_loss, read, eval_loss,
                          name=name, model=model, generators=[gen])
