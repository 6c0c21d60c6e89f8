"""Experiment: where issue 4's remaining gaps come from (session 7).

    PYTHONPATH=. python3 benchmarks/experiments/gaps.py [--parts bias,wide,...] [--out DIR]

Parts (``--parts``, comma-separated):

- ``bias``: the bias backward's anatomy on the JAX path: the plain backward with its own
  tile and with the reducing tiles, the bias kernel alone, the whole op, the direct
  launch. Outcome (H100, 4096 x 4096 bf16): 94.1 / 91.5 / 83.5 / 78.9 / 73% of copy.
- ``wide``, ``widebwd``: wide rows against XLA's fusion and ``torch.compile`` (whose
  generated source goes to ``--out``), our tile at several shapes and warps. Outcome:
  8 elements a thread in the forward (1 x 4096 with 16 warps), +1 point in float32.
- ``warps_fwd``, ``warps_bwd``, ``warps_fp8_fwd``, ``warps_weighted_bwd``: 1 x 4096 with
  8 against 16 warps, each twice, alternating. Outcome: op-dependent (PERF_NOTES.md).
- ``small``, ``smallbwd``: 4096 tokens, our tiles against XLA's fusion. Outcome: 4
  elements a thread there reach XLA (applied in session 8: grids under 2^24 outputs).
  Session 9: ``torch.compile``'s float32 forward 98.4% against our 96.6 (its kernel
  saved to ``--out``).
- ``smallweighted``: the weighted backward's tiles at 4096 tokens. Outcome (session 9):
  1 x 2048 with 16 warps (4 a thread) 1.5 / 0.7 points ahead of 8 warps (applied).
- ``bias_steps``: the bias backward with ``row_steps`` row blocks a program (its terms
  added in registers, one sum across warps a program) on the JAX path and the direct
  launch. Outcome (session 9): 16 x 128 with 4 warps and 8 steps (16-bit), 32 x 128
  with 4 warps and 4 steps (float32), +1-4 points on both compilers (applied).
- ``scaled_rows``: the scaled fp8 store with each row in one tile against the two sweeps
  of ``sweep_config``. Outcome (session 9): 62-72% against 85% in bf16 at wide rows (not
  applied); at ``H = 4096`` float32 16 warps 2 points ahead of 8 (applied).
- ``fwdgap``, ``bwdgap``: the plain kernels' last 1-2% against ``torch.compile`` and XLA
  at large sizes. Outcome (session 9): masks and the grid's shape change nothing; a
  flat kernel of 1024 elements with 8 warps (4 a thread) reaches XLA in bf16.
- ``perthread_fwd``, ``perthread_bwd``, ``perthread_fp8_fwd``: 4 elements a thread at
  the benchmark's sizes. Outcome (session 9): 1 x 1024 with 8 warps +1.0-1.7 points in
  the bf16 forward, +0.6-1.6 in the backward, within a point for the fp8 store
  (applied to the elementwise kernels).
- ``perthread_*`` at 2 elements a thread (inductor's ``pointwise`` heuristic tries 512
  elements with 8 warps for these sizes). Outcome (session 10): float32 1 x 512 with 8
  warps (8 bytes a thread) +0.4-1.5 points in the forward, level with ``torch.compile``;
  +0.3-0.4 in the backward; bf16 at 2 a thread 86-88% (applied: 8 bytes a thread).
- ``stages_scaled``, ``stages_bias``: the loops' kernels (the scaled store's sweeps at
  wide rows, the bias backward's row steps at 4096 tokens) at each ``num_stages`` (the
  lowering's default is 3), on the JAX path and, for the bias, the direct launch.
  Outcome (session 10): no change beyond 0.3 points anywhere: triton does not pipeline
  these loops.
- ``prefetch_bias`` (session 10; its code, in the kernel behind a flag, was removed
  after the run: commit ccd0add): the bias backward's row-step loop loading each step's
  tiles one step ahead. Prediction: the kernel is latency-bound (8 x 128 with 16 steps
  read 77% against 83% with 8), so two steps' loads in flight lift it. Outcome: wrong,
  slower nearly everywhere on both compilers (4096 x 2048 bf16 83.1 -> 72.3% on the JAX
  path; float32 89.5 -> 76.2), at best level.
- ``sweep_programs`` (session 10; its code, in the kernel behind a flag, was removed
  after the run: commit 6712b58): the scaled store's wide rows in 132-528 programs, each
  sweeping every n-th row. Prediction: a row's second sweep misses L2 because about
  260-530 rows of 57-115 KB (30 MB) are read between its two sweeps; fewer programs
  lift 79-87% toward 90%. Outcome: wrong. bf16 lost 9-24 points (132 programs: 63%),
  float32 2-10 on the JAX path and within 0.6 on the direct launch. The direct launch's
  float32 lead (87-88% against 79-83% from the same IR) is its launch's L1 (session 11,
  ``carveout``).
- ``sweep_tiles`` (session 10): the scaled store's wide rows at 4096 and 8192 columns
  with 8, 16 and 32 warps on both compilers. Outcome: ``sweep_config``'s tile is the
  best of the six on the JAX path at ``H`` = 11008 and 14336; the direct launch would
  gain 4-6 points at 11008 from other tiles and nothing at 14336 (not applied).
  Session 11, with the sweeps' cache policies and 4096-column sweeps beyond one 8192
  tile, 2048-column tiles added: ``sweep_config``'s tile is the best of eight, or within
  a point of it, on both compilers at both widths (JAX path bf16 90.0 / 88.5%, float32
  91.3 / 81.5; direct launch 96.3 / 94.5, 98.1 / 96.4). The JAX path's gap is XLA's
  launch, not the tile (``carveout`` below).
- ``carveout`` (session 11): the direct launch's scaled forward with its kernel's
  shared-memory carveout set (-1, 100, 50, 0), and the JAX path under each context
  cache preference. Outcome: at 50 or 100% the direct launch reads the JAX path's
  figures exactly (float32 81.1% at ``H`` = 14336), at 0% or no preference 96-98%; the
  context preference changes nothing (XLA sets the function's: ``CachePreferShared``
  for kernels that use shared memory, by Nsight Compute).
- ``bias_occupancy`` (session 11): the bias backward with tiles of more warps in flight
  and 71 registers or fewer. Prediction: the default's 122 registers and one wave at
  25% occupancy (ncu) hold the kernel back. Outcome: wrong, the kernel alone takes
  31.7-32.8 us in every tile.
- ``bias_sum`` (session 15): the bias backward's second launch, ``sum_rows``, in six
  strips (32-512 columns, 1-8 warps) and as XLA's fused sum and cast, and the row steps
  from 4 to 32. Outcome: the sum takes 1.5-2.2 us at 4096 tokens whatever does it (XLA
  the same to 0.1 us), growing with the partials; more steps than the default halve it
  but slow the loop (16 steps at 4096 x 4096 bf16: 74%). Float32 with 8 steps +0.2 to
  +0.7 points at every size.
- ``bias_unroll`` (session 15; its code, a constant of the kernel, was removed after the
  run; commit 839bb0d has it): the row-step loop written out 2, 4 or 8 steps an
  iteration. Prediction: the compiler issues a later step's loads before an earlier
  step's arithmetic. Outcome: wrong: 2 level, 4 and 8 slower by 3-30 points.
- ``bias_anatomy``: the plain backward in the bias's tile with one step a program and
  with the loop, the bias kernel with its bias never loaded, the bias kernel. Outcome
  (session 15): the loop costs the plain kernel 2-7% (16 x 128, 8 steps against one:
  4096 x 8192 bf16 62.4 against 57.3 us), the bias itself nothing.
- ``bias_strided`` (session 15; applied, so its switch and candidates are gone): each
  program's row blocks ``i + k * groups`` instead of ``i * steps + k``, so that the
  programs running together sweep neighbouring rows. Outcome: bf16 +1.5 to +2.2 points
  from 4096 x 4096 to 8192 x 8192 (83.2 -> 85.0, 87.7 -> 89.9, 91.5 -> 93.1), level at
  8192 x 28672; float32 +0.2 to +2.1; the plain kernel in the loop +0.7 to +3.3.
- ``loop_steps`` (session 15): the reducing tile with 1 to 64 strided row steps, plain
  and bias kernels. Outcome: the plain kernel's loss grows with the steps (8192 x
  28672 bf16 100.2 -> 95.5 -> 92.7% with 1, 16 and 64): the programs' lifetimes, even
  in one wave of equal programs (64 steps), so not a wave's tail.
- ``segments`` (sessions 11-12): the scaled store's sweep in one-warp segments against
  the tiles' sweep on the JAX path, with several tiles a dtype (float32 included).
  Prediction: float32 with 16 warps keeps two programs an SM at 40 registers and gains
  at both widths; bf16 with 16 warps stays the best. Outcome: bf16 w16 +3.6 / +3.9, then
  +4.7 / +6.9 once the maxima were stored without shared memory (94.7 / 95.5%); float32
  lost in every tile (63-87% against the tiles' 91.2 / 81.5) until the maxima were read
  one a lane, when 32 warps read 99.1 / 96.4% (smaller tiles still lose).
- ``bias_wide`` (session 10): the bias backward with wider column blocks (512-1024
  columns, 1-4 rows, 8-32 row steps: 1-2 KB of each row contiguous, as the plain
  kernel's tiles) on both compilers. Prediction: the kernel alone gains 1-2 us at 4096 x
  2048, more than 1-2 MB of partial sums cost; 4096 x 4096 bf16 83 -> 86-88%. Outcome:
  wrong, slower or level everywhere (1 x 1024 with 32 steps 70%; the kernel alone
  37.2 us against 32.0).
- ``streamed_bias`` (session 13): the backward with and without a bias, Triton's
  kernels against the Mosaic GPU streamed kernel (a TMA ring of shared-memory slots,
  the bias sums in registers) and its strips. Prediction: loads in flight without
  registers lift the bias backward at 4096 x 4096 bf16 to the plain kernel's 95%.
  Outcome: wrong, the streamed kernel takes 31-32 us there with or without the bias
  (Triton's bias kernel 31.9, its plain one 29.2); it trails Triton's by 2-5% at
  every size. It replaced the Mosaic GPU backend's tile backward, which it beats by
  far in bf16.
- ``streamed_weighted`` (session 14): the weighted backward, Triton's against the Mosaic
  GPU streamed kernel and its wider strips (fewer partial sums of the weights gradient).
  Outcome (H100, bf16): no strip beats the default 4 x 256 (83.5 / 89.0 / 94.2% at
  4096 x 4096, 4096 x 8192, 8192 x 28672; Triton 95.6 / 97.5 / 99.1); one 2048-column
  strip, room for one stage only, 66% at 4096 x 4096.
- ``streamed_fwd`` (session 13): the forward and its fp8 store, Triton's against the
  Mosaic GPU streamed kernel and its strips.
- ``copy_floor_fwd``, ``copy_floor_bwd`` (session 13): our kernel and XLA's fusion
  beside a copy of the same bytes in all, from the same inputs, at 4096 tokens and at
  8192 x 28672: how much of the 1 GiB copy's bandwidth a kernel of this size can have.

Device time per kernel from the profiler, inputs rotated through the benchmark's
``ROTATION_BYTES`` (times ``--l2-times``), each call's output kept until the next
(``small_rows.kernel_seconds``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import small_rows
import triton
import triton.language as tl
from small_rows import input_sets, kernel_seconds

from swiglu_jax import bench
from swiglu_jax._options import Options
from swiglu_jax.kernels import triton as kernels
from swiglu_jax.kernels.config import BlockConfig, next_power_of_2
from swiglu_jax.reference import swiglu_reference

BIAS_SIZES = [(4096, 2048), (4096, 4096), (8192, 4096), (8192, 14336), (16384, 8192)]
WIDE_SIZES = [(4096, 4096), (8192, 11008), (8192, 14336), (16384, 8192)]
WARPS_SIZES = [(8192, 14336), (16384, 8192)]
SMALL_TILES = [(1, 2048, 4), (1, 2048, 16), (2, 2048, 16), (1, 1024, 4), (1, 1024, 8), (2, 1024, 8)]
WIDE_TILES = [(1, 4096, 16), (1, 2048, 8), (2, 1024, 8), (1, 1024, 4)]
STEP_SIZES = [(4096, 2048), (4096, 4096), (8192, 14336)]
STEP_TILES = [  # rows, columns, warps, row steps
    (16, 128, 8, 1), (16, 128, 8, 4), (16, 128, 8, 8), (8, 128, 4, 8), (8, 128, 4, 16),
    (8, 256, 8, 8), (16, 128, 4, 8), (32, 128, 4, 4),
]  # fmt: skip
SCALED_SIZES = [(4096, 4096), (8192, 8192), (8192, 11008), (8192, 14336)]
SCALED_WARPS = [8, 16, 32]
GAP_SIZES = [(4096, 2048), (8192, 14336), (16384, 8192)]
GAP_TILES = [(1, 1024, 4), (1, 2048, 8), (1, 2048, 4), (1, 4096, 8)]
PER_THREAD_SIZES = [(8192, 4096), (8192, 11008), (8192, 14336), (16384, 8192), (32768, 14336)]
PER_THREAD_TILES = [(1, 1024, 8), (1, 2048, 16), (1, 512, 8), (1, 1024, 16)]  # 4, 4, 2, 2
WIDE_STEP_SIZES = [(4096, 2048), (4096, 4096), (8192, 14336)]
WIDE_STEP_TILES = [  # rows, columns, warps, row steps: 256 to 2048 contiguous bytes a row
    (1, 1024, 8, 32), (2, 1024, 8, 16), (2, 512, 4, 16), (4, 512, 8, 8), (4, 256, 4, 16),
    (8, 256, 4, 8),
]  # fmt: skip
OCCUPANCY_STEP_TILES = [  # rows, columns, warps, row steps: more warps a GPU, 71 or fewer registers
    (8, 128, 4, 4), (8, 128, 4, 2), (4, 128, 4, 8), (4, 256, 4, 8), (16, 128, 8, 4),
]  # fmt: skip
SWEEP_SIZES = [(8192, 11008), (8192, 14336)]
SWEEP_TILES = [  # columns, warps
    (2048, 16), (2048, 32), (4096, 8), (4096, 16), (4096, 32), (8192, 8), (8192, 16), (8192, 32),
]  # fmt: skip
STAGES = [1, 2, 3, 4]
STAGES_SIZES = {
    "scaled_fp8_fwd": [(8192, 11008), (8192, 14336)],
    "bias_bwd": [(4096, 2048), (4096, 4096)],
}
DTYPES = ["bfloat16", "float32"]


def _jax(fn):
    """A jitted JAX function of torch tensors (through DLPack), outputs kept as JAX's."""
    jitted = jax.jit(fn)
    return lambda *xs: jitted(*(jax.dlpack.from_dlpack(x) for x in xs))


