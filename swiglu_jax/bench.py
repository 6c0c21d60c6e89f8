"""The benchmark: our kernels and every installed peer, side by side, on the GPU.

    python -m swiglu_jax.bench [--sizes quick|full|4096x4096,...] [--dtypes bfloat16,float32]
                               [--ops fwd,bwd,bias_bwd,weighted_bwd,fp8_fwd,scaled_fp8_fwd,
                                      clamp_fwd,clamp_bwd]
                               [--impls NAME,...] [--out DIR]

Device time per call is read from the CUDA profiler interface through ``torch.profiler``,
which records the kernels that JAX launches as well as torch's, so every implementation
is measured the same way: warm-up, then ``--iters`` calls (more where that is under
``MIN_MEASURED_SECONDS`` of kernels) over input sets rotated beyond the L2 cache, every
kernel of a call counted. The end-to-end time a Python user sees
(call plus synchronisation, median) is reported beside it. Without torch or a GPU the
device time falls back to wall-clock time (marked ``wall``), which is only good for
trying the command.

Minimum bytes per call, the floor divided by the copy bandwidth measured in the same run
(``s`` bytes per element, ``y`` of shape ``(N, 2H)``):

- ``fwd``: read ``y``, write ``out``: ``3 N H s``.
- ``bwd``: read ``g`` and ``y``, write ``dy``: ``5 N H s``.
- ``bias_bwd``: ``bwd`` plus the bias gradient (reduced over rows).
- ``weighted_bwd``: ``bwd`` plus reading the float32 weights and writing their gradient.
- ``fp8_fwd``: ``fwd`` plus writing the float8_e4m3fn copy of ``y``: ``+ 2 N H``.
- ``scaled_fp8_fwd``: ``fp8_fwd`` with the copy scaled per row (``fp8_input_store="scaled"``)
  plus writing the float32 row scales: ``+ 2 N H + 4 N``. Peers compute the row maxima,
  scales and scaled cast with their own ops.
- ``clamp_fwd``, ``clamp_bwd``: ``fwd`` and ``bwd`` with GPT-OSS's clamp (``GPT_OSS``:
  the gate clamped above at 7, the linear half to +-7, ``sigmoid(1.702 a)``, the linear
  half offset by 1).

Peers compute the same thing the way their users would: XLA is the ``jax.numpy``
specification (``swiglu_jax.reference``) under ``jax.jit`` with ``jax.vjp``; torch eager
and ``torch.compile`` (one fixed shape, and ``dynamic=True`` as after a second shape) run
Megatron-Core's formulas (the clamp ops: GPT-OSS's formula in torch); Liger-Kernel runs
its fused gate-up kernels and Transformer Engine its ``swiglu``/``dswiglu`` kernels
(``clamped_swiglu``/``clamped_dswiglu`` for the clamp ops), both composed with torch for
what they lack (bias, weights, fp8); Liger has no clamp, so its clamp rows record that.
Peers are optional: missing ones are skipped with a note.

Beside them, not a peer: ``copy (same bytes)``, one torch copy that reads and writes the
op's minimum bytes (half each) from input sets rotated the same way: the bandwidth a
kernel of this size reaches, launch and ramp included (at 4096 x 4096 bf16 on an H100,
90.4% of the 1 GiB copy's with the forward's bytes, 94.3% with the backward's). Each of
our rows records the copy's time over its own as ``pct_same_copy``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from swiglu_jax import _dispatch
from swiglu_jax._options import Options
from swiglu_jax.reference import swiglu_reference

OPS = (
    "fwd", "bwd", "bias_bwd", "weighted_bwd", "fp8_fwd", "scaled_fp8_fwd", "clamp_fwd",
    "clamp_bwd",
)  # fmt: skip
FORWARD_OPS = ("fwd", "fp8_fwd", "scaled_fp8_fwd", "clamp_fwd")  # their input is y alone
CLAMP_OPS = ("clamp_fwd", "clamp_bwd")
# GPT-OSS's clamped SwiGLU (the defaults of Transformer Engine's ClampedSwiGLU), in the
# order the torch ops and Transformer Engine's kernels take them positionally.
GPT_OSS = {"clamp_value": 7.0, "alpha": 1.702, "linear_offset": 1.0}
SIZES = {
    "quick": [(4096, 2048), (8192, 14336)],
    "full": [
        (4096, 2048),
        (4096, 4096),
        (8192, 4096),
        (8192, 11008),
        (8192, 14336),
        (16384, 8192),
        (32768, 14336),
    ],
}
L2_BYTES = 64 * 2**20  # at least the GPU's L2 (50 MiB on H100 and H200)
# Bytes of inputs cycled through between two reuses of one input set. Twice L2_BYTES
# (the rotation until session 7) let some inputs survive in L2 for some allocations:
# Liger at 4096 x 4096 bf16 read 95.7% of copy bandwidth right after torch.compile's
# candidate and 91.5% alone (H100); with four times that, this value, 91.6% in both
# orders, like every Triton kernel there.
ROTATION_BYTES = 8 * L2_BYTES
# At most this many input sets: calls of under ROTATION_BYTES / MAX_INPUT_SETS (2 MiB)
# find their inputs in L2, as such small calls do in real use (and a 1.5 KB call would
# otherwise need 350 thousand sets). Every size of --sizes full needs at most 11.
MAX_INPUT_SETS = 256


def input_sets(floor_bytes: int) -> int:
    """How many input sets a call of ``floor_bytes`` rotates through: enough to cycle
    ``ROTATION_BYTES``, at least 2, at most ``MAX_INPUT_SETS``."""
    return min(MAX_INPUT_SETS, max(2, math.ceil(ROTATION_BYTES / max(floor_bytes, 1))))


# Device time measured over at least this much kernel time (more calls for small sizes,
# hundreds for a 13 us kernel): it steadies the smallest sizes, though 20 calls and 380
# agreed within 0.5% on an H200 (benchmarks/PERF_NOTES.md).
MIN_MEASURED_SECONDS = 5e-3
MAX_ITERS = 2000


def minimum_bytes(op: str, rows: int, hidden: int, itemsize: int) -> int:
    base = (3 if op in FORWARD_OPS else 5) * rows * hidden * itemsize
    extra = {
        "fp8_fwd": 2 * rows * hidden,  # the float8 copy
        "scaled_fp8_fwd": 2 * rows * hidden + 4 * rows,  # and a float32 scale a row
        "bias_bwd": 2 * 2 * hidden * itemsize,  # read bias, write its gradient
        "weighted_bwd": 2 * rows * 4,  # read float32 weights, write their gradient
    }
    return base + extra.get(op, 0)


# ----------------------------------------------------------------------------- JAX side


def _jax_inputs(op, rows, hidden, dtype, seed):
    keys = jax.random.split(jax.random.key(seed), 4)
    y = jax.random.normal(keys[0], (rows, 2 * hidden), dtype)
    g = jax.random.normal(keys[1], (rows, hidden), dtype)
    if op in FORWARD_OPS:
        return (y,)
    if op == "bias_bwd":
        return g, y, jax.random.normal(keys[2], (2 * hidden,), dtype)
    if op == "weighted_bwd":
        return g, y, jax.random.uniform(keys[3], (rows, 1), jnp.float32)
    return g, y


def _ours(implementation: str, op: str) -> Callable:
    """Our kernels on the op's inputs, called below the custom VJP (the kernels alone)."""
    opts = Options(implementation=implementation, **(GPT_OSS if op in CLAMP_OPS else {}))

    def canonical(y):
        return y.reshape(y.shape[0], 2, -1)

    def forward(y, save_fp8):
        return _dispatch.call("forward", opts, canonical(y), None, None, save_fp8=save_fp8)

    def backward(g, y, bias=None, weights=None):
        bias = None if bias is None else bias.reshape(2, -1)
        return _dispatch.call("backward", opts, g, canonical(y), bias, weights, dy_dtype=y.dtype)

    return {
        "fwd": lambda y: forward(y, False)[0],
        "fp8_fwd": lambda y: forward(y, True),
        "scaled_fp8_fwd": lambda y: forward(y, "scaled"),
        "bwd": lambda g, y: backward(g, y)[0],
        "bias_bwd": lambda g, y, b: backward(g, y, bias=b)[:2],
        "weighted_bwd": lambda g, y, w: backward(g, y, weights=w)[::2],
        "clamp_fwd": lambda y: forward(y, False)[0],
        "clamp_bwd": lambda g, y: backward(g, y)[0],
    }[op]


