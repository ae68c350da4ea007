"""SGD step throughput of the linreg network against a plain reference.

Reference: the obvious implementation, one nn.Linear per projection per head
and a Python loop over heads, stepped by torch.optim.SGD. Engine: the linreg
network stepped by the engine's optimiser (dynamics.fit.make_optimizer). Both:
factored parameterisation, d=5, L=40, batch 256, float32, plain SGD, fresh
batches each step.

A further case times the engine's network compiled by torch.compile (inductor)
against the same network in eager mode, at H = 8: whether compiling pays for
this step on the machine (its output is checked against eager's to 1e-6 first).
"""

from __future__ import annotations

import math
import time

import torch
from common import memory, print_table, side_by_side, write
from torch import nn

from dynamics.fit import make_optimizer
from sims.linreg.network import SoftmaxAttentionRegressor
from sims.linreg.task import sample_regression

D, L, BATCH, STEPS = 5, 40, 256, 50


class ReferenceHead(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.q = nn.Linear(width, width, bias=False)
        self.k = nn.Linear(width, width, bias=False)
        self.v = nn.Linear(width, width, bias=False)
        self.o = nn.Linear(width, 1, bias=False)

    def forward(self, tokens):
        context, query = tokens[:, :-1], tokens[:, -1:]
        scores = (self.q(query) @ self.k(context).transpose(1, 2)) / math.sqrt(tokens.shape[-1])
        mixed = torch.softmax(scores, dim=-1) @ self.v(context)
        return self.o(mixed)[:, 0, 0]


class ReferenceModel(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = nn.ModuleList(ReferenceHead(width) for _ in range(heads))

    def forward(self, tokens):
        return sum(head(tokens) for head in self.heads)


def steps(model, gen, optimizer=None):
    opt = optimizer or torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(STEPS):
        batch = sample_regression(BATCH, L, D, 0.1, gen, dtype=torch.float32)
        loss = ((model(batch.tokens()) - batch.yq) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def compiled_case() -> dict:
    """The H = 8 engine network under torch.compile against itself in eager mode."""
    gen = torch.Generator().manual_seed(0)
    eager = SoftmaxAttentionRegressor(D, 8, "factored", dtype=torch.float32)
    eager.init_normal(0.1, gen)
    compiled = torch.compile(eager)
    tokens = sample_regression(BATCH, L, D, 0.1, gen, dtype=torch.float32).tokens()
    start = time.perf_counter()
    with torch.no_grad():
        gap = float((compiled(tokens) - eager(tokens)).abs().max())
    if gap > 1e-6:
        raise AssertionError(f"compiled network differs from eager by {gap:.3g}")
    opt = make_optimizer("sgd", eager.parameters(), 0.01)  # both share the parameters
    steps(compiled, gen, opt)
    compile_s = time.perf_counter() - start
    timing = side_by_side(lambda: steps(compiled, gen, opt), lambda: steps(eager, gen, opt))
    return {"case": "H=8, torch.compile against eager", **timing,
            "compile_s": round(compile_s, 1), "max_output_gap": gap}


def main():
    torch.set_num_threads(1)
    cases = []
    for heads in (2, 8):
        gen = torch.Generator().manual_seed(0)
        engine = SoftmaxAttentionRegressor(D, heads, "factored", dtype=torch.float32)
        engine.init_normal(0.1, gen)
        reference = ReferenceModel(D + 1, heads)
        plain = make_optimizer("sgd", engine.parameters(), 0.01)
        timing = side_by_side(lambda e=engine, g=gen, o=plain: steps(e, g, o),
                              lambda r=reference, g=gen: steps(r, g))
        te, tb = timing["engine_s"], timing["baseline_s"]
        cases.append({"case": f"H={heads}", **timing,
                      "engine_steps_per_s": round(STEPS / te, 1),
                      "baseline_steps_per_s": round(STEPS / tb, 1),
                      "engine_memory": memory(lambda e=engine, g=gen, o=plain: steps(e, g, o)),
                      "baseline_memory": memory(lambda r=reference, g=gen: steps(r, g))})
    cases.append(compiled_case())
    result = write("sgd_throughput", "per-head nn.Linear reference, Python loop over heads",
                   cases, target=10.0, target_case="H=8",
                   notes=f"factored, d={D}, L={L}, batch {BATCH}, float32, {STEPS} steps per "
                         "timing; the torch.compile case's baseline is the eager engine, its "
                         "compile_s the first compiled step (with torch's on-disk cache warm "
                         "after a first run)")
    print_table(result)


if __name__ == "__main__":
    main()