@contextlib.contextmanager
def _config_in_effect(rule: str, config, ir: str):
    """``kernels.<rule>`` (the tile rule a kernel reads when given no config) giving
    ``config`` (``None``: its own), with ``triton_ir.<ir>``'s cache and the direct
    launch's compiled launchers cleared: what is built and first run inside compiles with
    it (a jitted function or a launcher keeps what it compiled)."""
    from swiglu_jax.kernels import triton_ir
    from torch_bridge import _direct

    saved, cache = getattr(kernels, rule), getattr(triton_ir, ir)
    if config is not None:
        setattr(kernels, rule, lambda *args, **kwargs: config)
    cache.cache_clear()
    _direct._launchers.clear()
    try:
        yield
    finally:
        setattr(kernels, rule, saved)
        cache.cache_clear()


def _with_tiles(ours, tiles) -> dict:
    """``ours`` with its default tile and with each ``(rows, columns, warps)`` of
    ``tiles``, named as the parts print them."""
    found = {"ours": lambda: ours(None)}
    for bn, bh, w in tiles:
        found[f"ours {bn}x{bh} w{w}"] = functools.partial(ours, BlockConfig(bn, bh, num_warps=w))
    return found


def _compiled(op, rows, hidden, dtype):
    """``make`` of the benchmark's ``torch.compile`` (fixed shape) of Megatron's ``op``."""
    build = bench._torch_candidate("megatron", "fixed")
    return lambda: build(op, rows, hidden, dtype, 1)[0]


