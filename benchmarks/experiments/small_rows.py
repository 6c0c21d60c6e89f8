"""Experiment: why the plain kernels trail Liger's at 4096 tokens (issue 4).

    PYTHONPATH=. python3 benchmarks/experiments/small_rows.py [--iters 200]

Liger's fused gate-up forward and ours, compiled for sm_90 on the CPU host, have the same
memory code (two 16-byte loads and one 16-byte store a thread, 31-32 registers; ours has
a row predicate and ~20% more arithmetic), yet at 4096 x 4096 bf16 Liger's reaches 96.7%
of the copy bandwidth and ours 92.5% (PERF_NOTES.md). Candidates, side by side in one
process, each the device time of its own kernel alone (picked by name from the profiler;
inputs rotated beyond L2):

- grid: ours launches ``(1, N)`` programs (hidden blocks on CUDA's x), Liger ``(N,)``;
  hand-written one-row kernels launched both ways, and ours with a flat grid;
- arithmetic: the hand kernel with SwiGLU's math and with none (``a + b``: the ceiling of
  this memory traffic at this size);
- compile options: ours with the direct launch's (no FMA contraction, XLA's) and triton's
  defaults; tiles of one or two rows;
- persistent programs: a hand kernel looping over rows from ``k x SMs`` programs;
- spacing: kernels back to back, or with a spin kernel between calls (JAX's dispatch
  leaves the GPU idle between eager calls, torch's launches do not);
- the bias backward's tiles, compiled by XLA (the JAX path) and by upstream triton (the
  direct launch), with the time of each kernel (the backward and the sum of its partials).

Outcome (PERF_NOTES.md, session 6): none of grid, arithmetic or compile options matter;
with outputs kept, every kernel with this traffic, one without arithmetic included,
reads the same at 4096 tokens; the two compilers differ on the bias backward's tiles.
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import jax.numpy as jnp
import torch
import triton
import triton.language as tl
from jax.experimental import pallas as pl

from swiglu_jax import bench
from swiglu_jax._options import Options
from swiglu_jax.kernels import triton as kernels
from swiglu_jax.kernels import triton_ir
from swiglu_jax.kernels.config import BlockConfig
from torch_bridge import _direct

SIZES = [(4096, 2048), (4096, 4096), (8192, 14336)]
# (rows, columns, warps): 64 x 128 with 8 warps takes 128 registers a thread (2 programs
# an SM) in triton 3.6/3.8; 16 elements a thread take ~64.
BIAS_TILES = [(64, 128, 8), (64, 128, 16), (32, 128, 8), (32, 128, 4), (16, 128, 4), (32, 256, 16)]
DTYPES = ["bfloat16", "float32"]


# ----------------------------------------------------------------------------- hand kernels


@triton.jit
def _hand_fwd(y_ptr, out_ptr, H: tl.constexpr, BLOCK: tl.constexpr, AXIS: tl.constexpr,
              MATH: tl.constexpr):  # fmt: skip
    row = tl.program_id(AXIS).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < H
    a = tl.load(y_ptr + row * 2 * H + cols, mask=mask).to(tl.float32)
    b = tl.load(y_ptr + row * 2 * H + H + cols, mask=mask).to(tl.float32)
    out = a * tl.sigmoid(a) * b if MATH else a + b
    tl.store(out_ptr + row * H + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _hand_fwd_persistent(y_ptr, out_ptr, N, H: tl.constexpr, BLOCK: tl.constexpr):
    cols = tl.arange(0, BLOCK)
    mask = cols < H
    for row in range(tl.program_id(0), N, tl.num_programs(0)):
        r = row.to(tl.int64)
        a = tl.load(y_ptr + r * 2 * H + cols, mask=mask).to(tl.float32)
        b = tl.load(y_ptr + r * 2 * H + H + cols, mask=mask).to(tl.float32)
        out = a * tl.sigmoid(a) * b
        tl.store(out_ptr + r * H + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _hand_bwd(g_ptr, y_ptr, dy_ptr, H: tl.constexpr, BLOCK: tl.constexpr, MATH: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < H
    g = tl.load(g_ptr + row * H + cols, mask=mask).to(tl.float32)
    a = tl.load(y_ptr + row * 2 * H + cols, mask=mask).to(tl.float32)
    b = tl.load(y_ptr + row * 2 * H + H + cols, mask=mask).to(tl.float32)
    if MATH:
        sig = tl.sigmoid(a)
        da = g * b * sig * (1 + a * (1 - sig))
        db = g * a * sig
    else:
        da, db = g + b, g + a
    tl.store(dy_ptr + row * 2 * H + cols, da.to(dy_ptr.dtype.element_ty), mask=mask)
    tl.store(dy_ptr + row * 2 * H + H + cols, db.to(dy_ptr.dtype.element_ty), mask=mask)


def _warps(block: int) -> int:
    """Liger's choice (``calculate_settings``)."""
    return 16 if block >= 8192 else 8 if block >= 2048 else 4


