"""Experiment: does dropping a DLPack-imported array right after a call block the host?

PYTHONPATH=. python3 benchmarks/experiments/bridge_drop.py
"""

from __future__ import annotations

import time

import jax
import torch

from torch_bridge import _exchange, _ops


def timed(fn, n=300):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / n * 1e6


def main():
    forward = _ops._jax_forward(None, 1.0, 0.0, "none")
    for rows in (64, 8192):
        y = torch.randn(rows, 4096, device="cuda", dtype=torch.bfloat16)
        kept = []

        def import_call_keep(y=y, kept=kept):
            a = _exchange.to_jax(y)
            kept.append((a, forward(a, None, None)[0]))

        def import_call_drop(y=y):
            a = _exchange.to_jax(y)
            forward(a, None, None)

        def import_call_export(y=y, kept=kept):
            a = _exchange.to_jax(y)
            kept.append(_exchange.to_torch(forward(a, None, None)[0]))

        for name, fn in (
            ("import + call, both kept", import_call_keep),
            ("import + call, dropped", import_call_drop),
            ("import + call + export", import_call_export),
        ):
            print(f"{rows}x4096 {name:<30}{timed(fn):9.1f} us", flush=True)
            kept.clear()
            jax.effects_barrier()


if __name__ == "__main__":
    main()