# ----------------------------------------------------------------------------- bias


def bias_candidates(rows, hidden, dtype):
    opts = Options()
    y3 = lambda y: y.reshape(rows, 2, hidden)
    b2 = lambda b: b.reshape(2, hidden)
    dt = jnp.dtype(dtype)

    def plain(config=None):
        return _jax(lambda g, y, b: kernels.backward(
            g, y3(y), None, None, opts, dy_dtype=dt, config=config)[0])  # fmt: skip

    def partials(config=None):
        return _jax(lambda g, y, b: kernels.backward_partials(
            g, y3(y), b2(b), None, opts, dy_dtype=dt, config=config)[:2])  # fmt: skip

    def whole(config=None):
        return _jax(lambda g, y, b: kernels.backward(
            g, y3(y), b2(b), None, opts, dy_dtype=dt, config=config)[:2])  # fmt: skip

    def bridge():
        from torch_bridge import _direct

        return lambda g, y, b: _direct.backward(g, y, b, None, None, 1.0, 0.0)[:2]

    found = {"plain, own tile": plain}
    for bn, bh, w in [(64, 128, 8), (32, 128, 4)]:
        found[f"plain {bn}x{bh} w{w}"] = functools.partial(plain, BlockConfig(bn, bh, num_warps=w))
    found["bias kernel alone"] = partials
    found["bias, whole op"] = whole
    found["bias, direct launch"] = bridge
    return found


def bias_steps_candidates(rows, hidden, dtype, tiles=STEP_TILES):
    """The whole op, on the JAX path and on the direct launch (upstream triton), each
    with its default tile and with ``tiles`` (rows, columns, warps, row steps)."""
    opts = Options()
    dt = jnp.dtype(dtype)

    def whole(config=None):
        return _jax(lambda g, y, b: kernels.backward(
            g, y.reshape(rows, 2, hidden), b.reshape(2, hidden), None, opts, dy_dtype=dt,
            config=config)[:2])  # fmt: skip

    def bridge(config=None):
        """The direct launch, its kernel compiled now with ``config`` (cached until the
        next candidate is made)."""
        from torch_bridge import _direct

        fn = lambda g, y, b: _direct.backward(g, y, b, None, None, 1.0, 0.0)[:2]
        torch_dtype = getattr(torch, dtype)
        y = torch.randn(rows, 2 * hidden, dtype=torch_dtype, device="cuda")
        with _config_in_effect("backward_config", config, "backward_ir"):
            fn(torch.randn(rows, hidden, dtype=torch_dtype, device="cuda"), y, y[0])
        return fn

    found = {"default": whole, "direct launch, default": bridge}
    for bn, bh, w, steps in tiles:
        config = BlockConfig(bn, bh, num_warps=w, row_steps=steps)
        found[f"{bn}x{bh} w{w} s{steps}"] = functools.partial(whole, config)
        found[f"direct {bn}x{bh} w{w} s{steps}"] = functools.partial(bridge, config)
    return found


