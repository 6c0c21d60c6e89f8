"""Where torch_bridge's direct launch and JAX's own launch of the same Pallas Triton
kernel differ in bits, and which triton.compile option makes them agree.

    python benchmarks/experiments/direct_bits.py        (needs a CUDA GPU)

For each case, the JAX side is swiglu_jax's backward with implementation="pallas:triton"
(XLA compiles the kernel's Triton IR); the direct side is torch_bridge._direct.backward
compiled by torch's triton under each option set. Prints, per case and option set, how
many elements differ and by how many units in the last place at most.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import torch

import swiglu_jax
from torch_bridge import _direct

OPTION_SETS = {
    "default": {"enable_reflect_ftz": False},
    "no_fp_fusion": {"enable_reflect_ftz": False, "enable_fp_fusion": False},
    "ftz": {"enable_reflect_ftz": True},
    "ftz_no_fp_fusion": {"enable_reflect_ftz": True, "enable_fp_fusion": False},
}
CASES = [  # dtype, rows, hidden, options
    ("bfloat16", 1000, 1408, {}),
    ("float16", 37, 129, {}),
    ("float32", 1000, 1408, {}),
    ("bfloat16", 1000, 1408, {"clamp_value": 7.0, "alpha": 1.702, "linear_offset": 1.0}),
]


def ulps(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """(elements that differ, largest difference in units in the last place)."""
    bits = {2: torch.int16, 4: torch.int32}[a.element_size()]
    ia, ib = a.view(bits).long(), b.view(bits).long()
    # sign-magnitude to a monotonic integer line
    sign = 1 << (8 * a.element_size() - 1)
    ia = torch.where(ia < 0, -(ia + sign), ia)
    ib = torch.where(ib < 0, -(ib + sign), ib)
    diff = (ia - ib).abs()
    return int((diff > 0).sum()), int(diff.max())


def main():
    print(
        f"jax {jax.__version__}, torch {torch.__version__}, triton "
        f"{__import__('triton').__version__}, {torch.cuda.get_device_name()}"
    )
    rows_out = []
    for (dtype, rows, hidden, options), seed in zip(CASES, itertools.count()):
        gen = torch.Generator(device="cuda").manual_seed(seed)
        tdtype = getattr(torch, dtype)
        y = (2 * torch.randn(rows, 2 * hidden, device="cuda", generator=gen)).to(tdtype)
        g = torch.randn(rows, hidden, device="cuda", generator=gen).to(tdtype)
        jy = jnp.asarray(y.float().cpu().numpy()).astype(dtype)
        jg = jnp.asarray(g.float().cpu().numpy()).astype(dtype)
        expected_fwd = np.asarray(
            swiglu_jax.swiglu(jy, implementation="pallas:triton", **options).astype(jnp.float32)
        )
        expected = np.asarray(
            swiglu_jax.swiglu_back(jg, jy, implementation="pallas:triton", **options).astype(
                jnp.float32
            )
        )
        expected_fwd = torch.from_numpy(expected_fwd).to(tdtype).cuda()
        expected = torch.from_numpy(expected).to(tdtype).cuda()
        clamp = options.get("clamp_value")
        alpha, offset = options.get("alpha", 1.0), options.get("linear_offset", 0.0)
        for name, compile_options in OPTION_SETS.items():
            _direct._launchers.clear()
            _direct.COMPILE_OPTIONS = compile_options
            out = _direct.forward(y, None, None, clamp, alpha, offset, "none")[0]
            dy = _direct.backward(g, y, None, None, clamp, alpha, offset)[0]
            torch.cuda.synchronize()
            row = (
                dtype,
                rows,
                hidden,
                bool(options),
                name,
                *ulps(out, expected_fwd),
                *ulps(dy, expected),
                y.numel(),
            )
            rows_out.append(row)
            print(row, flush=True)
    print(
        f"{'dtype':9} {'rows':>5} {'H':>5} opts {'compile options':18} "
        f"{'fwd diff':>9} {'ulp':>4} {'bwd diff':>9} {'ulp':>4} of"
    )
    for r in rows_out:
        print(
            f"{r[0]:9} {r[1]:5} {r[2]:5} {int(r[3]):4} {r[4]:18} {r[5]:9} {r[6]:4} "
            f"{r[7]:9} {r[8]:4} {r[9]}"
        )


if __name__ == "__main__":
    main()
