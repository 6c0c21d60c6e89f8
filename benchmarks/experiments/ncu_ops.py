"""One launch of an op's kernels on the JAX path (XLA's launch, first) and one on
torch_bridge's direct launch (the triton package's), for Nsight Compute to compare
(shared-memory configuration, L1 and L2 hit rates, occupancy, stalls):

    ncu --kernel-name regex:swiglu --section ... \\
        python benchmarks/experiments/ncu_ops.py OP ROWS TWO_H DTYPE

OP: ``scaled`` (the forward with the scaled fp8 store), ``bwd`` (the plain backward),
``bias`` (the backward with the bias gradient), ``segments`` (the JAX path alone: the
scaled store swept in one-warp segments with WARPS warps, a fifth argument, whatever
``segment_width`` would say of them; default ``sweep_config``'s) or ``mosaic_bwd`` (the
JAX path alone: the plain backward by Triton, then by Mosaic GPU's streamed kernel).
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import torch

from swiglu_jax._options import Options
from swiglu_jax.kernels import mosaic_gpu
from swiglu_jax.kernels import triton as kernels
from torch_bridge import _direct

OPS = ("scaled", "bwd", "bias", "segments", "mosaic_bwd")


def main(argv):
    op, rows, two_h, dtype = argv[0], int(argv[1]), int(argv[2]), argv[3]
    if op not in OPS:
        raise SystemExit(f"OP must be one of {OPS}, got {op!r}")
    hidden, dt = two_h // 2, getattr(torch, dtype)
    y = torch.randn(rows, two_h, dtype=dt, device="cuda")
    g = torch.randn(rows, hidden, dtype=dt, device="cuda")
    bias = torch.randn(two_h, dtype=dt, device="cuda") if op == "bias" else None
    to_jax = lambda x: None if x is None else jnp.asarray(x.float().cpu().numpy(), dtype)
    opts, y3 = Options(), lambda y: y.reshape(rows, 2, hidden)
    if op == "segments":
        kernels.segment_width = lambda *args: kernels.segment_columns(jnp.dtype(dtype))
        config = kernels.sweep_config(rows, hidden, jnp.dtype(dtype))
        if len(argv) > 4:
            config = dataclasses.replace(config, num_warps=int(argv[4]))
        jax_fn = jax.jit(
            lambda y: kernels.forward(y3(y), None, None, opts, save_fp8="scaled", config=config)
        )
        jax.block_until_ready(jax_fn(to_jax(y)))
    elif op == "mosaic_bwd":
        for module in (kernels, mosaic_gpu):
            jax_fn = jax.jit(
                lambda g, y, m=module: m.backward(
                    g, y3(y), None, None, opts, dy_dtype=jnp.dtype(dtype)
                )[0]
            )
            jax.block_until_ready(jax_fn(to_jax(g), to_jax(y)))
    elif op == "scaled":
        jax_fn = jax.jit(lambda y: kernels.forward(y3(y), None, None, opts, save_fp8="scaled"))
        jax.block_until_ready(jax_fn(to_jax(y)))
        _direct.forward(y, None, None, None, 1.0, 0.0, "scaled")
    else:
        jax_fn = jax.jit(
            lambda g, y, b: kernels.backward(g, y3(y), b, None, opts, dy_dtype=jnp.dtype(dtype))
        )
        jax.block_until_ready(jax_fn(to_jax(g), to_jax(y), to_jax(bias)))
        _direct.backward(g, y, bias, None, None, 1.0, 0.0)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main(sys.argv[1:] or ["scaled", "8192", "28672", "float32"])