def _xla(op: str) -> Callable:
    """The jnp specification under jit, differentiated by jax.vjp: what a JAX user writes."""
    ref = swiglu_reference
    return {
        "fwd": lambda y: ref(y),
        "fp8_fwd": lambda y: (ref(y), y.astype(jnp.float8_e4m3fn)),
        "scaled_fp8_fwd": lambda y: (ref(y), *_jnp_scaled_fp8(y)),
        "bwd": lambda g, y: jax.vjp(ref, y)[1](g)[0],
        "bias_bwd": lambda g, y, b: jax.vjp(ref, y, b)[1](g),
        "weighted_bwd": lambda g, y, w: jax.vjp(lambda y, w: ref(y, None, w), y, w)[1](g),
        "clamp_fwd": lambda y: ref(y, **GPT_OSS),
        "clamp_bwd": lambda g, y: jax.vjp(lambda y: ref(y, **GPT_OSS), y)[1](g)[0],
    }[op]


def _jnp_scaled_fp8(y):
    """The scaled fp8 copy as a JAX user writes it: row maxima, scales, scaled cast."""
    amax = jnp.max(jnp.abs(y), axis=-1, keepdims=True).astype(jnp.float32)
    scale = jnp.maximum(amax * (1 / 448), jnp.finfo(jnp.float32).tiny)
    return (y.astype(jnp.float32) * (1 / scale)).astype(jnp.float8_e4m3fn), scale


