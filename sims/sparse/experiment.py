"""Experiment `sparse`: head utilisation of trained transformers on sparse regression
(docs/sparse.md).

One run
1. trains a multi-layer multi-head network and, unless `single_head` is off, a
   separately trained single-head one of the same width. `format=interleaved`
   (default): a GPT-2-style decoder on the tokens x_1, y_1, ..., x_n, y_n, x_q with
   causal attention and the loss at every x token (each predicts its y from the
   examples before it), n = n_max per step, optionally with a curriculum over d and n.
   `format=concat`: one token (x_i, y_i) per example, the loss at the query only,
   n uniform in [n_min, n_max] per step;
2. measures head importance: the rise of the risk E (y_hat - y_q)^2 when one head is
   masked, per layer and head, normalised within a layer by the largest rise;
3. prunes: all heads of layer 1, only the top head of each later layer, and compares
   its risk with the full and the single-head network at each n in n_test and noise
   level in sigma2_test (the same fixed evaluation prompts for all three);
4. probes each residual stream linearly for the preprocessed features r * x and for
   the GD iterate (`probe_r2`);
5. measures the tuned preprocess-then-optimize estimator of `sparse-risk` at n_max
   on the same task: the network has converged when its risk is at most
   `converged_ratio` times that one.

The reduced flow against SGD on the linear stack is its own experiment,
`sparse-flow` (sims/sparse/flow_experiment.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import torch

from dynamics.errors import UsageError
from dynamics.fit import fit
from dynamics.plots import save_run_figure
from dynamics.store import open_store, read_run
from dynamics.tables import Headline
from dynamics.times import log_steps

from ..experiment import (
    F64,
    RUNTIME,
    Experiment,
    RunResult,
    check_device,
    generator,
    seeds,
)
from .config import SPARSE as SCHEMA
from .estimators import risk_samples, summarize
from .network import TransformerShape, build, labels
from .task import SparseBatch, sample_sparse


class SparseExperiment(Experiment):
    name = "sparse"
    headlines = (Headline("verdict", "verdict"),
                 Headline("final risk", "final_risk", "trained network, E(y_hat - y)^2"),
                 Headline("risk / preprocess-then-optimize risk", "risk_ratio_to_pto"),
                 Headline("converged", "converged"),
                 Headline("layer 1: all heads matter", "pattern.layer1_all_heads_matter"),
                 Headline("later layers: one head dominates", "pattern.later_one_head_dominates"),
                 Headline("pattern appears", "pattern.appears"),
                 Headline("probe R^2 per layer", "probe_r2"))
    schema = SCHEMA

    def validate(self, config: dict) -> None:
        check_device(config["device"])
        if config["s"] > config["d"]:
            raise UsageError(f"key 's': sparsity {config['s']} exceeds d = {config['d']}")
        if config["n_min"] > config["n_max"]:
            raise UsageError(f"key 'n_min': {config['n_min']} exceeds n_max = {config['n_max']}")
        if config["heads"] > config["d"]:
            raise UsageError(f"key 'heads': {config['heads']} layer-1 heads exceed d = "
                             f"{config['d']} coordinates to preprocess")
        if config["network"] == "standard" and config["width"] % config["heads"]:
            raise UsageError(f"key 'width': {config['width']} is not divisible by heads = "
                             f"{config['heads']}")
        if config["format"] == "interleaved":
            if config["network"] != "standard":
                raise UsageError("key 'network': the interleaved format trains the standard "
                                 "network; use format=concat for the linear stack")
            if max(config["n_test"]) > config["n_max"]:
                raise UsageError(f"key 'n_test': {max(config['n_test'])} exceeds n_max = "
                                 f"{config['n_max']}, the longest prompt with learned positions")
            if 0 < config["curriculum_d_start"] < config["s"]:
                raise UsageError(f"key 'curriculum_d_start': {config['curriculum_d_start']} "
                                 f"coordinates cannot hold s = {config['s']} nonzero entries")
        tokens = 2 * config["n_max"] + 1 if config["format"] == "interleaved" else config["n_max"]
        if config["steps"] * config["batch"] * tokens * config["width"] > 1e12:
            raise UsageError("key 'steps': the training would take days on a CPU")

    def memory(self, config: dict) -> dict[str, float]:
        """Peak bytes (float64; T tokens of the longest prompt: 2 n_max + 1 interleaved,
        n_max + 1 concat; Tt those of max(n_test); K layers, H heads, W width, r mlp_ratio,
        C = d + H + 1 channels of the linear stack):
        - networks: the analysed one and its single-head twin, with gradients and two Adam
          moments (standard: K (4 + 2r) W^2 + (d + 2 + T) W each; linear: 2 K H C^2);
        - training minibatch with its autograd graph, 3 x batch T K (F + H T), F the
          per-token activations of a layer (standard (10 + 3r) W, linear 3 C);
        - evaluation grid: every (sigma2_test, n_test) prompt set, eval_samples nt (d + 2)
          each (nt = max(n_test) + 1), and a forward pass, 2 eval_samples Tt (F + H Tt);
        - probes: 2 probe_samples T ((d + 2) + F + H T + 3 (K + 1) R), R the residual
          width (standard W, linear C): every layer's stream in float64 for least squares;
        - the preprocess-then-optimize reference (as sparse-risk at one n):
          reference_trials (6 (n_max + 1) d + 8 d^2)."""
        d, K, H, W, r = (config[k] for k in ("d", "layers", "heads", "width", "mlp_ratio"))
        C = d + H + 1
        interleaved = config["format"] == "interleaved"
        T = 2 * config["n_max"] + 1 if interleaved else config["n_max"] + 1
        Tt = 2 * max(config["n_test"]) + 1 if interleaved else max(config["n_test"]) + 1
        linear = config["network"] == "linear"
        net = 2 * K * H * C * C if linear else K * (4 + 2 * r) * W * W + (d + 2 + T) * W
        F, R = (3 * C, C) if linear else ((10 + 3 * r) * W, W)
        E = config["eval_samples"]
        sets = len(config["n_test"]) * (len(config["sigma2_test"]) + 1)
        return {
            "runtime": RUNTIME,
            "networks": F64 * 2 * 4 * net,
            "training minibatch": 3 * F64 * config["batch"] * T * K * (F + H * T),
            "evaluation grid": F64 * E * (sets * (max(config["n_test"]) + 1) * (d + 2)
                                          + 2 * Tt * (F + H * Tt)),
            "probes": 2 * F64 * config["probe_samples"] * T * (d + 2 + F + H * T
                                                               + 3 * (K + 1) * R),
            "reference": F64 * config["reference_trials"] * (6 * (config["n_max"] + 1) * d
                                                             + 8 * d * d),
        }

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        if not sgd:
            raise UsageError("sparse trains networks; it cannot run with --no-sgd")
        seed_net, seed_single, seed_train, seed_eval, seed_probe, seed_ref = seeds(
            config["seed"], 6)
        seconds = {}
        start = time.perf_counter()
        shape = TransformerShape(config["d"], config["layers"], config["heads"],
                                 config["width"], config["mlp_ratio"])
        net, curve = train_network(shape, config, seed_net, seed_train, "full")
        single = None
        if config["single_head"] and config["heads"] > 1:
            single, _ = train_network(replace(shape, heads=1), config, seed_single, seed_train,
                                      "single_head")
        seconds["networks"] = time.perf_counter() - start
        start = time.perf_counter()
        analysis = analyse(net, single, config, seed_eval, seed_probe)
        seconds["analysis"] = time.perf_counter() - start
        summary, extra = analysis.summary, analysis.extra
        extra["training"] = curve
        if config["reference_trials"]:
            start = time.perf_counter()
            summary.update(convergence(summary["risk_full"][-1], config, seed_ref))
            seconds["reference"] = time.perf_counter() - start
        summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
        axes = {"pruning": ("sigma2_test", "n_test"), "training": ("step",)}
        return RunResult({}, summary, extra, {k: v for k, v in axes.items() if k in extra})

    def plot(self, path: str, run_id: str, out: str | None = None) -> str:
        """Heat map of head importance, risk against n (full, pruned, single head; one line
        style per noise level)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        run_id, attrs, _ = read_run(path, run_id)
        with open_store(path) as fh:
            run = fh["runs"][run_id]
            data = {g: {k: v[()] for k, v in run[g].items()}
                    for g in ("importance", "pruning") if g in run}
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        if "importance" in data:
            imp = data["importance"]["normalised"]
            image = axes[0].imshow(imp, cmap="viridis", vmin=min(0.0, imp.min()), vmax=1.0)
            axes[0].set_xticks(range(imp.shape[1]), [f"h{h + 1}" for h in range(imp.shape[1])])
            axes[0].set_yticks(range(imp.shape[0]), [f"layer {i + 1}" for i in range(imp.shape[0])])
            for (i, j), value in np.ndenumerate(imp):
                axes[0].text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                             color="w" if value < 0.6 else "k")  # readable on viridis
            fig.colorbar(image, ax=axes[0], fraction=0.046).set_label(
                "risk rise / largest in the layer")
            axes[0].set_xlabel("head")
            axes[0].set_ylabel("layer")
            axes[0].set_title("head importance (risk rise / layer max)", fontsize=9)
        if "pruning" in data:
            prune = data["pruning"]
            styles = ["-", "--", ":", "-."]
            for i, noise in enumerate(prune["sigma2_test"]):
                for name, color in (("full", "C0"), ("pruned", "C1"), ("single_head", "C2")):
                    axes[1].errorbar(prune["n_test"], prune[f"risk_{name}"][i],
                                     yerr=2 * prune[f"stderr_{name}"][i], ls=styles[i % 4],
                                     color=color, marker="o", ms=3, capsize=2,
                                     label=f"{name}, sigma2={noise:g}")
            axes[1].set_yscale("log")
            axes[1].set_xlabel("context length n")
            axes[1].set_ylabel("risk E(y_hat - y_q)^2")
            axes[1].set_title("risk, +-2 stderr; line style: noise level", fontsize=9)
            axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                           frameon=False)
        fig.suptitle(f"{run_id} ({attrs.get('experiment')}, status {attrs.get('status')})",
                     fontsize=9)
        return save_run_figure(fig, path, run_id, out)