SUM_SIZES = [(4096, 2048), (4096, 4096), (8192, 4096), (8192, 14336)]
SUM_BLOCKS = [(32, 1), (32, 2), (64, 2), (128, 4), (256, 4), (512, 8)]  # columns, warps
SUM_STEP_TILES = {  # rows, columns, warps, row steps: more or fewer row groups
    "bfloat16": [(16, 128, 4, 4), (16, 128, 4, 16), (16, 128, 4, 32)],
    "float32": [(32, 128, 4, 2), (32, 128, 4, 8), (16, 128, 4, 8), (32, 128, 4, 16)],
}


def bias_sum_candidates(rows, hidden, dtype):
    """The bias backward's second launch, the sum of its partial sums (1.6-2.2 us of
    33-64 at 4096 tokens, session 11): the whole op with ``sum_rows`` in other strips,
    with XLA's fused sum and cast instead, and with more or fewer row groups (the
    partials' rows); beside them the plain backward (the op's time with a free bias
    gradient) and the partials' kernel alone."""
    opts = Options()
    y3 = lambda y: y.reshape(rows, 2, hidden)
    b2 = lambda b: b.reshape(2, hidden)
    dt = jnp.dtype(dtype)

    def plain():
        return _jax(lambda g, y, b: kernels.backward(g, y3(y), None, None, opts, dy_dtype=dt)[0])

    def whole(config=None):
        return _jax(lambda g, y, b: kernels.backward(
            g, y3(y), b2(b), None, opts, dy_dtype=dt, config=config)[:2])  # fmt: skip

    def partials_then(summed=None):
        """The partials' kernel, then ``summed(partials)`` (``None``: nothing more)."""

        def op(g, y, b):
            dy, partials, _ = kernels.backward_partials(g, y3(y), b2(b), None, opts, dy_dtype=dt)
            return dy, (partials if summed is None else summed(partials))

        return _jax(op)

    found = {"plain (no bias)": plain, "default": whole, "partials alone": partials_then}
    found["xla sum"] = lambda: partials_then(lambda p: p.sum(axis=0).astype(dt))
    for columns, warps in SUM_BLOCKS:
        summed = functools.partial(kernels.sum_rows, dtype=dt, columns=columns, warps=warps)
        found[f"sum c{columns} w{warps}"] = functools.partial(partials_then, summed)
    for bn, bh, w, steps in SUM_STEP_TILES[dtype]:
        config = BlockConfig(bn, bh, num_warps=w, row_steps=steps)
        found[f"{bn}x{bh} w{w} s{steps}"] = functools.partial(whole, config)
    return found


def _kernel_alone(rows, hidden, dtype, config=None, *, bias=True):
    """The backward's kernel alone (its bias partials not summed), with or without the
    bias, in ``config`` (``None``: its own tile)."""
    opts, dt = Options(), jnp.dtype(dtype)
    return _jax(lambda g, y, b: kernels.backward_partials(
        g, y.reshape(rows, 2, hidden), b.reshape(2, hidden) if bias else None, None, opts,
        dy_dtype=dt, config=config)[:2 if bias else 1])  # fmt: skip


ANATOMY_TILES = {  # rows, columns, warps, row steps: the default and a wider strip
    "bfloat16": [(16, 128, 4, 8), (8, 256, 4, 8)],
    "float32": [(32, 128, 4, 8), (16, 256, 4, 8)],
}


@contextlib.contextmanager
def _bias_unloaded():
    """The bias kernel with its bias read as zeros and never loaded (wrong sums, the
    right loads, arithmetic and stores but the bias's): what the bias's load costs."""
    saved = kernels._Tile.load_bias
    kernels._Tile.load_bias = lambda self, ref: (0.0, 0.0)
    try:
        yield
    finally:
        kernels._Tile.load_bias = saved


def _traced_in(context, make):
    """``make()``'s function, called (so traced, at its first call) inside ``context()``."""

    def made():
        fn = make()

        def call(*args):
            with context():
                return fn(*args)

        return call

    return made


def bias_anatomy_candidates(rows, hidden, dtype):
    """Where the bias kernel's time goes against the plain backward's, at every size
    (partials' kernel only, no sum): the plain backward in the bias's tile, one step a
    program and in its row-step loop; the bias kernel without the bias's load; the bias
    kernel."""
    kernel = functools.partial(_kernel_alone, rows, hidden, dtype)
    found = {"plain, own tile": functools.partial(kernel, bias=False)}
    for bn, bh, w, steps in ANATOMY_TILES[dtype]:
        tile = f"{bn}x{bh} w{w}"
        for s in (1, steps):
            config = BlockConfig(bn, bh, num_warps=w, row_steps=s)
            found[f"plain {tile} s{s}"] = functools.partial(kernel, config, bias=False)
        config = BlockConfig(bn, bh, num_warps=w, row_steps=steps)
        found[f"bias unloaded {tile} s{steps}"] = _traced_in(
            _bias_unloaded, functools.partial(kernel, config)
        )
        found[f"bias {tile} s{steps}"] = functools.partial(kernel, config)
    return found


LOOP_SIZES = [(4096, 4096), (8192, 14336)]
LOOP_STEPS = [1, 2, 4, 8, 16, 32, 64]


def loop_steps_candidates(rows, hidden, dtype):
    """The reducing tile (16 x 128, 4 warps) with ``LOOP_STEPS`` strided row steps a
    program, the plain backward and the bias kernel (partials only): does what the loop
    loses grow with the steps (the programs' lifetimes) or come with any loop at all?"""
    kernel = functools.partial(_kernel_alone, rows, hidden, dtype)
    found = {"plain, own tile": functools.partial(kernel, bias=False)}
    for bias in (False, True):
        for steps in LOOP_STEPS:
            config = BlockConfig(16, 128, num_warps=4, row_steps=steps)
            name = f"{'bias' if bias else 'plain'} 16x128 w4 s{steps}"
            found[name] = functools.partial(kernel, config, bias=bias)
    return found