def _jax_candidate(make: Callable[[str], Callable]):
    def build(op, rows, hidden, dtype, sets):
        fn = jax.jit(make(op))
        inputs = [_jax_inputs(op, rows, hidden, jnp.dtype(dtype), seed) for seed in range(sets)]
        return fn, inputs, jax.block_until_ready

    return build


# ----------------------------------------------------------------------------- torch side


def _megatron_formulas(torch):
    """Megatron-Core's fused_bias_swiglu formulas, per op, in torch; for the clamp ops,
    GPT-OSS's formula and its derivative written the same way."""
    F = torch.nn.functional
    limit, alpha, offset = GPT_OSS.values()

    def swiglu(y):
        a, b = torch.chunk(y, 2, -1)
        return F.silu(a) * b

    def swiglu_back(g, y):
        a, b = torch.chunk(y, 2, -1)
        sig = torch.sigmoid(a)
        return torch.cat((g * sig * (1 + a * (1 - sig)) * b, g * F.silu(a)), -1)

    def weighted_back(g, y, w):
        dy = swiglu_back(g * w, y)
        dw = torch.sum(swiglu(y) * g.to(w.dtype), dim=-1, keepdim=True)
        return dy.to(y.dtype), dw.to(w.dtype)

    def bias_back(g, y, b):
        dy = swiglu_back(g, y + b)
        return dy, dy.sum(0)

    def clamped(y):
        a, b = torch.chunk(y, 2, -1)
        return a.clamp(max=limit), b.clamp(min=-limit, max=limit)

    def gpt_oss(y):
        a, b = clamped(y)
        return a * torch.sigmoid(alpha * a) * (b + offset)

    def gpt_oss_back(g, y):
        raw_a, raw_b = torch.chunk(y, 2, -1)
        a, b = clamped(y)
        sig = torch.sigmoid(alpha * a)
        da = g * (b + offset) * sig * (1 + alpha * a * (1 - sig)) * (raw_a <= limit)
        db = g * a * sig * (raw_b.abs() <= limit)
        return torch.cat((da, db), -1).to(y.dtype)

    return {
        "fwd": swiglu,
        "fp8_fwd": lambda y: (swiglu(y), y.to(torch.float8_e4m3fn)),
        "scaled_fp8_fwd": lambda y: (swiglu(y), *_torch_scaled_fp8(torch, y)),
        "bwd": swiglu_back,
        "bias_bwd": bias_back,
        "weighted_bwd": weighted_back,
        "clamp_fwd": gpt_oss,
        "clamp_bwd": gpt_oss_back,
    }


def _torch_scaled_fp8(torch, y):
    """The scaled fp8 copy as a torch user writes it: row maxima, scales, scaled cast."""
    amax = y.abs().amax(dim=-1, keepdim=True).float()
    scale = torch.clamp(amax * (1 / 448), min=torch.finfo(torch.float32).tiny)
    return (y.float() * (1 / scale)).to(torch.float8_e4m3fn), scale