# ---------------------------------------------------------------------------
# Training


def eval_risk(net, batch: SparseBatch, head_mask=None) -> tuple[float, float]:
    """Mean and standard error of (y_hat - y_q)^2 over a batch of prompts."""
    with torch.no_grad():
        err = (net(net.encode(batch), head_mask) - batch.yq) ** 2
    return err.mean().item(), (err.std() / err.numel() ** 0.5).item()


def curriculum(step: int, config: dict) -> tuple[int, int]:
    """(coordinates of x in use, examples per prompt) at a training step of the interleaved
    format: d and n_max without a curriculum; otherwise the starts, plus one coordinate and
    two examples every curriculum_interval steps, up to d and n_max."""
    grown = step // config["curriculum_interval"]
    d_used = min(config["d"], config["curriculum_d_start"] + grown) \
        if config["curriculum_d_start"] else config["d"]
    n_used = min(config["n_max"], config["curriculum_n_start"] + 2 * grown) \
        if config["curriculum_n_start"] else config["n_max"]
    return d_used, n_used


def sample_truncated(batch: int, n: int, d_used: int, config: dict, gen: torch.Generator,
                     dtype: torch.dtype) -> SparseBatch:
    """Prompts in dimension d whose x (and beta) are zero beyond the first d_used
    coordinates (the curriculum's smaller problems in the full network's input)."""
    b = sample_sparse(batch, n, d_used, config["s"], config["sigma2"], gen, dtype=dtype,
                      device=config["device"])
    pad = config["d"] - d_used
    if pad == 0:
        return b
    wide = torch.nn.functional.pad
    return SparseBatch(x=wide(b.x, (0, pad)), y=b.y, xq=wide(b.xq, (0, pad)), yq=b.yq,
                       beta=wide(b.beta, (0, pad)), support=wide(b.support, (0, pad)))


