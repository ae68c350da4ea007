"""Multi-task linreg: supports, sampler moments, the N-output network, head classification."""

import json

import h5py
import numpy as np
import pytest
import torch

from dynamics.errors import UsageError
from sims.cli import main
from sims.linreg.estimators import softmax_predict
from sims.linreg.multitask import (
    MultitaskAttention,
    chained_supports,
    classify_heads,
    parse_supports,
    resolve_supports,
    sample_multitask,
    task_observables,
)
from sims.linreg.task import RegressionBatch
from sims.registry import get

D, L = 6, 48
SUPPORTS = [[0, 1, 2, 3], [2, 3, 4, 5]]


def test_supports_parse_ranges_and_lists():
    assert parse_supports("0-3;2-5", D) == SUPPORTS
    assert parse_supports("0,2, 4;1;5-5", D) == [[0, 2, 4], [1], [5]]


@pytest.mark.parametrize("text", ["0-6", "3-1", "a", "0,0", "0-2;", "-1"])
def test_bad_supports_name_the_key(text):
    with pytest.raises(UsageError, match="key 'supports'"):
        parse_supports(text, D)


def test_sampler_moments_and_tokens():
    gen = torch.Generator().manual_seed(0)
    n = 20000
    batch = sample_multitask(n, 3, D, SUPPORTS, 0.3, gen, dtype=torch.float64)
    assert batch.tokens().shape == (n, 4, D + 2)
    assert (batch.tokens()[:, -1, D:] == 0).all()
    outside = torch.tensor([[4, 5], [0, 1]])
    for k in range(2):
        assert (batch.beta[:, k, outside[k]] == 0).all()
        norm2 = (batch.beta[:, k] ** 2).sum(-1)  # E|beta_k|^2 = 1
        assert abs(float(norm2.mean()) - 1) < 4 * float(norm2.std()) / n**0.5
        noise = batch.y[..., k] - torch.einsum("bld,bd->bl", batch.x, batch.beta[:, k])
        var, se = float(noise.var()), 0.3 * (2 / noise.numel()) ** 0.5
        assert abs(var - 0.3) < 4 * se
    # the two tasks share the covariates but not their task vectors
    corr = torch.corrcoef(torch.stack([batch.beta[:, 0, 2], batch.beta[:, 1, 2]]))[0, 1]
    assert abs(float(corr)) < 4 / n**0.5


def _weights(omega_diag: list[list[float]], mu: list[list[float]]):
    """KQ_h = diag(omega_diag[h], 0, 0) on the covariates, OV_h[d + k, k] = mu[h][k]."""
    H = len(mu)
    kq = torch.zeros((H, D + 2, D + 2), dtype=torch.float64)
    ov = torch.zeros((H, D + 2, 2), dtype=torch.float64)
    for h in range(H):
        kq[h, :D, :D] = torch.diag(torch.tensor(omega_diag[h], dtype=torch.float64))
        for k in range(2):
            ov[h, D + k, k] = mu[h][k]
    return kq, ov


def test_network_equals_the_single_task_softmax_predictor_per_output():
    gen = torch.Generator().manual_seed(1)
    batch = sample_multitask(64, L, D, SUPPORTS, 0.1, gen, dtype=torch.float64)
    kq, ov = _weights([[0.3] * D, [-0.2] * D], [[1.5, -0.4], [-1.1, 0.7]])
    net = MultitaskAttention(D, 2, 2)
    net.KQ.data, net.OV.data = kq, ov
    out = net(batch.tokens())
    for k in range(2):
        single = RegressionBatch(batch.x, batch.y[..., k], batch.xq, batch.yq[:, k],
                                 batch.beta[:, k])
        expected = softmax_predict(single, torch.tensor([0.3, -0.2], dtype=torch.float64),
                                   ov[:, D + k, k])
        assert torch.allclose(out[:, k], expected, rtol=1e-12, atol=1e-12)


def test_task_observables_read_the_support_means():
    kq, ov = _weights([[1, 1, 1, 1, 0, 0], [0, 0, 3, 3, 3, 3]], [[2, 0], [0, -1]])
    obs = task_observables(kq, ov, SUPPORTS, D)
    assert torch.allclose(obs["omega"], torch.tensor([[1.0, 0.5], [1.5, 3.0]], dtype=torch.float64))
    assert torch.allclose(obs["mu"], torch.tensor([[2.0, 0], [0, -1]], dtype=torch.float64))


def _classify(omega_diag, mu):
    obs = task_observables(*_weights(omega_diag, mu), SUPPORTS, D)
    return classify_heads(obs["omega"].numpy(), obs["mu"].numpy(), 0.1)