def _composed(torch, forward, backward, clamped=None):
    """Every op from a peer's plain forward and backward kernels, composed with torch for
    what they lack (bias, weights, the fp8 copy), as their users would; the clamp ops from
    its ``clamped`` ``(forward, backward)`` kernels where it has them."""

    def weighted_back(g, y, w):
        dw = torch.sum(forward(y).to(w.dtype) * g.to(w.dtype), dim=-1, keepdim=True)
        return backward((g * w).to(y.dtype), y), dw

    def bias_back(g, y, b):
        dy = backward(g, y + b)
        return dy, dy.sum(0)

    return {
        "fwd": forward,
        "fp8_fwd": lambda y: (forward(y), y.to(torch.float8_e4m3fn)),
        "scaled_fp8_fwd": lambda y: (forward(y), *_torch_scaled_fp8(torch, y)),
        "bwd": backward,
        "bias_bwd": bias_back,
        "weighted_bwd": weighted_back,
        **({"clamp_fwd": clamped[0], "clamp_bwd": clamped[1]} if clamped else {}),
    }


def _liger_formulas(torch):
    """Liger-Kernel's fused gate-up kernels."""
    from liger_kernel.ops.swiglu import (
        swiglu_fused_gate_up_backward,
        swiglu_fused_gate_up_forward,
    )

    return _composed(
        torch,
        lambda y: swiglu_fused_gate_up_forward(y)[1],
        lambda g, y: swiglu_fused_gate_up_backward(y, g, in_place=False),
    )


def _transformer_engine_formulas(torch):
    """Transformer Engine's SwiGLU kernels (``tex.swiglu`` / ``tex.dswiglu``, no quantizer;
    ``tex.clamped_swiglu`` / ``tex.clamped_dswiglu`` with GPT-OSS's constants)."""
    import transformer_engine_torch as tex

    constants = tuple(GPT_OSS.values())  # limit, alpha, linear offset: tex's order
    return _composed(
        torch,
        lambda y: tex.swiglu(y, None),
        lambda g, y: tex.dswiglu(g, y, None),
        clamped=(
            lambda y: tex.clamped_swiglu(y, None, *constants),
            lambda g, y: tex.clamped_dswiglu(g, y, None, *constants),
        ),
    )


def _torch_candidate(formulas: str, compile_mode: str | None = None):
    def build(op, rows, hidden, dtype, sets):
        import torch

        ops = {
            "liger": _liger_formulas,
            "transformer_engine": _transformer_engine_formulas,
            "megatron": _megatron_formulas,
        }[formulas](torch)
        if op not in ops:
            raise NotImplementedError(f"{formulas} has no kernel for {op}")
        fn = ops[op]
        if compile_mode is not None:
            # A fresh compiler cache per candidate: dynamo keys its cache on the formula's
            # code object, shared by every size, and falls back to eager for good once
            # it has recompiled ``recompile_limit`` times (seen: "compiled" at eager speed).
            torch._dynamo.reset()
            fn = torch.compile(fn, dynamic=compile_mode == "dynamic")
        torch_dtype = getattr(torch, dtype)
        inputs = []
        for seed in range(sets):
            gen = torch.Generator(device="cuda").manual_seed(seed)

            def randn(*shape, dt=torch_dtype, gen=gen):
                return torch.randn(*shape, dtype=dt, device="cuda", generator=gen)

            y, g = randn(rows, 2 * hidden), randn(rows, hidden)
            inputs.append(
                {
                    "fwd": (y,),
                    "fp8_fwd": (y,),
                    "scaled_fp8_fwd": (y,),
                    "bwd": (g, y),
                    "bias_bwd": (g, y, randn(2 * hidden)),
                    "weighted_bwd": (g, y, torch.rand(rows, 1, device="cuda", generator=gen)),
                    "clamp_fwd": (y,),
                    "clamp_bwd": (g, y),
                }[op]
            )

        def sync(_):
            torch.cuda.synchronize()

        return fn, inputs, sync

    return build