def learning_rate(step: int, config: dict) -> float:
    """net_lr, or with the cosine schedule: linear warm-up over 2% of the steps, then
    cosine decay to 0 at the last step."""
    peak, total = config["net_lr"], config["steps"]
    if config["lr_schedule"] == "constant":
        return peak
    warm = max(1, total // 50)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train_network(shape: TransformerShape, config: dict, seed_init: int, seed_data: int,
                  name: str):
    """Train a network of `shape` (config 'format', 'network', 'optimizer', 'net_lr',
    'lr_schedule', 'steps', 'batch'); `name` names its checkpoint.

    interleaved: each step draws `batch` prompts of n_max examples (or the curriculum's
    n and d), the loss is the mean squared error of the predictions at all x tokens.
    concat: each step draws one n uniform in [n_min, n_max], the loss is at the query.
    Returns the network and its training curve {"step", "risk"}: the query risk at
    log-spaced steps on fixed prompts with n = n_max.
    """
    device = config["device"]
    torch.manual_seed(seed_init)
    net = build(config["network"], shape, token_format=config["format"],
                max_points=config["n_max"] + 1).to(device)
    if config["network"] == "linear":
        net.init_normal(config["init_std"], generator(seed_init, device))
    dtype = next(net.parameters()).dtype
    gen = generator(seed_data, device)
    probe = sample_sparse(config["eval_samples"], config["n_max"], config["d"], config["s"],
                          config["sigma2"], generator(seed_data + 1, device), dtype=dtype,
                          device=device)
    interleaved = config["format"] == "interleaved"

    def batch_loss(step: int) -> torch.Tensor:
        if interleaved:
            d_used, n = curriculum(step, config)
            batch = sample_truncated(config["batch"], n, d_used, config, gen, dtype)
            return ((net.predict_all(net.encode(batch)) - labels(batch)) ** 2).mean()
        n = int(torch.randint(config["n_min"], config["n_max"] + 1, (1,), generator=gen,
                              device=device))
        batch = sample_sparse(config["batch"], n, config["d"], config["s"], config["sigma2"],
                              gen, dtype=dtype, device=device)
        return ((net(net.encode(batch)) - batch.yq) ** 2).mean()

    traj = fit(net, batch_loss, dict, log_steps(config["steps"], 30),
               optimizer=config["optimizer"], lr=config["net_lr"],
               model=f"{config['network']} network, {config['optimizer']}",
               eval_loss=lambda: eval_risk(net, probe)[0], name=name,
               label=f"{config['format']} H={shape.heads}", generators=[gen],
               lr_at=lambda step: learning_rate(step, config)).trajectory
    if traj.status != "complete":
        raise UsageError(f"key 'net_lr': training of the H={shape.heads} network diverged")
    return net, {"step": traj.step, "risk": traj.loss}


