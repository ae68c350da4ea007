"""Training step of the sparse study's network against transformers.GPT2Model.

The baseline is the model this literature trains (Garg et al. 2022, dtsip/in-context-
learning, src/models.py): a linear read-in, GPT2Model on `inputs_embeds` (dropout 0, no
cache), a linear read-out at the x tokens. Both models have the same shape (width,
layers, heads, MLP 4x width, learned positions, tanh-GELU, pre-LayerNorm) and take the
same Adam step on the same batch: d = 20, 40 examples and the query (81 tokens), batch 64,
float32, one thread. GPT2Model runs with its default attention (scaled-dot-product) and
with the 'eager' attention of the transformers releases the paper used.

Also measured: this machine's single-thread float32 matmul rate (a 1024^3 product) and
the engine step's achieved rate (matmul FLOPs of a forward pass x 3 for the backward,
over the step time), and where the engine step's time goes (torch profiler).
"""

from __future__ import annotations

import statistics

import torch
from common import interleaved, print_table, write
from spread import quartiles, spread
from torch import nn

from sims.sparse.network import InterleavedTransformer, TransformerShape, interleave, labels
from sims.sparse.task import sample_sparse

D, N, BATCH, STEPS, REPEATS = 20, 40, 64, 5, 7
SHAPES = {"width 64 (3 layers x 4 heads)": (64, 3, 4), "width 128 (4 layers x 8 heads)": (128, 4, 8)}


class GPT2Regressor(nn.Module):
    """The literature's wrapper of GPT2Model (read-in, backbone, read-out at x tokens)."""

    def __init__(self, width: int, layers: int, heads: int, attention: str):
        from transformers import GPT2Config, GPT2Model

        super().__init__()
        config = GPT2Config(n_positions=2 * N + 2, n_embd=width, n_layer=layers, n_head=heads,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
        config._attn_implementation = attention
        self.read_in = nn.Linear(D + 1, width)
        self.backbone = GPT2Model(config)
        self.read_out = nn.Linear(width, 1)

    def predict_all(self, z: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(inputs_embeds=self.read_in(z)).last_hidden_state
        return self.read_out(hidden[:, ::2])[..., 0]


def stepper(model, z, y):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def steps():
        for _ in range(STEPS):
            optimizer.zero_grad(set_to_none=True)
            ((model.predict_all(z) - y) ** 2).mean().backward()
            optimizer.step()

    return steps


def per_step(times: list[float]) -> list[float]:
    """Seconds per step of timings of STEPS steps."""
    return [t / STEPS for t in times]


MATMUL = 1024


def matmul() -> None:
    """One float32 MATMUL^3 product: the machine's reference rate, timed beside the steps."""
    torch.randn(MATMUL, MATMUL) @ torch.randn(MATMUL, MATMUL)


def step_flops(width: int, layers: int, heads: int) -> float:
    """Matmul FLOPs of one training step: the forward's linear maps (read-in, qkv, output
    projection, MLP, read-out) and attention products (full T x T, as computed) x 3."""
    tokens = BATCH * (2 * N + 1)
    linear = tokens * ((D + 1) * width + layers * (3 + 1 + 4 + 4) * width * width)
    attention = layers * 2 * BATCH * (2 * N + 1) ** 2 * width
    return 3 * 2 * (linear + attention)


def profile_shares(step) -> dict[str, float]:
    """Fractions of the engine step's CPU time: matmuls, attention kernels, the rest."""
    from torch.profiler import profile

    step()
    with profile() as prof:
        step()
    total, shares = 0.0, {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for event in prof.key_averages():
        t = event.self_cpu_time_total
        total += t
        if event.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
            shares["matmul"] += t
        elif "attention" in event.key:
            shares["attention"] += t
        else:
            shares["other"] += t
    return {k: round(v / total, 3) for k, v in shares.items()}


def main():
    torch.set_num_threads(1)
    batch = sample_sparse(BATCH, N, D, 3, 0.25, torch.Generator().manual_seed(0),
                          dtype=torch.float32)
    z, y = interleave(batch), labels(batch)
    cases = []
    for case, (width, layers, heads) in SHAPES.items():
        torch.manual_seed(0)
        engine = InterleavedTransformer(TransformerShape(D, layers, heads, width, 4), N + 1)
        models = {"engine": engine,
                  "gpt2_sdpa": GPT2Regressor(width, layers, heads, "sdpa"),
                  "gpt2_eager": GPT2Regressor(width, layers, heads, "eager")}
        fns = {name: stepper(model, z, y) for name, model in models.items()}
        times = interleaved({**fns, "matmul": matmul}, REPEATS)
        gflops = 2 * MATMUL**3 / statistics.median(times.pop("matmul")) / 1e9
        timing = spread(per_step(times["engine"]), per_step(times["gpt2_sdpa"]))
        eager = spread(per_step(times["engine"]), per_step(times["gpt2_eager"]))
        achieved = step_flops(width, layers, heads) / timing["engine_s"] / 1e9
        cases.append({
            "case": case, **timing,
            "ratio_vs_eager_attention": round(eager["ratio"], 2),
            "ratio_vs_eager_attention_quartiles": [round(eager["ratio_q1"], 2),
                                                   round(eager["ratio_q3"], 2)],
            "step_s_quartiles": {name: [round(q, 5) for q in quartiles(per_step(t))]
                                 for name, t in times.items()},
            "engine_gflops": round(achieved, 1),
            "matmul_gflops": round(gflops, 1),
            "fraction_of_matmul_rate": round(achieved / gflops, 3),
            "engine_time_shares": profile_shares(fns["engine"]),
            "parameters": {name: sum(p.numel() for p in m.parameters())
                           for name, m in models.items()},
        })
    result = write(
        "gpt2_step", "transformers.GPT2Model of the same shape (default sdpa attention)",
        cases, target=2.0, target_case="width 64 (3 layers x 4 heads)",
        notes=(f"Adam step, d={D}, {N} examples + query ({2 * N + 1} tokens), batch {BATCH}, "
               f"float32, one thread; {STEPS} steps per timing, {REPEATS} interleaved repeats "
               "(seconds per step); step_s_quartiles: [q1, median, q3] of each model's step. "
               "matmul_gflops: the "
               f"machine's rate on a {MATMUL}^3 float32 product, one thread, timed in turn "
               "with the steps; fraction_of_matmul_rate = engine_gflops / matmul_gflops."))
    print_table(result)


if __name__ == "__main__":
    main()
