"""Training loop for full networks, recording reduced parameters at chosen steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from . import checkpoint
from .status import Status
from .trajectory import BLOWUP_FACTOR, Trajectory


def train(
    model: torch.nn.Module,
    batch_loss: Callable[[int], torch.Tensor],
    optimizer,
    record_steps: np.ndarray,
    observe: Callable[[], dict[str, np.ndarray]],
    time_per_step: float,
    on_step: Callable[[int], None] | None = None,
    eval_loss: Callable[[], float] | None = None,
    loss_bound: float = 1e10,
    name: str | None = None,
    generators: Sequence[torch.Generator] = (),
) -> Trajectory:
    """Run optimizer steps 0 .. record_steps[-1] - 1, recording at record_steps.

    Args:
    - model: the network (its parameters are the optimizer's)
    - optimizer: a torch optimizer or dynamics.fit.PlainSGD (zero_grad, step, state_dict,
      load_state_dict)
    - batch_loss: step -> loss on that step's minibatch (draws the batch): a scalar,
      or a (K,) vector for an Ensemble of K copies (the step descends its sum)
    - record_steps: (T,) increasing steps at which to record; step s is recorded
      before update s, so step 0 is the initial point and the last entry is the
      state after record_steps[-1] updates
    - observe: reads the reduced parameters from the current weights
    - time_per_step: gradient-flow time of one step (the learning rate for SGD)
    - eval_loss: if given, the loss recorded at each recorded step (e.g. on a
      fixed evaluation sample, smoother than the minibatch loss); same shape
      as batch_loss
    - loss_bound: a loss above it counts as divergence, and so does a loss above
      BLOWUP_FACTOR times the loss at step 0 (per ensemble member)
    - name: names this training within its run; when the run checkpoints
      (dynamics.checkpoint), the training saves its state under this name and resumes
      from it, bit-identical to an uninterrupted run
    - generators: every random stream batch_loss draws from (saved in checkpoints)

    Returns an "sgd" Trajectory with t = time_per_step x step and the minibatch
    loss (or eval_loss) at each recorded step, (T,) or (T, K) for an ensemble
    (see split_members). A non-finite, unbounded or blown-up loss, or a non-finite
    observable, ends training with status "diverged", the records before it and
    attrs["diverged_t"], the time of the step that failed.
    """
    record_steps = np.asarray(record_steps, dtype=np.int64)
    last = int(record_steps[-1])
    wanted = set(record_steps.tolist())
    steps, losses, params = [], [], []
    status, attrs, start = Status.COMPLETE, {}, None
    plan = checkpoint.active() if name is not None else None
    first, done = 0, False

    def snapshot(step: int, finished: bool) -> dict:
        return {"step": step, "done": finished, "status": status, "attrs": attrs, "start": start,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "generators": [g.get_state() for g in generators],
                "torch_rng": torch.get_rng_state(),
                "steps": steps, "losses": losses, "params": params}

    saved = checkpoint.load(plan, name) if plan is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for gen, state in zip(generators, saved["generators"], strict=True):
            gen.set_state(state)
        torch.set_rng_state(saved["torch_rng"])
        steps, losses, params = saved["steps"], saved["losses"], saved["params"]
        status, first, done = saved["status"], saved["step"], saved["done"]
        attrs, start = saved.get("attrs", {}), saved.get("start")
        if on_step is not None:
            for step in range(first):
                on_step(step)
    clock = checkpoint.Clock()
    for step in range(first, last + 1):
        if done:
            break
        if plan is not None and step > first and plan.due(step, clock.since()):
            checkpoint.save(plan, name, snapshot(step, False))
            clock.reset()
        loss = batch_loss(step)
        value = loss.detach().cpu().numpy().astype(np.float64)
        start = np.abs(value) if start is None else start
        if (not np.isfinite(value).all() or np.abs(value).max() > loss_bound
                or (np.abs(value) > BLOWUP_FACTOR * start).any()):
            status, attrs = Status.DIVERGED, {"diverged_t": time_per_step * step}
            break
        if step in wanted:
            # copies: an observable may be a view of a weight the next step changes
            observed = {k: np.array(v, dtype=np.float64) for k, v in observe().items()}
            if not all(np.isfinite(v).all() for v in observed.values()):
                status, attrs = Status.DIVERGED, {"diverged_t": time_per_step * step}
                break
            if eval_loss is not None:
                with torch.no_grad():
                    value = np.asarray(eval_loss(), dtype=np.float64)
            steps.append(step)
            losses.append(value)
            params.append(observed)
        if step == last:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        if on_step is not None:
            on_step(step)
    if plan is not None and not done:
        checkpoint.save(plan, name, snapshot(last, True))
    names = params[0].keys() if params else observe().keys()
    stacked = {n: np.stack([p[n] for p in params]) if params else np.zeros((0,)) for n in names}
    steps_arr = np.asarray(steps, dtype=np.int64)
    return Trajectory(
        kind="sgd",
        t=time_per_step * steps_arr.astype(np.float64),
        loss=np.asarray(losses),
        params=stacked,
        step=steps_arr,
        status=status,
        attrs=attrs,
    )


def split_members(traj: Trajectory) -> list[Trajectory]:
    """An ensemble's trajectory (loss (T, K), params (T, K, ...)) -> K trajectories."""
    members = traj.loss.shape[1]
    return [
        Trajectory(kind=traj.kind, t=traj.t, loss=traj.loss[:, k],
                   params={n: v[:, k] for n, v in traj.params.items()},
                   step=traj.step, status=traj.status, attrs=dict(traj.attrs, member=k))
        for k in range(members)
    ]