# Session 13 also measured 2-row strips, which the kernel refuses since session 14 (its
# blocks give each of 4 warps whole rows).
STREAM_STRIPS = {  # columns, rows a step, stages, steps (the 4 x 256 rows: the default)
    "bfloat16": [(256, 8, 3, 16), (512, 4, 3, 16), (1024, 4, 2, 16), (256, 4, 3, 32)],
    "float32": [(256, 8, 2, 16), (512, 4, 3, 16), (1024, 4, 1, 16), (256, 4, 3, 32)],
}  # fmt: skip
STREAM_PLAIN_STEPS = [1, 4, 16, 64]


def streamed_bias_candidates(rows, hidden, dtype):
    """The backward with and without a bias on the JAX path: Triton's default against
    the Mosaic GPU streamed kernel (``mosaic_gpu._streamed_kernel``) with its
    default strip and others. Outcome (session 13, H100; the whole op, bias / plain):
    4096 x 4096 bf16 83.3 / 95.0% (Triton) against 82.9 / 90.7 (streamed), 8192 x 28672
    94.9 / 100.9 against 91.8 / 95.6: the streamed kernel trails Triton's at every size,
    with or without the bias, by the same 2-3 us at 4096 tokens; every strip and stage
    count tried lands within a point or two of the default."""
    from swiglu_jax.kernels import mosaic_gpu

    opts, dt = Options(), jnp.dtype(dtype)

    def whole(module, bias: bool, config=None):
        def fn(g, y, b):
            dy, dbias, _ = module.backward(
                g, y.reshape(rows, 2, hidden), b.reshape(2, hidden) if bias else None, None,
                opts, dy_dtype=dt, config=config)  # fmt: skip
            return (dy, dbias) if bias else dy

        return _jax(fn)

    found = {}
    for bias in (True, False):
        name = "bias" if bias else "plain"
        found[f"triton {name}"] = functools.partial(whole, kernels, bias)
        found[f"streamed {name}"] = functools.partial(whole, mosaic_gpu, bias)
    for bh, br, stages, steps in STREAM_STRIPS[dtype]:
        config = BlockConfig(br, bh, num_stages=stages, row_steps=steps)
        found[f"streamed bias {br}x{bh} s{stages} x{steps}"] = functools.partial(
            whole, mosaic_gpu, True, config
        )
    for steps in STREAM_PLAIN_STEPS:
        config = BlockConfig(4, 256, num_stages=3, row_steps=steps)
        found[f"streamed plain 4x256 s3 x{steps}"] = functools.partial(
            whole, mosaic_gpu, False, config
        )
    return found


STREAM_FORWARD_STRIPS = [  # rows a step, columns, stages, steps
    (4, 256, 3, 2), (4, 256, 3, 8), (8, 256, 3, 4), (8, 256, 3, 2), (4, 256, 4, 4),
    (4, 512, 2, 2), (4, 256, 2, 2), (4, 1024, 2, 8),
]  # fmt: skip


def streamed_fwd_candidates(rows, hidden, dtype):
    """The forward (and its fp8 store) on the JAX path: Triton's default against the
    Mosaic GPU streamed kernel with its default strip and others."""
    from swiglu_jax.kernels import mosaic_gpu

    opts = Options()

    def fwd(module, save_fp8=False, config=None):
        return _jax(lambda y: module.forward(
            y.reshape(rows, 2, hidden), None, None, opts, save_fp8=save_fp8,
            config=config)[: 1 + save_fp8])  # fmt: skip

    found = {
        "triton": functools.partial(fwd, kernels),
        "streamed": functools.partial(fwd, mosaic_gpu),
        "triton fp8 store": functools.partial(fwd, kernels, True),
        "streamed fp8 store": functools.partial(fwd, mosaic_gpu, True),
    }
    for br, bh, stages, steps in STREAM_FORWARD_STRIPS:
        config = BlockConfig(br, bh, num_stages=stages, row_steps=steps)
        found[f"streamed {br}x{bh} s{stages} x{steps}"] = functools.partial(
            fwd, mosaic_gpu, False, config
        )
    return found


STREAM_WEIGHTED_STRIPS = [  # rows a step, columns, stages, steps
    (4, 256, 3, 8), (4, 512, 3, 8), (4, 1024, 2, 8), (4, 2048, 1, 8), (8, 256, 3, 4),
    (4, 256, 3, 16),
]  # fmt: skip


def streamed_weighted_candidates(rows, hidden, dtype):
    """The weighted backward on the JAX path: Triton's default (whole rows a program up to
    4096 columns) against the Mosaic GPU streamed kernel (session 14: blocks with whole
    rows a warp, the weights gradient summed in-warp, a partial sum a strip finished by
    XLA) and its wider strips, which leave fewer partial sums (one strip a row: none)."""
    from swiglu_jax.kernels import mosaic_gpu

    opts, dt = Options(), jnp.dtype(dtype)

    def whole(module, config=None):
        def fn(g, y, w):
            y = y.reshape(rows, 2, hidden)
            return module.backward(g, y, None, w, opts, dy_dtype=dt, config=config)[::2]

        return _jax(fn)

    found = {
        "triton": functools.partial(whole, kernels),
        "streamed": functools.partial(whole, mosaic_gpu),
    }
    for br, bh, stages, steps in STREAM_WEIGHTED_STRIPS:
        config = BlockConfig(br, bh, num_stages=stages, row_steps=steps)
        found[f"streamed {br}x{bh} s{stages} x{steps}"] = functools.partial(
            whole, mosaic_gpu, config
        )
    return found


# ----------------------------------------------------------------------------- wide


def compiled_fwd(out_dir, rows, hidden, dtype):
    """torch.compile of Megatron's forward for one shape; inductor's source to a file."""

    def swiglu(y):
        a, b = torch.chunk(y, 2, -1)
        return torch.nn.functional.silu(a) * b

    def make():
        from torch._inductor.utils import run_and_get_code

        torch._dynamo.reset()
        fn = torch.compile(swiglu, dynamic=False)
        y = torch.randn(rows, 2 * hidden, dtype=getattr(torch, dtype), device="cuda")
        _, sources = run_and_get_code(fn, y)
        path = pathlib.Path(out_dir) / f"inductor-fwd-{rows}x{2 * hidden}-{dtype}.py"
        path.write_text("\n\n".join(sources))
        return fn

    return make


def wide_candidates(out_dir, op, rows, hidden, dtype):
    ours = _ours(op, rows, hidden, dtype)
    found = _with_tiles(ours, WIDE_TILES)
    found["xla"] = functools.partial(_xla, op)
    if op == "fwd":
        found["torch.compile fixed"] = compiled_fwd(out_dir, rows, hidden, dtype)
    return found