TASK0 = [0.2, 0.2, 0.2, 0.2, 0, 0]
TASK1 = [0, 0, 0.2, 0.2, 0.2, 0.2]
BOTH = [0.2] * D


def test_split_each_task_has_its_own_pair():
    out = _classify([TASK0, [-x for x in TASK0], TASK1, [-x for x in TASK1]],
                    [[3, 0], [-3, 0], [0, 3], [0, -3]])
    assert out["layout"] == "split"
    assert out["tasks_of_head"] == [[0], [0], [1], [1]]


def test_superposition_a_head_serves_both_tasks():
    out = _classify([BOTH, [-x for x in BOTH], TASK1], [[3, 3], [-3, -2], [0, -0.5]])
    assert out["layout"] == "superposition"
    assert out["tasks_of_head"] == [[0, 1], [0, 1], [1]]


def test_partial_and_dummy_heads():
    # one head per task, no +- pairs; a fourth head with weights far below the others
    out = _classify([TASK0, TASK1, [0.01] * D], [[3, 0], [0, 3], [0.01, 0.01]])
    assert out["layout"] == "partial"
    assert out["tasks_of_head"] == [[0], [1], []]
    assert out["serves"].shape == (3, 2)


def test_run_stores_the_classification(tmp_path, capsys):
    out = tmp_path / "m.h5"
    code = main(["run", "linreg-multitask", "--set", "t_max=0.2", "--set", "heads=3",
                 "--set", "eval_samples=256", "--set", "records=10", "--no-plot",
                 "--out", str(out), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["heads"]["layout"] in ("split", "superposition", "partial")
    assert payload["supports"] == SUPPORTS and len(payload["loss_per_task"]) == 2
    with h5py.File(out, "r") as fh:
        run = fh["runs"][payload["run_id"]]
        assert run["sgd/params/omega"].shape[1:] == (3, 2)
        stored = classify_heads(run["heads/omega"][()], run["heads/mu"][()], 0.1)
        assert np.array_equal(run["heads/serves"][()].astype(bool), stored["serves"])
        assert stored["serves"].tolist() == payload["heads"]["serves"]


def test_auto_supports_chain_half_overlapping_blocks():
    assert chained_supports(D, 1) == [list(range(D))]
    assert chained_supports(D, 2) == SUPPORTS  # the authors' layout
    assert chained_supports(D, 3) == [[0, 1, 2], [2, 3, 4], [3, 4, 5]]
    for n in range(1, D + 1):
        blocks = chained_supports(D, n)
        assert len(blocks) == n and {i for b in blocks for i in b} == set(range(D))


def test_explicit_supports_must_agree_with_tasks():
    assert resolve_supports("0-1;2-3;4-5", D, 3) == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(UsageError, match="key 'tasks'.*lists 3 tasks"):
        resolve_supports("0-1;2-3;4-5", D, 2)
    with pytest.raises(UsageError, match="key 'tasks'.*tasks <= d"):
        resolve_supports("auto", D, D + 1)


def test_bad_supports_exit_2_before_writing(tmp_path, capsys):
    code = main(["run", "linreg-multitask", "--set", "supports=0-7", "--out",
                 str(tmp_path / "x.h5")])
    assert code == 2 and "key 'supports'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# The rule the authors report (split when H >= 2N, superposition when H < 2N), run at the
# budget of the committed seed sweep (docs/linreg-extensions.md: Adam lr 0.01, batch 128,
# 5000 steps, d = 6, L = 48).
RULE_RUN = {"lr": 0.01, "t_max": 50.0, "batch": 128, "records": 10, "eval_samples": 512}


def _layout(heads: int, tasks: int, seed: int = 0) -> str:
    exp = get("linreg-multitask")
    config = exp.schema.resolve({**RULE_RUN, "heads": heads, "tasks": tasks, "seed": seed})
    return exp.run(config).summary["heads"]["layout"]


def test_rule_one_task_splits_with_enough_heads_and_two_tasks_superpose_below_2n():
    assert _layout(3, 1) == "split"            # H >= 2N: a +- pair (and a spare head)
    assert _layout(3, 2) == "superposition"    # H < 2N


@pytest.mark.xfail(strict=True, reason="paper claim not reproduced at this budget: H = 6, "
                   "N = 3 (H = 2N) ends in superposition for seeds 0, 1, 2 after 5000 Adam "
                   "steps (loss 0.61-0.64); the earlier single-seed run at 20 000 steps did "
                   "not split either")
def test_rule_three_tasks_split_at_h_equal_2n():
    assert _layout(6, 3) == "split"
