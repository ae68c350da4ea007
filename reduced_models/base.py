"""Base machinery of reduced models: manifold, metric, loss, gradient flow.

A reduced model is
- a state theta in R^P made of named parameters with shapes (e.g. one omega
  per head), lifted into full-network weights by an affine map
  W = J theta + b (the manifold);
- observables: sympy expressions of the state (e.g. omega, mu from factors);
- a loss of the observables: a sympy expression (symbolic) or a torch
  function (for losses with no closed form: then the gradient is autograd,
  or an analytic gradient in the observables when the loss supplies one).

Gradient flow on the manifold with the metric G = J^T J induced by the
Euclidean geometry of the full weights,

    d theta / dt = - G^-1 grad_theta Loss,

is what full-network gradient descent with step lr follows, with t = lr x step
(docs/theory/flows.md), provided the manifold is invariant under the full flow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from dynamics.ode import integrate
from dynamics.trajectory import Trajectory

from . import cache

if TYPE_CHECKING:
    import sympy as sp

Hyper = dict[str, "float | torch.Tensor"]


@dataclass(frozen=True)
class Param:
    """A named block of the reduced state: shape e.g. (H,) for one value per head."""

    name: str
    shape: tuple[int, ...]
    doc: str = ""

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def symbol_array(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Object array of sympy symbols name_i_j..., of the given shape."""
    import sympy as sp

    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = sp.Symbol(f"{name}_{'_'.join(map(str, idx))}" if idx else name, real=True)
    return out


def _lambdify(args: list, exprs: list, modules: str) -> Callable:
    """sympy's lambdify of exprs (numeric constants as 17-digit floats: torch functions
    reject Python ints), common subexpressions shared."""
    import sympy as sp

    return sp.lambdify(args, [sp.sympify(e).evalf(17) for e in exprs], modules=modules, cse=True)


def torch_function(raw: Callable) -> Callable[..., torch.Tensor]:
    """A lambdified function of several tensors or floats, broadcastable to a common shape
    S, as one returning a tensor (*S, number of expressions)."""

    def call(*values):
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        like = torch.broadcast_tensors(*tensors)[0] if tensors else torch.zeros(())
        # floats too become tensors: torch.pow and friends reject (float, int)
        values = [torch.as_tensor(v, dtype=like.dtype, device=like.device) for v in values]
        outs = [
            torch.broadcast_to(o, like.shape) if isinstance(o, torch.Tensor)
            else torch.full_like(like, float(o))
            for o in raw(*values)
        ]
        return torch.stack(outs, dim=-1)

    return call


def compile_exprs(args: list, exprs: list) -> Callable[..., torch.Tensor]:
    """Compile sympy expressions to a torch function.

    The returned function takes one tensor (or float) per symbol in args, all
    broadcastable to a common shape S, and returns a tensor of shape (*S, len(exprs)).
    """
    return torch_function(_lambdify(args, exprs, "torch"))


def compile_scalar(args: list, exprs: list) -> Callable[..., list[float]]:
    """Compile sympy expressions to a function of Python floats (math module), one float per
    symbol in args, returning a list of floats: for one state on the CPU, where the
    overhead of each tensor operation would dominate. Where math cannot evaluate them
    (overflow, a domain error, division by zero, a function math lacks) the call raises."""
    return _lambdify(args, exprs, "math")