def _xla(op):
    """XLA's fusion of the jnp specification (``fwd``) or of its VJP (``bwd``)."""
    if op == "fwd":
        return _jax(swiglu_reference)
    return _jax(lambda g, y: jax.vjp(swiglu_reference, y)[1](g)[0])


def warps_candidates(op, rows, hidden, dtype):
    """The 1 x 4096 tile at 8 and 16 warps, each twice, alternating: the spread between
    the two runs of one is the noise."""
    ours = _ours(op, rows, hidden, dtype)
    return {
        f"ours 1x4096 w{w}{' again' * again}": functools.partial(
            ours, BlockConfig(1, 4096, num_warps=w)
        )
        for again in (False, True)
        for w in (8, 16)
    }


def small_candidates(out_dir, op, rows, hidden, dtype):
    """4096 tokens: our tiles against XLA's fusion and, for the forward, ``torch.compile``
    (which read 99.1% in float32 in session 8's benchmark, 96.1% in session 7's)."""
    ours = _ours(op, rows, hidden, dtype)
    found = {"xla": functools.partial(_xla, op)} if op in ("fwd", "bwd") else {}
    if op == "fwd":
        found["torch.compile fixed"] = compiled_fwd(out_dir, rows, hidden, dtype)
    found.update(_with_tiles(ours, SMALL_TILES))
    return found


def scaled_candidates(rows, hidden, dtype):
    """The scaled store's forward: ``sweep_config``'s tiles against one row a program in
    one tile of ``SCALED_WARPS`` warps."""
    ours = _ours("scaled_fp8_fwd", rows, hidden, dtype)
    found = {"ours": lambda: ours(None)}
    whole = next_power_of_2(hidden)
    for w in SCALED_WARPS:
        found[f"ours 1x{whole} w{w}"] = functools.partial(ours, BlockConfig(1, whole, num_warps=w))
    return found


def _ours(op, rows, hidden, dtype):
    """``ours(config)``: our kernel for ``op`` with that block config (``None``: the
    default), on the JAX path."""
    opts = Options()
    y3 = lambda y: y.reshape(rows, 2, hidden)
    dt = jnp.dtype(dtype)

    def ours(config):
        if op in ("fwd", "fp8_fwd", "scaled_fp8_fwd"):
            store, keep = {"fwd": (False, 0), "fp8_fwd": (True, slice(0, 2)),
                           "scaled_fp8_fwd": ("scaled", slice(0, 3))}[op]  # fmt: skip
            return _jax(lambda y: kernels.forward(
                y3(y), None, None, opts, save_fp8=store, config=config)[keep])  # fmt: skip
        if op == "weighted_bwd":
            return _jax(lambda g, y, w: kernels.backward(
                g, y3(y), None, w, opts, dy_dtype=dt, config=config)[::2])  # fmt: skip
        return _jax(lambda g, y: kernels.backward(
            g, y3(y), None, None, opts, dy_dtype=dt, config=config)[0])  # fmt: skip

    return ours


# ----------------------------------------------------------------------------- copy


def copy_floor_candidates(op, rows, hidden, dtype):
    """Our kernel and XLA's fusion for ``op`` (``fwd`` or ``bwd``) beside one copy kernel
    that reads and writes as many bytes in all (``fwd``: 1.5 N H elements of ``y``;
    ``bwd``: ``y`` and half of ``g``, by ``torch.cat``), from the same rotated inputs: the
    copy's % of the 1 GiB copy is the ceiling for this size, what the launch and the
    ramp leave of the bandwidth."""
    ours = _ours(op, rows, hidden, dtype)
    half = rows * hidden // 2

    def copy():
        if op == "fwd":
            return lambda y: y.reshape(-1)[: 3 * half].clone()
        return lambda g, y: torch.cat([y.reshape(-1), g.reshape(-1)[:half]])

    return {"ours": lambda: ours(None), "xla": lambda: _xla(op), "copy, same bytes": copy}


# ----------------------------------------------------------------------------- fwdgap


@triton.jit
def _flat_fwd(y_ptr, out_ptr, H: tl.constexpr, XBLOCK: tl.constexpr):
    """Inductor's kernel for Megatron's forward: a flat index over the output, no masks
    (the grid must divide it)."""
    x = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)
    row, col = x // H, x % H
    a = tl.load(y_ptr + row * 2 * H + col).to(tl.float32)
    b = tl.load(y_ptr + row * 2 * H + H + col).to(tl.float32)
    tl.store(out_ptr + x, (a * tl.sigmoid(a) * b).to(out_ptr.dtype.element_ty))


