"""Theory checks of the induction system: the rows of `icldyn check induction`.

Every row puts the engine's value against an independent one (docs/induction.md lists
them with measured values):

- chi-square MI: E_pi I(S) of every candidate set from the engine (stationary law by
  state reduction, `reduced_models.markov.chi2_table`) against an independent
  implementation written here: the Cesaro law of the chain on tuples from the uniform
  start by repeated squaring of its transition matrix, and the modified chi-square
  information written out from it; and S* against the chains' parent set;
- the limiting model: its optimum a* (bounded scalar minimisation of the loss) against the
  root of its closed-form derivative Lambda'(a), and Lambda' against central differences
  of Lambda;
- the selector: the population flow's rate d log(p_S* / p_S) / dtau at the start
  (tau = int 4 a / |C|^2 dt, autograd of the network's loss) against the soft copiers'
  first-order gain difference D_S*(w) - D_S(w), exact to first order in a;
- the copier: the symbolic model's copier error |dw_ode - dw_pop| / |dw_pop| per head of
  S* over the run's t_max, at most COPIER_ERROR_BOUND.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import brentq

from dynamics.errors import UsageError
from reduced_models import induction as theory
from reduced_models.markov import (
    best_set,
    candidate_sets,
    chi2_table,
    gih_optimal_a,
    set_label,
)
from reduced_models.markov_chains import history_index, sample_kernels

from ..experiment import CheckRow, generator, seeds
from .experiment import FlowSetup, chi2_information, copier_error, integrate_named, shape_of
from .training import flow_segments, schedule

CHECK_KERNELS = 100  # kernels of the MI comparison (both implementations see the same ones)
MI_TOLERANCE = 1e-9  # two exact computations of the same number (measured gap ~4e-13)
DOUBLINGS = 200  # repeated squarings: the Cesaro mean over 2^200 steps of the tuple chain
OPTIMUM_TOLERANCE = 1e-4  # relative; minimize_scalar stops at xatol 1e-5 (scipy default)
SLOPE_STEP = 1e-4  # central-difference step of the Lambda' row (error O(h^2) ~ 1e-8)
SELECTOR_A = 1e-3  # classifier scale of the selector-rate rows: first-order error O(a)
SELECTOR_TOLERANCE = 0.01  # relative; the O(a) gap measured < 2e-4 at a = 1e-3
COPIER_ERROR_BOUND = 0.15  # largest copier error accepted per head of S*


def induction_checks(config: dict) -> list[CheckRow]:
    """All rows at the config's chains, network shape, loss and seed."""
    if config["schedule"] != "joint":
        raise UsageError("key 'schedule': the theory checks follow the joint schedule")
    seed_mc, _, seed_mi, _, _ = seeds(config["seed"], 5)
    mi, _ = chi2_information(config, seed_mi)
    setup, s_star = FlowSetup(config, seed_mc), best_set(mi)
    return (mi_rows(config, mi, seed_mi) + limit_rows(config, setup, s_star)
            + selector_rows(config, setup, s_star) + copier_rows(config, setup, s_star))


# ---------------------------------------------------------------------------
# Chi-square mutual information