def hand_fwd(rows, hidden, *, axis=0, math_=True):
    block = triton.next_power_of_2(hidden)
    grid = (rows,) if axis == 0 else (1, rows)

    def fn(y):
        out = torch.empty(rows, hidden, dtype=y.dtype, device=y.device)
        _hand_fwd[grid](y, out, hidden, block, axis, math_, num_warps=_warps(block))
        return out

    return fn


def hand_fwd_persistent(rows, hidden, *, per_sm):
    block = triton.next_power_of_2(hidden)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    grid = (min(rows, per_sm * sms),)

    def fn(y):
        out = torch.empty(rows, hidden, dtype=y.dtype, device=y.device)
        _hand_fwd_persistent[grid](y, out, rows, hidden, block, num_warps=_warps(block))
        return out

    return fn


def hand_bwd(rows, hidden, *, math_=True):
    block = triton.next_power_of_2(hidden)

    def fn(g, y):
        dy = torch.empty_like(y)
        _hand_bwd[(rows,)](g, y, dy, hidden, block, math_, num_warps=_warps(block))
        return dy

    return fn


# ----------------------------------------------------------------------------- ours


@contextlib.contextmanager
def _patched(config=None, flat=False, options=None, unmasked=False):
    """Our kernels with another block config, a flat 1-D grid (program ``p`` at hidden
    block ``p % blocks``, row block ``p // blocks``), other triton compile options, or
    ``unmasked`` loads and stores where the tiles divide the array (session 9: the plain
    kernels, whose tiles read only ``mask``)."""
    saved = kernels.default_config, kernels._grid, kernels._Tile.__init__
    saved_options = dict(_direct.COMPILE_OPTIONS)
    if config is not None:
        kernels.default_config = lambda rows, hidden, dtype, **_: config
    if unmasked:
        masked_init = kernels._Tile.__init__

        def unmasked_init(self, rows, hidden, bn, bh, i=None, j=None):
            masked_init(self, rows, hidden, bn, bh, i, j)
            if rows % bn == 0 and hidden % bh == 0:  # a constant mask: triton drops it
                self.mask = jnp.full((bn, bh), True)

        kernels._Tile.__init__ = unmasked_init
    if flat:
        init = kernels._Tile.__init__

        def flat_init(self, rows, hidden, bn, bh, i=None, j=None):
            if i is None and j is None:
                blocks = pl.cdiv(hidden, bh)
                i, j = pl.program_id(0) // blocks, pl.program_id(0) % blocks
            init(self, rows, hidden, bn, bh, i, j)

        kernels._grid = lambda rows, hidden, bn, bh: (pl.cdiv(rows, bn) * pl.cdiv(hidden, bh),)
        kernels._Tile.__init__ = flat_init
    if options is not None:
        _direct.COMPILE_OPTIONS.clear()
        _direct.COMPILE_OPTIONS.update(options)
    try:
        yield
    finally:
        kernels.default_config, kernels._grid, kernels._Tile.__init__ = saved
        _direct.COMPILE_OPTIONS.clear()
        _direct.COMPILE_OPTIONS.update(saved_options)


