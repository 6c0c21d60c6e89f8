"""The Pallas Mosaic GPU backend (Hopper): TMA in and out, two kinds of kernel.

Streamed (the forward, every variant; the backward without token weights): each
instance owns a strip of columns and walks a group of row blocks through a ring of
shared-memory slots, several blocks in flight (``_streamed_kernel``). Its registers hold
one row of a TMA box at a time in a strided layout in which each thread owns the same
columns of every row, so the bias gradient's sums over rows never leave the thread; per
row values (token weights, fp8 scales) come once an instance, one copy of 128 bytes or
more.

Tiled (the backward with token weights, whose gradient sums each row across the strip):
each instance owns one ``block_rows x block_hidden`` tile of the output, the grid
``(cdiv(N, block_rows), cdiv(H, block_hidden))``. The instance copies its tiles of the
gate, the linear half, the cotangent, the bias, the weights and the scales from global
to shared memory with TMA, loads them into registers in the WGMMA layout (64-row groups
spread over the warpgroup's four warps), applies ``swiglu_jax._math`` in float32, and
writes its results back to shared memory and on to global memory with TMA. Several
instances fit on one SM, so one instance's copies overlap another's arithmetic.

Ragged edges: TMA reads fill out-of-bounds elements with zeros and TMA writes drop
them, so a partial block needs no special path (rows beyond ``N`` have ``g = 0`` and add
nothing to ``dbias``); the tiled reductions also mask what lies outside the array. TMA
needs 16-byte aligned row strides, so a hidden size that is not a multiple of
``HIDDEN_ALIGN`` is padded with zeros inside the functions (one extra copy, only then).
TMA coordinates are per dimension, so arrays of more than 2**31 elements are safe.

Scaled fp8 store: an instance holds at most a strip of a row, so the row maxima come
from an XLA reduction before the forward kernel (``_math.row_amax``: a second read of
``y``, one float32 written per row); the kernel reads each row's scale beside the token
weights and quantizes in the same pass that computes the output. The Triton kernels,
first on CUDA, fuse the maximum too.

Reductions without a second pass: the backward writes partial sums of ``dy`` for
``dbias`` (streamed: one row a row group, ``(row groups, 2, H')``) and per-hidden-block
partial sums of ``h * g`` for ``dweights`` (tiled: ``(cdiv(H, block_hidden), N)``), in
float32, padded to whole blocks; a small ``jnp.sum`` over the first axis finishes each.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from swiglu_jax import _math
from swiglu_jax._options import Options
from swiglu_jax.kernels.config import BlockConfig

FP8_DTYPE = _math.FP8_DTYPE
SUPPORTED_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)

# Rows of the WGMMA register layout that one warpgroup holds: block_rows is a multiple.
WARPGROUP_ROWS = 64
WARPGROUP_THREADS = 128
# TMA needs 16-byte row strides and boxes; 16 elements is that for every dtype (fp8 too).
HIDDEN_ALIGN = 16
# Largest extent of one TMA box dimension.
MAX_TMA_BOX = 256
# Rows of per-row float32 values a streamed instance copies at least (128 bytes), and
# what its blocks' rows must be a multiple of (see _stream).
ROW_WINDOW = 32
PER_ROW_BLOCK_ROWS = 4
# Shared memory one instance may use on Hopper (227 KB).
SMEM_BYTES = 232_448

_LAYOUT = plgpu.Layout.WGMMA
_ROW_LAYOUT = _LAYOUT.reduce(1)  # one value per row: weights, dweights partials
_COLUMN_LAYOUT = _LAYOUT.reduce(0)  # one value per column: bias, dbias partials

# Lane semantics: untiled shared memory, so TMA boxes may cross any array edge.
_SEMANTICS = plgpu.LoweringSemantics.Lane

# jax 0.12 stores through ``plgpu.store``, whose bank-conflict check is optional; jax 0.11
# has no ``plgpu.store`` and its ``ref[...] = x`` never checks.
_HAS_STORE = hasattr(plgpu, "store")

# jax 0.11 has no ``cost_estimate`` argument on ``plgpu.kernel``.
_KERNEL_TAKES_COST = "cost_estimate" in inspect.signature(plgpu.kernel).parameters


def default_config(rows: int, hidden: int, dtype) -> BlockConfig:
    """The tiled kernel's tile (the weighted backward): one warpgroup's 64 rows by 64
    (float32) or 128 (16-bit) hidden columns, fewer for a small ``H``; the grid covers
    any ``rows``.

    A 64 x 64 float32 tile is 32 registers a thread per live float32 array; 16-bit
    inputs move half the bytes per element, so they take twice the columns for the same
    bytes in flight per instance. Untuned: a first guess until measured on Hopper.
    """
    del rows  # Row count only changes the grid.
    width = 64 if jnp.dtype(dtype).itemsize >= 4 else 128
    return BlockConfig(block_rows=WARPGROUP_ROWS, block_hidden=min(width, _round_up(hidden)))


def _round_up(n: int, multiple: int = HIDDEN_ALIGN) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _check_config(config: BlockConfig) -> None:
    if config.block_rows % WARPGROUP_ROWS or config.block_rows > MAX_TMA_BOX:
        raise ValueError(
            f"block_rows must be a multiple of {WARPGROUP_ROWS} and at most {MAX_TMA_BOX} "
            f"for the Mosaic GPU backend, got {config.block_rows=}"
        )
    if config.block_hidden % HIDDEN_ALIGN or config.block_hidden > MAX_TMA_BOX:
        raise ValueError(
            f"block_hidden must be a multiple of {HIDDEN_ALIGN} and at most {MAX_TMA_BOX} "
            f"for the Mosaic GPU backend, got {config.block_hidden=}"
        )


def _check_dtypes(*dtypes) -> None:
    """float16/bfloat16/float32 (float32 arithmetic inside); anything else, float64 say,
    is ``NotImplementedError`` so that the dispatcher can fall back to XLA."""
    for dtype in dtypes:
        if jnp.dtype(dtype) not in SUPPORTED_DTYPES:
            raise NotImplementedError(
                f"the Mosaic GPU kernels take float16, bfloat16 and float32, got {dtype}"
            )


# ----------------------------------------------------------------------------- kernels


def _unpack(refs, *, has_bias, has_weights, has_scale):
    """Splits the leading optional refs: ``(bias, weights, y_scale, rest)``, ``None``
    for those absent."""
    refs = list(refs)
    bias = refs.pop(0) if has_bias else None
    weights = refs.pop(0) if has_weights else None
    scale = refs.pop(0) if has_scale else None
    return bias, weights, scale, refs


def _load_tile(smem):
    # The WGMMA layout reads 8-element row segments of 8 rows at a time: from untiled
    # shared memory with 64+ columns those rows share banks, which the optimized load
    # refuses. TODO(perf): a swizzled or row-contiguous layout for the streaming path.
    return plgpu.load(smem, layout=_LAYOUT, optimized=False).astype(jnp.float32)


def _store(smem, value):
    """``smem[...] = value``, accepting bank conflicts like ``_load_tile``."""
    if _HAS_STORE:
        plgpu.store(smem, value, optimized=False)
    else:
        smem[...] = value


def _load_broadcast(smem, shape, kept_axis):
    """A per-row (``kept_axis=0``) or per-column (``1``) vector, broadcast to the tile."""
    layout = _ROW_LAYOUT if kept_axis == 0 else _COLUMN_LAYOUT
    # Replicated over the warps that share a row or column: not bank-conflict free,
    # and small enough not to matter, so the unoptimized load is accepted.
    vector = plgpu.load(smem, layout=layout, optimized=False).astype(jnp.float32)
    return plgpu.layout_cast(lax.broadcast_in_dim(vector, shape, (kept_axis,)), _LAYOUT)


def _load_halves(y_smem, bias_smem, scale=None):
    """The gate and linear tiles in float32 with the bias added, in the WGMMA layout;
    ``y`` the scaled fp8 copy where its broadcast ``scale`` is given."""
    a, b = _load_tile(y_smem.at[0]), _load_tile(y_smem.at[1])
    if scale is not None:
        a, b = _math.from_scaled_fp8(a, scale), _math.from_scaled_fp8(b, scale)
    if bias_smem is not None:
        a = a + _load_broadcast(bias_smem.at[0], a.shape, 1)
        b = b + _load_broadcast(bias_smem.at[1], b.shape, 1)
    return a, b


GRID_NAMES = ("row_blocks", "hidden_blocks")


def _block_index(axis: int):
    return lax.axis_index(GRID_NAMES[axis])


def _tile_slices(block_rows, block_hidden):
    rows = pl.ds(_block_index(0) * block_rows, block_rows)
    cols = pl.ds(_block_index(1) * block_hidden, block_hidden)
    return rows, cols


def _in_bounds_mask(shape, rows_total, cols_total, blocks):
    """True where the tile's element lies inside the ``rows_total x cols_total`` array."""
    block_rows, block_hidden = blocks
    row = plgpu.broadcasted_iota(jnp.int32, shape, 0, layout=_LAYOUT)
    col = plgpu.broadcasted_iota(jnp.int32, shape, 1, layout=_LAYOUT)
    row_limit = rows_total - _block_index(0) * block_rows
    col_limit = cols_total - _block_index(1) * block_hidden
    return (row < row_limit) & (col < col_limit)