def convergence(risk_full: float, config: dict, seed: int) -> dict:
    """The tuned preprocess-then-optimize risk of `sparse-risk` at n_max (10 GD steps, tuned
    on reference_trials prompts, measured on as many fresh ones) and whether the network's
    risk at n_max is within converged_ratio of it."""
    samples = risk_samples(config["d"], config["s"], config["sigma2"], [config["n_max"]], 10,
                           config["reference_trials"], config["reference_trials"],
                           generator(seed, config["device"]))
    table = summarize(samples, config["d"], config["sigma2"])
    reference = {name: table["risk"][name][0] for name in ("pto", "ridge", "gd", "lasso")}
    ratio = risk_full / reference["pto"]
    return {"reference_risk": reference,
            "reference_stderr": {name: table["stderr"][name][0] for name in reference},
            "risk_ratio_to_pto": ratio, "converged": bool(ratio <= config["converged_ratio"])}


# ---------------------------------------------------------------------------
# Analysis


class Analysis:
    """Head importance, pruning, probes: `summary` (JSON) and `extra` (datasets)."""

    def __init__(self, summary: dict, extra: dict):
        self.summary, self.extra = summary, extra


def analyse(net, single, config: dict, seed_eval: int, seed_probe: int) -> Analysis:
    """Importance, pruning and probes of `net`; `single` (or None) is the single-head
    network of the comparison."""
    device = config["device"]
    dtype = next(net.parameters()).dtype
    L, H = config["layers"], config["heads"]
    gen = generator(seed_eval, device)
    grid = {(s2, n): sample_sparse(config["eval_samples"], n, config["d"], config["s"], s2, gen,
                                   dtype=dtype, device=device)
            for s2 in config["sigma2_test"] for n in config["n_test"]}
    train_noise = [grid[(config["sigma2"], n)] if (config["sigma2"], n) in grid else
                   sample_sparse(config["eval_samples"], n, config["d"], config["s"],
                                 config["sigma2"], gen, dtype=dtype, device=device)
                   for n in config["n_test"]]

    def pooled_risk(head_mask=None) -> float:
        """Risk averaged over n_test at the training noise."""
        return float(np.mean([eval_risk(net, b, head_mask)[0] for b in train_noise]))

    base = pooled_risk()
    rise = np.zeros((L, H))
    for layer in range(L):
        for head in range(H):
            mask = torch.ones((L, H), dtype=dtype, device=device)
            mask[layer, head] = 0.0
            rise[layer, head] = pooled_risk(mask) - base
    importance = normalise_within_layers(rise)
    prune = torch.ones((L, H), dtype=dtype, device=device)
    for layer in range(1, L):
        prune[layer] = 0.0
        prune[layer, int(np.argmax(rise[layer]))] = 1.0

    models = {"full": (net, None), "pruned": (net, prune)}
    if single is not None:
        models["single_head"] = (single, None)
    risks = {name: [] for name in models}
    errors = {name: [] for name in models}
    for s2 in config["sigma2_test"]:
        for name, (model, mask) in models.items():
            row = [eval_risk(model, grid[(s2, n)], mask) for n in config["n_test"]]
            risks[name].append([mean for mean, _ in row])
            errors[name].append([se for _, se in row])
    at_train_noise = {name: [eval_risk(model, b, mask)[0] for b in train_noise]
                      for name, (model, mask) in models.items()}

    probes = probe_layers(net, config, seed_probe)
    pattern = pattern_verdict(importance, config["importance_floor"], config["dominance"])
    summary = {
        "n_test": list(config["n_test"]),
        **{f"risk_{name}": values for name, values in at_train_noise.items()},
        "head_importance": importance.tolist(),
        "importance_rise": rise.tolist(),
        "pruning": {"n_test": config["n_test"], "sigma2_test": config["sigma2_test"],
                    "kept_heads": prune.cpu().numpy().astype(int).tolist(),
                    "risk": risks, "stderr": errors},
        "final_risk": base,
        "probe_r2": probes,
        "pattern": pattern,
        "verdict": "appears" if pattern["appears"] else "does not appear",
    }
    extra = {
        "importance": {"normalised": importance, "rise": rise},
        "pruning": {"n_test": np.asarray(config["n_test"]),
                    "sigma2_test": np.asarray(config["sigma2_test"]),
                    **{f"risk_{k}": np.asarray(v) for k, v in risks.items()},
                    **{f"stderr_{k}": np.asarray(v) for k, v in errors.items()}},
        "probes": {name: np.asarray(values) for name, values in probes.items()},
    }
    return Analysis(summary, extra)


