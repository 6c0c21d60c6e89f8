"""Experiment: device time of the Triton kernels for several tile shapes, bf16.

    PYTHONPATH=. python3 benchmarks/experiments/triton_tiles.py [--quick]

1. The kernels one call of each op launches, with their device time (is anything
   besides the Pallas kernel running?).
2. Plain forward and backward over tile shapes and warps, at sizes with power-of-two
   and ragged hidden sizes, with and without ``evict_first`` on loads and stores.
3. The bias backward (which reduces over rows) over its tile shapes.
4. ``--scaled``: only the scaled fp8 store's forward, which sweeps whole rows twice (the
   second sweep should read from L2), over tiles and warps at wide rows, bf16 and fp32.

Prints one line per measurement: device µs and % of the copy bandwidth, to choose the
default_config heuristic by measurement (see benchmarks/PERF_NOTES.md).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from swiglu_jax import bench
from swiglu_jax._options import Options
from swiglu_jax.kernels import triton
from swiglu_jax.kernels.config import BlockConfig

TILES = [
    (1, 4096, 8),
    (1, 4096, 16),
    (1, 8192, 8),
    (1, 8192, 16),
    (2, 2048, 8),
    (1, 2048, 8),
    (1, 2048, 4),
    (4, 1024, 8),
    (1, 1024, 4),
]
EVICTION_TILES = []  # evict_first measured slower everywhere (PERF_NOTES.md)
BIAS_TILES = [
    (64, 128, 8),
    (64, 128, 4),
    (128, 128, 8),
    (128, 64, 4),
    (32, 128, 4),
    (32, 256, 8),
    (16, 512, 8),
    (8, 1024, 8),
]
# The scaled store's forward: one row per program; more warps mean fewer rows in flight
# per SM (so fewer rows waiting in L2 for their second sweep).
SCALED_TILES = [
    (1, 4096, 8),
    (1, 4096, 16),
    (1, 4096, 32),
    (1, 2048, 16),
    (1, 8192, 16),
    (1, 8192, 32),
    (1, 16384, 32),
]
SCALED_SIZES = [(8192, 11008), (8192, 14336), (16384, 8192), (32768, 14336)]
SIZES = [(4096, 2048), (4096, 4096), (8192, 11008), (8192, 14336), (16384, 8192)]
SMALL = SIZES[:2]  # issue 4's open rows: 4096 tokens


class _Evicting:
    """``pltriton`` with an eviction policy on every load and store."""

    def __init__(self, real, policy):
        self._real, self._policy = real, policy

    def load(self, ref, **kw):
        return self._real.load(ref, eviction_policy=self._policy, **kw)

    def store(self, ref, value, **kw):
        return self._real.store(ref, value, eviction_policy=self._policy, **kw)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _fns(config, bias=False):
    opts = Options()

    def fwd(g, y, b):
        y3 = y.reshape(y.shape[0], 2, -1)
        return triton.forward(y3, None, None, opts, save_fp8=False, config=config)[0]

    def bwd(g, y, b):
        y3 = y.reshape(y.shape[0], 2, -1)
        b2 = b.reshape(2, -1) if bias else None
        out = triton.backward(g, y3, b2, None, opts, dy_dtype=y.dtype, config=config)
        return out[:2] if bias else out[0]

    return jax.jit(fwd), jax.jit(bwd)


def _inputs(rows, hidden, sets=4):
    return [bench._jax_inputs("bias_bwd", rows, hidden, jnp.bfloat16, s) for s in range(sets)]


def _time(fn, inputs, op, rows, hidden, bandwidth, policy=None):
    real = triton.pltriton
    if policy:
        triton.pltriton = _Evicting(real, policy)
    try:
        for args in inputs[:2]:
            jax.block_until_ready(fn(*args))  # traced (with the policy) and warmed up
    finally:
        triton.pltriton = real
    seconds, _ = bench.device_seconds(fn, inputs, jax.block_until_ready, 20)
    return seconds * 1e6, 100 * bench.minimum_bytes(op, rows, hidden, 2) / seconds / bandwidth


def list_kernels(rows, hidden):
    import torch
    from torch.profiler import ProfilerActivity, profile

    inputs = _inputs(rows, hidden, 2)
    for name, fn in (
        ("fwd", _fns(triton.default_config(rows, hidden, jnp.bfloat16))[0]),
        ("bwd", _fns(triton.default_config(rows, hidden, jnp.bfloat16))[1]),
        (
            "bias_bwd",
            _fns(triton.default_config(rows, hidden, jnp.bfloat16, reduces_rows=True), True)[1],
        ),
    ):
        jax.block_until_ready(fn(*inputs[0]))
        with profile(activities=[ProfilerActivity.CUDA]) as p:
            jax.block_until_ready(fn(*inputs[1]))
            torch.cuda.synchronize()
        for e in p.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                us = getattr(e, "device_time", None) or e.cuda_time
                print(f"kernels {name} {rows}x{2 * hidden}: {e.name[:70]} {us:.1f} us")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--small", action="store_true", help="only the 4096-token sizes")
    parser.add_argument("--scaled", action="store_true", help="only the scaled fp8 forward")
    args = parser.parse_args()
    if args.scaled:
        bandwidth = bench.copy_bandwidth()
        print(f"copy {bandwidth / 1e9:.0f} GB/s", flush=True)
        sweep_scaled(bandwidth)
        return
    sizes = SIZES[:1] if args.quick else SMALL if args.small else SIZES
    bandwidth = bench.copy_bandwidth()
    print(f"copy {bandwidth / 1e9:.0f} GB/s", flush=True)
    list_kernels(*sizes[0])
    sweep(sizes, bandwidth)


def sweep(sizes, bandwidth):
    for rows, hidden in sizes:
        inputs = _inputs(rows, hidden)
        for bn, bh, warps in TILES:
            config = BlockConfig(bn, bh, num_warps=warps)
            policies = (None, "evict_first") if (bn, bh, warps) in EVICTION_TILES else (None,)
            for policy in policies:
                for op, fn in zip(("fwd", "bwd"), _fns(config), strict=True):
                    us, pct = _time(fn, inputs, op, rows, hidden, bandwidth, policy)
                    print(
                        f"{op} {rows}x{2 * hidden} tile {bn}x{bh} w{warps} "
                        f"{policy or 'default'}: {us:8.1f} us {pct:6.1f}%",
                        flush=True,
                    )
        for bn, bh, warps in BIAS_TILES:
            config = BlockConfig(bn, bh, num_warps=warps)
            fn = _fns(config, bias=True)[1]
            us, pct = _time(fn, inputs, "bias_bwd", rows, hidden, bandwidth)
            print(
                f"bias_bwd {rows}x{2 * hidden} tile {bn}x{bh} w{warps}: {us:8.1f} us {pct:6.1f}%",
                flush=True,
            )


def sweep_scaled(bandwidth):
    opts = Options()
    for dtype in (jnp.bfloat16, jnp.float32):
        itemsize = jnp.dtype(dtype).itemsize
        for rows, hidden in SCALED_SIZES:
            inputs = [bench._jax_inputs("fwd", rows, hidden, dtype, s) for s in range(3)]
            tiles = [(None, None, None), *SCALED_TILES]
            for bn, bh, warps in tiles:
                config = None if bn is None else BlockConfig(bn, bh, num_warps=warps)

                def fwd(y, config=config):
                    y3 = y.reshape(y.shape[0], 2, -1)
                    return triton.forward(y3, None, None, opts, save_fp8="scaled", config=config)

                fn = jax.jit(fwd)
                jax.block_until_ready(fn(*inputs[0]))
                seconds, _ = bench.device_seconds(fn, inputs, jax.block_until_ready, 20)
                floor = bench.minimum_bytes("scaled_fp8_fwd", rows, hidden, itemsize)
                name = "default" if bn is None else f"{bn}x{bh} w{warps}"
                print(
                    f"scaled {jnp.dtype(dtype).name} {rows}x{2 * hidden} {name}: "
                    f"{seconds * 1e6:8.1f} us {100 * floor / seconds / bandwidth:6.1f}%",
                    flush=True,
                )


if __name__ == "__main__":
    main()