class Manifold:
    """Affine lift of a reduced state into full-network weights, and its metric.

    Args:
    - params: the blocks of the state, in order (the state vector concatenates
      them, each flattened row-major)
    - lift: maps {param name: object array of sympy symbols} to
      {weight name: object array of sympy expressions}, affine in the symbols

    Attributes: jacobian J (N, P), offset b (N,), metric G = J^T J (P, P) and
    metric_inverse, all float64 numpy arrays; weight_shapes; key, the key of the
    numeric lift in the on-disk cache (reduced_models.cache; None: not cached);
    symbols and state_symbols, the sympy symbols of the state (built when first used).
    """

    def __init__(self, params: list[Param], lift: Callable[[dict], dict]):
        self.params = list(params)
        self._lift = lift
        self.key = cache.key("manifold", self.params, lift)
        art = cache.load(self.key)
        try:
            shapes = {name: tuple(shape) for name, shape in art["weight_shapes"]}
            jacobian = np.array(art["jacobian"], dtype=np.float64).reshape(art["jacobian_shape"])
            offset = np.array(art["offset"], dtype=np.float64).reshape(-1)
        except (TypeError, KeyError, ValueError):  # no artifact, or not a valid one
            shapes, jacobian, offset = self._build()
            cache.save(self.key, {"weight_shapes": [[k, list(v)] for k, v in shapes.items()],
                                  "jacobian": jacobian.ravel().tolist(),
                                  "jacobian_shape": list(jacobian.shape),
                                  "offset": offset.tolist()})
        self.weight_shapes, self.jacobian, self.offset = shapes, jacobian, offset
        self.metric = self.jacobian.T @ self.jacobian
        if np.linalg.matrix_rank(self.metric) < self.dim:
            raise ValueError("the lift is not injective: its metric J^T J is singular")
        self.metric_inverse = np.linalg.inv(self.metric)

    def _build(self) -> tuple[dict, np.ndarray, np.ndarray]:
        """(weight shapes, J, b) of the lift, from its sympy expressions."""
        import sympy as sp
        from sympy.solvers.solveset import NonlinearError

        lifted = {k: np.asarray(v, dtype=object) for k, v in self._lift(self.symbols).items()}
        entries = [sp.sympify(e) for v in lifted.values() for e in v.ravel()]
        try:
            A, b = sp.linear_eq_to_matrix(entries, self.state_symbols)
        except NonlinearError as exc:
            raise ValueError(f"the lift must be affine in the reduced state ({exc})") from None
        return ({k: v.shape for k, v in lifted.items()}, np.array(A, dtype=np.float64),
                -np.array(b, dtype=np.float64).ravel())

    @functools.cached_property
    def symbols(self) -> dict[str, np.ndarray]:
        return {p.name: symbol_array(p.name, p.shape) for p in self.params}

    @functools.cached_property
    def state_symbols(self) -> list:
        return [s for p in self.params for s in self.symbols[p.name].ravel()]

    @property
    def dim(self) -> int:
        return sum(p.size for p in self.params)

    def unpack(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        """(..., P) -> {param name: (..., *shape)}."""
        out, start = {}, 0
        for p in self.params:
            out[p.name] = state[..., start : start + p.size].reshape((*state.shape[:-1], *p.shape))
            start += p.size
        return out

    def pack(self, values: dict[str, torch.Tensor | np.ndarray | list]) -> torch.Tensor:
        """{param name: (..., *shape)} -> (..., P) float64."""
        parts = []
        for p in self.params:
            v = torch.as_tensor(np.asarray(values[p.name], dtype=np.float64))
            parts.append(v.reshape(*v.shape[: v.dim() - len(p.shape)], p.size))
        return torch.cat(parts, dim=-1)

    def lift(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        """(..., P) state -> {weight name: (..., *weight shape)} full-network weights."""
        J = torch.as_tensor(self.jacobian, dtype=state.dtype, device=state.device)
        b = torch.as_tensor(self.offset, dtype=state.dtype, device=state.device)
        flat = state @ J.T + b
        out, start = {}, 0
        for name, shape in self.weight_shapes.items():
            size = int(np.prod(shape, dtype=np.int64))
            out[name] = flat[..., start : start + size].reshape((*state.shape[:-1], *shape))
            start += size
        return out

    def project(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Full weights -> the nearest state in the Euclidean weight norm (least squares):
        theta = G^-1 J^T (W - b). Exact inverse of lift on the manifold. Returns (..., P)."""
        flat = torch.cat(
            [weights[n].reshape(*weights[n].shape[: weights[n].dim() - len(s)], -1)
             for n, s in self.weight_shapes.items()],
            dim=-1,
        ).to(torch.float64)
        J = torch.as_tensor(self.jacobian)
        Ginv = torch.as_tensor(self.metric_inverse)
        return (flat - torch.as_tensor(self.offset)) @ J @ Ginv.T


@dataclass(frozen=True)
class SymbolicLoss:
    """Loss given as a sympy expression builder: fn(observables, hyper symbols) -> expr,
    where observables map names to object arrays of sympy expressions."""

    fn: Callable[[dict[str, np.ndarray], dict[str, sp.Symbol]], sp.Expr]
    description: str


@dataclass(frozen=True)
class TorchLoss:
    """Loss with no closed form, as a torch function fn(observables, hyper) -> (B,),
    observables mapping names to (B, *shape) tensors.

    Its gradient is autograd through fn, unless `gradient` is given:
    gradient(observables, hyper) -> {observable name: (B, *shape) d loss / d observable}
    (names it leaves out have zero derivative); the engine chains it through the
    observables, and fn (which must stay differentiable) serves the loss values
    and higher derivatives."""

    fn: Callable[[dict[str, torch.Tensor], Hyper], torch.Tensor]
    description: str
    gradient: Callable[[dict[str, torch.Tensor], Hyper], dict[str, torch.Tensor]] | None = None


class ReducedModel:
    """A manifold, observables on it and a loss; derives the gradient flow.

    Args:
    - manifold: state blocks and their lift (gives the metric)
    - observables: fn({param: symbol array}) -> {name: object array of exprs}
    - loss: SymbolicLoss or TorchLoss, a function of the observables
    - hyper: names of continuous hyper-parameters passed at run time (floats or
      (B,) tensors, so a grid of hyper-parameters integrates as one batch)
    - metric: "lift" (default) G = J^T J of the lift, the flow SGD on the network follows;
      "unit" G = I, d theta/dt = -grad_theta Loss in the reduced coordinates themselves
    """

    METRICS = ("lift", "unit")

    def __init__(self, manifold: Manifold, observables: Callable[[dict], dict],
                 loss: SymbolicLoss | TorchLoss, hyper: tuple[str, ...] = (),
                 metric: str = "lift"):
        if metric not in self.METRICS:
            raise ValueError(f"metric must be one of {self.METRICS}, got {metric!r}")
        self.manifold = manifold
        self.metric = metric
        self.metric_inverse = (manifold.metric_inverse if metric == "lift"
                               else np.eye(manifold.dim))
        self.loss_spec = loss
        self.hyper = tuple(hyper)
        self.symbolic = isinstance(loss, SymbolicLoss)
        self._observables = observables
        # compiled from sympy, or loaded from the on-disk cache (reduced_models.cache)
        self.key = None if manifold.key is None else cache.key(
            "reduced model", manifold.key, observables, loss.fn if self.symbolic else None,
            self.hyper, metric)
        self._obs_shapes, self._functions = self._compiled()
        self._observe = torch_function(self._functions["observe"])
        if self.symbolic:
            self._loss = torch_function(self._functions["loss"])
            self._grad = torch_function(self._functions["grad"])
        self._scalar_usable = self.symbolic

    def _compiled(self) -> tuple[dict[str, tuple], dict[str, Callable]]:
        """(observable shapes, raw compiled functions): from the cache, else compiled."""
        art = cache.load(self.key)
        self._generated = {}  # name -> the cached form of each function read from the cache
        try:
            shapes = {name: tuple(shape) for name, shape in art["observable_shapes"]}
            functions = {name: cache.rebuild(f) for name, f in art["functions"].items()}
            if {"observe", "loss", "grad"} - set(functions) and self.symbolic:
                raise KeyError("loss")
            self._generated = dict(art["functions"])
            return shapes, functions
        except (cache.Uncacheable, TypeError, KeyError, IndexError, ValueError, AttributeError,
                ImportError, SyntaxError):  # no artifact, or not a valid one
            pass
        sym = self._symbolic
        shapes = {k: v.shape for k, v in sym["observables"].items()}
        args = self.manifold.state_symbols
        functions = {"observe": _lambdify(args, [e for v in sym["observables"].values()
                                                 for e in v.ravel()], "torch")}
        if self.symbolic:
            all_args = args + list(sym["hyper"].values())
            functions["loss"] = _lambdify(all_args, [sym["loss"]], "torch")
            functions["grad"] = _lambdify(all_args, sym["gradient"], "torch")
        self._save(shapes, functions)
        return shapes, functions

    def _save(self, shapes: dict[str, tuple], functions: dict[str, Callable]) -> None:
        try:
            generated = {name: self._generated.get(name) or cache.generated(f)
                         for name, f in functions.items()}
        except (cache.Uncacheable, OSError, TypeError, SyntaxError):  # source not recoverable
            return
        cache.save(self.key, {"observable_shapes": [[k, list(v)] for k, v in shapes.items()],
                              "functions": generated})

    @functools.cached_property
    def _symbolic(self) -> dict:
        """The model in sympy: hyper symbols, observables, loss and its gradient in the state."""
        import sympy as sp

        hyper = {h: sp.Symbol(h, real=True) for h in self.hyper}
        obs = {k: np.asarray(v, dtype=object)
               for k, v in self._observables(self.manifold.symbols).items()}
        out = {"hyper": hyper, "observables": obs}
        if self.symbolic:
            expr = self.loss_spec.fn(obs, hyper)
            out["loss"] = expr
            out["gradient"] = [sp.diff(expr, s) for s in self.manifold.state_symbols]
        return out

    @property
    def hyper_symbols(self) -> dict:
        return self._symbolic["hyper"]

    @property
    def observable_exprs(self) -> dict[str, np.ndarray]:
        return self._symbolic["observables"]

    @property
    def loss_expr(self):
        return self._symbolic["loss"]

    @property
    def gradient_exprs(self) -> list:
        return self._symbolic["gradient"]

    @property
    def description(self) -> str:
        return self.loss_spec.description

    def _args(self, state: torch.Tensor, hyper: Hyper) -> list:
        missing = [h for h in self.hyper if h not in hyper]
        if missing:
            raise KeyError(f"missing hyper-parameter(s) {missing}")
        return list(state.unbind(-1)) + [hyper[h] for h in self.hyper]

    def observe(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, P) -> {observable: (B, *shape)} from the symbolic observables."""
        flat = self._observe(*state.unbind(-1))
        out, start = {}, 0
        for name, shape in self._obs_shapes.items():
            size = int(np.prod(shape, dtype=np.int64))
            out[name] = flat[..., start : start + size].reshape((*state.shape[:-1], *shape))
            start += size
        return out

    def loss(self, state: torch.Tensor, hyper: Hyper) -> torch.Tensor:
        """(B, P) -> (B,) loss."""
        if self.symbolic:
            return self._loss(*self._args(state, hyper))[..., 0]
        return self.loss_spec.fn(self.observe(state), hyper)

    def gradient(self, state: torch.Tensor, hyper: Hyper) -> torch.Tensor:
        """(B, P) -> (B, P) Euclidean gradient of the loss in the reduced state."""
        if self.symbolic:
            return self._grad(*self._args(state, hyper))
        with torch.enable_grad():
            x = state.detach().requires_grad_(True)
            if self.loss_spec.gradient is None:
                (g,) = torch.autograd.grad(self.loss(x, hyper).sum(), x)
                return g
            obs = self.observe(x)
            with torch.no_grad():
                d_obs = self.loss_spec.gradient({k: v.detach() for k, v in obs.items()}, hyper)
            # one scalar root, sum of obs . d_obs: the same vector-Jacobian product, and
            # autograd.grad with tensor grad_outputs would import sympy (torch.fx)
            root = sum((obs[k] * v).sum() for k, v in d_obs.items())
            (g,) = torch.autograd.grad(root, x, allow_unused=True)
        return torch.zeros_like(x) if g is None else g

    @functools.cached_property
    def _scalar_grad(self) -> Callable[..., list[float]]:
        """The gradient on Python floats (`compile_scalar`), compiled when first needed and
        then cached with the rest of the model."""
        if "scalar_grad" not in self._functions:
            args = self.manifold.state_symbols + list(self.hyper_symbols.values())
            self._functions["scalar_grad"] = compile_scalar(args, self.gradient_exprs)
            self._save(self._obs_shapes, self._functions)
        return self._functions["scalar_grad"]

    def rhs(self, hyper: Hyper) -> Callable[[torch.Tensor], torch.Tensor]:
        """Gradient-flow right-hand side y -> -G^-1 grad Loss(y), on (B, P) states, with an
        `on_floats` method on one state as a list of floats for the lean solver
        (dynamics.dopri5).

        A symbolic model evaluates one float64 CPU state on Python floats
        (`compile_scalar`), many times faster than tensor operations on one row."""
        return _FlowRhs(self, hyper)

    def hessian(self, state: torch.Tensor, hyper: Hyper) -> torch.Tensor:
        """(P,) -> (P, P) Hessian of the loss (autograd through the compiled loss)."""
        return torch.func.hessian(lambda s: self.loss(s[None], hyper)[0])(state)


class _FlowRhs:
    """`ReducedModel.rhs` at fixed hyper-parameters."""

    def __init__(self, model: ReducedModel, hyper: Hyper):
        self.model, self.hyper = model, hyper
        self._metric = {}  # (dtype, device) -> G^-1 as a tensor
        negative = -np.asarray(model.metric_inverse, dtype=np.float64)
        diagonal = np.diag(negative)
        # -G^-1 g with G^-1's diagonal alone where G is diagonal (the common case)
        self._negative_diagonal = (diagonal.tolist() if np.array_equal(negative, np.diag(diagonal))
                                   else None)
        self._negative_rows = negative.tolist()
        try:
            self._hyper_values = [float(hyper[h]) for h in model.hyper]
        except (LookupError, TypeError, ValueError, RuntimeError):  # hyper-parameter batches
            self._hyper_values = None

    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        if (state.shape[0] == 1 and state.dtype == torch.float64 and state.device.type == "cpu"
                and not state.requires_grad):
            out = self._floats(state[0].tolist())
            if out is not None:
                return torch.tensor([out], dtype=state.dtype)
        key = (state.dtype, state.device)
        if key not in self._metric:
            self._metric[key] = torch.as_tensor(self.model.metric_inverse, dtype=state.dtype,
                                                device=state.device)
        return -self.model.gradient(state, self.hyper) @ self._metric[key]

    def on_floats(self, state: list[float]) -> list[float]:
        """One state as P floats -> its P derivatives (the lean solver's interface): on
        Python floats where the model allows, else through tensors."""
        out = self._floats(state)
        if out is None:
            return self(torch.tensor([state], dtype=torch.float64))[0].tolist()
        return out

    def _floats(self, state: list[float]) -> list[float] | None:
        """-G^-1 grad Loss on Python floats (`compile_scalar`); None where the floats cannot
        give it (then the tensor path does, with its inf and nan)."""
        model = self.model
        if not model._scalar_usable or self._hyper_values is None:
            return None
        try:
            grad = model._scalar_grad(*state, *self._hyper_values)
        except (ArithmeticError, ValueError):  # overflow, domain error, division by zero
            return None
        except (NameError, TypeError):  # a function math lacks: tensors from now on
            model._scalar_usable = False
            return None
        if self._negative_diagonal is not None:
            return [m * g for m, g in zip(self._negative_diagonal, grad)]
        return [sum(m * g for m, g in zip(row, grad)) for row in self._negative_rows]


def stationary_point(model: ReducedModel, guess: torch.Tensor, hyper: Hyper,
                     tol: float = 1e-12, max_iter: int = 100) -> tuple[torch.Tensor, bool]:
    """Newton's method on the gradient from guess (P,). Returns (point, converged)."""
    x = guess.detach().to(torch.float64).clone()
    for _ in range(max_iter):
        g = model.gradient(x[None], hyper)[0]
        if g.abs().max() < tol:
            return x, True
        step = torch.linalg.lstsq(model.hessian(x, hyper), g[:, None]).solution[:, 0]
        x = x - step
        if not torch.isfinite(x).all():
            return x, False
    return x, bool(model.gradient(x[None], hyper)[0].abs().max() < tol)


def flow_jacobian(model: ReducedModel, state: torch.Tensor, hyper: Hyper) -> torch.Tensor:
    """(P, P) Jacobian of the gradient-flow right-hand side, -G^-1 H, at state (P,).
    At a stationary point its eigenvalues (all real) are negative iff it is stable."""
    Ginv = torch.as_tensor(model.manifold.metric_inverse, dtype=state.dtype)
    return -Ginv @ model.hessian(state, hyper)


def flow_eigenvalues(model: ReducedModel, state: torch.Tensor, hyper: Hyper) -> np.ndarray:
    """Eigenvalues (sorted, real) of the flow Jacobian at state (P,).

    -G^-1 H is similar to the symmetric -G^-1/2 H G^-1/2, so they are real."""
    G = torch.as_tensor(model.manifold.metric, dtype=torch.float64)
    root_inv = torch.linalg.inv(torch.linalg.cholesky(G))
    sym = -root_inv @ model.hessian(state.to(torch.float64), hyper) @ root_inv.T
    return torch.linalg.eigvalsh(sym).numpy()


def integrate_flow(
    model: ReducedModel,
    state0: torch.Tensor,
    t: np.ndarray,
    hyper: Hyper,
    observe: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    **solver,
) -> list[Trajectory]:
    """Integrate the model's gradient flow and record it as trajectories.

    Args:
    - state0: (B, P) initial states (float64), or (P,)
    - t: (T,) output times (gradient-flow time)
    - hyper: hyper-parameters, floats or (B,) tensors
    - observe: the observable function on full-network weights; it is applied to
      the lifted state, so both sides of a comparison use the same projection
    - solver: keyword arguments of dynamics.integrate (rtol, atol, max_steps, ...)

    Returns one "ode" Trajectory per batch member, cut after a failure.
    """
    state0 = state0.reshape(-1, model.manifold.dim).to(torch.float64)
    sol = integrate(model.rhs(hyper), state0, t, **solver)
    T, B, P = sol.y.shape
    with torch.no_grad():
        flat = sol.y.reshape(T * B, P)
        hyper_rows = {k: v.repeat(T) if isinstance(v, torch.Tensor) and v.dim() else v
                      for k, v in hyper.items()}
        loss = model.loss(flat, hyper_rows).reshape(T, B).cpu().numpy()
        params = {k: v.reshape(T, B, *v.shape[1:]).cpu().numpy()
                  for k, v in observe(model.manifold.lift(flat)).items()}
    out = []
    for b in range(B):
        n = int(sol.valid[:, b].sum())
        out.append(Trajectory(
            kind="ode", t=sol.t[:n], loss=loss[:n, b],
            params={k: v[:n, b] for k, v in params.items()},
            status=sol.status[b], attrs={"model": model.description},
        ))
    return out
