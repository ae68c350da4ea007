"""The heads comparison of the sparse study: risk against n, one curve per head count.

Reads the `--json` summaries of `icldyn run sparse` runs of one task (same d, s, sigma2,
n_test): each gives the risk of its network with `heads` heads per layer at every n in
n_test (`risk_full`) and, where it trained one, of its single-head twin
(`risk_single_head`, H = 1). Writes one JSON table and one figure:

    python -m sims.sparse.study docs/results/sparse-seed0.json \\
        docs/results/sparse-heads2.json docs/results/sparse-heads8.json \\
        --json docs/results/sparse-heads.json --figure docs/sparse-heads.png
"""

from __future__ import annotations

import argparse
import json
import sys

TASK_KEYS = ("d", "s", "sigma2", "n_test", "layers", "width", "steps", "seed")


def heads_table(summaries: list[dict]) -> dict:
    """{"n_test", "task", "risk": {H: [risk per n]}} from run summaries of one task."""
    first = summaries[0]["config"]
    task = {k: first[k] for k in TASK_KEYS}
    risk: dict[int, list[float]] = {}
    for summary in summaries:
        config = summary["config"]
        different = [k for k in TASK_KEYS if config[k] != task[k]]
        if different:
            raise ValueError(f"key {different[0]!r} differs between the runs")
        risk[int(config["heads"])] = summary["risk_full"]
        if "risk_single_head" in summary:
            risk[1] = summary["risk_single_head"]
    return {"n_test": task["n_test"], "task": task,
            "risk": {str(h): risk[h] for h in sorted(risk)}}


def heads_figure(table: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for heads, values in table["risk"].items():
        ax.plot(table["n_test"], values, marker="o", label=f"H = {heads}")
    task = table["task"]
    ax.set_xlabel("n (in-context examples)")
    ax.set_ylabel("risk E(y_hat - y_q)^2")
    ax.set_title(f"d={task['d']}, s={task['s']}, sigma2={task['sigma2']:g}, "
                 f"{task['layers']} layers, width {task['width']}", fontsize=9)
    ax.legend(title="heads per layer", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sims.sparse.study", description=__doc__)
    parser.add_argument("summaries", nargs="+", help="--json outputs of `icldyn run sparse`")
    parser.add_argument("--json", required=True, help="table to write")
    parser.add_argument("--figure", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        summaries = []
        for path in args.summaries:
            with open(path) as fh:
                summaries.append(json.load(fh))
        table = heads_table(summaries)
    except (OSError, ValueError, KeyError) as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    with open(args.json, "w") as fh:
        json.dump(table, fh, indent=1)
    heads_figure(table, args.figure)
    print(f"table:  {args.json}\nfigure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
