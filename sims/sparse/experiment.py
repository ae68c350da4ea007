"""Experiment `sparse`: head utilisation and preprocess-then-optimize (THEORY.md C).

One run
1. trains a multi-layer multi-head network (`network`: standard softmax
   blocks or the linear-attention stack) and a single-head one of the same
   size, on prompts with n drawn uniformly from [n_min, n_max] each step;
2. measures head importance: the rise of the risk E (y_hat - y_q)^2 when one
   head is masked, per layer and head, normalised within a layer by the
   largest rise (the top head of a layer has 1);
3. prunes: all heads of layer 1, only the top head of each later layer, and
   compares its risk with the full and the single-head network at each n in
   n_test and noise level in sigma2_test (fixed evaluation prompts, the same
   for all three);
4. probes each layer's residual stream linearly (least squares with a bias,
   fitted and scored on separate prompts) for the reweighted features
   r * x (r = (1/n) X^T y), reporting R^2.

The reduced flow against SGD on the linear stack is its own experiment,
`sparse-flow` (sims/sparse/flow_experiment.py).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from dynamics.config import Key, Schema
from dynamics.errors import UsageError
from dynamics.plots import save_run_figure
from dynamics.progress import bar
from dynamics.sgd import train
from dynamics.store import open_store, read_run
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
from .network import LinearAttentionStack, TransformerShape, build, tokens
from .task import sample_sparse

SCHEMA = Schema((
    Key("d", "int", 16, "covariate dimension", low=1),
    Key("s", "int", 3, "sparsity of beta (random support, N(0,1) values)", low=0),
    Key("sigma2", "float", 0.25, "label-noise variance of training", low=0.0),
    Key("n_min", "int", 8, "smallest training context length (uniform per step)", low=1),
    Key("n_max", "int", 32, "largest training context length", low=1),
    Key("n_test", "ints", [8, 16, 24, 32], "context lengths of the pruning comparison", low=1),
    Key("sigma2_test", "floats", [0.0, 0.25, 1.0], "noise levels of the pruning comparison",
        low=0.0),
    Key("network", "str", "standard", "network analysed: 'standard' (softmax, MLP, LayerNorm) "
        "or 'linear' (linear-attention stack)", choices=("standard", "linear")),
    Key("layers", "int", 3, "layers", low=2),
    Key("heads", "int", 4, "heads per layer", low=1),
    Key("width", "int", 32, "residual width of the standard network (divisible by heads)", low=1),
    Key("mlp_ratio", "int", 2, "MLP hidden width / width (standard network)", low=1),
    Key("init_std", "float", 0.02, "weight std of the linear stack at random init", low=0.0,
        low_open=True),
    Key("optimizer", "str", "adam", "optimiser of the analysed networks", choices=("adam", "sgd")),
    Key("net_lr", "float", 2e-3, "learning rate of the analysed networks", low=0.0, low_open=True),
    Key("steps", "int", 2000, "training steps of the analysed networks", low=1),
    Key("batch", "int", 64, "prompts per step (fresh each step)", low=1),
    Key("eval_samples", "int", 2000, "fixed evaluation prompts per (n, noise) point", low=2),
    Key("probe_samples", "int", 400, "prompts to fit the probes (as many again to score)", low=2),
    Key("importance_floor", "float", 0.2, "layer 1 'all heads matter' when every normalised "
        "importance is >= this", low=0.0, high=1.0),
    Key("dominance", "float", 0.5, "a later layer has 'one dominant head' when every other "
        "normalised importance is <= this", low=0.0, high=1.0),
    Key("device", "str", "cpu", "torch device"),
    Key("seed", "int", 0, "random seed", low=0),
))


class SparseExperiment(Experiment):
    name = "sparse"
    description = ("multi-head transformers on sparse regression: head importance, pruning, "
                   "probes")
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
        if config["steps"] * config["batch"] * config["n_max"] * config["width"] > 5e11:
            raise UsageError("key 'steps': the training would take hours on a CPU")

    def memory(self, config: dict) -> dict[str, float]:
        """Peak bytes (float64; n1 = n_max + 1, nt = max(n_test) + 1, K layers, H heads,
        W width, r mlp_ratio, C = d + H + 1 channels of the linear stack):
        - networks: the analysed one and its single-head twin, with gradients and two Adam
          moments (standard: K (4 + 2r) W^2 + (d + 2) W each; linear: 2 K H C^2);
        - training minibatch with its autograd graph, 3 x batch n1 K (F + H n1), F the
          per-token activations of a layer (standard (10 + 3r) W, linear 3 C);
        - evaluation grid: every (sigma2_test, n_test) prompt set, eval_samples nt (d + 2)
          each, and a forward pass, 2 eval_samples nt (F + H nt);
        - probes: 2 probe_samples n1 ((d + 2) + F + H n1 + 3 (K + 1) R), R the residual
          width (standard W, linear C): every layer's stream in float64 for least squares."""
        d, K, H, W, r = (config[k] for k in ("d", "layers", "heads", "width", "mlp_ratio"))
        C = d + H + 1
        n1, nt = config["n_max"] + 1, max(config["n_test"]) + 1
        linear = config["network"] == "linear"
        net = 2 * K * H * C * C if linear else K * (4 + 2 * r) * W * W + (d + 2) * W
        F, R = (3 * C, C) if linear else ((10 + 3 * r) * W, W)
        E = config["eval_samples"]
        sets = len(config["n_test"]) * (len(config["sigma2_test"]) + 1)
        return {
            "runtime": RUNTIME,
            "networks": F64 * 2 * 4 * net,
            "training minibatch": 3 * F64 * config["batch"] * n1 * K * (F + H * n1),
            "evaluation grid": F64 * E * nt * (sets * (d + 2) + 2 * (F + H * nt)),
            "probes": 2 * F64 * config["probe_samples"] * n1 * (d + 2 + F + H * n1
                                                                  + 3 * (K + 1) * R),
        }

    def run(self, config: dict, *, ode: bool = True, sgd: bool = True) -> RunResult:
        # the first five of the seven seeds the run drew when it held the reduced flow too
        seed_net, seed_single, seed_train, seed_eval, seed_probe = seeds(config["seed"], 5)
        summary, extra, seconds = {}, {}, {}
        if sgd:
            start = time.perf_counter()
            shape = TransformerShape(config["d"], config["layers"], config["heads"],
                                     config["width"], config["mlp_ratio"])
            net, curve = train_network(shape, config, seed_net, seed_train)
            single, _ = train_network(replace(shape, heads=1), config, seed_single, seed_train)
            seconds["networks"] = time.perf_counter() - start
            start = time.perf_counter()
            analysis = analyse(net, single, config, seed_eval, seed_probe)
            seconds["analysis"] = time.perf_counter() - start
            summary.update(analysis.summary)
            extra.update(analysis.extra)
            extra["training"] = curve
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
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
        if "importance" in data:
            imp = data["importance"]["normalised"]
            image = axes[0].imshow(imp, cmap="viridis", vmin=min(0.0, imp.min()), vmax=1.0)
            axes[0].set_xticks(range(imp.shape[1]), [f"h{h + 1}" for h in range(imp.shape[1])])
            axes[0].set_yticks(range(imp.shape[0]), [f"layer {i + 1}" for i in range(imp.shape[0])])
            for (i, j), value in np.ndenumerate(imp):
                axes[0].text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w")
            fig.colorbar(image, ax=axes[0], fraction=0.046)
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
            axes[1].set_xlabel("n")
            axes[1].set_title("risk E(y_hat - y_q)^2, +-2 stderr", fontsize=9)
            axes[1].legend(fontsize=6)
        fig.suptitle(f"{run_id} ({attrs.get('experiment')}, status {attrs.get('status')})",
                     fontsize=9)
        return save_run_figure(fig, path, run_id, out)


