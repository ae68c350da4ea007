"""Population-flow cost of the default linreg run: the engine against the naive form.

Engine: the default run's "population" flow as the experiment builds it
(reduced_models.linreg.population_model: 8000 draws in antithetic pairs, the
Rao-Blackwellised loss on the precomputed scores s_l = x_l . x_q and
q = |x_q|^2, analytic gradient, half the draws on the +- symmetric states the
default start keeps; dopri5 at population_rtol, atol, in POPULATION_CHUNKS
pieces; the default output grid, losses recorded). engine_asymmetric_s: the
same flow from a start with no +- symmetry (every draw evaluated).
Naive form: the same 8000 covariate draws, the plain Monte-Carlo loss over the
full covariates (CovariateSample.mc_loss) with its autograd gradient,
fixed-step RK4 (dt = 0.2), float64.

Reported: wall time to t_max of each (median of repeats, side by side), the
right-hand-side evaluations each makes and evaluations per second (timed
alone at a state past the plateau), and accuracy:
- integration: the engine's final state against RK4 (dt = 0.2) on the engine's
  own loss, relative (must be below 1e-3);
- estimator: the engine's final state against the naive form's (same draws),
  beside the Monte-Carlo spread of the final state over SEEDS independent
  samples of 8000 draws for each estimator (both integrated as the engine
  does): the conditioned estimator changes the answer by less than its own
  sampling error and is not noisier.
"""

from __future__ import annotations

import numpy as np
import torch
from common import memory, print_table, side_by_side, timed, write

from dynamics.ode import integrate
from dynamics.times import record_times
from reduced_models import linreg as theory
from reduced_models.base import ReducedModel, TorchLoss, integrate_flow
from sims.experiment import generator, seeds
from sims.linreg.experiment import POPULATION_CHUNKS, SCHEMA
from sims.linreg.network import project

DT = 0.2
SEEDS = 4
RHS_CALLS = 20


def models(config: dict, seed: int) -> tuple[ReducedModel, ReducedModel]:
    """(engine, naive) population models of config on the draws of seed."""
    d, L, H, param = config["d"], config["L"], config["heads"], config["param"]
    sample = theory.CovariateSample(config["mc_samples"], L, d, generator(seed),
                                    antithetic=True)
    naive = TorchLoss(lambda obs, hyper: sample.mc_loss(obs["omega"], obs["mu"], hyper["sigma2"]),
                      "plain Monte Carlo over the full covariates (autograd)")
    return tuple(ReducedModel(theory.manifold(d, H, param), theory.observables(d, param), loss,
                              hyper=("sigma2",))
                 for loss in (theory.population_loss(sample), naive))


def evaluations(model: ReducedModel, state0, t, hyper, **solver) -> int:
    """Right-hand-side evaluations of one integration."""
    rhs, count = model.rhs(hyper), [0]

    def counted(y):
        count[0] += 1
        return rhs(y)

    integrate(counted, state0, t, **solver)
    return count[0]


def final(trajectory) -> np.ndarray:
    return np.concatenate([trajectory.params["omega"][-1], trajectory.params["mu"][-1]])


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


def main():
    torch.set_num_threads(1)
    config = SCHEMA.resolve({})
    d, H, param = config["d"], config["heads"], config["param"]
    engine, naive = models(config, seeds(config["seed"], 5)[1])
    hyper = {"sigma2": config["sigma2"]}
    state0 = engine.manifold.pack(theory.symmetric_start(d, H, config["init_scale"], param))
    t, _ = record_times(config["t_max"], config["lr"], config["records"])
    fast = {"rtol": config["population_rtol"], "atol": config["atol"], "chunks": POPULATION_CHUNKS}
    fixed = {"method": "rk4", "step_size": DT}
    runs = {}

    def run(name, model, solver):
        (runs[name],) = integrate_flow(model, state0, t, hyper, project, **solver)

    timing = side_by_side(lambda: run("engine", engine, fast),
                          lambda: run("naive", naive, fixed))
    run("engine_rk4", engine, fixed)
    tilted = state0 * torch.linspace(0.8, 1.2, state0.shape[0], dtype=state0.dtype)
    asymmetric_s = timed(lambda: integrate_flow(engine, tilted, t, hyper, project, **fast),
                         repeats=3)
    mid = {k: v[len(t) // 2] for k, v in runs["engine"].params.items()}
    state = engine.manifold.pack(theory.balanced_state(d, mid["omega"], mid["mu"], param))[None]
    rhs_e, rhs_b = engine.rhs(hyper), naive.rhs(hyper)
    per_call = side_by_side(lambda: [rhs_e(state) for _ in range(RHS_CALLS)],
                            lambda: [rhs_b(state) for _ in range(RHS_CALLS)])
    per_e, per_b = per_call["engine_s"], per_call["baseline_s"]
    evals_e = evaluations(engine, state0, t, hyper, **fast)
    evals_b = evaluations(naive, state0, t, hyper, **fixed)
    spread = {"engine": [], "naive": []}
    for seed in seeds(config["seed"] + 1, SEEDS):
        for name, model in zip(("engine", "naive"), models(config, seed)):
            (traj,) = integrate_flow(model, state0, t, hyper, project, **fast)
            spread[name].append(final(traj))
    mc_std = {k: np.std(v, axis=0, ddof=1) / np.abs(np.mean(v, axis=0)) for k, v in spread.items()}
    integration = relative(final(runs["engine"]), final(runs["engine_rk4"]))
    estimator = relative(final(runs["engine"]), final(runs["naive"]))
    case = {
        "case": "default linreg population flow", **timing,
        "engine_asymmetric_s": asymmetric_s,
        "engine_evaluations": evals_e, "baseline_evaluations": evals_b,
        "engine_evals_per_s": round(RHS_CALLS / per_e, 1),
        "baseline_evals_per_s": round(RHS_CALLS / per_b, 1),
        "evaluation_ratio": round(per_call["ratio"], 2),
        "evaluation_ratio_quartiles": [round(per_call["ratio_q1"], 2),
                                       round(per_call["ratio_q3"], 2)],
        "integration_rel_diff": integration, "integration_within_1e-3": integration < 1e-3,
        "estimator_rel_diff": estimator,
        "mc_rel_std_engine": mc_std["engine"].round(5).tolist(),
        "mc_rel_std_naive": mc_std["naive"].round(5).tolist(),
        "estimator_diff_within_mc_std": bool(estimator < mc_std["naive"].max()),
        "engine_memory": memory(lambda: run("engine", engine, fast)),
        "baseline_memory": memory(lambda: run("naive", naive, fixed)),
    }
    result = write(
        "population_flow", "naive form: full-covariate Monte Carlo, autograd, fixed-step RK4",
        [case], target=10.0, target_case=case["case"],
        notes=f"d={d}, L={config['L']}, H={H}, {param}, sigma2={config['sigma2']}, "
              f"{config['mc_samples']} draws, t_max={config['t_max']}, {len(t)} records; engine "
              f"dopri5 rtol {fast['rtol']:g} atol {fast['atol']:g} in {POPULATION_CHUNKS} "
              f"pieces, naive RK4 dt {DT}. "
              "Final states compared as max relative difference over (omega, mu); "
              f"mc_rel_std_*: relative std of the final state over {SEEDS} independent samples")
    print_table(result)


if __name__ == "__main__":
    main()
