"""Experiment `linreg`: multi-head softmax attention on in-context linear regression.

One run integrates two reduced flows from the same start and trains the full
network there:
- "ode": gradient flow of the symbolic large-L loss Lt;
- "population": gradient flow of the exact population loss of the reduced
  predictor (Monte Carlo, fixed covariate sample);
- "sgd": the network (merged or factored), lifted from the same point (init
  "symmetric"), or drawn at random with the flows started from its metric
  projection onto the manifold (init "random").
Time is t = lr x step; both flows use the metric of the lift (docs/theory/flows.md),
unless metric = "unit": then "ode" is d theta/dt = -grad Lt in (omega, mu) (the paper's
ODE; merged weights only).

The network also records its per-head pattern metrics (docs/linreg-extensions.md) and
which heads are active. With ode_start = "pattern" the flows start instead at
the first record where the pattern has formed (every active head with KQ
diagonal ratio and OV last-entry ratio above pattern_threshold), from the
network's observed (omega, mu) there (factored: balanced factors), and are
compared with the network from then on (docs/linreg-extensions.md).

With covariance = "toeplitz" (x ~ N(0, Sigma), Sigma_ij = rho^|i-j|; merged
weights only) the reduced flow is "population" on the matrix manifold
(KQ_xx,h a learned symmetric matrix per head, reduced_models.linreg.
matrix_population_model); both sides record KQ_xx, and the summary carries
the alignment of the network's KQ_xx with Sigma^-1 and with the flow's, and
the risks of plain and preconditioned one-step GD (sims.linreg.noniso).
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch

from dynamics.errors import UsageError
from dynamics.fit import Fit, fit
from dynamics.progress import bar
from dynamics.tables import Headline
from dynamics.times import record_times
from reduced_models import linreg as theory
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
from .config import LINREG as SCHEMA
from .config import LinregConfig
from .network import SoftmaxAttentionRegressor, head_observables, pattern_formed, project
from .noniso import baseline_risks, cosine_similarity, head_alignment, risk
from .task import covariance_matrix, sample_regression

MAX_STEPS = 10_000_000
# The population flow is integrated in one piece of its output grid, not 4 as the symbolic one
# (dynamics.ode.integrate, chunks): each piece restarts the adaptive solver, ~10 more
# evaluations of its costly Monte-Carlo right-hand side (a stall on the lean path keeps
# what it reached anyway).
POPULATION_CHUNKS = 1


class LinregExperiment(Experiment):
    name = "linreg"
    headlines = (Headline("pattern formed at t", "sgd.pattern.formed_t",
                          "first record with the diagonal-KQ, last-entry-OV pattern; "
                          "a symmetric start has it at t = 0"),)
    schema = SCHEMA

    def validate(self, config: LinregConfig) -> None:
        config = SCHEMA.typed(config)
        check_device(config.device)
        if config.covariance == "toeplitz":
            if abs(config.rho) >= 1:
                raise UsageError(f"key 'rho': must satisfy |rho| < 1, got {config.rho!r}")
            if config.param != "merged":
                raise UsageError("key 'param': covariance = toeplitz needs param = merged")
        if config["metric"] == "unit" and config["param"] != "merged":
            raise UsageError("key 'metric': metric = unit needs param = merged")
        steps = config.t_max / config.lr
        if steps > MAX_STEPS:
            raise UsageError(f"key 't_max': t_max / lr = {steps:.3g} SGD steps exceeds {MAX_STEPS}")

    def memory(self, config: LinregConfig) -> dict[str, float]:
        """Peak bytes (float64 throughout, D = d + 1, L1 = L + 1, T = min(records,
        t_max / lr) + 1 recorded times):
        - network: weights (H D^2, x3 factored, + H D) with gradients and two Adam moments;
        - SGD minibatch: prompts and attention with its autograd graph, 4 x batch L1 (D + H);
        - evaluation prompts and their forward pass, 3 x eval_samples L1 (D + H);
        - population flow: the covariate sample mc_samples L1 d, its scores and their
          blocks 3 mc_samples L (the isotropic loss works block by block); under
          toeplitz the matrix model's loss instead holds whole tensors, one evaluation
          with its graph 4 H mc_samples (L + d), and the losses of all records at once
          (reduced_models.base.integrate_flow) T mc_samples (2 H (L + d) + L + d);
        - the symbolic lift (sims.experiment.lift_bytes) and the ODE records."""
        config = SCHEMA.typed(config)
        d, L, H, M = config.d, config.L, config.heads, config.mc_samples
        D, L1 = d + 1, L + 1
        T = round(min(config.records, config.t_max / config.lr)) + 1  # t_max / lr may be inf
        matrix = config.covariance == "toeplitz"
        factored = config.param == "factored"
        weights = H * D * D * (3 if factored else 1) + H * D
        state = H * d * (d + 1) // 2 + H if matrix else H * (4 if factored else 2)
        whole = (4 * H * (L + d) + T * (2 * H * (L + d) + L + d)) if matrix else 0
        return {
            "runtime": RUNTIME,
            "network": 4 * F64 * weights,
            "SGD minibatch": 4 * F64 * config.batch * L1 * (D + H),
            "evaluation prompts": 3 * F64 * config.eval_samples * L1 * (D + H),
            "population flow": F64 * M * (L1 * d + 3 * L + whole),
            "symbolic lift and records": lift_bytes(weights, state)
            + 16 * F64 * T * (state + H * d * d),
        }

    def run(self, config: LinregConfig, *, ode: bool = True, sgd: bool = True) -> RunResult:
        config = SCHEMA.typed(config)
        d, L, sigma2, param = config.d, config.L, config.sigma2, config.param
        device = config.device
        from_pattern = config.ode_start == "pattern"
        if from_pattern and ode and not sgd:
            raise UsageError("key 'ode_start': 'pattern' starts the flows from the network; "
                             "it cannot be combined with --no-sgd")
        # a fifth seed leaves the first four (and so earlier runs) unchanged
        _, seed_mc, seed_sgd, seed_eval, seed_baselines = seeds(config.seed, 5)
        t, steps = record_times(config.t_max, config.lr, config.records)
        begin = Setup(config)
        sigma, manifold, net, state0 = begin.sigma, begin.manifold, begin.net, begin.state0
        matrix = sigma is not None
        observable = project_with_kq if matrix else project
        trajs, seconds = {}, {}
        if sgd:
            start = time.perf_counter()
            eval_batch = sample_regression(config.eval_samples, L, d, sigma2,
                                           generator(seed_eval, device),
                                           dtype=getattr(torch, config.sgd_dtype), device=device,
                                           covariance=sigma)
            trajs["sgd"] = self._train(net, config, steps, generator(seed_sgd, device), eval_batch,
                                       sigma).trajectory
            seconds["sgd"] = time.perf_counter() - start
        flow_start = 0
        if sgd:
            formed = first_pattern_row(trajs["sgd"], config.pattern_threshold)
            if from_pattern:
                flow_start = formed
                if formed is not None:
                    row = {k: v[formed] for k, v in trajs["sgd"].params.items()}
                    state = (symmetric_state(row["kq_xx"], row["mu"]) if matrix
                             else theory.balanced_state(d, row["omega"], row["mu"], param))
                    state0 = manifold.pack(state).to(device)
        if ode and flow_start is not None:
            for name, (model, hyper) in flow_models(config, sigma,
                                                    generator(seed_mc, device)).items():
                solver = {"rtol": config.rtol, "atol": config.atol}
                if name == "population":
                    solver.update(rtol=config.population_rtol, chunks=POPULATION_CHUNKS)
                start = time.perf_counter()
                with bar(float(t[-1]), f"{name} flow", unit="t") as progress:
                    def advance(now, progress=progress):
                        progress.update(now - progress.n)
                    (trajs[name],) = integrate_flow(model, state0, t[flow_start:], hyper,
                                                    observable, on_chunk=advance, **solver)
                seconds[name] = time.perf_counter() - start
        summary = {name: tr.summary() for name, tr in trajs.items()}
        summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
        if sgd:
            summary["sgd"]["pattern"] = pattern_summary(trajs["sgd"], formed)
        if from_pattern and ode:
            summary["flows_start_t"] = None if flow_start is None else float(t[flow_start])
        if matrix and sgd:
            summary["noniso"] = noniso_summary(net, trajs, sigma, config, eval_batch,
                                               generator(seed_baselines, device))
        summary["comparison"] = comparisons(
            trajs, [("sgd", "population"), ("ode", "population"), ("sgd", "ode")]
        )
        return RunResult(trajs, summary)

    @staticmethod
    def _train(net, config: LinregConfig, steps, gen, eval_batch, covariance=None) -> Fit:
        d, L, sigma2 = config.d, config.L, config.sigma2

        def batch_loss(step: int) -> torch.Tensor:
            batch = sample_regression(config.batch, L, d, sigma2, gen, dtype=eval_batch.y.dtype,
                                      device=eval_batch.y.device, covariance=covariance)
            return ((net(batch.tokens()) - batch.yq) ** 2).mean()

        eval_tokens = eval_batch.tokens()

        def eval_loss() -> float:
            return float(((net(eval_tokens) - eval_batch.yq) ** 2).mean())

        def observe() -> dict[str, np.ndarray]:
            with torch.no_grad():
                observed = head_observables(net.weights(), config.active_fraction)
                if covariance is not None:
                    observed["kq_xx"] = project_with_kq(net.weights())["kq_xx"]
                return {k: v.double().cpu().numpy() for k, v in observed.items()}

        return fit(net, batch_loss, observe, steps, optimizer=config.optimizer, lr=config.lr,
                   eval_loss=eval_loss, generators=[gen],
                   model=f"{net.param} network, {config.optimizer}, batch {config.batch}; "
                         f"loss on {config.eval_samples} fixed prompts")


class Setup:
    """Where a linreg run of config starts, for the run and for its sweeps alike.

    - sigma: (d, d) covariance of x, or None for the identity
    - manifold: the reduced manifold of the flows (the matrix one under sigma)
    - state0: (P,) float64 start of the flows on config.device: the symmetric point,
      or the metric projection of the random network
    - net: the network at its start on config.device: the lift of the symmetric point,
      or weights N(0, init_scale^2) from seed stream 0 of 5
    state0 and net are built when first used (a symmetric start needs no network).
    """

    def __init__(self, config: LinregConfig):
        self.config = config = SCHEMA.typed(config)
        self.symmetric = config.init == "symmetric"
        self.sigma = covariance_matrix(config.covariance, config.d, config.rho)
        self.manifold = (theory.matrix_manifold(config.d, config.heads) if self.sigma is not None
                         else theory.manifold(config.d, config.heads, config.param))

    @functools.cached_property
    def state0(self) -> torch.Tensor:
        c = self.config
        if not self.symmetric:
            weights = {k: v.cpu() for k, v in self.net.weights().items()}
            return self.manifold.project(weights).to(c.device)
        point = theory.symmetric_start(c.d, c.heads, c.init_scale, c.param)
        if self.sigma is not None:
            point = theory.matrix_state(c.d, point["omega"], point["mu"])
        return self.manifold.pack(point).to(c.device)

    @functools.cached_property
    def net(self) -> SoftmaxAttentionRegressor:
        c = self.config
        net = SoftmaxAttentionRegressor(c.d, c.heads, c.param,
                                        dtype=getattr(torch, c.sgd_dtype)).to(c.device)
        if self.symmetric:
            net.load(self.manifold.lift(self.state0))
        else:
            net.init_normal(c.init_scale, generator(seeds(c.seed, 5)[0], c.device))
        return net


def first_pattern_row(traj, threshold: float) -> int | None:
    """Index of the first record of a network trajectory at which the pattern has formed
    (`pattern_formed`), or None."""
    for row in range(len(traj.t)):
        if pattern_formed({k: v[row] for k, v in traj.params.items()}, threshold):
            return row
    return None


def pattern_summary(traj, formed: int | None) -> dict:
    """Per-head pattern metrics at the last record (lists), `active` as booleans, and when
    the pattern first formed (t and step, None if never)."""
    last = {k: v[-1] for k, v in traj.params.items()}
    out = {k: last[k].tolist() for k in ("kq_diag_ratio", "kq_diag_var", "ov_last_ratio")}
    out["active"] = [bool(a) for a in last["active"]]
    out["formed_t"] = None if formed is None else float(traj.t[formed])
    out["formed_step"] = None if formed is None else int(traj.step[formed])
    return out


def flow_models(config: LinregConfig, sigma: torch.Tensor | None, gen: torch.Generator) -> dict:
    """name -> (reduced model, hyper-parameters) of the flows a run integrates: "ode" (Lt)
    and "population" when isotropic; only the matrix "population" flow under Sigma."""
    d, L, sigma2, H, param = config.d, config.L, config.sigma2, config.heads, config.param
    if sigma is not None:
        return {"population": (theory.matrix_population_model(d, H, L, config.mc_samples,
                                                              gen, sigma), {"sigma2": sigma2})}
    return {
        "ode": (theory.symbolic_model(d, H, param, config["metric"]), {"L": L, "sigma2": sigma2}),
        "population": (theory.population_model(d, H, L, config.mc_samples, gen, param),
                       {"sigma2": sigma2}),
    }


def project_with_kq(weights: dict) -> dict:
    """`project` plus kq_xx (..., H, d, d), the covariate block of KQ_h (non-isotropic runs)."""
    kq = weights["KQ"]
    d = kq.shape[-1] - 1
    return {**project(weights), "kq_xx": kq[..., :d, :d]}


def symmetric_state(kq_xx: np.ndarray, mu: np.ndarray) -> dict[str, np.ndarray]:
    """Matrix-manifold state nearest to (KQ_xx (H, d, d), mu (H,)): the upper triangle of
    the symmetric part (the metric projection)."""
    sym = (kq_xx + np.swapaxes(kq_xx, -1, -2)) / 2
    upper = np.triu_indices(sym.shape[-1])
    return {"g": sym[:, upper[0], upper[1]], "mu": np.asarray(mu)}


def noniso_summary(net, trajs: dict, sigma: torch.Tensor, config: LinregConfig, eval_batch,
                   gen: torch.Generator) -> dict:
    """Alignment of the network's final KQ_xx (per head) with Sigma^-1, with I and with the
    population flow's final KQ_xx; risks (MSE, standard error) of the network on the
    evaluation prompts and of the one-step GD baselines (sims.linreg.noniso)."""
    kq_net = torch.as_tensor(trajs["sgd"].params["kq_xx"][-1])
    inverse = torch.linalg.inv(sigma)
    out = {"align_sigma_inv": head_alignment(kq_net, inverse).tolist(),
           "align_identity": head_alignment(kq_net, torch.eye(len(sigma),
                                                              dtype=torch.float64)).tolist()}
    if "population" in trajs:
        kq_flow = torch.as_tensor(trajs["population"].params["kq_xx"][-1])
        out["align_flow"] = cosine_similarity(kq_net, kq_flow).tolist()
        out["flow_align_sigma_inv"] = head_alignment(kq_flow, inverse).tolist()
    with torch.no_grad():
        errors = (net(eval_batch.tokens()) - eval_batch.yq).double() ** 2
    mean, se = risk(errors)
    d, L, n = config.d, config.L, config.eval_samples
    fit, test = (sample_regression(n, L, d, config.sigma2, gen, dtype=torch.float64,
                                   covariance=sigma) for _ in range(2))
    out["risk"] = {"network": {"risk": mean, "stderr": se}, **baseline_risks(fit, test, inverse)}
    return out