# ---------------------------------------------------------------------------
# Training


def eval_risk(net, batch, head_mask=None) -> tuple[float, float]:
    """Mean and standard error of (y_hat - y_q)^2 over a batch of prompts."""
    with torch.no_grad():
        err = (net(tokens(batch), head_mask) - batch.yq) ** 2
    return err.mean().item(), (err.std() / err.numel() ** 0.5).item()


def train_network(shape: TransformerShape, config: dict, seed_init: int, seed_data: int):
    """Train a network of `shape` (config 'network', 'optimizer', 'net_lr', 'steps', 'batch').

    Each step draws `batch` fresh prompts with one n uniform in [n_min, n_max]. Returns the
    network and its training curve {"step", "risk"}: the risk at log-spaced steps on fixed
    prompts with n = n_max.
    """
    device = config["device"]
    torch.manual_seed(seed_init)
    net = build(config["network"], shape).to(device)
    if isinstance(net, LinearAttentionStack):
        net.init_normal(config["init_std"], generator(seed_init, device))
    dtype = next(net.parameters()).dtype
    opt_class = torch.optim.Adam if config["optimizer"] == "adam" else torch.optim.SGD
    optimizer = opt_class(net.parameters(), lr=config["net_lr"])
    gen = generator(seed_data, device)
    draw = {"d": config["d"], "s": config["s"], "sigma2": config["sigma2"], "dtype": dtype,
            "device": device}
    probe = sample_sparse(config["eval_samples"], config["n_max"], generator=generator(seed_data + 1,
                          device), **draw)

    def batch_loss(step: int) -> torch.Tensor:
        n = int(torch.randint(config["n_min"], config["n_max"] + 1, (1,), generator=gen,
                              device=device))
        batch = sample_sparse(config["batch"], n, generator=gen, **draw)
        return ((net(tokens(batch)) - batch.yq) ** 2).mean()

    with bar(config["steps"], f"{config['network']} H={shape.heads}", unit="step") as progress:
        traj = train(net, batch_loss, optimizer, log_steps(config["steps"], 30), dict,
                     1.0, on_step=lambda s: progress.update(1),
                     eval_loss=lambda: eval_risk(net, probe)[0])
    if traj.status != "complete":
        raise UsageError(f"key 'net_lr': training of the H={shape.heads} network diverged")
    return net, {"step": traj.step, "risk": traj.loss}


