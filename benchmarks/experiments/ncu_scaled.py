"""One launch of the scaled store's forward on the JAX path and one on torch_bridge's
direct launch, for Nsight Compute to compare (shared-memory configuration, L1 and L2 hit
rates, occupancy):

    ncu --kernel-name swiglu_forward_triton --metrics ... \\
        python benchmarks/experiments/ncu_scaled.py [ROWS] [TWO_H] [DTYPE]
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import torch

from swiglu_jax._options import Options
from swiglu_jax.kernels import triton as kernels
from torch_bridge import _direct


def main(argv):
    rows, two_h, dtype = int(argv[0]), int(argv[1]), argv[2]
    hidden = two_h // 2
    y = torch.randn(rows, two_h, dtype=getattr(torch, dtype), device="cuda")
    y_jax = jax.device_put(jnp.asarray(y.float().cpu().numpy(), dtype=jnp.dtype(dtype)))
    forward = jax.jit(
        lambda y: kernels.forward(
            y.reshape(rows, 2, hidden), None, None, Options(), save_fp8="scaled"
        )
    )
    jax.block_until_ready(forward(y_jax))  # the JAX path: XLA's launch
    _direct.forward(y, None, None, None, 1.0, 0.0, "scaled")  # the triton package's
    torch.cuda.synchronize()


if __name__ == "__main__":
    main(sys.argv[1:] or ["8192", "28672", "float32"])