def normalise_within_layers(rise: np.ndarray) -> np.ndarray:
    """(L, H) rises -> divided by the largest rise of each layer (rows with no positive
    rise stay as they are)."""
    top = rise.max(axis=1, keepdims=True)
    return np.where(top > 0, rise / np.where(top > 0, top, 1.0), rise)


def pattern_verdict(importance: np.ndarray, floor: float, dominance: float) -> dict:
    """Whether the paper's pattern shows: every layer-1 head >= floor, and in each later
    layer every head but the top one <= dominance (importance normalised by the layer max)."""
    first = importance[0]
    later = [sorted(row)[-2] if len(row) > 1 else 0.0 for row in importance[1:]]
    layer1 = bool(first.min() >= floor)
    dominant = bool(all(v <= dominance for v in later))
    return {"layer1_min": float(first.min()), "later_second": [float(v) for v in later],
            "layer1_all_heads_matter": layer1, "later_one_head_dominates": dominant,
            "appears": layer1 and dominant}


def probe_r2(fit_states: torch.Tensor, fit_targets: torch.Tensor, score_states: torch.Tensor,
             score_targets: torch.Tensor) -> float:
    """R^2 on (score_states, score_targets) of the least-squares affine map fitted on the
    fit pair; states (N, R), targets (N, k); R^2 pools the k target columns. Solved by
    numpy's SVD least squares, which gives the same bits wherever the arrays sit in memory
    (torch.linalg.lstsq on the CPU does not), so a resumed run repeats it exactly."""
    def affine(states: torch.Tensor) -> np.ndarray:
        states = states.detach().cpu().to(torch.float64).numpy()
        return np.concatenate([states, np.ones_like(states[:, :1])], axis=1)

    fit_y = fit_targets.detach().cpu().to(torch.float64).numpy()
    score_y = score_targets.detach().cpu().to(torch.float64).numpy()
    coef = np.linalg.lstsq(affine(fit_states), fit_y, rcond=None)[0]
    resid = ((score_y - affine(score_states) @ coef) ** 2).sum()
    total = ((score_y - score_y.mean(0)) ** 2).sum()
    return float(1 - resid / total)


