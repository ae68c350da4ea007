"""Baseline estimators for in-context sparse linear regression (docs/theory/sparse.md, section 3).

Every estimator maps a batch of problems, x (B, n, d) and y (B, n), to
beta_hat (B, d). The baselines (OLS, ridge, k-step GD, Lasso, averaging) and
the preprocess-then-optimize (PTO) estimator are those compared by Chen, Zhao,
Zou (NeurIPS 2024, arXiv 2408.04532), where PTO reweights the coordinates by
the in-context correlations r = (1/n) X^T y and then runs GD steps.

`pto` (|r|^gamma weights, step normalised by each prompt's lambda_max) is not
computed by any fixed-weight transformer. Three PTO variants are, exactly, by
the linear-attention stack of sims/sparse/network.py (weights in
reduced_models/sparse.py), with fixed steps and k GD layers after layer 1:
- `pto_fixed`: beta <- beta + eta diag(r^2) (c - S beta), GD on the reweighted
  data x -> r * x with a fixed step (d layer-1 heads, later layers step on u only);
- `pto_split`: beta <- beta + (eta_x I + eta_u diag(r^2)) (c - S beta), separate
  fixed steps on the raw and the reweighted coordinates (d layer-1 heads);
- `pto_reduced`: beta <- beta + eta (I + alpha^2 sum_h r_h r_h^T) (c - S beta),
  the (alpha, eta) construction with H layer-1 heads owning blocks of coordinates.

Most estimators only need the empirical moments S = X^T X / n (B, d, d) and
c = X^T y / n (B, d); their `_..._from_moments` forms let tuning reuse them.
Scalar hyper-parameters may be floats or (B,) tensors (one value per problem).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch

from reduced_models.sparse import block_preconditioned_gd
from sims.sparse.task import SparseBatch, sample_sparse

ESTIMATORS = ("ols", "ridge", "ridge_bayes", "gd", "pto", "pto_fixed", "pto_split",
              "pto_reduced", "lasso", "averaging")

# Largest KKT violation accepted from the Lasso solver, in units of the gradient.
LASSO_TOL = 1e-9


# ---------------------------------------------------------------------------
# Helpers


def moments(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """S = X^T X / n (B, d, d) and c = X^T y / n (B, d)."""
    n = x.shape[-2]
    gram = x.transpose(-1, -2) @ x / n
    corr = torch.einsum("bnd,bn->bd", x, y) / n
    return gram, corr


def _per_problem(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A hyper-parameter as a (B,) tensor matching the batch and dtype of `like` (B, ...)."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.expand(like.shape[0])


def _bmv(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Batched matrix-vector product: (B, d, d), (B, d) -> (B, d)."""
    return (matrix @ vector.unsqueeze(-1)).squeeze(-1)


def _eye_like(gram: torch.Tensor) -> torch.Tensor:
    return torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)


# ---------------------------------------------------------------------------
# Estimators


