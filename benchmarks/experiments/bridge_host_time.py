"""Experiment: where torch_bridge's host time goes on a GPU, one piece at a time.

    PYTHONPATH=. python3 benchmarks/experiments/bridge_host_time.py

Small input (64 x 512 bf16), host µs per call, calls back to back, one sync at the end.
Separates JAX's dispatch on a native array from dispatch on a DLPack-imported one, the
import itself, dropping an imported array, the export, and the bridge's forward and
backward with and without torch autograd (whose backward runs on its own thread).
"""

from __future__ import annotations

import time

import jax
import torch

import torch_bridge as tb
from torch_bridge import _exchange, _ops


def per_call(fn, items, warmup=20):
    for item in items[:warmup]:
        fn(item)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for item in items[warmup:]:
        fn(item)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / (len(items) - warmup) * 1e6


def main(n=320):
    y = torch.randn(64, 512, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    forward = _ops._jax_forward(None, 1.0, 0.0, "none")
    backward = _ops._jax_backward(None, 1.0, 0.0)
    native = jax.device_put(jax.numpy.asarray(y.float().cpu().numpy(), "bfloat16"))
    imported = [_exchange.to_jax(y) for _ in range(n)]
    outs = [forward(native, None, None)[0] for _ in range(n)]
    jax.block_until_ready(outs)
    rows = {
        "jit forward, native array": per_call(lambda _: forward(native, None, None), [0] * n),
        "jit forward, imported arrays": per_call(lambda a: forward(a, None, None), imported),
        "from_dlpack with handshake": per_call(lambda _: jax.dlpack.from_dlpack(y), [0] * n),
        "from_dlpack, no handshake": per_call(
            lambda _: jax.dlpack.from_dlpack(_exchange._Handoff(y)), [0] * n
        ),
        "torch.from_dlpack (export)": per_call(lambda a: torch.from_dlpack(a), outs),
    }
    start = time.perf_counter()
    del imported[:]
    torch.cuda.synchronize()
    rows["dropping an imported array"] = (time.perf_counter() - start) / n * 1e6
    yg = y.clone().requires_grad_()

    def train(_):
        yg.grad = None
        tb.swiglu(yg).backward(g)

    rows.update(
        {
            "_forward_impl": per_call(
                lambda _: _ops._forward_impl(y, None, None, None, 1.0, 0.0, "none"), [0] * n
            ),
            "_backward_impl": per_call(
                lambda _: _ops._backward_impl(g, y, None, None, None, 1.0, 0.0), [0] * n
            ),
            "jit backward, native arrays": per_call(
                lambda _: backward(*_exchange.to_jax_all(g), native, None, None), [0] * n
            ),
            "tb.swiglu (no grad)": per_call(lambda _: tb.swiglu(y), [0] * n),
            "tb.swiglu_back (no autograd)": per_call(lambda _: tb.swiglu_back(g, y), [0] * n),
            "tb.swiglu + .backward (autograd)": per_call(train, [0] * n),
        }
    )
    for name, us in rows.items():
        print(f"{name:<40}{us:9.1f} us")


if __name__ == "__main__":
    main()
