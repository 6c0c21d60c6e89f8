"""Experiment: device time of the Triton kernels for several tile shapes, bf16.

    PYTHONPATH=. python3 benchmarks/experiments/triton_tiles.py

Prints one line per (op, size, tile): device µs and % of the copy bandwidth, to choose
the default_config heuristic by measurement (see benchmarks/PERF_NOTES.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from swiglu_jax import bench
from swiglu_jax._options import Options
from swiglu_jax.kernels import triton
from swiglu_jax.kernels.config import BlockConfig

TILES = [
    (8, 1024, 8),
    (8, 1024, 4),
    (4, 1024, 4),
    (16, 512, 8),
    (32, 256, 8),
    (2, 2048, 8),
    (1, 2048, 4),
    (16, 1024, 8),
    (4, 2048, 8),
    (1, 4096, 8),
]
SIZES = [(4096, 2048), (8192, 14336)]


def main():
    bandwidth = bench.copy_bandwidth()
    print(f"copy {bandwidth / 1e9:.0f} GB/s")
    opts = Options()
    for rows, hidden in SIZES:
        inputs = [bench._jax_inputs("bwd", rows, hidden, jnp.bfloat16, s) for s in range(4)]
        for bn, bh, warps in TILES:
            config = BlockConfig(bn, bh, num_warps=warps)
            fwd = jax.jit(
                lambda g, y, c=config: triton.forward(
                    y.reshape(y.shape[0], 2, -1), None, None, opts, save_fp8=False, config=c
                )[0]
            )
            bwd = jax.jit(
                lambda g, y, c=config: triton.backward(
                    g, y.reshape(y.shape[0], 2, -1), None, None, opts, dy_dtype=y.dtype, config=c
                )[0]
            )
            for op, fn in (("fwd", fwd), ("bwd", bwd)):
                for args in inputs[:2]:
                    jax.block_until_ready(fn(*args))
                seconds, _ = bench.device_seconds(fn, inputs, jax.block_until_ready, 20)
                pct = 100 * bench.minimum_bytes(op, rows, hidden, 2) / seconds / bandwidth
                print(
                    f"{op} {rows}x{2 * hidden} tile {bn}x{bh} w{warps}: "
                    f"{seconds * 1e6:8.1f} us {pct:6.1f}%",
                    flush=True,
                )


if __name__ == "__main__":
    main()