# ---------------------------------------------------------------------------
# Analysis


class Analysis:
    """Head importance, pruning, probes: `summary` (JSON) and `extra` (datasets)."""

    def __init__(self, summary: dict, extra: dict):
        self.summary, self.extra = summary, extra


def analyse(net, single, config: dict, seed_eval: int, seed_probe: int) -> Analysis:
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

    risks = {"full": [], "pruned": [], "single_head": []}
    errors = {k: [] for k in risks}
    for s2 in config["sigma2_test"]:
        row = {k: [] for k in risks}
        err = {k: [] for k in risks}
        for n in config["n_test"]:
            for name, (model, mask) in {"full": (net, None), "pruned": (net, prune),
                                        "single_head": (single, None)}.items():
                mean, se = eval_risk(model, grid[(s2, n)], mask)
                row[name].append(mean)
                err[name].append(se)
        for name, series in risks.items():
            series.append(row[name])
            errors[name].append(err[name])

    probes = probe_r2(net, config, seed_probe)
    pattern = pattern_verdict(importance, config["importance_floor"], config["dominance"])
    summary = {
        "head_importance": importance.tolist(),
        "importance_rise": rise.tolist(),
        "pruning": {"n_test": config["n_test"], "sigma2_test": config["sigma2_test"],
                    "kept_heads": prune.cpu().numpy().astype(int).tolist(),
                    "risk": risks, "stderr": errors},
        "final_risk": base,
        "probe_r2": probes,
        "pattern": pattern,
    }
    extra = {
        "importance": {"normalised": importance, "rise": rise},
        "pruning": {"n_test": np.asarray(config["n_test"]),
                    "sigma2_test": np.asarray(config["sigma2_test"]),
                    **{f"risk_{k}": np.asarray(v) for k, v in risks.items()},
                    **{f"stderr_{k}": np.asarray(v) for k, v in errors.items()}},
        "probes": {"r2": np.asarray(probes)},
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


def probe_r2(net, config: dict, seed: int) -> list[float]:
    """R^2 of linear probes (with bias) of each residual stream (input, then after each layer)
    for the reweighted features r * x_i of every token (context and query), r = X^T y / n.
    Fitted on probe_samples prompts with n = n_max, scored on as many fresh ones."""
    device = config["device"]
    dtype = next(net.parameters()).dtype
    gen = generator(seed, device)
    halves = [sample_sparse(config["probe_samples"], config["n_max"], config["d"], config["s"],
                            config["sigma2"], gen, dtype=torch.float64, device=device)
              for _ in range(2)]
    feats, targets = [], []
    for batch in halves:
        with torch.no_grad():
            states = net.hidden(tokens(batch).to(dtype))
        r = torch.einsum("bnd,bn->bd", batch.x, batch.y) / batch.x.shape[1]
        x_all = torch.cat([batch.x, batch.xq[:, None]], dim=1)
        targets.append((r[:, None] * x_all).reshape(-1, x_all.shape[-1]))
        feats.append([s.reshape(-1, s.shape[-1]).to(torch.float64) for s in states])
    out = []
    for layer in range(len(feats[0])):
        fit, score = feats[0][layer], feats[1][layer]
        ones = torch.ones((fit.shape[0], 1), dtype=torch.float64, device=device)
        coef = torch.linalg.lstsq(torch.cat([fit, ones], 1), targets[0]).solution
        pred = torch.cat([score, ones[: score.shape[0]]], 1) @ coef
        resid = ((targets[1] - pred) ** 2).sum()
        total = ((targets[1] - targets[1].mean(0)) ** 2).sum()
        out.append(float(1 - resid / total))
    return out