def flat_fwd(rows, hidden, block, warps):
    def fn(y):
        out = torch.empty(rows, hidden, dtype=y.dtype, device=y.device)
        _flat_fwd[(rows * hidden // block,)](y, out, hidden, block, num_warps=warps)
        return out

    return fn


def gap_candidates(out_dir, op, rows, hidden, dtype):
    """Where the plain kernels' last 1-2% against ``torch.compile`` (float32) and XLA
    (bf16) at large sizes goes: our kernel on both compilers, without masks (the tiles
    divide these arrays), with a flat grid, and hand-written flat kernels like
    inductor's."""
    found = {"xla": functools.partial(_xla, op)}
    if op == "fwd":
        found["torch.compile fixed"] = compiled_fwd(out_dir, rows, hidden, dtype)
    else:
        found["torch.compile fixed"] = _compiled(op, rows, hidden, dtype)
    ours = _ours(op, rows, hidden, dtype)
    found.update(_with_tiles(ours, GAP_TILES))  # smaller programs, as inductor's
    for name, patch in (
        ("direct", {}),
        ("direct unmasked", {"unmasked": True}),
        ("direct flat", {"flat": True}),
        ("direct flat unmasked", {"flat": True, "unmasked": True}),
    ):
        found[name] = functools.partial(small_rows.ours, op, rows, hidden, dtype, **patch)
    if op == "fwd":
        for block, warps in ((1024, 4), (2048, 8), (1024, 8), (512, 8)):  # 512 w8: inductor's
            found[f"hand flat {block} w{warps}"] = functools.partial(
                flat_fwd, rows, hidden, block, warps
            )
    return found


# ----------------------------------------------------------------------------- perthread


def per_thread_candidates(op, rows, hidden, dtype):
    """Session 9's ``fwdgap`` found a hand-written flat kernel with 4 elements a thread
    (1024 with 8 warps) 1.3 points ahead of our 8 in bf16 at large sizes, level with XLA.
    Here our kernel at 4 elements a thread (1 x 1024 with 8 warps, 1 x 2048 with 16) and
    at 2 (1 x 512 with 8, 1 x 1024 with 16: 8 bytes of float32 a thread, as inductor's
    second pointwise config, 512 elements with 8 warps) against its default and the
    peers, at the benchmark's sizes."""
    found = {"xla": functools.partial(_xla, op)} if op in ("fwd", "bwd") else {}
    found["torch.compile fixed"] = _compiled(op, rows, hidden, dtype)
    ours = _ours(op, rows, hidden, dtype)
    found.update(_with_tiles(ours, PER_THREAD_TILES))
    return found


# ----------------------------------------------------------------------------- stages


def stages_candidates(op, rows, hidden, dtype):
    """The kernels with loops (the scaled store's two sweeps, the bias backward's row
    steps) at each ``num_stages``: the direct launch (upstream triton) read the scaled
    store's float32 wide rows at 87-88% of copy where XLA's compilation of the same IR
    read 79-83% (session 9), and triton software-pipelines loops by ``num_stages``."""
    if op == "scaled_fp8_fwd":
        default = kernels.sweep_config(rows, hidden, dtype)
        paths = {"ours": _ours(op, rows, hidden, dtype)}
    else:  # bias_bwd, also on the direct launch, whose compiler reads the same field
        default = kernels.backward_config(rows, hidden, dtype, bias=True, weights=False)
        bias = bias_steps_candidates(rows, hidden, dtype)
        paths = {"ours": bias["default"], "direct": bias["direct launch, default"]}
    found = {}
    for path, make in paths.items():
        found[path] = functools.partial(make, None)
        for stages in STAGES:
            config = dataclasses.replace(default, num_stages=stages)
            found[f"{path} {stages} stages"] = functools.partial(make, config)
    return found


# ----------------------------------------------------------------------------- sweeps


def sweep_tiles_candidates(rows, hidden, dtype):
    """The scaled store's forward on the JAX path and the direct launch with
    ``sweep_config``'s tile and with each of ``SWEEP_TILES``, built and compiled by one
    call with ``kernels.sweep_config`` giving it (the direct launch's compiler reads it)."""
    from torch_bridge import _direct

    ours = _ours("scaled_fp8_fwd", rows, hidden, dtype)

    def direct():
        return lambda y: _direct.forward(y, None, None, None, 1.0, 0.0, "scaled")

    def built(make, config):
        def build():
            y = torch.randn(rows, 2 * hidden, dtype=getattr(torch, dtype), device="cuda")
            with _config_in_effect("sweep_config", config, "forward_ir"):
                fn = make()
                fn(y)
            return fn

        return build

    found = {}
    for path, make in (("ours", lambda: ours(None)), ("direct", direct)):
        found[path] = built(make, None)
        for bh, w in SWEEP_TILES:
            found[f"{path} 1x{bh} w{w}"] = built(make, BlockConfig(1, bh, num_warps=w))
    return found


# (warps, block columns) a dtype; None: sweep_config's block
SEGMENT_TILES = {
    "bfloat16": [(16, None), (8, None)],
    "float32": [(32, None), (16, None), (16, 2048), (8, 1024)],  # 16 x 128 and 8 x 128
}


def segments_candidates(rows, hidden, dtype):
    """The scaled store's forward on the JAX path: the default sweep, the tiles' sweep
    (``SWEEP_IN_SEGMENTS`` off), and rows swept in one-warp segments with each of
    ``SEGMENT_TILES`` (the width forced, whatever ``segment_width`` would say of the
    tile). Each function is traced and compiled inside the switch."""
    dt = jnp.dtype(dtype)
    default_block = kernels.sweep_config(rows, hidden, dt).block_hidden
    width = kernels.segment_columns(dt)
    forward = lambda config: _jax(
        lambda y: kernels.forward(
            y.reshape(rows, 2, hidden), None, None, Options(), save_fp8="scaled", config=config
        )
    )

    def switched(segments: bool, config=None):
        def make():
            saved = kernels.SWEEP_IN_SEGMENTS, kernels.segment_width
            kernels.SWEEP_IN_SEGMENTS = segments
            if segments:
                kernels.segment_width = lambda *args: width
            try:
                fn = forward(config)
                fn(torch.randn(rows, 2 * hidden, dtype=getattr(torch, dtype), device="cuda"))
            finally:
                kernels.SWEEP_IN_SEGMENTS, kernels.segment_width = saved
            return fn

        return make

    found = {"default": lambda: forward(None), "tiles": switched(False)}
    for warps, block in SEGMENT_TILES[dtype]:
        block = block or default_block
        if hidden % width == 0 and hidden > block and block // width >= warps:
            config = BlockConfig(1, block, num_warps=warps)
            found[f"segments 1x{block} w{warps}"] = switched(True, config)
    return found


CARVEOUTS = [("default", -1), ("100", 100), ("50", 50), ("0", 0), ("default again", -1)]


def _set_carveout(rows, hidden, dtype, percent):
    """Sets the direct launch's scaled-forward kernel for ``(rows, 2H)`` ``dtype`` to prefer
    ``percent`` of the SM's unified L1 / shared memory as shared memory (-1: no
    preference, the default; 0: the most L1)."""
    import ctypes

    from torch_bridge import _direct

    cuda = ctypes.CDLL("libcuda.so.1")
    found = 0
    for launcher in _direct._launchers.values():
        if launcher is None or launcher.kernel_ir.name != "swiglu_forward_triton":
            continue
        if launcher.kernel_ir.operands[0] != ((rows, 2 * hidden), dtype):
            continue
        attribute = 9  # CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT
        status = cuda.cuFuncSetAttribute(
            ctypes.c_void_p(launcher.compiled.function), attribute, ctypes.c_int(percent)
        )
        if status:
            raise RuntimeError(f"cuFuncSetAttribute: CUresult {status}")
        found += 1
    if not found:
        raise RuntimeError("no direct-launch kernel of that shape")


def carveout_candidates(rows, hidden, dtype):
    """The scaled store's forward on the JAX path, and on the direct launch with each
    of ``CARVEOUTS``: whether the second sweep's hits come from L1, whose size the
    shared-memory carveout sets (XLA's launch may prefer another carveout than triton's)."""
    from torch_bridge import _direct

    ours = _ours("scaled_fp8_fwd", rows, hidden, dtype)

    def direct(percent):
        def make():
            fn = lambda y: _direct.forward(y, None, None, None, 1.0, 0.0, "scaled")
            fn(torch.randn(rows, 2 * hidden, dtype=getattr(torch, dtype), device="cuda"))
            _set_carveout(rows, hidden, dtype, percent)
            return fn

        return make

    def ours_preferring(config):
        def make():
            _set_context_cache_config(config)
            return ours(None)

        return make

    found = {"ours": lambda: ours(None)}
    for name, percent in CARVEOUTS:
        found[f"direct carveout {name}"] = direct(percent)
    for name, config in CACHE_CONFIGS:
        found[f"ours, context {name}"] = ours_preferring(config)
    return found


CACHE_CONFIGS = [("prefers L1", 2), ("prefers shared", 1), ("no preference", 0)]


def _set_context_cache_config(config):
    """``cuCtxSetCacheConfig`` on the current (primary) context: the L1 / shared memory
    preference of kernels launched without one of their own (0 none, 1 shared, 2 L1)."""
    import ctypes

    torch.cuda.init()  # the primary context, current on this thread (JAX's too)
    status = ctypes.CDLL("libcuda.so.1").cuCtxSetCacheConfig(ctypes.c_int(config))
    if status:
        raise RuntimeError(f"cuCtxSetCacheConfig: CUresult {status}")


# ----------------------------------------------------------------------------- main


def parts(out: str) -> dict:
    """``{part: (op, sizes, candidates)}``; ``candidates(rows, hidden, dtype)`` gives
    ``{name: make}``, ``make()`` the function to time (``out``: where sources go)."""
    return {
        "bias": ("bias_bwd", BIAS_SIZES, bias_candidates),
        "wide": ("fwd", WIDE_SIZES, functools.partial(wide_candidates, out, "fwd")),
        "widebwd": ("bwd", WIDE_SIZES, functools.partial(wide_candidates, out, "bwd")),
        "small": ("fwd", [(4096, 2048)], functools.partial(small_candidates, out, "fwd")),
        "smallbwd": ("bwd", [(4096, 2048)], functools.partial(small_candidates, out, "bwd")),
        "smallweighted": (
            "weighted_bwd",
            [(4096, 2048)],
            functools.partial(small_candidates, out, "weighted_bwd"),
        ),
        "bias_steps": ("bias_bwd", STEP_SIZES, bias_steps_candidates),
        "bias_sum": ("bias_bwd", SUM_SIZES, bias_sum_candidates),
        "bias_anatomy": ("bias_bwd", SUM_SIZES, bias_anatomy_candidates),
        "loop_steps": ("bias_bwd", LOOP_SIZES, loop_steps_candidates),
        "streamed_bias": ("bias_bwd", STEP_SIZES, streamed_bias_candidates),
        "streamed_fwd": ("fwd", STEP_SIZES, streamed_fwd_candidates),
        "streamed_weighted": ("weighted_bwd", STEP_SIZES, streamed_weighted_candidates),
        "scaled_rows": ("scaled_fp8_fwd", SCALED_SIZES, scaled_candidates),
        **{
            f"perthread_{op}": (op, PER_THREAD_SIZES, functools.partial(per_thread_candidates, op))
            for op in ("fwd", "bwd", "fp8_fwd")
        },
        "stages_scaled": (
            "scaled_fp8_fwd",
            STAGES_SIZES["scaled_fp8_fwd"],
            functools.partial(stages_candidates, "scaled_fp8_fwd"),
        ),
        "stages_bias": (
            "bias_bwd",
            STAGES_SIZES["bias_bwd"],
            functools.partial(stages_candidates, "bias_bwd"),
        ),
        "sweep_tiles": ("scaled_fp8_fwd", SWEEP_SIZES, sweep_tiles_candidates),
        "carveout": ("scaled_fp8_fwd", SWEEP_SIZES, carveout_candidates),
        "segments": ("scaled_fp8_fwd", SWEEP_SIZES, segments_candidates),
        "bias_wide": (
            "bias_bwd",
            WIDE_STEP_SIZES,
            functools.partial(bias_steps_candidates, tiles=WIDE_STEP_TILES),
        ),
        "bias_occupancy": (
            "bias_bwd",
            STEP_SIZES,
            functools.partial(bias_steps_candidates, tiles=OCCUPANCY_STEP_TILES),
        ),
        **{
            f"copy_floor_{op}": (op, STEP_SIZES, functools.partial(copy_floor_candidates, op))
            for op in ("fwd", "bwd")
        },
        "fwdgap": ("fwd", GAP_SIZES, functools.partial(gap_candidates, out, "fwd")),
        "bwdgap": ("bwd", GAP_SIZES, functools.partial(gap_candidates, out, "bwd")),
        **{
            f"warps_{op}": (op, WARPS_SIZES, functools.partial(warps_candidates, op))
            for op in ("fwd", "bwd", "fp8_fwd", "weighted_bwd")
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="bias,wide,widebwd")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--l2-times", type=int, default=1, help="rotate inputs through more")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    args = parser.parse_args()
    parts_ = parts(args.out)
    unknown = sorted(set(args.parts.split(",")) - set(parts_))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {sorted(parts_)}")
    bench.ROTATION_BYTES *= args.l2_times
    bandwidth = bench.copy_bandwidth()
    print(f"copy bandwidth {bandwidth / 1e9:.0f} GB/s ({torch.cuda.get_device_name()})")
    for part in args.parts.split(","):
        op, sizes, candidates = parts_[part]
        for (rows, hidden), dtype in [(s, d) for s in sizes for d in args.dtypes.split(",")]:
            torch_dtype = getattr(torch, dtype)
            floor = bench.minimum_bytes(op, rows, hidden, torch_dtype.itemsize)
            inputs = input_sets(op, rows, hidden, torch_dtype, floor)
            print(f"== {part} {rows}x{2 * hidden} {dtype}", flush=True)
            for name, make in candidates(rows, hidden, dtype).items():
                try:
                    seconds, names = kernel_seconds(make(), inputs, args.iters)
                    pct = 100 * floor / seconds / bandwidth
                    print(f"  {name:28s} {seconds * 1e6:8.1f} us {pct:6.1f}%  {names}", flush=True)
                except Exception as error:
                    print(f"  {name:28s} failed: {type(error).__name__}: {str(error)[:200]}")


if __name__ == "__main__":
    main()
