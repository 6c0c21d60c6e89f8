"""Experiment: do the Triton kernels' IR (as Pallas lowers it) compile with the ``triton``
package, for every variant, on this host (no GPU needed)?

    PYTHONPATH=. python3 benchmarks/experiments/triton_ir_compile.py [--capability 90]

For each direction, variant (bias, weights), options, fp8 store/input and dtype, at a
ragged and an LLM-sized shape: lowers the kernel (swiglu_jax.kernels.triton_ir), compiles
it (torch_bridge._direct.compile_kernel) and prints the times, the grid and what the PTX
does with memory and the sigmoid (16-byte vector accesses, ex2.approx). Prepend another
jax or triton to PYTHONPATH to check that pair (see PERF_NOTES.md for those checked).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import re
import time

import jax
import triton

from swiglu_jax._options import Options
from swiglu_jax.kernels import triton_ir
from torch_bridge._direct import compile_kernel

OPTIONS = {
    "default": Options(),
    "gpt_oss": Options(clamp_value=7.0, alpha=1.702, linear_offset=1.0),
}
VARIANTS = {"plain": (None, None), "bias": ("float32", None), "weighted": (None, "float32")}
VARIANTS["weighted_bias"] = ("bfloat16", "float32")
DTYPES = ("bfloat16", "float16", "float32")
SHAPES = ((37, 129), (8192, 14336))


def cases(full: bool):
    for (rows, hidden), dtype, variant, option, fp8 in itertools.product(
        SHAPES, DTYPES, VARIANTS, OPTIONS, (False, True)
    ):
        if not full and (dtype != "bfloat16" and (variant != "plain" or option != "default")):
            continue
        bias, weights = VARIANTS[variant]
        opts = OPTIONS[option]
        label = f"{rows}x{hidden} {dtype} {variant} {option} fp8={fp8}"
        yield (
            f"fwd {label}",
            functools.partial(triton_ir.forward_ir, rows, hidden, dtype, bias, weights, opts, fp8),
        )
        y_dtype = "float8_e4m3fn" if fp8 else dtype
        yield (
            f"bwd {label}",
            functools.partial(
                triton_ir.backward_ir, rows, hidden, dtype, y_dtype, bias, weights, opts
            ),
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--capability", type=int, default=90)
    parser.add_argument("--full", action="store_true", help="every dtype with every variant")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, triton {triton.__version__}, sm_{args.capability}")
    failures = 0
    for label, make in cases(args.full):
        start = time.perf_counter()
        try:
            kernel = make()
            lowered = time.perf_counter()
            compiled = compile_kernel(kernel, args.capability)
        except Exception as error:  # report and go on: the point is the whole table
            failures += 1
            print(f"FAIL {label}: {type(error).__name__}: {str(error)[:300]}")
            continue
        done = time.perf_counter()
        ptx = compiled.asm["ptx"]
        vectors = len(re.findall(r"(?:ld|st)\.global\S*\.v4", ptx))
        ex2 = len(re.findall(r"ex2\.approx", ptx))
        print(
            f"ok   {label:<52} lower {1e3 * (lowered - start):6.0f} ms  compile "
            f"{1e3 * (done - lowered):6.0f} ms  grid {kernel.grid}  warps {kernel.num_warps}  "
            f"v4 accesses {vectors}  ex2.approx {ex2}"
        )
    print(f"{failures} failures")


if __name__ == "__main__":
    main()
