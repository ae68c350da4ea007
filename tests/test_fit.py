"""One training pipeline (dynamics.fit) and statuses as an enum (dynamics.status)."""

import h5py
import numpy as np
import pytest
import torch

from dynamics import store
from dynamics.fit import OPTIMIZERS, fit, make_optimizer, set_lr
from dynamics.sgd import train
from dynamics.status import Status
from dynamics.trajectory import Trajectory


def problem(seed: int = 0):
    """A linear least-squares network, its minibatch loss and its observable."""
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 1, bias=False).double()
    gen = torch.Generator().manual_seed(seed)
    target = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)

    def batch_loss(step):
        x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
        return ((net(x) - x @ target.T) ** 2).mean()

    def observe():
        return {"w": net.weight.detach().numpy()[0].copy()}

    return net, batch_loss, observe, gen


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fit_is_train_with_the_named_optimiser(name):
    steps = np.array([0, 1, 5, 20])
    net, loss, observe, gen = problem()
    fitted = fit(net, loss, observe, steps, optimizer=name, lr=0.05, model="toy",
                 generators=[gen])
    net2, loss2, observe2, _ = problem()
    opt = (torch.optim.SGD if name == "sgd" else torch.optim.Adam)(net2.parameters(), lr=0.05)
    reference = train(net2, loss2, opt, steps, observe2, 0.05)
    np.testing.assert_array_equal(fitted.trajectory.params["w"], reference.params["w"])
    np.testing.assert_array_equal(fitted.trajectory.loss, reference.loss)
    np.testing.assert_array_equal(fitted.trajectory.t, 0.05 * steps)
    assert fitted.trajectory.attrs["model"] == "toy" and fitted.seconds > 0
    assert fitted.trajectory.status is Status.COMPLETE


def test_unknown_optimiser_is_refused():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("lbfgs", [torch.zeros(1, requires_grad=True)], 0.1)


def test_a_diverging_fit_reports_diverged():
    net, loss, observe, _ = problem()
    fitted = fit(net, loss, observe, np.array([0, 10, 200]), optimizer="sgd", lr=50.0,
                 model="toy")
    assert fitted.trajectory.status is Status.DIVERGED and fitted.trajectory.status == "diverged"


def test_status_is_a_string_that_stores_and_reads_back(tmp_path):
    assert Status.STALLED == "stalled" and f"{Status.STALLED}" == "stalled"
    assert str(Status.COMPLETE) == "complete" and Status("diverged") is Status.DIVERGED
    traj = Trajectory("ode", [0.0, 1.0], [1.0, 0.5], {"a": [0.0, 1.0]}, status="stalled")
    assert traj.status is Status.STALLED
    with pytest.raises(ValueError):
        Trajectory("ode", [0.0], [1.0], {}, status="finished")
    path = tmp_path / "s.h5"
    run_id = store.write_run(str(path), "toy", {"seed": 0}, 0, {"ode": traj}, traj.status, {})
    with h5py.File(path, "r") as fh:  # stored as the plain string, as before
        assert fh["runs"][run_id]["ode"].attrs["status"] == "stalled"
        assert fh["runs"][run_id].attrs["status"] == "stalled"
    _, _, read = store.read_run(str(path), run_id)
    assert read["ode"].status is Status.STALLED


def test_plain_sgd_is_torch_sgd_bit_for_bit_with_frozen_parameters_and_a_schedule():
    torch.manual_seed(4)
    nets = [torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1)).double()
            for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    for net in nets:
        net[0].bias.requires_grad_(False)  # frozen: no gradient, never moves
    plain = make_optimizer("sgd", [p for p in nets[0].parameters() if p.requires_grad], 0.1)
    reference = torch.optim.SGD([p for p in nets[1].parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(32, 4, dtype=torch.float64)
    for step in range(25):
        for net, opt in ((nets[0], plain), (nets[1], reference)):
            set_lr(opt, 0.1 / (1 + step))
            opt.zero_grad(set_to_none=True)
            (net(x) ** 2).mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(nets[0][0].bias, nets[1][0].bias)
    plain.load_state_dict(reference.state_dict())  # a checkpoint of torch's SGD loads


def test_fit_with_a_learning_rate_schedule_is_train_with_it():
    steps = np.array([0, 3, 12])
    schedule = [0.1 * 0.9**k for k in range(13)]  # the loss at the last record draws too
    net, loss, observe, gen = problem(1)
    fitted = fit(net, loss, observe, steps, optimizer="adam", lr=0.1, model="toy",
                 generators=[gen], lr_at=schedule.__getitem__)
    net2, loss2, observe2, _ = problem(1)
    opt = torch.optim.Adam(net2.parameters(), lr=0.1)

    def scheduled(step):
        for group in opt.param_groups:
            group["lr"] = schedule[step]
        return loss2(step)

    reference = train(net2, scheduled, opt, steps, observe2, 0.1)
    np.testing.assert_array_equal(fitted.trajectory.params["w"], reference.params["w"])
    assert not np.array_equal(fitted.trajectory.params["w"][-1],
                              fit(*problem(1)[:3], steps, optimizer="adam", lr=0.1,
                                  model="toy").trajectory.params["w"][-1])