def ours(direction, rows, hidden, dtype, **patch):
    with _patched(**patch):
        if direction == "fwd":
            make = triton_ir.forward_ir.__wrapped__
            ir = make(rows, hidden, dtype, None, None, Options(), False)
        else:
            bias = dtype if direction == "bias_bwd" else None
            make = triton_ir.backward_ir.__wrapped__
            ir = make(rows, hidden, dtype, dtype, bias, None, Options())
        launcher = _direct.Launcher(ir, torch.device("cuda", 0))
    print(f"    ours {direction} {patch}: grid {ir.grid}, {ir.num_warps} warps", flush=True)
    if direction != "bias_bwd":
        return lambda *xs: launcher(*xs)[0]
    partial_rows = ir.results[1][0][0]
    summing = _direct.Launcher(
        triton_ir.sum_rows_ir(partial_rows, 2 * hidden, dtype), torch.device("cuda", 0)
    )

    def bias_backward(g, y, bias):
        dy, partials = launcher(g, y, bias)
        return dy, summing(partials)[0]

    return bias_backward


def liger(direction):
    from liger_kernel.ops.swiglu import (
        swiglu_fused_gate_up_backward,
        swiglu_fused_gate_up_forward,
    )

    if direction == "fwd":
        return lambda y: swiglu_fused_gate_up_forward(y)[1]
    return lambda g, y: swiglu_fused_gate_up_backward(y, g, in_place=False)


# ----------------------------------------------------------------------------- timing


def kernel_seconds(fn, inputs, iters, *, spaced=False):
    """Device seconds per call of the kernels ``fn`` launches (the spin kernels that
    space the calls apart excluded), and the microseconds of each kernel by name. Each
    call's output is kept until the next call's is made, as the benchmark does (a caller
    keeps its outputs: reusing one output buffer call after call lets dirty L2 lines be
    overwritten in place, never written back, and read several % fast at 4096 tokens)."""
    from torch.profiler import ProfilerActivity, profile

    out = None
    for args in inputs[:2]:
        out = fn(*args)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(iters):
            if spaced:
                torch.cuda._sleep(100_000)  # ~50 us of spinning
            out = fn(*inputs[i % len(inputs)])
        if not isinstance(out[0], torch.Tensor):  # the JAX path's arrays
            import jax

            jax.block_until_ready(out)
        torch.cuda.synchronize()
    del out
    per_kernel = {}
    for e in prof.events():
        name = e.name.lower()
        if e.device_type != torch.autograd.DeviceType.CUDA or "sleep" in name or "spin" in name:
            continue
        us = getattr(e, "device_time", None) or e.cuda_time
        per_kernel[e.name[:32]] = per_kernel.get(e.name[:32], 0.0) + us / iters
    return sum(per_kernel.values()) * 1e-6, {k: round(v, 1) for k, v in per_kernel.items()}


def input_sets(op, rows, hidden, dtype, floor_bytes, device="cuda") -> list[tuple]:
    """Random inputs of ``op`` (``fwd``, ``fp8_fwd``, ``scaled_fp8_fwd``, ``bwd``,
    ``bias_bwd`` or ``weighted_bwd``), as many sets as cycle ``bench.ROTATION_BYTES``
    through the GPU."""
    sets = bench.input_sets(floor_bytes)
    gen = torch.Generator(device=device).manual_seed(0)
    found = []
    for _ in range(sets):
        y = torch.randn(rows, 2 * hidden, dtype=dtype, device=device, generator=gen)
        g = torch.randn(rows, hidden, dtype=dtype, device=device, generator=gen)
        bias = torch.randn(2 * hidden, dtype=dtype, device=device, generator=gen)
        weights = torch.rand(rows, 1, device=device, generator=gen)
        found.append(
            {"fwd": (y,), "fp8_fwd": (y,), "scaled_fp8_fwd": (y,), "bwd": (g, y),
             "bias_bwd": (g, y, bias), "weighted_bwd": (g, y, weights)}[op]
        )  # fmt: skip
    return found