def _backward_kernel(
    g_gmem,
    y_gmem,
    *refs,
    opts,
    has_bias,
    has_weights,
    has_scale,
    blocks,
    rows_total,
    cols_total,
):
    """``dy[rows, :, cols]`` and the partial sums of this tile for ``dbias``/``dweights``.

    Refs, after ``g`` and ``y``: ``bias (2, H)``, ``weights (N,)`` and ``y_scale (N,)``
    (float32, when present), then ``dy (N, 2, H)``, ``dbias_partial (row blocks, 2,
    H_blocks)`` and ``dweights_partial (hidden blocks, N_blocks)`` (when present), then
    the scratch.
    """
    bias_gmem, weights_gmem, scale_gmem, refs = _unpack(
        refs, has_bias=has_bias, has_weights=has_weights, has_scale=has_scale
    )
    dy_gmem = refs.pop(0)
    dbias_gmem = refs.pop(0) if has_bias else None
    dweights_gmem = refs.pop(0) if has_weights else None
    g_smem, y_smem, bias_smem, weights_smem, scale_smem, *refs = refs
    dy_smem, dbias_smem, dweights_smem, barrier = refs
    bias_smem = bias_smem if has_bias else None
    rows, cols = _tile_slices(*blocks)

    copies = [(g_gmem.at[rows, cols], g_smem)]
    copies += [(y_gmem.at[rows, half, cols], y_smem.at[half]) for half in (0, 1)]
    if has_bias:
        copies.append((bias_gmem.at[:, cols], bias_smem))
    if has_weights:
        copies.append((weights_gmem.at[rows], weights_smem))
    if has_scale:
        copies.append((scale_gmem.at[rows], scale_smem))
    for src, dst in copies:
        plgpu.copy_gmem_to_smem(src, dst, barrier)
    plgpu.barrier_wait(barrier)

    g = _load_tile(g_smem)
    scale = _load_broadcast(scale_smem, g.shape, 0) if has_scale else None
    a, b = _load_halves(y_smem, bias_smem, scale)
    weights = _load_broadcast(weights_smem, a.shape, 0) if has_weights else None
    da, db, h = _math.backward(g, a, b, weights, opts)
    _store(dy_smem.at[0], da.astype(dy_smem.dtype))
    _store(dy_smem.at[1], db.astype(dy_smem.dtype))
    if has_bias or has_weights:
        inside = _in_bounds_mask(g.shape, rows_total, cols_total, blocks)
    if has_bias:
        dbias_smem[0] = jnp.sum(jnp.where(inside, da, 0.0), axis=0)
        dbias_smem[1] = jnp.sum(jnp.where(inside, db, 0.0), axis=0)
    if has_weights:
        dweights_smem[...] = jnp.sum(jnp.where(inside, h * g, 0.0), axis=1)
    plgpu.commit_smem()
    for half in (0, 1):
        plgpu.copy_smem_to_gmem(dy_smem.at[half], dy_gmem.at[rows, half, cols])
    if has_bias:
        plgpu.copy_smem_to_gmem(dbias_smem, dbias_gmem.at[_block_index(0), :, cols])
    if has_weights:
        plgpu.copy_smem_to_gmem(dweights_smem, dweights_gmem.at[_block_index(1), rows])
    plgpu.wait_smem_to_gmem(0, wait_read_only=True)


