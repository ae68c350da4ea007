"""One training pipeline (dynamics.fit) and statuses as an enum (dynamics.status)."""

import h5py
import numpy as np
import pytest
import torch

from dynamics import store
from dynamics.fit import OPTIMIZERS, fit, make_optimizer
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