def gd_iterates(batch: SparseBatch, steps: int) -> list[torch.Tensor]:
    """beta_1, ..., beta_steps (each (B, d)) of gradient descent from 0 on the context's
    squared loss (1/2n)|X beta - y|^2 with the step 1 / (1 + sqrt(d / n))^2 (the inverse
    of the edge of the Marchenko-Pastur spectrum of X^T X / n)."""
    n, d = batch.x.shape[1], batch.x.shape[2]
    eta = 1.0 / (1.0 + math.sqrt(d / n)) ** 2
    gram = batch.x.transpose(1, 2) @ batch.x / n
    r = torch.einsum("bnd,bn->bd", batch.x, batch.y) / n
    beta, out = torch.zeros_like(r), []
    for _ in range(steps):
        beta = beta + eta * (r - torch.einsum("bde,be->bd", gram, beta))
        out.append(beta)
    return out


def probe_targets(batch: SparseBatch, token_format: str, layers: int) -> tuple[list, list]:
    """What each residual stream is probed for, as (positions, target) pairs:

    - features: r * x at the x tokens. interleaved (causal): at x_i, i >= 2 (and the
      query), r_i = (1/(i-1)) sum_{j<i} y_j x_j, what the tokens before it allow;
      concat: every token, r = (1/n) X^T y;
    - GD iterate: beta_k at the query token for the stream after layer k (the input
      stream and layer 1 are probed for beta_1).
    Returns (feature positions (P,), targets (B, P, d)) and, per stream, (query position,
    target (B, 1, d)).
    """
    n = batch.x.shape[1]
    x_all = torch.cat([batch.x, batch.xq[:, None]], dim=1)  # (B, n + 1, d)
    if token_format == "interleaved":
        running = torch.cumsum(batch.y[..., None] * batch.x, dim=1)  # sums over j <= i
        counts = torch.arange(1, n + 1, dtype=x_all.dtype, device=x_all.device)[None, :, None]
        r_before = running / counts  # r over the examples before x_{i+1}
        positions = torch.arange(2, 2 * n + 1, 2)  # tokens x_2, ..., x_n, x_q
        features = r_before * x_all[:, 1:]
        query = 2 * n
    else:
        r = torch.einsum("bnd,bn->bd", batch.x, batch.y) / n
        positions = torch.arange(n + 1)
        features = r[:, None] * x_all
        query = n
    iterates = gd_iterates(batch, layers)
    gd = [(query, iterates[max(k, 1) - 1][:, None]) for k in range(layers + 1)]
    return (positions, features), gd


def probe_layers(net, config: dict, seed: int) -> dict[str, list[float]]:
    """R^2 of linear probes (with bias) of each residual stream (input, then after each
    layer) for the preprocessed features and for the GD iterate (`probe_targets`), fitted on
    probe_samples prompts with n = n_max and scored on as many fresh ones."""
    device = config["device"]
    dtype = next(net.parameters()).dtype
    gen = generator(seed, device)
    halves = [sample_sparse(config["probe_samples"], config["n_max"], config["d"], config["s"],
                            config["sigma2"], gen, dtype=torch.float64, device=device)
              for _ in range(2)]
    streams, targets = [], []
    for batch in halves:
        with torch.no_grad():
            streams.append(net.hidden(net.encode(batch).to(dtype)))
        targets.append(probe_targets(batch, config["format"], config["layers"]))
    out = {"features": [], "gd_iterate": []}
    for k in range(len(streams[0])):
        (pos, feat_fit), gd_fit = targets[0]
        (_, feat_score), gd_score = targets[1]
        flat = [s[k][:, pos].reshape(-1, s[k].shape[-1]) for s in streams]
        out["features"].append(probe_r2(flat[0], feat_fit.reshape(-1, feat_fit.shape[-1]),
                                        flat[1], feat_score.reshape(-1, feat_score.shape[-1])))
        (q, fit), (_, score) = gd_fit[k], gd_score[k]
        out["gd_iterate"].append(probe_r2(streams[0][k][:, q], fit[:, 0],
                                          streams[1][k][:, q], score[:, 0]))
    return out