# The streamed kernels (the forward, the backward without token weights):
# each instance owns a strip of ``block_hidden`` columns (TMA boxes of up to MAX_TMA_BOX)
# and ``row_steps`` blocks of ``block_rows`` rows, and keeps ``num_stages`` blocks in
# flight: TMA loads into a ring of shared-memory slots (one barrier a slot) and TMA
# stores out of a second ring. Its registers hold one row of a box at a time in a
# strided layout in which a thread owns the same columns of every row, so the bias
# gradient's sums over rows stay in the thread: no shared memory, no barrier, until the
# strip's one partial row.
STREAM_GRID_NAMES = ("row_groups", "hidden_blocks")
# Measured on an H100 (PERF_NOTES.md, session 13; 4096 x 4096, 4096 x 8192, 8192 x 28672,
# bf16 and float32): 4 x 256 with 3 stages was the best of the tiles and stages tried
# (256 to 2048 columns, 1 to 16 rows, 2 to 4 stages), with 16 steps where it sums the
# bias gradient (partial rows 1/64 of N) and 2 without.
STREAM_TILE = (4, MAX_TMA_BOX, 3)  # rows a step, columns, stages
STREAM_STEPS, STREAM_STEPS_PLAIN = 16, 2


def stream_config(rows: int, hidden: int, dtype, *, bias: bool) -> BlockConfig:
    """The streamed kernels' strip (``STREAM_TILE``), ``STREAM_STEPS`` steps an
    instance where it sums the ``bias`` gradient, ``STREAM_STEPS_PLAIN`` otherwise."""
    del hidden, dtype  # One tile for every width and dtype (measured, see above).
    block_rows, block_hidden, stages = STREAM_TILE
    steps = min(STREAM_STEPS if bias else STREAM_STEPS_PLAIN, pl.cdiv(max(rows, 1), block_rows))
    return BlockConfig(block_rows, block_hidden, num_stages=stages, row_steps=steps)