def ols(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares X^+ y: (B, n, d), (B, n) -> (B, d)."""
    return (torch.linalg.pinv(x) @ y.unsqueeze(-1)).squeeze(-1)


def averaging(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/n) X^T y: (B, n, d), (B, n) -> (B, d)."""
    return moments(x, y)[1]


def _ridge_from_moments(
    gram: torch.Tensor, corr: torch.Tensor, lam: float | torch.Tensor, n: int
) -> torch.Tensor:
    """(S + (lam / n) I)^-1 c, the minimiser of |y - X b|^2 + lam |b|^2."""
    shift = _per_problem(lam, corr)[:, None, None] / n
    return torch.linalg.solve(gram + shift * _eye_like(gram), corr)


def ridge(x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """argmin_b |y - X b|^2 + lam |b|^2: (B, n, d), (B, n) -> (B, d)."""
    gram, corr = moments(x, y)
    return _ridge_from_moments(gram, corr, lam, x.shape[-2])


def bayes_ridge_lambda(d: int, s: int, sigma2: float) -> float:
    """Ridge penalty of the posterior mean when beta is approximated as Gaussian.

    E beta beta^T = (s / d) I for the sparse prior, so a Gaussian prior with the same
    covariance gives the posterior mean (X^T X + sigma2 (d / s) I)^-1 X^T y.
    """
    return sigma2 * d / s


def ridge_bayes(x: torch.Tensor, y: torch.Tensor, sigma2: float, s: int) -> torch.Tensor:
    """Ridge with lam = sigma2 d / s (see `bayes_ridge_lambda`): (B, n, d), (B, n) -> (B, d)."""
    return ridge(x, y, bayes_ridge_lambda(x.shape[-1], s, sigma2))


def _gd_from_moments(
    gram: torch.Tensor, corr: torch.Tensor, step: float | torch.Tensor, k: int
) -> torch.Tensor:
    """k steps b <- b + step (c - S b) from b = 0."""
    step = _per_problem(step, corr)[:, None]
    b = torch.zeros_like(corr)
    for _ in range(k):
        b = b + step * (corr - _bmv(gram, b))
    return b


def gd(x: torch.Tensor, y: torch.Tensor, eta: float | torch.Tensor, k: int) -> torch.Tensor:
    """k GD steps of size eta from 0 on (1/2n)|y - X b|^2: (B, n, d), (B, n) -> (B, d).

    Equals [I - (I - eta S)^k] S^+ X^T y / n (docs/theory/sparse.md, section 3).
    """
    gram, corr = moments(x, y)
    return _gd_from_moments(gram, corr, eta, k)


def largest_eigenvalue(gram: torch.Tensor) -> torch.Tensor:
    """(B,) largest eigenvalue of symmetric (B, d, d) matrices."""
    return torch.linalg.eigvalsh(gram)[..., -1]


def _reweight(
    gram: torch.Tensor, corr: torch.Tensor, gamma: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PTO preprocessing in moment form.

    Returns the weights w = |c|^gamma (B, d), the moments of the reweighted data
    x -> w * x, namely w S w (B, d, d) and w c (B, d), and lambda_max(w S w) (B,).
    """
    weights = corr.abs() ** _per_problem(gamma, corr)[:, None]
    gram_w = weights[:, :, None] * gram * weights[:, None, :]
    return weights, gram_w, weights * corr, largest_eigenvalue(gram_w)


def _pto_from_moments(
    gram: torch.Tensor,
    corr: torch.Tensor,
    gamma: float | torch.Tensor,
    eta: float | torch.Tensor,
    k: int,
) -> torch.Tensor:
    """PTO from the moments S (B, d, d) and c (B, d)."""
    weights, gram_w, corr_w, top = _reweight(gram, corr, gamma)
    return weights * _gd_from_moments(gram_w, corr_w, _per_problem(eta, corr) / top, k)


def pto(
    x: torch.Tensor,
    y: torch.Tensor,
    gamma: float | torch.Tensor,
    eta: float | torch.Tensor,
    k: int,
) -> torch.Tensor:
    """Preprocess-then-optimize: (B, n, d), (B, n) -> (B, d).

    With r = (1/n) X^T y and w = |r|^gamma, run k GD steps from 0 on the reweighted
    data x -> diag(w) x with step eta / lambda_max(reweighted S), eta in (0, 2), and
    map back: beta_hat = diag(w) b. gamma = 1 is the paper's x -> diag(r) x (the
    signs of r cancel in beta_hat). The normalised step keeps every problem in the
    stable range of GD, which fixed steps on reweighted data do not.
    """
    gram, corr = moments(x, y)
    return _pto_from_moments(gram, corr, gamma, eta, k)


def _diagonal_gd_from_moments(
    gram: torch.Tensor, corr: torch.Tensor, steps: torch.Tensor, k: int
) -> torch.Tensor:
    """k steps b <- b + steps * (c - S b) from b = 0, steps (..., B, d) per coordinate;
    gram (B, d, d), corr (B, d) -> (..., B, d)."""
    b = torch.zeros_like(steps)
    for _ in range(k):
        b = b + steps * (corr - _bmv(gram, b))
    return b


def _pto_split_from_moments(
    gram: torch.Tensor,
    corr: torch.Tensor,
    eta_x: float | torch.Tensor,
    eta_u: float | torch.Tensor,
    k: int,
) -> torch.Tensor:
    """pto_split from the moments S (B, d, d), c (B, d); eta_x = 0 is pto_fixed."""
    steps = _per_problem(eta_x, corr)[:, None] + _per_problem(eta_u, corr)[:, None] * corr**2
    return _diagonal_gd_from_moments(gram, corr, steps, k)


def pto_fixed(x: torch.Tensor, y: torch.Tensor, eta: float | torch.Tensor, k: int) -> torch.Tensor:
    """k GD steps of fixed size eta on the reweighted data x -> r * x, mapped back:
    beta <- beta + eta diag(r^2) (c - S beta) from 0, r = X^T y / n; (B, n, d), (B, n) -> (B, d).

    The linear stack with d layer-1 heads computes it (head h: KQ = e_h e_h^T, writing
    u_h = r_h x_h) and k layers with KQ = eta on the u channels only
    (reduced_models.sparse.extended_manifold at alpha = I, eta_x = 0, eta_u = eta I).
    """
    gram, corr = moments(x, y)
    return _pto_split_from_moments(gram, corr, 0.0, eta, k)


def pto_split(
    x: torch.Tensor, y: torch.Tensor, eta_x: float | torch.Tensor, eta_u: float | torch.Tensor,
    k: int,
) -> torch.Tensor:
    """beta <- beta + (eta_x I + eta_u diag(r^2)) (c - S beta), k steps from 0:
    GD on the features (x, r * x) with their own fixed steps; (B, n, d), (B, n) -> (B, d).

    The linear stack computes it as pto_fixed does, with later-layer KQ = diag(eta_x I_d,
    eta_u I_d) on (x, u) (extended_manifold at alpha = I).
    """
    gram, corr = moments(x, y)
    return _pto_split_from_moments(gram, corr, eta_x, eta_u, k)


def _pto_reduced_from_moments(
    gram: torch.Tensor, corr: torch.Tensor, alpha: torch.Tensor, eta: torch.Tensor, k: int,
    heads: int,
) -> torch.Tensor:
    """pto_reduced for G parameter pairs alpha, eta (G,) -> (G, B, d)."""
    return block_preconditioned_gd(gram, corr, alpha[:, None].expand(-1, heads),
                                   eta[:, None].expand(-1, k))


def pto_reduced(
    x: torch.Tensor, y: torch.Tensor, alpha: float, eta: float, k: int, heads: int
) -> torch.Tensor:
    """The linear stack at the (alpha, eta) point of reduced_models.sparse with `heads`
    layer-1 heads and k GD layers, every alpha_h = alpha and eta_l = eta:
    beta <- beta + eta (I + alpha^2 sum_h r_h r_h^T) (c - S beta); (B, n, d), (B, n) -> (B, d)."""
    gram, corr = moments(x, y)
    pair = torch.tensor([alpha], dtype=corr.dtype), torch.tensor([eta], dtype=corr.dtype)
    return _pto_reduced_from_moments(gram, corr, *pair, k, heads)[0]


def _lasso_kkt_violation_from_moments(
    gram: torch.Tensor, corr: torch.Tensor, b: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    """(B,) max over coordinates of the distance of 0 from grad + lam d|b|_1.

    grad = S b - c is the gradient of (1/2n)|y - X b|^2; lam is (B,).
    """
    grad = _bmv(gram, b) - corr
    lam = lam[:, None]
    on_support = (grad + lam * torch.sign(b)).abs()
    off_support = torch.clamp(grad.abs() - lam, min=0.0)
    return torch.where(b != 0, on_support, off_support).amax(dim=-1)


@dataclass
class _LassoPathState:
    """Position of each problem on its Lasso path.

    - level: (B,) current penalty lambda
    - b: (B, d) solution at `level`
    - active: (B, d) bool, coordinates whose correlation |c - S b| equals `level`
    - signs: (B, d) signs of the active correlations, 0 elsewhere
    - dropped_side: (B, d) sign of a coordinate that left the active set at `level`
      (0 elsewhere); it sits on that boundary, which must not count as re-entry
    """

    level: torch.Tensor
    b: torch.Tensor
    active: torch.Tensor
    signs: torch.Tensor
    dropped_side: torch.Tensor

    def rows(self, index: torch.Tensor) -> _LassoPathState:
        """The states of the problems at `index` (copies)."""
        return _LassoPathState(*(getattr(self, f.name)[index] for f in fields(self)))

    def set_rows(self, index: torch.Tensor, other: _LassoPathState) -> None:
        """Overwrite the states of the problems at `index` with `other`."""
        for f in fields(self):
            getattr(self, f.name)[index] = getattr(other, f.name)


def _start_lasso_path(corr: torch.Tensor) -> _LassoPathState:
    """b = 0 at lambda = max_j |c_j|, where the path starts."""
    rows = torch.arange(corr.shape[0], device=corr.device)
    level, first = corr.abs().max(dim=-1)
    active = torch.zeros(corr.shape, dtype=torch.bool, device=corr.device)
    active[rows, first] = True
    signs = torch.zeros_like(corr)
    signs[rows, first] = torch.sign(corr[rows, first])
    return _LassoPathState(level, torch.zeros_like(corr), active, signs, torch.zeros_like(corr))


def _solve_on_active(gram: torch.Tensor, active: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """(B, d) solution v of S_AA v_A = rhs_A on each problem's active set A, v = 0 off A."""
    pair = active.unsqueeze(-1) & active.unsqueeze(-2)
    system = torch.where(pair, gram, 0.0) + torch.diag_embed((~active).to(gram.dtype))
    return torch.linalg.solve(system, torch.where(active, rhs, 0.0))


def _follow_lasso_segment(
    state: _LassoPathState, gram: torch.Tensor, corr: torch.Tensor, remaining: torch.Tensor
) -> None:
    """Move every problem along its current linear segment, by at most `remaining` (B,).

    While lambda decreases by delta, b_A grows by delta v_A with v_A = S_AA^-1 s_A
    and every correlation a = c - S b moves by -delta S v; the segment ends when an
    inactive |a_j| reaches lambda (j joins) or an active b_j reaches 0 (j leaves).
    """
    never = torch.full_like(corr, math.inf)
    direction = _solve_on_active(gram, state.active, state.signs)
    slope = _bmv(gram, direction)
    resid = corr - _bmv(gram, state.b)
    level = state.level[:, None]
    to_upper = torch.where(
        (slope < 1) & (state.dropped_side <= 0), (level - resid) / (1 - slope), never
    )
    to_lower = torch.where(
        (slope > -1) & (state.dropped_side >= 0), (level + resid) / (1 + slope), never
    )
    join = torch.where(state.active, never, torch.minimum(to_upper, to_lower))
    leave = -state.b / direction
    leave = torch.where(state.active & (leave > 0), leave, never)
    event_delta, event_index = torch.minimum(join, leave).min(dim=-1)
    delta = torch.minimum(event_delta, remaining)

    state.b += delta[:, None] * direction
    state.level -= delta
    state.dropped_side[delta > 0] = 0.0

    hit = torch.nonzero(event_delta < remaining).flatten()
    j = event_index[hit]
    joins = ~state.active[hit, j]
    old_signs = state.signs[hit, j]
    new_signs = torch.sign(resid[hit, j] - delta[hit] * slope[hit, j])
    state.active[hit, j] = joins
    state.signs[hit, j] = torch.where(joins, new_signs, 0.0)
    leaves = ~joins
    state.b[hit[leaves], j[leaves]] = 0.0
    state.dropped_side[hit[leaves], j[leaves]] = old_signs[leaves]


def _advance_lasso_path(
    state: _LassoPathState,
    gram: torch.Tensor,
    corr: torch.Tensor,
    target: torch.Tensor,
    max_segments: int,
) -> None:
    """Follow the piecewise-linear Lasso path of every problem down to lambda = target (B,).

    Homotopy: LARS with the Lasso modification (Efron, Hastie, Johnstone, Tibshirani,
    "Least angle regression", Ann. Statist. 2004). Problems that have arrived drop
    out of the computation.
    """
    for _ in range(max_segments):
        moving = torch.nonzero(state.level > target).flatten()
        if moving.numel() == 0:
            return
        part = state.rows(moving)
        _follow_lasso_segment(part, gram[moving], corr[moving], part.level - target[moving])
        state.set_rows(moving, part)
    raise RuntimeError(f"Lasso path did not reach its target within {max_segments} segments")


def _lasso_path_from_moments(
    gram: torch.Tensor, corr: torch.Tensor, lams: torch.Tensor, tol: float
) -> torch.Tensor:
    """(G, B, d) Lasso solutions at penalties lams (G, B), each column non-increasing.

    Raises if a solution violates the KKT conditions by more than tol.
    """
    if bool((lams <= 0).any()):
        raise ValueError("Lasso penalties must be positive")
    if bool((lams[1:] > lams[:-1]).any()):
        raise ValueError("Lasso penalties must be non-increasing along the path")
    state = _start_lasso_path(corr)
    solutions = []
    for lam in lams:
        _advance_lasso_path(state, gram, corr, lam, max_segments=50 * corr.shape[-1])
        violation = _lasso_kkt_violation_from_moments(gram, corr, state.b, lam).max()
        if violation > tol:
            raise RuntimeError(f"Lasso KKT violation {violation.item():.3g} exceeds {tol:.3g}")
        solutions.append(state.b.clone())
    return torch.stack(solutions)


def _lasso_from_moments(
    gram: torch.Tensor, corr: torch.Tensor, lam: float | torch.Tensor, tol: float
) -> torch.Tensor:
    """(B, d) Lasso solutions at penalty lam (float or (B,)) from the moments S, c."""
    return _lasso_path_from_moments(gram, corr, _per_problem(lam, corr)[None], tol)[0]


def lasso(
    x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor, tol: float = LASSO_TOL
) -> torch.Tensor:
    """argmin_b (1/2n)|y - X b|^2 + lam |b|_1: (B, n, d), (B, n) -> (B, d).

    Exact up to round-off (homotopy); raises if the KKT violation exceeds tol.
    """
    gram, corr = moments(x, y)
    return _lasso_from_moments(gram, corr, lam, tol)


def _lasso_grid_from_moments(
    gram: torch.Tensor, corr: torch.Tensor, lams: Sequence[float], tol: float
) -> torch.Tensor:
    """(G, B, d) Lasso solutions for the G penalties lams, in the given order."""
    lams = torch.as_tensor(lams, dtype=corr.dtype, device=corr.device)
    order = torch.argsort(lams, descending=True)
    targets = lams[order][:, None].expand(-1, corr.shape[0])
    path = _lasso_path_from_moments(gram, corr, targets, tol)
    return path[torch.argsort(order)]


def lasso_path(
    x: torch.Tensor, y: torch.Tensor, lams: Sequence[float], tol: float = LASSO_TOL
) -> torch.Tensor:
    """(G, B, d) Lasso solutions for each of the G penalties lams (any order)."""
    gram, corr = moments(x, y)
    return _lasso_grid_from_moments(gram, corr, lams, tol)


# ---------------------------------------------------------------------------
# Risk


def risk(beta_hat: torch.Tensor, beta: torch.Tensor, sigma2: float) -> torch.Tensor:
    """(B,) risk E (y_q - x_q.beta_hat)^2 of a fresh noisy query with x_q ~ N(0, I_d).

    Integrating x_q out exactly gives sigma2 + |beta_hat - beta|^2.
    """
    return sigma2 + ((beta_hat - beta) ** 2).sum(dim=-1)


def ols_mean_risk_is_infinite(n: int, d: int, sigma2: float) -> bool:
    """Whether the expected OLS risk diverges (our derivation, standard Wishart facts).

    The noise part of the risk is sigma2 E tr((X^T X)^-1) for n >= d and
    sigma2 E tr((X X^T)^-1) for n < d; the inverse-Wishart mean exists only when the
    degrees of freedom exceed the dimension by more than one, i.e. |n - d| >= 2.
    """
    return sigma2 > 0 and abs(n - d) <= 1


def paired_difference(risk_a: torch.Tensor, risk_b: torch.Tensor) -> tuple[float, float]:
    """Mean of risk_a - risk_b over trials (T,) on the same trials, and its standard error."""
    diff = risk_a - risk_b
    return diff.mean().item(), (diff.std() / diff.numel() ** 0.5).item()


# ---------------------------------------------------------------------------
# Tuning

# Log-grid ranges searched before refinement, and grid points per parameter
# (fewer for PTO's two-parameter grid). PTO's eta is relative to lambda_max of
# the reweighted Gram matrix, so GD is stable for eta < 2.
POINTS_1D, POINTS_2D = 17, 9
RANGES = {
    "ridge": {"lam": (1e-4, 1e4)},
    "gd": {"eta": (1e-3, 2.0)},
    "pto": {"gamma": (0.1, 10.0), "eta": (1e-2, 1.99)},
    "pto_fixed": {"eta": (1e-4, 10.0)},
    "pto_split": {"eta_x": (1e-3, 2.0), "eta_u": (1e-4, 10.0)},
    "pto_reduced": {"alpha": (1e-2, 1e2), "eta": (1e-4, 2.0)},
    "lasso": {"lam": (1e-3, 10.0)},
}


def _log_grid(low: float, high: float, points: int) -> torch.Tensor:
    return torch.logspace(math.log10(low), math.log10(high), points, dtype=torch.float64)


def grid_search(
    losses: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    ranges: dict[str, tuple[float, float]],
    points: int,
) -> dict[str, float]:
    """Minimise a loss over log grids of `points` values per parameter, refined once.

    losses maps the P points of the Cartesian product (a (P,) tensor per parameter)
    to their (P,) losses. The second pass spans, per parameter, the grid neighbours
    of the first pass's best point.
    """
    names = list(ranges)
    spans = dict(ranges)
    best_loss, best = math.inf, {}
    for _ in range(2):
        axes = [_log_grid(*spans[name], points) for name in names]
        mesh = torch.cartesian_prod(*axes).reshape(-1, len(names))
        loss = losses({name: mesh[:, i] for i, name in enumerate(names)})
        i_best = int(torch.argmin(loss))
        if loss[i_best] < best_loss:
            best_loss = loss[i_best].item()
            best = {name: mesh[i_best, i].item() for i, name in enumerate(names)}
        for name, axis, value in zip(names, axes, mesh[i_best]):
            i = int(torch.argmin((axis - value).abs()))
            spans[name] = (axis[max(i - 1, 0)].item(), axis[min(i + 1, points - 1)].item())
    return best


def tune(batch: SparseBatch, sigma2: float, s: int, k_steps: int,
         heads: int | None = None) -> dict[str, dict[str, float]]:
    """Hyper-parameters of every estimator minimising the mean risk on a tuning batch
    (pto_reduced with `heads` layer-1 heads; None: one per coordinate). A grid point whose GD diverges to a
    non-finite risk counts as infinitely bad."""
    gram, corr = moments(batch.x, batch.y)
    n, d = batch.x.shape[-2:]
    heads = heads or d

    def mse(beta_hat: torch.Tensor) -> torch.Tensor:
        """Mean of |beta_hat - beta|^2 over trials; (..., B, d) -> (...)."""
        loss = ((beta_hat - batch.beta) ** 2).sum(dim=-1).mean(dim=-1)
        return torch.nan_to_num(loss, nan=math.inf)

    def ridge_losses(grid):
        return torch.stack([mse(_ridge_from_moments(gram, corr, lam, n)) for lam in grid["lam"]])

    def gd_losses(grid):
        return torch.stack([mse(_gd_from_moments(gram, corr, eta, k_steps)) for eta in grid["eta"]])

    def pto_losses(grid):
        losses = torch.empty_like(grid["gamma"])
        for gamma in torch.unique(grid["gamma"]):
            weights, gram_w, corr_w, top = _reweight(gram, corr, gamma)
            for i in torch.nonzero(grid["gamma"] == gamma).flatten():
                b = _gd_from_moments(gram_w, corr_w, grid["eta"][i] / top, k_steps)
                losses[i] = mse(weights * b)
        return losses

    def pto_split_losses(grid):
        steps = grid["eta_x"][:, None, None] + grid["eta_u"][:, None, None] * corr**2
        return mse(_diagonal_gd_from_moments(gram, corr, steps, k_steps))

    def pto_fixed_losses(grid):
        return pto_split_losses({"eta_x": torch.zeros_like(grid["eta"]), "eta_u": grid["eta"]})

    def pto_reduced_losses(grid):
        return mse(_pto_reduced_from_moments(gram, corr, grid["alpha"], grid["eta"], k_steps,
                                             heads))

    def lasso_losses(grid):
        return mse(_lasso_grid_from_moments(gram, corr, grid["lam"].tolist(), tol=LASSO_TOL))

    return {
        "ols": {},
        "ridge": grid_search(ridge_losses, RANGES["ridge"], POINTS_1D),
        "ridge_bayes": {"lam": bayes_ridge_lambda(d, s, sigma2)},
        "gd": {**grid_search(gd_losses, RANGES["gd"], POINTS_1D), "k": k_steps},
        "pto": {**grid_search(pto_losses, RANGES["pto"], POINTS_2D), "k": k_steps},
        "pto_fixed": {**grid_search(pto_fixed_losses, RANGES["pto_fixed"], POINTS_1D),
                      "k": k_steps},
        "pto_split": {**grid_search(pto_split_losses, RANGES["pto_split"], POINTS_2D),
                      "k": k_steps},
        "pto_reduced": {**grid_search(pto_reduced_losses, RANGES["pto_reduced"], POINTS_2D),
                        "k": k_steps, "heads": heads},
        "lasso": grid_search(lasso_losses, RANGES["lasso"], POINTS_1D),
        "averaging": {},
    }


def estimate_all(
    x: torch.Tensor, y: torch.Tensor, params: dict[str, dict[str, float]]
) -> dict[str, torch.Tensor]:
    """beta_hat (B, d) of every estimator in ESTIMATORS with the given hyper-parameters."""
    gram, corr = moments(x, y)
    n = x.shape[-2]
    return {
        "ols": ols(x, y),
        "ridge": _ridge_from_moments(gram, corr, params["ridge"]["lam"], n),
        "ridge_bayes": _ridge_from_moments(gram, corr, params["ridge_bayes"]["lam"], n),
        "gd": _gd_from_moments(gram, corr, params["gd"]["eta"], int(params["gd"]["k"])),
        "pto": _pto_from_moments(
            gram, corr, params["pto"]["gamma"], params["pto"]["eta"], int(params["pto"]["k"])
        ),
        "pto_fixed": _pto_split_from_moments(gram, corr, 0.0, params["pto_fixed"]["eta"],
                                             int(params["pto_fixed"]["k"])),
        "pto_split": _pto_split_from_moments(gram, corr, params["pto_split"]["eta_x"],
                                             params["pto_split"]["eta_u"],
                                             int(params["pto_split"]["k"])),
        "pto_reduced": _pto_reduced_from_moments(
            gram, corr, torch.tensor([params["pto_reduced"]["alpha"]], dtype=corr.dtype),
            torch.tensor([params["pto_reduced"]["eta"]], dtype=corr.dtype),
            int(params["pto_reduced"]["k"]), int(params["pto_reduced"]["heads"]))[0],
        "lasso": _lasso_from_moments(gram, corr, params["lasso"]["lam"], LASSO_TOL),
        "averaging": corr,
    }


# ---------------------------------------------------------------------------
# Risk tables


@dataclass
class RiskSamples:
    """Per-trial risks of all estimators at one context length n.

    - risks: name -> (trials,) risk of each evaluation trial (the same trials for all)
    - tuned: name -> hyper-parameters chosen on separate tuning trials
    """

    n: int
    risks: dict[str, torch.Tensor]
    tuned: dict[str, dict[str, float]]


def risk_samples(
    d: int,
    s: int,
    sigma2: float,
    n_list: Sequence[int],
    k_steps: int,
    trials: int,
    tune_trials: int,
    generator: torch.Generator,
    heads: int | None = None,
) -> list[RiskSamples]:
    """Tune every estimator on tune_trials prompts, then evaluate on `trials` fresh ones
    (pto_reduced with `heads` layer-1 heads; None: one per coordinate)."""
    samples = []
    for n in n_list:
        tuning = sample_sparse(tune_trials, n, d, s, sigma2, generator)
        tuned = tune(tuning, sigma2, s, k_steps, heads)
        evaluation = sample_sparse(trials, n, d, s, sigma2, generator)
        estimates = estimate_all(evaluation.x, evaluation.y, tuned)
        risks = {name: risk(b, evaluation.beta, sigma2) for name, b in estimates.items()}
        samples.append(RiskSamples(n, risks, tuned))
    return samples


def summarize(samples: Sequence[RiskSamples], d: int, sigma2: float) -> dict:
    """JSON-able table of mean risks, standard errors, OLS medians and tuned parameters.

    Where the expected OLS risk diverges (`ols_mean_risk_is_infinite`) its mean and
    standard error are float("inf"), whatever the sample gave.
    """
    table = {
        "n_test": [sample.n for sample in samples],
        "risk": {name: [] for name in ESTIMATORS},
        "stderr": {name: [] for name in ESTIMATORS},
        "ols_median": [],
        "tuned": {name: [] for name in ESTIMATORS},
    }
    for sample in samples:
        for name in ESTIMATORS:
            values = sample.risks[name]
            mean, stderr = values.mean().item(), (values.std() / values.numel() ** 0.5).item()
            if name == "ols" and ols_mean_risk_is_infinite(sample.n, d, sigma2):
                mean, stderr = math.inf, math.inf
            table["risk"][name].append(mean)
            table["stderr"][name].append(stderr)
            table["tuned"][name].append(dict(sample.tuned[name]))
        table["ols_median"].append(sample.risks["ols"].median().item())
    return table


def risk_table(
    d: int,
    s: int,
    sigma2: float,
    n_list: Sequence[int],
    k_steps: int,
    trials: int,
    tune_trials: int,
    generator: torch.Generator,
    heads: int | None = None,
) -> dict:
    """Tuned risks of all estimators at each n (see `risk_samples` and `summarize`)."""
    samples = risk_samples(d, s, sigma2, n_list, k_steps, trials, tune_trials, generator, heads)
    table = summarize(samples, d, sigma2)
    table["settings"] = {
        "d": d,
        "s": s,
        "sigma2": sigma2,
        "k_steps": k_steps,
        "trials": trials,
        "tune_trials": tune_trials,
        "heads": heads or d,
    }
    return table