def _same_copy_candidate():
    """``copy (same bytes)``: a copy of half the op's minimum bytes (so that as many are
    read as written), one source and one destination per input set, and one set only
    where it alone is beyond ``ROTATION_BYTES`` (a float32 backward at 32768 x 28672
    needs 9.4 GB a set)."""

    def build(op, rows, hidden, dtype, sets):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        nbytes = minimum_bytes(op, rows, hidden, jnp.dtype(dtype).itemsize)
        elements = max(1, nbytes // 4)
        sets = 1 if nbytes >= ROTATION_BYTES else sets
        inputs = []
        for seed in range(sets):
            gen = torch.Generator(device=device).manual_seed(seed)
            src = torch.randn(elements, dtype=torch.bfloat16, device=device, generator=gen)
            inputs.append((src, torch.empty_like(src)))

        def sync(_):
            if device == "cuda":
                torch.cuda.synchronize()

        return (lambda src, dst: dst.copy_(src)), inputs, sync

    return build


def _bridge_candidate():
    """torch_bridge: our kernels called from torch through DLPack (its host overhead shows
    in the end-to-end column, next to the JAX-side ``swiglu_jax:*`` rows)."""

    def build(op, rows, hidden, dtype, sets):
        import torch

        import torch_bridge  # noqa: F401  (registers torch.ops.swiglu_jax)

        forward, backward = torch.ops.swiglu_jax.forward, torch.ops.swiglu_jax.backward
        clamp = tuple(GPT_OSS.values())  # the ops' clamp_value, alpha, linear_offset
        fn = {
            "fwd": lambda y: forward(y, None, None, None, 1.0, 0.0, "none")[0],
            "fp8_fwd": lambda y: forward(y, None, None, None, 1.0, 0.0, "cast")[:2],
            "scaled_fp8_fwd": lambda y: forward(y, None, None, None, 1.0, 0.0, "scaled"),
            "bwd": lambda g, y: backward(g, y, None, None, None, 1.0, 0.0)[0],
            "bias_bwd": lambda g, y, b: backward(g, y, b, None, None, 1.0, 0.0)[:2],
            "weighted_bwd": lambda g, y, w: backward(g, y, None, w, None, 1.0, 0.0)[::2],
            "clamp_fwd": lambda y: forward(y, None, None, *clamp, "none")[0],
            "clamp_bwd": lambda g, y: backward(g, y, None, None, *clamp)[0],
        }[op]
        _, inputs, sync = _torch_candidate("megatron")(op, rows, hidden, dtype, sets)
        return fn, inputs, sync

    return build


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    ours: bool
    build: Callable
    needs: str = ""  # a module that must import for this candidate to run
    floor: bool = False  # a reference for the size, not a peer: no ratio to it


SAME_COPY = "copy (same bytes)"


def candidates() -> list[Candidate]:
    ours = [
        Candidate(
            f"swiglu_jax:{backend}",
            True,
            _jax_candidate(lambda op, b=backend: _ours(f"pallas:{b}", op)),
        )
        for backend in ("triton", "mosaic_gpu")
    ]
    return [
        *ours,
        Candidate("torch_bridge", True, _bridge_candidate(), needs="torch"),
        Candidate("xla", False, _jax_candidate(_xla)),
        Candidate("torch eager", False, _torch_candidate("megatron"), needs="torch"),
        Candidate(
            "torch.compile fixed", False, _torch_candidate("megatron", "fixed"), needs="torch"
        ),
        Candidate(
            "torch.compile dynamic", False, _torch_candidate("megatron", "dynamic"), needs="torch"
        ),
        Candidate("liger", False, _torch_candidate("liger"), needs="liger_kernel"),
        Candidate(
            "transformer engine",
            False,
            _torch_candidate("transformer_engine"),
            needs="transformer_engine_torch",
        ),
        Candidate(SAME_COPY, False, _same_copy_candidate(), needs="torch", floor=True),
    ]


# ----------------------------------------------------------------------------- timing


def _profiler():
    """``torch.profiler`` and its CUDA activity when a CUDA GPU is visible to torch."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return profile, ProfilerActivity.CUDA, torch


def device_seconds(fn, inputs, sync, iters: int) -> tuple[float, str]:
    """Device time per call: every GPU kernel and copy recorded by the CUDA profiler
    interface over ``iters`` calls, divided by ``iters``; wall-clock without one."""
    prof = _profiler()
    if prof is None:
        start = time.perf_counter()
        for i in range(iters):
            out = fn(*inputs[i % len(inputs)])
        sync(out)
        return (time.perf_counter() - start) / iters, "wall"
    profile, cuda, torch = prof
    with profile(activities=[cuda]) as p:
        for i in range(iters):
            out = fn(*inputs[i % len(inputs)])
        sync(out)
        torch.cuda.synchronize()
    kernels = [e for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total_us = sum(getattr(e, "device_time", None) or e.cuda_time for e in kernels)
    return total_us * 1e-6 / iters, "device"


def end_to_end_seconds(fn, inputs, sync, iters: int) -> float:
    """Median of call-plus-synchronise times: what an eager Python caller waits."""
    times = []
    for i in range(iters):
        start = time.perf_counter()
        sync(fn(*inputs[i % len(inputs)]))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth() -> float:
    """Bytes read plus written per second by a device-to-device copy of 1 GiB."""
    prof = _profiler()
    if prof is not None:
        torch = prof[2]
        src = torch.randn(2**29, dtype=torch.bfloat16, device="cuda")
        dst = torch.empty_like(src)
        fn = lambda: dst.copy_(src)
        seconds, _ = device_seconds(lambda: fn(), [()] * 2, lambda _: None, 3)
        seconds, _ = device_seconds(lambda: fn(), [()] * 2, lambda _: None, 20)
        return 2 * src.numel() * 2 / seconds
    x = jax.random.normal(jax.random.key(0), (2**27,), jnp.float32)
    f = jax.jit(lambda x: x + 1)
    jax.block_until_ready(f(x))
    seconds, _ = device_seconds(f, [(x,)], jax.block_until_ready, 10)
    return 2 * x.size * 4 / seconds


# ----------------------------------------------------------------------------- the run


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``quick``, ``full`` or ``N x 2H`` pairs like ``4096x4096,8192x28672``: (N, H)."""
    if text in SIZES:
        return SIZES[text]
    sizes = []
    for item in text.split(","):
        rows, two_h = (int(v) for v in item.lower().split("x"))
        if two_h % 2:
            raise ValueError(f"--sizes: 2H must be even, got {item!r}")
        sizes.append((rows, two_h // 2))
    return sizes


def run(
    sizes,
    dtypes,
    ops,
    names,
    iters,
    progress=print,
    checkpoint=None,
    min_measured_seconds=MIN_MEASURED_SECONDS,
) -> dict:
    """Times every chosen candidate; ``checkpoint(partial_result)`` after each record, so
    a run cut short (a time limit on the GPU machine) still leaves what it measured.
    Device time is measured over at least ``min_measured_seconds`` of kernels (more
    calls than ``iters`` where needed)."""
    import importlib.util

    chosen = [c for c in candidates() if not names or c.name in names]
    skipped = {
        c.name: f"{c.needs} is not installed"
        for c in chosen
        if c.needs and importlib.util.find_spec(c.needs) is None
    }
    chosen = [c for c in chosen if c.name not in skipped]
    bandwidth = copy_bandwidth()
    progress(f"copy bandwidth: {bandwidth / 1e9:.0f} GB/s; skipped: {skipped or 'none'}")
    rows_out = []
    total = len(sizes) * len(dtypes) * len(ops) * len(chosen)
    done = 0
    for rows, hidden in sizes:
        for dtype in dtypes:
            itemsize = jnp.dtype(dtype).itemsize
            for op in ops:
                floor_bytes = minimum_bytes(op, rows, hidden, itemsize)
                sets = input_sets(floor_bytes)
                for cand in chosen:
                    done += 1
                    record = {
                        "op": op,
                        "rows": rows,
                        "two_h": 2 * hidden,
                        "dtype": dtype,
                        "implementation": cand.name,
                        "ours": cand.ours,
                        "floor": cand.floor,
                        "min_bytes": floor_bytes,
                    }
                    try:
                        fn, inputs, sync = cand.build(op, rows, hidden, dtype, sets)
                        for args in inputs[:3]:
                            sync(fn(*args))  # compile and warm up
                        seconds, clock = device_seconds(fn, inputs, sync, iters)
                        calls = iters
                        if clock == "device" and seconds * iters < min_measured_seconds:
                            calls = min(MAX_ITERS, math.ceil(min_measured_seconds / seconds))
                            seconds, clock = device_seconds(fn, inputs, sync, calls)
                        record.update(
                            calls=calls,
                            us=seconds * 1e6,
                            clock=clock,
                            gbps=floor_bytes / seconds / 1e9,
                            pct_copy=100 * floor_bytes / seconds / bandwidth,
                            e2e_us=end_to_end_seconds(fn, inputs, sync, iters) * 1e6,
                        )
                    except Exception as error:  # a peer that can't run this is reported
                        record["error"] = f"{type(error).__name__}: {str(error)[:200]}"
                    finally:
                        fn = inputs = None
                        _release_torch_memory()
                    rows_out.append(record)
                    status = (
                        record["error"][:60]
                        if "error" in record
                        else f"{record['us']:9.1f} us {record['pct_copy']:6.1f}% of copy"
                    )
                    progress(
                        f"[{done}/{total}] {op} {rows}x{2 * hidden} {dtype} {cand.name}: {status}"
                    )
                    if checkpoint is not None:
                        checkpoint(_result(bandwidth, skipped, rows_out))
    return _result(bandwidth, skipped, rows_out)


def _release_torch_memory():
    """Hands torch's cached blocks back to the driver between candidates: blocks cached
    for one candidate's tensors need not fit the next's. With JAX holding 75% of the
    GPU's memory, the same-size copy's blocks from the forward left the bridge and
    ``torch.compile`` out of memory in the float32 backward at 32768 x 28672 (H100,
    session 14; ``main`` now keeps JAX from preallocating)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _result(bandwidth, skipped, records) -> dict:
    records = [dict(r) for r in records]
    _add_ratios(records)
    return {"copy_GBps": bandwidth / 1e9, "skipped": skipped, "results": records}


def _add_ratios(records):
    """``vs_best_peer``: the best peer's time over this one's (above 1: faster); for our
    rows ``pct_same_copy``: the same-size copy's time over ours, in %."""
    groups = {}
    for r in records:
        if "us" in r:
            groups.setdefault((r["op"], r["rows"], r["two_h"], r["dtype"]), []).append(r)
    for group in groups.values():
        peers = [r["us"] for r in group if not r["ours"] and not r.get("floor")]
        copies = [r["us"] for r in group if r.get("floor")]
        for r in group:
            r["vs_best_peer"] = min(peers) / r["us"] if peers and not r.get("floor") else None
            if r["ours"] and copies:
                r["pct_same_copy"] = 100 * copies[0] / r["us"]


def table(result: dict) -> str:
    header = (
        f"{'op':<13}{'N x 2H':<14}{'dtype':<9}{'implementation':<23}{'us':>9}"
        f"{'GB/s':>7}{'%copy':>7}{'e2e us':>9}{'vs best peer':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in result["results"]:
        where = f"{r['op']:<13}{r['rows']}x{r['two_h']:<9}{r['dtype']:<9}{r['implementation']:<23}"
        if "error" in r:
            lines.append(where + r["error"][:50])
            continue
        ratio = f"{r['vs_best_peer']:.2f}x" if r.get("vs_best_peer") else "-"
        lines.append(
            where + f"{r['us']:9.1f}{r['gbps']:7.0f}{r['pct_copy']:7.1f}"
            f"{r['e2e_us']:9.1f}{ratio:>13}"
        )
    return "\n".join(lines)


def summary(result: dict) -> str:
    """Markdown: for each op and dtype, a line per size with each of our
    implementations' % of copy bandwidth, the first one's ratio to the best peer and
    that peer, and the same-size copy's % where it ran; then per op and dtype the
    ranges over all sizes (what RESULTS.md quotes), with the first one's % of the
    same-size copy."""
    ours = list(dict.fromkeys(r["implementation"] for r in result["results"] if r["ours"]))
    groups = {}
    for r in result["results"]:
        if "us" in r:
            key = (r["op"], r["dtype"], r["rows"], r["two_h"])
            groups.setdefault(key, {})[r["implementation"]] = r
    percent = lambda r: f"{r['pct_copy']:.1f}" if r else "-"
    lines = [
        f"copy {result['copy_GBps']:.0f} GB/s; {result.get('environment', {})}",
        "",
        "| op | dtype | N x 2H | " + " | ".join(f"{name} %" for name in ours)
        + " | vs best peer | best peer (%) | same-size copy % |",
        "|---|---|---|" + "---:|" * len(ours) + "---:|---|---:|",
    ]  # fmt: skip
    ranges = {}
    for (op, dtype, rows, two_h), found in groups.items():
        peers = [r for r in found.values() if not r["ours"] and not r.get("floor")]
        best = min(peers, key=lambda r: r["us"]) if peers else None
        first = found.get(ours[0]) if ours else None
        ratio = best["us"] / first["us"] if best and first else None
        cells = [percent(found.get(name)) for name in ours]
        lines.append(
            f"| {op} | {dtype} | {rows}x{two_h} | " + " | ".join(cells)
            + f" | {f'{ratio:.2f}' if ratio else '-'}"
            + f" | {f'{best['implementation']} ({best['pct_copy']:.1f})' if best else '-'}"
            + f" | {percent(found.get(SAME_COPY))} |"
        )  # fmt: skip
        span = ranges.setdefault((op, dtype), {"pct": [], "ratio": [], "same": []})
        if first:
            span["pct"].append(first["pct_copy"])
            if "pct_same_copy" in first:
                span["same"].append(first["pct_same_copy"])
        if ratio:
            span["ratio"].append(ratio)
    spread = lambda v, f: f"{min(v):{f}}-{max(v):{f}}" if v else "-"
    name = ours[0] if ours else "ours"
    lines += ["", f"| op | dtype | {name} % | vs best peer | % of the same-size copy |"]
    lines.append("|---|---|---:|---:|---:|")
    for (op, dtype), span in ranges.items():
        lines.append(
            f"| {op} | {dtype} | {spread(span['pct'], '.1f')} | {spread(span['ratio'], '.2f')} "
            f"| {spread(span['same'], '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> bool:
    """% of copy bandwidth against size, one panel per op and dtype; False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    records = [r for r in result["results"] if "us" in r]
    panels = sorted({(r["op"], r["dtype"]) for r in records})
    if not panels:
        return False
    cols = min(3, len(panels))
    fig, axes = plt.subplots(
        math.ceil(len(panels) / cols),
        cols,
        squeeze=False,
        figsize=(5 * cols, 3.6 * math.ceil(len(panels) / cols)),
    )
    for ax, (op, dtype) in zip(axes.flat, panels, strict=False):
        for name in sorted({r["implementation"] for r in records}):
            points = sorted(
                (r["rows"] * r["two_h"] // 2, r["pct_copy"])
                for r in records
                if (r["op"], r["dtype"], r["implementation"]) == (op, dtype, name)
            )
            if points:
                style = "-o" if name.startswith("swiglu_jax") else "--."
                style = ":k" if name == SAME_COPY else style
                ax.plot(*zip(*points, strict=True), style, label=name)
        ax.set_xscale("log")
        ax.set_title(f"{op}, {dtype}")
        ax.set_xlabel("N x H (output elements)")
        ax.set_ylabel("% of copy bandwidth")
        ax.axhline(100, color="grey", linewidth=0.5)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def _peer_versions() -> dict:
    import importlib.metadata

    versions = {}
    for name in ("torch", "triton", "liger-kernel", "transformer-engine"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def main(argv: list[str] | None = None) -> int:
    # JAX would otherwise take 75% of the GPU's memory when it starts, and torch's peers
    # ran out of memory in the float32 backward at 32768 x 28672 (sessions 13 and 14);
    # set before JAX's first use of the GPU (importing swiglu_jax does not use it).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="quick", help="quick, full, or e.g. 4096x4096,...")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--impls", default="", help="comma-separated names (default: all)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument(
        "--min-device-ms",
        type=float,
        default=MIN_MEASURED_SECONDS * 1e3,
        help="measure device time over at least this many ms of kernels (0: --iters only)",
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-results"))
    args = parser.parse_args(argv)
    ops = args.ops.split(",")
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        parser.error(f"--ops: unknown {unknown}; choose from {OPS}")
    names = [n for n in args.impls.split(",") if n]
    device = jax.devices()[0]
    environment = {
        "device": device.device_kind,
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        **_peer_versions(),
    }
    os.makedirs(args.out, exist_ok=True)

    def save(result):
        result["environment"] = environment
        with open(os.path.join(args.out, "bench.json"), "w") as f:
            json.dump(result, f, indent=1)

    result = run(
        parse_sizes(args.sizes),
        args.dtypes.split(","),
        ops,
        names,
        args.iters,
        progress=lambda line: print(line, flush=True),
        checkpoint=save,
        min_measured_seconds=args.min_device_ms * 1e-3,
    )
    save(result)
    with open(os.path.join(args.out, "bench-summary.md"), "w") as f:
        f.write(summary(result))
    plotted = plot(result, os.path.join(args.out, "bench.png"))
    print(
        f"\n{device.device_kind}, jax {jax.__version__}, copy bandwidth "
        f"{result['copy_GBps']:.0f} GB/s; results in {args.out}/bench.json"
        f"{' and bench.png' if plotted else ' (no matplotlib: no plot)'}\n"
    )
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