def _check_stream_config(config: BlockConfig) -> None:
    if config.block_rows < 2:
        # A one-row block's TMA store is a contiguous slice, which Mosaic GPU copies as
        # plain bytes clamped only at the array's end: a box past the hidden edge spills
        # into the next row (wrong on an H100, session 13; the interpreter clips).
        raise ValueError(f"the streamed kernels need block_rows of at least 2, got {config}")
    box = min(config.block_hidden, MAX_TMA_BOX)
    if config.block_hidden % box or box % WARPGROUP_THREADS or config.block_rows > MAX_TMA_BOX:
        raise ValueError(
            f"the streamed kernels need block_hidden a multiple of {WARPGROUP_THREADS} "
            f"up to {MAX_TMA_BOX} or a multiple of {MAX_TMA_BOX}, and block_rows at most "
            f"{MAX_TMA_BOX}, got {config.block_rows=}, {config.block_hidden=}"
        )


def _streamed_kernel(
    *refs, row, ins: int, per_row: int, outs: int, has_bias, sums: int, config, row_blocks
):
    """Refs: the ``ins`` inputs (rows first, hidden last: ``g (N, H)``, ``y (N, 2, H)``),
    the ``per_row`` float32 ``(N,)`` inputs (token weights, fp8 scales), ``bias (2, H)``
    (when ``has_bias``), the ``outs`` outputs, ``partials (row groups, sums, H')`` (when
    ``sums``), then the scratch. Instance ``(group, j)`` computes row blocks ``group *
    row_steps + [0, row_steps)`` of the strip ``j``; ``row(load, inputs, scalars,
    outputs, bias)`` one row of one box: it loads its ``inputs`` (shared-memory rows) with
    ``load``, stores its ``outputs``, and returns its ``sums`` terms; ``scalars`` are the
    row's per-row values."""
    refs = list(refs)
    in_gmem = [refs.pop(0) for _ in range(ins)]
    row_gmem = [refs.pop(0) for _ in range(per_row)]
    bias_gmem = refs.pop(0) if has_bias else None
    out_gmem = [refs.pop(0) for _ in range(outs)]
    partials_gmem = refs.pop(0) if sums else None
    bias_smem, partial_smem, *rings, loaded_once, loaded = refs
    in_rings, row_rings, out_rings = rings[:ins], rings[ins : ins + per_row], rings[ins + per_row :]
    br, bh, steps, stages = (
        config.block_rows, config.block_hidden, config.row_steps, config.num_stages,
    )  # fmt: skip
    box = min(bh, MAX_TMA_BOX)
    group = lax.axis_index(STREAM_GRID_NAMES[0])
    start = lax.axis_index(STREAM_GRID_NAMES[1]) * bh
    boxes = [pl.ds(start + q * box, box) for q in range(bh // box)]
    first = group * steps
    count = jnp.minimum(steps, row_blocks - first)  # >= 1: no group is empty

    def block(gmem, k, cols):
        rows = pl.ds((first + k) * br, br)
        return gmem.at[(rows,) + (slice(None),) * (len(gmem.shape) - 2) + (cols,)]

    def fetch(k, slot):
        for q, cols in enumerate(boxes):
            for gmem, ring in zip(in_gmem, in_rings, strict=True):
                plgpu.copy_gmem_to_smem(block(gmem, k, cols), ring.at[slot, q], loaded.at[slot])

    for slot in range(stages):  # the first blocks' loads, before anything waits
        pl.when(slot < count)(functools.partial(fetch, slot, slot))
    layout = plgpu.Layout.WG_STRIDED((box,), vec_size=box // WARPGROUP_THREADS)

    def load(ref):
        return plgpu.load(ref, layout=layout).astype(jnp.float32)

    biases = [None] * len(boxes)
    window = row_rings[0].shape[0] if per_row else 0
    for gmem, ring in zip(row_gmem, row_rings, strict=True):  # the group's rows, once
        plgpu.copy_gmem_to_smem(gmem.at[pl.ds(first * br, window)], ring, loaded_once)
    if has_bias:
        for q, cols in enumerate(boxes):
            plgpu.copy_gmem_to_smem(bias_gmem.at[:, cols], bias_smem.at[q], loaded_once)
    if has_bias or per_row:
        plgpu.barrier_wait(loaded_once)
    if has_bias:
        biases = [(load(bias_smem.at[q, 0]), load(bias_smem.at[q, 1])) for q in range(len(boxes))]

    def step(k, totals):
        slot = lax.rem(k, stages)
        plgpu.barrier_wait(loaded.at[slot])
        plgpu.wait_smem_to_gmem(stages - 1, wait_read_only=True)  # the out slot is free
        totals = list(totals)
        for q in range(len(boxes)):
            for r in range(br):  # rows beyond N read as zeros: g = 0 adds nothing
                inputs = [ring.at[slot, q, r] for ring in in_rings]
                scalars = [ring[k * br + r] for ring in row_rings]
                outputs = [ring.at[slot, q, r] for ring in out_rings]
                terms = row(load, inputs, scalars, outputs, biases[q])
                totals[q] = tuple(t + x for t, x in zip(totals[q], terms, strict=True))
        plgpu.commit_smem()  # a warpgroup barrier: every thread is done with the inputs too
        for q, cols in enumerate(boxes):
            for gmem, ring in zip(out_gmem, out_rings, strict=True):
                dst = block(gmem, k, cols)
                plgpu.copy_smem_to_gmem(ring.at[slot, q], dst, commit_group=False)
        plgpu.commit_smem_to_gmem_group()
        pl.when(k + stages < count)(lambda: fetch(k + stages, slot))
        return tuple(totals)

    zeros = plgpu.layout_cast(jnp.zeros((box,), jnp.float32), layout)
    totals = lax.fori_loop(0, count, step, ((zeros,) * sums,) * len(boxes))
    if sums:
        for q in range(len(boxes)):
            for i, total in enumerate(totals[q]):
                _store(partial_smem.at[q, i], total)
        plgpu.commit_smem()
        for q, cols in enumerate(boxes):
            plgpu.copy_smem_to_gmem(partial_smem.at[q], partials_gmem.at[group, :, cols])
    plgpu.wait_smem_to_gmem(0, wait_read_only=True)


def _stream(row, inputs, bias, out_type, *, sums: int, config, name, interpret, flops, per_row=()):
    """Launches ``_streamed_kernel`` over ``inputs`` (rows first, hidden last, the hidden
    size padded to ``HIDDEN_ALIGN`` here) with ``out_type`` (``(rows, ..., H)`` shapes and
    dtypes); returns the outputs, then the ``sums`` partial sums' totals ``(sums, H)``
    in float32."""
    _check_stream_config(config)
    rows, hidden = inputs[0].shape[0], inputs[0].shape[-1]
    br, bh = config.block_rows, config.block_hidden
    stages = config.num_stages or STREAM_TILE[2]
    config = dataclasses.replace(config, num_stages=stages)
    box = min(bh, MAX_TMA_BOX)
    pad = _round_up(hidden) - hidden

    def padded(x):
        return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)]) if pad else x

    if bias is not None and jnp.dtype(bias.dtype) not in SUPPORTED_DTYPES:
        bias = bias.astype(jnp.float32)  # float64, say; the caller casts dbias back
    inputs, bias = [padded(x) for x in inputs], None if bias is None else padded(bias)
    per_row = [x.reshape(rows).astype(jnp.float32) for x in per_row]
    # The per-row values of a row group come in one copy of whole 128 bytes (Pallas
    # copies with a barrier move a multiple of the warpgroup's 128 threads' bytes).
    window = -(-config.row_steps * br // ROW_WINDOW) * ROW_WINDOW
    if per_row and (window > MAX_TMA_BOX or br % PER_ROW_BLOCK_ROWS):
        # Blocks of 2 or 3 rows compiled to an illegal instruction on an H100 (session
        # 13; 4 and 8 were right, the interpreter right for all).
        raise ValueError(
            f"the streamed kernels with weights or scales need block_rows a multiple of "
            f"{PER_ROW_BLOCK_ROWS} and row_steps * block_rows of at most {MAX_TMA_BOX} (one "
            f"TMA box), got {config}"
        )
    arrays = [*inputs, *out_type]
    rings = stages * bh * br * sum(math.prod(x.shape[1:-1]) * x.dtype.itemsize for x in arrays)
    if rings > SMEM_BYTES:
        raise ValueError(
            f"the streamed kernels' strip {config} needs {rings} bytes of shared memory for "
            f"its rings, more than the {SMEM_BYTES} an SM has: fewer stages, rows or columns"
        )
    row_blocks = pl.cdiv(rows, br)
    groups, hidden_blocks = pl.cdiv(row_blocks, config.row_steps), pl.cdiv(hidden + pad, bh)
    boxes = bh // box
    full = [jax.ShapeDtypeStruct((*x.shape[:-1], hidden + pad), x.dtype) for x in out_type]
    if sums:  # Padded to whole strips: every TMA store of a partial lands in bounds.
        full.append(jax.ShapeDtypeStruct((groups, sums, hidden_blocks * bh), jnp.float32))
    scratch = [
        _smem((boxes, 2, box), bias.dtype if bias is not None else jnp.float32, bias is not None),
        _smem((boxes, sums, box), jnp.float32, bool(sums)),
        *(plgpu.SMEM((stages, boxes, br, *x.shape[1:-1], box), x.dtype) for x in inputs),
        *(plgpu.SMEM((window,), jnp.float32) for _ in per_row),
        *(plgpu.SMEM((stages, boxes, br, *x.shape[1:-1], box), x.dtype) for x in out_type),
        plgpu.Barrier(num_arrivals=max(1, boxes * (bias is not None) + len(per_row))),
        plgpu.Barrier(num_arrivals=len(inputs) * boxes, num_barriers=stages),
    ]
    body = functools.partial(
        _streamed_kernel, row=row, ins=len(inputs), per_row=len(per_row), outs=len(out_type),
        has_bias=bias is not None, sums=sums, config=config, row_blocks=row_blocks,
    )  # fmt: skip
    operands = [*inputs, *per_row, *([] if bias is None else [bias])]
    results = list(
        _launch(
            body,
            *operands,
            out_type=full,
            scratch=scratch,
            grid=(groups, hidden_blocks),
            grid_names=STREAM_GRID_NAMES,
            name=name,
            cost=_cost(operands, full, flops_per_element=flops),
            interpret=interpret,
        )
    )
    if sums:
        results[-1] = jnp.sum(results[-1], axis=0)[:, :hidden]
    outs = [x[..., :hidden] if pad else x for x in results[: len(out_type)]]
    return outs + results[len(out_type) :]


def _streamed_forward(y, bias, weights, opts: Options, *, save_fp8, y_scale, config, interpret):
    """``(out (N, H), y_fp8 (N, 2, H) or None)`` by the streamed kernel; the scaled store
    (``save_fp8 == "scaled"``) divides each row by its ``y_scale``."""
    rows, _, hidden = y.shape
    config = config or stream_config(rows, hidden, y.dtype, bias=False)
    scaled = save_fp8 == "scaled"

    def row(load, inputs, scalars, outputs, bias):
        (y_row,), (out_row, *fp8_row), scalars = inputs, outputs, list(scalars)
        w = scalars.pop(0) if weights is not None else None
        a, b = load(y_row.at[0]), load(y_row.at[1])
        if save_fp8:  # of y itself, before the bias
            for half, x in enumerate((a, b)):
                q = _math.to_scaled_fp8(x, scalars[0]) if scaled else _math.to_fp8(x)
                _store(fp8_row[0].at[half], q)
        if bias is not None:
            a, b = a + bias[0], b + bias[1]
        _store(out_row, _math.forward(a, b, w, opts).astype(out_row.dtype))
        return ()

    out_type = [jax.ShapeDtypeStruct((rows, hidden), y.dtype)]
    if save_fp8:
        out_type.append(jax.ShapeDtypeStruct(y.shape, FP8_DTYPE))
    results = _stream(
        row, [y], bias, out_type, sums=0, config=config, interpret=interpret, flops=10,
        per_row=[x for x in (weights, y_scale if scaled else None) if x is not None],
        name="swiglu_forward_streamed_mosaic_gpu",
    )  # fmt: skip
    return results[0], results[1] if save_fp8 else None


def _streamed_backward(g, y, bias, opts: Options, *, dy_dtype, y_scale, config, interpret):
    """``(dy (N, 2, H), dbias (2, H) float32 or None)`` by the streamed kernel; ``y`` in
    ``g``'s dtype or the fp8 copy, scaled by ``y_scale`` where given."""
    rows, _, hidden = y.shape
    config = config or stream_config(rows, hidden, dy_dtype, bias=bias is not None)

    def row(load, inputs, scalars, outputs, bias):
        (g_row, y_row), (dy_row,) = inputs, outputs
        a, b = load(y_row.at[0]), load(y_row.at[1])
        if y_scale is not None:
            a, b = (_math.from_scaled_fp8(x, scalars[0]) for x in (a, b))
        if bias is not None:
            a, b = a + bias[0], b + bias[1]
        da, db, _ = _math.backward(load(g_row), a, b, None, opts)
        _store(dy_row.at[0], da.astype(dy_row.dtype))
        _store(dy_row.at[1], db.astype(dy_row.dtype))
        return () if bias is None else (da, db)

    results = _stream(
        row, [g, y], bias, [jax.ShapeDtypeStruct(y.shape, dy_dtype)],
        sums=0 if bias is None else 2, config=config, interpret=interpret, flops=20,
        per_row=[] if y_scale is None else [y_scale],
        name="swiglu_backward_streamed_mosaic_gpu",
    )  # fmt: skip
    return results[0], results[1] if bias is not None else None


# ---------------------------------------------------------------------------- builders


def _interpret_params(interpret):
    """``None`` (compiled), or the GPU interpreter's parameters (defaults for ``True``);
    tests pass their own to turn on race detection."""
    if isinstance(interpret, plgpu.InterpretGPUParams):
        return interpret
    return plgpu.InterpretGPUParams() if interpret else None


def _launch(body, *operands, out_type, scratch, grid, name, cost, interpret, grid_names=GRID_NAMES):
    kwargs = {"cost_estimate": cost} if _KERNEL_TAKES_COST else {}
    call = plgpu.kernel(
        body,
        out_type=out_type,
        scratch_types=scratch,
        # Launched with the hidden blocks first (CUDA's x, fastest in launch order): the
        # instances running at the same time then cover contiguous stretches of rows, as
        # in the Triton kernels (rows-first order cost those 2-7% on an H100).
        grid=grid[::-1],
        grid_names=grid_names[::-1],
        compiler_params=plgpu.CompilerParams(lowering_semantics=_SEMANTICS),
        interpret=_interpret_params(interpret),
        kernel_name=name,
        **kwargs,
    )
    return call(*operands)


def _cost(operands, out_type, *, flops_per_element):
    elements = math.prod(out_type[0].shape)  # out (N, H) or dy (N, 2, H)
    return pl.CostEstimate(
        flops=flops_per_element * elements,
        transcendentals=elements,
        bytes_accessed=sum(x.size * jnp.dtype(x.dtype).itemsize for x in (*operands, *out_type)),
    )


def _smem(shape, dtype, present=True):
    # Absent operands still take a scratch slot (one element) so the body unpacks evenly.
    return plgpu.SMEM(shape if present else (1,), dtype)


def _prepare(y, bias, weights, config):
    """Validated config, the hidden size padded to ``HIDDEN_ALIGN`` and float32 operands."""
    rows, _, hidden = y.shape
    if config is None:
        config = default_config(rows, hidden, y.dtype)
    _check_config(config)
    padded = _round_up(hidden)
    pad = padded - hidden
    if pad:
        y = jnp.pad(y, ((0, 0), (0, 0), (0, pad)))
    if bias is not None:
        bias = jnp.pad(bias.astype(jnp.float32), ((0, 0), (0, pad)))
    if weights is not None:
        weights = weights.reshape(rows).astype(jnp.float32)
    block_hidden = min(config.block_hidden, padded)
    blocks = (config.block_rows, block_hidden)
    grid = (pl.cdiv(rows, blocks[0]), pl.cdiv(padded, blocks[1]))
    return y, bias, weights, blocks, grid, pad


def forward(
    y, bias, weights, opts: Options, *, save_fp8, y_scale=None, interpret=False, config=None
):
    """Returns ``(out (N, H) in y.dtype, y_fp8 (N, 2, H) float8_e4m3fn or None, y_scale
    (N, 1) float32 or None)``; the scaled store's ``y_scale`` from an XLA reduction
    unless given (module doc).

    ``interpret``: ``True`` or a ``plgpu.InterpretGPUParams`` (race detection, say) runs
    Pallas' GPU interpreter instead of the compiled kernel. ``config``: the streamed
    kernel's strip (``stream_config`` by default). Raises ``NotImplementedError`` for
    float64 (or other unsupported) ``y``.
    """
    _check_dtypes(y.dtype)
    rows, _, hidden = y.shape
    scaled = save_fp8 == "scaled"
    if rows == 0:
        out = jnp.zeros((0, hidden), y.dtype)
        y_fp8 = jnp.zeros(y.shape, FP8_DTYPE) if save_fp8 else None
        return out, y_fp8, (jnp.zeros((0, 1), jnp.float32) if scaled else None)
    if scaled and y_scale is None:
        y_scale = _math.scale_from_amax(_math.row_amax(y))
    out, y_fp8 = _streamed_forward(
        y, bias, weights, opts, save_fp8=save_fp8, y_scale=y_scale, config=config,
        interpret=interpret,
    )  # fmt: skip
    return out, y_fp8, y_scale if scaled else None


def backward(
    g, y, bias, weights, opts: Options, *, dy_dtype, y_scale=None, interpret=False, config=None
):
    """Returns ``(dy (N, 2, H) in dy_dtype, dbias (2, H) or None, dweights (N, 1) or None)``.

    ``y`` may be the ``float8_e4m3fn`` copy saved by the forward, scaled by the ``(N,
    1)`` float32 ``y_scale`` where given. Without ``weights`` the streamed kernel runs
    (``config``: its strip, ``stream_config`` by default), with them the tiled one
    (``config``: its tile, ``default_config``). Raises ``NotImplementedError`` for
    float64 (or other unsupported) inputs.
    """
    dy_dtype = jnp.dtype(dy_dtype)
    _check_dtypes(g.dtype, dy_dtype, *([] if y.dtype == FP8_DTYPE else [y.dtype]))
    rows, _, hidden = y.shape
    dbias_dtype = None if bias is None else bias.dtype
    weights_dtype = None if weights is None else weights.dtype
    if rows == 0:
        dy = jnp.zeros(y.shape, dy_dtype)
        dbias = None if bias is None else jnp.zeros(bias.shape, bias.dtype)
        dweights = None if weights is None else jnp.zeros(weights.shape, weights.dtype)
        return dy, dbias, dweights
    if weights is None:
        dy, dbias = _streamed_backward(
            g, y, bias, opts, dy_dtype=dy_dtype, y_scale=y_scale, config=config,
            interpret=interpret,
        )  # fmt: skip
        return dy, None if dbias is None else dbias.astype(dbias_dtype), None
    if config is None:
        config = default_config(rows, hidden, dy_dtype)
    y, bias, weights, blocks, grid, pad = _prepare(y, bias, weights, config)
    if pad:
        g = jnp.pad(g, ((0, 0), (0, pad)))
    padded = y.shape[-1]
    block_rows, block_hidden = blocks
    has_bias, has_weights, has_scale = bias is not None, weights is not None, y_scale is not None

    out_type = [jax.ShapeDtypeStruct((rows, 2, padded), dy_dtype)]
    if has_bias:  # Padded to whole blocks: every TMA store of a partial lands in bounds.
        out_type.append(jax.ShapeDtypeStruct((grid[0], 2, grid[1] * block_hidden), jnp.float32))
    if has_weights:
        out_type.append(jax.ShapeDtypeStruct((grid[1], grid[0] * block_rows), jnp.float32))
    tile = (block_rows, block_hidden)
    scratch = [
        _smem(tile, g.dtype),
        _smem((2, *tile), y.dtype),
        _smem((2, block_hidden), jnp.float32, has_bias),
        _smem((block_rows,), jnp.float32, has_weights),
        _smem((block_rows,), jnp.float32, has_scale),
        _smem((2, *tile), dy_dtype),
        _smem((2, block_hidden), jnp.float32, has_bias),
        _smem((block_rows,), jnp.float32, has_weights),
        plgpu.Barrier(num_arrivals=3 + has_bias + has_weights + has_scale),
    ]
    body = functools.partial(
        _backward_kernel,
        opts=opts,
        has_bias=has_bias,
        has_weights=has_weights,
        has_scale=has_scale,
        blocks=blocks,
        rows_total=rows,
        cols_total=hidden,
    )
    scale = None if y_scale is None else y_scale.reshape(rows)
    operands = [x for x in (g, y, bias, weights, scale) if x is not None]
    cost = _cost(operands, out_type, flops_per_element=20)
    results = list(
        _launch(
            body,
            *operands,
            out_type=out_type,
            scratch=scratch,
            grid=grid,
            name="swiglu_backward_mosaic_gpu",
            cost=cost,
            interpret=interpret,
        )
    )
    dy = results.pop(0)
    dy = dy[:, :, :hidden] if pad else dy
    dbias = dweights = None
    if has_bias:
        dbias = jnp.sum(results.pop(0), axis=0)[:, :hidden].astype(dbias_dtype)
    if has_weights:
        dweights = jnp.sum(results.pop(0), axis=0)[:rows, None].astype(weights_dtype)
    return dy, dbias, dweights