def cesaro_tuple_law(kernel: np.ndarray, parents: tuple[int, ...], r: int) -> np.ndarray:
    """(vocab**r,) law of r consecutive tokens (oldest most significant): the mean of
    u P^t over t < 2^DOUBLINGS from the uniform u, P the chain on r-tuples.

    Doubling: S_2m = (S_m + S_m P^m) / 2, P^2m = P^m P^m; every row renormalised to sum 1
    (products of nonnegative matrices keep their relative accuracy; the row sums' rounding
    would otherwise compound over the doublings)."""
    vocab = kernel.shape[-1]
    n = vocab**r
    digits = np.stack([(np.arange(n) // vocab ** (r - 1 - j)) % vocab for j in range(r)], -1)
    rows = history_index(torch.as_tensor(digits[:, [r - p for p in parents]]), vocab).numpy()
    step = np.zeros((n, n))
    for s in range(n):
        step[s, (s * vocab) % n + np.arange(vocab)] = kernel[rows[s]]
    law, power = np.full(n, 1.0 / n), step
    for _ in range(DOUBLINGS):
        law = 0.5 * (law + law @ power)
        power = power @ power
        power /= power.sum(1, keepdims=True)
    return law


def independent_chi2(kernel: np.ndarray, parents: tuple[int, ...], offsets: tuple[int, ...]
                     ) -> float:
    """Modified chi-square information sum_z mu(z)^2 (sum_e mu(e|z)^2 / mu(e) - 1) between
    the tokens z at `offsets` before a position and its token e, under `cesaro_tuple_law`."""
    vocab = kernel.shape[-1]
    r = max(max(offsets), max(parents))
    law = cesaro_tuple_law(kernel, parents, r)
    digits = np.stack([(np.arange(vocab**r) // vocab ** (r - 1 - j)) % vocab
                       for j in range(r)], -1)
    rows = history_index(torch.as_tensor(digits[:, [r - p for p in parents]]), vocab).numpy()
    joint = law[:, None] * kernel[rows]                                   # (tuple, e)
    z = (digits[:, [r - o for o in offsets]] * vocab ** np.arange(len(offsets))).sum(-1)
    pair = np.zeros((vocab ** len(offsets), vocab))
    np.add.at(pair, z, joint)
    history, token = pair.sum(1), pair.sum(0)
    return float((pair**2 / token).sum() - (history**2).sum())


def mi_rows(config: dict, mi: dict, seed: int) -> list[CheckRow]:
    vocab, alpha = config["vocab"], config["alpha"]
    parents = tuple(sorted(config["parents"]))
    span, degree = shape_of(config).span, config["degree"]
    kernels = sample_kernels(CHECK_KERNELS, vocab, len(parents), alpha, generator(seed))
    engine = chi2_table(kernels, parents, span, degree)
    rows = []
    for offsets in candidate_sets(span, degree):
        label = set_label(offsets)
        independent = np.mean([independent_chi2(k.numpy(), parents, offsets) for k in kernels])
        rows.append(CheckRow(f"chi2 MI I({label})", float(independent),
                             float(engine[label].mean()), MI_TOLERANCE,
                             f"mean over {CHECK_KERNELS} kernels: stationary law by state "
                             "reduction vs Cesaro law by repeated squaring"))
    if set(parents) <= set(range(1, span + 1)) and len(parents) <= degree:
        rows.append(CheckRow("S* is the parent set", 1.0,
                             float(best_set(mi) == parents), 0.0,
                             f"argmax of E I(S) over {config['mi_chains']} kernels: "
                             f"{set_label(best_set(mi))}, parents {set_label(parents)}"))
    return rows


# ---------------------------------------------------------------------------
# The limiting model


def limit_rows(config: dict, setup: FlowSetup, s_star: tuple[int, ...]) -> list[CheckRow]:
    variant = config["loss"]
    tokens, vocab = setup.sample.tokens, config["vocab"]
    limit = theory.limit_loss_function(tokens, s_star, vocab, variant)
    rows = []
    probe = 2.0
    h = SLOPE_STEP
    values = limit._imp_(torch.tensor([probe - h, probe + h], dtype=torch.float64))
    difference = float(values[1] - values[0]) / (2 * h)
    closed = float(limit.slope(torch.tensor(probe, dtype=torch.float64)))
    rows.append(CheckRow(f"Lambda'({probe:g}) closed form", difference, closed,
                         1e-6 * max(1.0, abs(difference)),
                         f"central difference of Lambda, step {h:g}"))
    if variant == "ce":
        optimum = gih_optimal_a(tokens, s_star, vocab, variant)
        root = brentq(lambda b: float(limit.slope(torch.tensor(b, dtype=torch.float64))),
                      0.0, 30.0, xtol=1e-10)
        rows.append(CheckRow("limit optimum a*", root, optimum, OPTIMUM_TOLERANCE * root,
                             "bounded minimisation of Lambda vs root of the closed-form "
                             "Lambda'"))
    return rows


# ---------------------------------------------------------------------------
# Selector and copier


def selector_rows(config: dict, setup: FlowSetup, s_star: tuple[int, ...]) -> list[CheckRow]:
    shape = shape_of(config)
    if s_star not in shape.sets:
        return []
    model = theory.population_model(setup.counts, shape=shape, variant=config["loss"])
    state = setup.manifold.unpack(setup.state0)
    state["a"] = torch.tensor([SELECTOR_A], dtype=torch.float64)
    x = setup.manifold.pack(state)
    rate = model.rhs({})(x[None])[0]                                      # d state / dt
    c = setup.manifold.unpack(rate)["C"]
    C = state["C"]
    dlog_p = 2 * c / C                                                    # |C| conserved
    tau_rate = 4 * SELECTOR_A / float((C**2).sum())
    omega = theory.first_order_gains_table(setup.counts, config["loss"])
    gains = theory.exact_first_order_gains(omega, state["w"], shape.copier_inputs(),
                                           shape.sets)
    i_star = shape.sets.index(s_star)
    rows = []
    for i, heads in enumerate(shape.sets):
        if i == i_star:
            continue
        measured = float(dlog_p[i_star] - dlog_p[i]) / tau_rate
        expected = float(gains[i_star] - gains[i])
        rows.append(CheckRow(f"selector rate {set_label(s_star)} over {set_label(heads)}",
                             expected, measured, SELECTOR_TOLERANCE * abs(expected),
                             f"d log(p_S*/p_S)/dtau of the population flow at a = "
                             f"{SELECTOR_A:g} vs D_S* - D_S (soft first-order gains)"))
    return rows


def copier_rows(config: dict, setup: FlowSetup, s_star: tuple[int, ...]) -> list[CheckRow]:
    shape = shape_of(config)
    variant = config["loss"]
    grids, masks = flow_segments(schedule(config), setup.manifold, config["records"])
    solver = {"rtol": config["rtol"], "atol": config["atol"]}
    symbolic, _ = theory.three_stage_model(setup.sample.tokens, shape=shape, s_star=s_star,
                                           variant=variant)
    population = theory.population_model(setup.counts, shape=shape, variant=variant)
    flows = {name: integrate_named(name, model, setup.state0, grids, masks, None, solver)
             for name, model in (("ode", symbolic), ("population", population))}
    errors = copier_error(flows["ode"], flows["population"], s_star)
    return [CheckRow(f"copier error head {h}", 0.0, value, COPIER_ERROR_BOUND,
                     f"|dw_ode - dw_pop| / |dw_pop| at t = {float(flows['ode'].t[-1]):g}")
            for h, value in errors.items()]
