"""Experiment: is torch_bridge's bf16 backward at 32768 x 28672 slow in every run, or in
some (92.7-98.2% of copy in seven full benchmarks, sessions 9-13, against 100.7-101.1%
on the JAX path)?

    PYTHONPATH=. python3 benchmarks/experiments/bridge_repeat.py [--repeats 4] [--out DIR]
                                                                 [--size 32768x28672]

Runs the benchmark's own measurement (``swiglu_jax.bench.run``) for the backward and
the clamped backward (the same kernel with the clamp compiled in), on the JAX path and
through torch_bridge, ``--repeats`` times in one process, each with fresh inputs and
outputs; then once more with the torch_bridge rows first. Prints a table of % of copy,
one column a repeat.
"""

from __future__ import annotations

import argparse
import json
import os

from swiglu_jax import bench

OPS = ["bwd", "clamp_bwd"]
IMPLS = ["swiglu_jax:triton", "torch_bridge"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--size", default="32768x28672", help="N x 2H")
    args = parser.parse_args(argv)
    sizes = bench.parse_sizes(args.size)
    runs = []
    orders = [IMPLS] * args.repeats + [IMPLS[::-1]]
    for order in orders:
        found = {}
        for name in order:  # one implementation at a time: its rows in this order
            result = bench.run(sizes, ["bfloat16"], OPS, [name], 20, progress=lambda _: None)
            for r in result["results"]:
                found[(r["op"], r["implementation"])] = r.get("pct_copy")
        runs.append(found)
    with open(os.path.join(args.out, "bridge-repeat.json"), "w") as f:
        json.dump([{f"{op} {impl}": v for (op, impl), v in run.items()} for run in runs], f)
    heads = [f"run {i + 1}" for i in range(args.repeats)] + ["bridge first"]
    print("| op | implementation | " + " | ".join(heads) + " |")
    print("|---|---|" + "---:|" * len(heads))
    for op in OPS:
        for impl in IMPLS:
            cells = [run.get((op, impl)) for run in runs]
            text = " | ".join("-" if v is None else f"{v:.1f}" for v in cells)
            print(f"| {op} | {impl} | {text} |")


if __name__ == "__main__":
    main()
