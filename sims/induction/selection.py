"""Which candidate parent set wins: by the chi-square criteria, and at the end of training.

What a sweep point of `induction` computes (sims/induction/sweep.py, InductionHooks): the modified
and the standard chi-square MI of every candidate set of offsets, the symbolic flow "ode"
and/or the simplified network "sgd" through the run's schedule (the same seeds, samples and
start as `icldyn run induction`), and the winning set of each.
"""

from __future__ import annotations

import numpy as np

from dynamics.trajectory import Trajectory
from reduced_models import induction as theory
from reduced_models.markov import best_set

from ..experiment import generator, seeds
from .experiment import FlowSetup, chi2_information, integrate_named, shape_of, train_network
from .network import SimplifiedInductionNet, project
from .training import flow_segments, schedule


def final_winner(traj: Trajectory, sets: list[tuple[int, ...]]) -> tuple[tuple[int, ...], float]:
    """The set of heads with the largest final p, named by the offsets its heads copy at the
    end (argmax of each head's w; heads on one offset count once), and that p."""
    p, w = traj.params["p"][-1], traj.params["w"][-1]
    i = int(np.argmax(p))
    offsets = tuple(sorted({int(np.argmax(w[h - 1])) + 1 for h in sets[i]}))
    return offsets, float(p[i])


def margin(mi: dict[str, tuple[float, float]]) -> float:
    """I(S*) - I(runner-up) of an `expected_chi2_mi` result (0 with one candidate)."""
    means = sorted((v[0] for v in mi.values()), reverse=True)
    return means[0] - means[1] if len(means) > 1 else 0.0


def winning_sets(config: dict, ode: bool, sgd: bool) -> dict:
    """{"mi": S*, "mi_standard": the power-1 criterion's winner, "mi_margin": float,
    "trajectories": {"ode" and/or "sgd": Trajectory}, "sets": candidate sets of heads}."""
    shape = shape_of(config)
    seed_mc, seed_sgd, seed_mi = seeds(config["seed"], 3)
    mi, mi_standard = chi2_information(config, seed_mi)
    s_star = best_set(mi)
    setup = FlowSetup(config, seed_mc)
    stages = schedule(config)
    trajs = {}
    if ode:
        model, _ = theory.three_stage_model(setup.sample.tokens, shape=shape, s_star=s_star,
                                            variant=config["loss"])
        grids, masks = flow_segments(stages, setup.manifold, config["records"])
        trajs["ode"] = integrate_named("ode", model, setup.state0, grids, masks, None,
                                       {"rtol": config["rtol"], "atol": config["atol"]})
    if sgd:
        net = SimplifiedInductionNet(shape=shape)
        net.load(setup.manifold.lift(setup.state0))
        trajs["sgd"] = train_network(net, config, stages, setup.counts,
                                     lambda: project(net.weights()), generator(seed_sgd), "sgd")
    return {"mi": s_star, "mi_standard": best_set(mi_standard), "mi_margin": margin(mi),
            "trajectories": trajs, "sets": setup.sets}