def jax_bias_backward(rows, hidden, dtype, config):
    """The bias backward on the JAX path (XLA's compilation of the same Triton kernels),
    with ``config``, as a torch-callable: inputs through DLPack, outputs kept as JAX's."""
    import jax

    fn = jax.jit(
        lambda g, y, b: kernels.backward(
            g, y.reshape(rows, 2, hidden), b.reshape(2, hidden), None, Options(),
            dy_dtype=y.dtype, config=config,
        )[:2]
    )  # fmt: skip

    def call(g, y, bias):
        return fn(*(jax.dlpack.from_dlpack(x) for x in (g, y, bias)))

    return call


def candidates(direction, rows, hidden, dtype) -> dict:
    """name -> a function building the callable to time."""
    wide = min(triton.next_power_of_2(hidden), 4096)
    one_row = BlockConfig(1, wide, num_warps=8)
    if direction == "bias_bwd":  # ours only: the kernel, then the sum of its partials
        found = {}
        for bn, bh, warps in BIAS_TILES:
            config = BlockConfig(bn, bh, num_warps=warps)
            found[f"direct {bn}x{bh} w{warps}"] = functools.partial(
                ours, direction, rows, hidden, dtype, config=config
            )
            found[f"jax {bn}x{bh} w{warps}"] = functools.partial(
                jax_bias_backward, rows, hidden, dtype, config
            )
        return found
    found = {"liger": functools.partial(liger, direction)}
    if direction == "fwd":
        found |= {
            "hand grid (N,)": functools.partial(hand_fwd, rows, hidden),
            "hand grid (1, N)": functools.partial(hand_fwd, rows, hidden, axis=1),
            "hand no math": functools.partial(hand_fwd, rows, hidden, math_=False),
            "hand persistent 8/SM": functools.partial(hand_fwd_persistent, rows, hidden, per_sm=8),
        }
    else:
        found |= {
            "hand grid (N,)": functools.partial(hand_bwd, rows, hidden),
            "hand no math": functools.partial(hand_bwd, rows, hidden, math_=False),
        }
    build = functools.partial(ours, direction, rows, hidden, dtype)
    return found | {
        "ours": build,
        "ours flat grid": functools.partial(build, flat=True),
        "ours triton defaults": functools.partial(build, options={}),
        "ours 1 row": functools.partial(build, config=one_row),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--directions", default="fwd,bwd,bias_bwd")
    parser.add_argument("--no-spacing", action="store_true")
    args = parser.parse_args()
    bandwidth = bench.copy_bandwidth()
    print(f"copy bandwidth {bandwidth / 1e9:.0f} GB/s ({torch.cuda.get_device_name()})")
    for (rows, hidden), dtype in [(s, d) for s in SIZES for d in DTYPES]:
        torch_dtype = getattr(torch, dtype)
        for direction in args.directions.split(","):
            floor = bench.minimum_bytes(direction, rows, hidden, torch_dtype.itemsize)
            inputs = input_sets(direction, rows, hidden, torch_dtype, floor)
            print(f"== {direction} {rows}x{2 * hidden} {dtype}", flush=True)
            for name, make in candidates(direction, rows, hidden, dtype).items():
                try:
                    fn = make()
                    for spaced in (False,) if args.no_spacing else (False, True):
                        seconds, names = kernel_seconds(fn, inputs, args.iters, spaced=spaced)
                        pct = 100 * floor / seconds / bandwidth
                        label = name + (" spaced" if spaced else "")
                        print(f"  {label:26s} {seconds * 1e6:8.1f} us {pct:6.1f}%  {names}")
                except Exception as error:
                    print(f"  {name:32s} failed: {type(error).__name__}: {str(error)[:160]}")
                print(flush=True, end="")


if __name__ == "__main__":
    main()
