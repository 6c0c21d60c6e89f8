"""The Pallas Mosaic GPU backend (Hopper): streamed kernels, TMA in and out.

Every kernel streams: each instance owns a strip of columns and walks a group of row
blocks through a ring of shared-memory slots, several blocks in flight (TMA loads into
the ring; TMA stores out of a second one). Its registers hold one ``block_rows x box``
block at a time in a layout in which each warp owns whole rows (``_block_layout``):

- a row's sums (the token weights' gradient) are a warp's shuffles, no shared memory;
- a thread owns the same columns of its warp's rows in every block, so the bias
  gradient's sums over rows stay in registers until the strip's one partial row, summed
  across the four warps once an instance;
- per-row values (token weights, fp8 scales) come once an instance, in windows of
  ``ROW_WINDOW`` rows (one copy of 128 bytes or more), and per-row results (the weights
  gradient's partial sums) leave the same way.

Ragged edges: TMA reads fill out-of-bounds elements with zeros and TMA writes drop
them, so a partial block needs no special path: rows beyond ``N`` have ``g = 0`` and
weights and scales of 0, and add nothing to ``dbias`` or ``dweights``. TMA needs
16-byte aligned row strides, so a hidden size that is not a multiple of
``HIDDEN_ALIGN`` is padded with zeros inside the functions (one extra copy, only then).
TMA coordinates are per dimension, so arrays of more than 2**31 elements are safe.

Scaled fp8 store: an instance holds at most a strip of a row, so the row maxima come
from an XLA reduction before the forward kernel (``_math.row_amax``: a second read of
``y``, one float32 written per row); the kernel reads each row's scale beside the token
weights and quantizes in the same pass that computes the output. The Triton kernels,
first on CUDA, fuse the maximum too.

Reductions without a second pass over the activations: the backward writes partial sums
of ``dy`` for ``dbias`` (one row a row group, ``(row groups, 2, H')``) and of ``h * g``
for ``dweights`` (one value a row and strip, ``(strips, row groups, window)``), in
float32, padded to whole strips and windows; a small ``jnp.sum`` over the first axis
finishes each.
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

# TMA needs 16-byte row strides and boxes; 16 elements is that for every dtype (fp8 too).
HIDDEN_ALIGN = 16
# Largest extent of one TMA box dimension.
MAX_TMA_BOX = 256
# The block layout: each of a warpgroup's WARPS warps owns rows, each of its LANES lanes
# VECTOR adjacent columns of every BOX_COLUMNS (float32 sums across warps take at most
# 16 bytes a lane: Mosaic GPU's cross-warp reduction refuses wider vectors).
WARPS, LANES, VECTOR = 4, 32, 4
BOX_COLUMNS = LANES * VECTOR
# Rows of per-row float32 values a streamed instance copies at least (128 bytes: Pallas
# copies with a barrier move a multiple of the warpgroup's 128 threads' bytes).
ROW_WINDOW = 32
# Shared memory one instance may use on Hopper (227 KB).
SMEM_BYTES = 232_448

# Lane semantics: untiled shared memory, so TMA boxes may cross any array edge.
_SEMANTICS = plgpu.LoweringSemantics.Lane

# jax 0.12 stores through ``plgpu.store``, whose bank-conflict check is optional; jax 0.11
# has no ``plgpu.store`` and its ``ref[...] = x`` never checks.
_HAS_STORE = hasattr(plgpu, "store")

# jax 0.11 has no ``cost_estimate`` argument on ``plgpu.kernel``.
_KERNEL_TAKES_COST = "cost_estimate" in inspect.signature(plgpu.kernel).parameters

STREAM_GRID_NAMES = ("row_groups", "hidden_blocks")
# Measured on an H100 (PERF_NOTES.md, session 13; 4096 x 4096, 4096 x 8192, 8192 x 28672,
# bf16 and float32): 4 x 256 with 3 stages was the best of the tiles and stages tried
# (256 to 2048 columns, 1 to 16 rows, 2 to 4 stages), with 16 steps where it sums the
# bias gradient (partial rows 1/64 of N) and 2 without. With per-row results (the
# weights gradient) 8 steps: one window of 32 rows, no padding in their partial sums.
STREAM_TILE = (4, MAX_TMA_BOX, 3)  # rows a step, columns, stages
STREAM_STEPS, STREAM_STEPS_PLAIN = 16, 2
STREAM_STEPS_ROW_SUMS = ROW_WINDOW // STREAM_TILE[0]


def default_config(rows: int, hidden: int, dtype, *, bias=False, weights=False) -> BlockConfig:
    """The streamed kernels' strip (``STREAM_TILE``): ``STREAM_STEPS`` steps an instance
    where the backward sums the ``bias`` gradient, ``STREAM_STEPS_ROW_SUMS`` where it
    sums the ``weights`` gradient (and not the bias's), ``STREAM_STEPS_PLAIN``
    otherwise (the forward passes neither)."""
    del hidden, dtype  # One tile for every width and dtype (measured, see above).
    block_rows, block_hidden, stages = STREAM_TILE
    steps = STREAM_STEPS if bias else STREAM_STEPS_ROW_SUMS if weights else STREAM_STEPS_PLAIN
    steps = min(steps, pl.cdiv(max(rows, 1), block_rows))
    return BlockConfig(block_rows, block_hidden, num_stages=stages, row_steps=steps)


def _round_up(n: int, multiple: int = HIDDEN_ALIGN) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _check_config(config: BlockConfig) -> None:
    box = min(config.block_hidden, MAX_TMA_BOX)
    rows_ok = config.block_rows % WARPS == 0 and config.block_rows <= MAX_TMA_BOX
    if not rows_ok or config.block_hidden % box or box % BOX_COLUMNS:
        raise ValueError(
            f"the Mosaic GPU kernels need block_rows a multiple of {WARPS} up to "
            f"{MAX_TMA_BOX}, and block_hidden a multiple of {BOX_COLUMNS} up to "
            f"{MAX_TMA_BOX} or a multiple of {MAX_TMA_BOX}, got {config.block_rows=}, "
            f"{config.block_hidden=}"
        )


def _check_dtypes(*dtypes) -> None:
    """float16/bfloat16/float32 (float32 arithmetic inside); anything else, float64 say,
    is ``NotImplementedError`` so that the dispatcher can fall back to XLA."""
    for dtype in dtypes:
        if jnp.dtype(dtype) not in SUPPORTED_DTYPES:
            raise NotImplementedError(
                f"the Mosaic GPU kernels take float16, bfloat16 and float32, got {dtype}"
            )


def _store(smem, value):
    """``smem[...] = value`` (per-row values are replicated over their warp's lanes,
    which the bank-conflict check would count as conflicts)."""
    if _HAS_STORE:
        plgpu.store(smem, value, optimized=False)
    else:
        smem[...] = value


def _block_layout():
    """A ``(block_rows, box)`` block: warp ``w`` owns rows ``w, w + WARPS, ...``, lane
    ``l`` columns ``VECTOR * l + [0, VECTOR)`` of every ``BOX_COLUMNS``."""
    return plgpu.Layout.TILED(
        plgpu.Tiling(((WARPS, BOX_COLUMNS), (VECTOR,))),
        warp_dims=(-3,),
        lane_dims=(-2,),
        vector_dim=-1,
    )


# ----------------------------------------------------------------------------- kernel


def _streamed_kernel(
    *refs, block, ins: int, per_row: int, outs: int, row_outs: int, has_bias, sums: int,
    config, row_blocks,
):  # fmt: skip
    """Refs: the ``ins`` inputs (rows first, hidden last: ``g (N, H)``, ``y (N, 2, H)``),
    the ``per_row`` float32 ``(N,)`` inputs (token weights, fp8 scales), ``bias (2, H)``
    (when ``has_bias``), the ``outs`` outputs, ``partials (row groups, sums, H')`` (when
    ``sums``), the ``row_outs`` per-row partials ``(strips, row groups, window)``, then
    the scratch. Instance ``(group, j)`` of ``G`` row groups computes row blocks ``group +
    k * G`` for ``k < row_steps`` of the strip ``j`` (strided, so that the instances
    running together work on neighbouring rows), or ``group * row_steps + [0,
    row_steps)`` where its rows' values and outputs come in one window (``per_row``,
    ``row_outs``); ``block(load, inputs, scalars, outputs, bias)`` one
    box of one block: it loads its ``inputs`` (shared-memory blocks) with ``load``,
    stores its ``outputs``, and returns its ``sums`` terms (blocks) and its ``row_outs``
    terms (a value a row); ``scalars`` are the block's per-row values, broadcast."""
    refs = list(refs)
    in_gmem = [refs.pop(0) for _ in range(ins)]
    row_gmem = [refs.pop(0) for _ in range(per_row)]
    bias_gmem = refs.pop(0) if has_bias else None
    out_gmem = [refs.pop(0) for _ in range(outs)]
    partials_gmem = refs.pop(0) if sums else None
    row_partials_gmem = [refs.pop(0) for _ in range(row_outs)]
    bias_smem, partial_smem, *rings, loaded_once, loaded = refs
    in_rings, rings = rings[:ins], rings[ins:]
    row_rings, rings = rings[:per_row], rings[per_row:]
    out_rings, row_windows = rings[:outs], rings[outs:]
    br, bh, steps, stages = (
        config.block_rows, config.block_hidden, config.row_steps, config.num_stages,
    )  # fmt: skip
    box = min(bh, MAX_TMA_BOX)
    group = lax.axis_index(STREAM_GRID_NAMES[0])
    strip = lax.axis_index(STREAM_GRID_NAMES[1])
    boxes = [pl.ds(strip * bh + q * box, box) for q in range(bh // box)]
    first = group * steps
    groups = pl.cdiv(row_blocks, steps)
    strided = not (per_row or row_outs)
    if strided:  # >= 1 either way: no group is empty
        count = (row_blocks - group + groups - 1) // groups
    else:
        count = jnp.minimum(steps, row_blocks - first)

    def block_of(gmem, k, cols):
        rows = pl.ds((group + k * groups if strided else first + k) * br, br)
        return gmem.at[(rows,) + (slice(None),) * (len(gmem.shape) - 2) + (cols,)]

    def fetch(k, slot):
        for q, cols in enumerate(boxes):
            for gmem, ring in zip(in_gmem, in_rings, strict=True):
                dst = ring.at[slot, q]
                plgpu.copy_gmem_to_smem(block_of(gmem, k, cols), dst, loaded.at[slot])

    for slot in range(stages):  # the first blocks' loads, before anything waits
        pl.when(slot < count)(functools.partial(fetch, slot, slot))
    layout = _block_layout()
    shape = (br, box)

    def load(ref):
        return plgpu.load(ref, layout=layout).astype(jnp.float32)

    def broadcast(ref, axis):
        """A per-row (``axis=0``) or per-column (``1``) vector, broadcast to a block."""
        vector = plgpu.load(ref, layout=layout.reduce(1 - axis), optimized=False)
        return plgpu.layout_cast(
            lax.broadcast_in_dim(vector.astype(jnp.float32), shape, (axis,)), layout
        )

    window = row_rings[0].shape[0] if per_row else 0
    for gmem, ring in zip(row_gmem, row_rings, strict=True):  # the group's rows, once
        plgpu.copy_gmem_to_smem(gmem.at[pl.ds(first * br, window)], ring, loaded_once)
    if has_bias:
        for q, cols in enumerate(boxes):
            plgpu.copy_gmem_to_smem(bias_gmem.at[:, cols], bias_smem.at[q], loaded_once)
    if has_bias or per_row:
        plgpu.barrier_wait(loaded_once)
    biases = [None] * len(boxes)
    if has_bias:
        biases = [
            (broadcast(bias_smem.at[q, 0], 1), broadcast(bias_smem.at[q, 1], 1))
            for q in range(len(boxes))
        ]

    def step(k, totals):
        slot = lax.rem(k, stages)
        plgpu.barrier_wait(loaded.at[slot])
        plgpu.wait_smem_to_gmem(stages - 1, wait_read_only=True)  # the out slot is free
        rows = pl.ds(k * br, br)
        scalars = [broadcast(ring.at[rows], 0) for ring in row_rings]
        totals, row_totals = list(totals), None
        for q in range(len(boxes)):
            inputs = [ring.at[slot, q] for ring in in_rings]
            outputs = [ring.at[slot, q] for ring in out_rings]
            terms, row_terms = block(load, inputs, scalars, outputs, biases[q])
            totals[q] = tuple(t + x for t, x in zip(totals[q], terms, strict=True))
            row_totals = row_terms if row_totals is None else tuple(
                t + x for t, x in zip(row_totals, row_terms, strict=True)
            )  # fmt: skip
        for ring, value in zip(row_windows, row_totals, strict=True):
            _store(ring.at[rows], value)
        plgpu.commit_smem()  # a warpgroup barrier: every thread is done with the inputs too
        for q, cols in enumerate(boxes):
            for gmem, ring in zip(out_gmem, out_rings, strict=True):
                dst = block_of(gmem, k, cols)
                plgpu.copy_smem_to_gmem(ring.at[slot, q], dst, commit_group=False)
        plgpu.commit_smem_to_gmem_group()
        pl.when(k + stages < count)(lambda: fetch(k + stages, slot))
        return tuple(totals)

    zeros = plgpu.layout_cast(jnp.zeros(shape, jnp.float32), layout)
    totals = lax.fori_loop(0, count, step, ((zeros,) * sums,) * len(boxes))
    for q in range(len(boxes) if sums else 0):  # across the warps, once an instance
        for i, total in enumerate(totals[q]):
            _store(partial_smem.at[q, i], jnp.sum(total, axis=0))
    if sums or row_outs:
        plgpu.commit_smem()
    for q, cols in enumerate(boxes if sums else []):
        plgpu.copy_smem_to_gmem(partial_smem.at[q], partials_gmem.at[group, :, cols])
    for ring, gmem in zip(row_windows, row_partials_gmem, strict=True):
        plgpu.copy_smem_to_gmem(ring, gmem.at[strip, group])
    plgpu.wait_smem_to_gmem(0, wait_read_only=True)


def _stream(
    block, inputs, bias, out_type, *, sums: int, config, name, interpret, flops, per_row=(),
    row_outs: int = 0,
):  # fmt: skip
    """Launches ``_streamed_kernel`` over ``inputs`` (rows first, hidden last, the hidden
    size padded to ``HIDDEN_ALIGN`` here) with ``out_type`` (``(rows, ..., H)`` shapes
    and dtypes); returns the outputs, then the ``sums`` partial sums' totals ``(sums,
    H)`` and the ``row_outs`` per-row totals ``(N,)``, in float32."""
    _check_config(config)
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
    group_rows = config.row_steps * br
    window = -(-group_rows // ROW_WINDOW) * ROW_WINDOW if per_row or row_outs else 0
    if window > MAX_TMA_BOX:
        raise ValueError(
            f"the Mosaic GPU kernels with token weights or scales need row_steps * "
            f"block_rows of at most {MAX_TMA_BOX} (one TMA box), got {config}"
        )
    arrays = [*inputs, *out_type]
    rings = stages * bh * br * sum(math.prod(x.shape[1:-1]) * x.dtype.itemsize for x in arrays)
    reduction = WARPS * box * 4 if sums else 0  # the bias sums' one sum across warps
    if rings + reduction > SMEM_BYTES:
        raise ValueError(
            f"the Mosaic GPU kernels' strip {config} needs {rings + reduction} bytes of "
            f"shared memory, more than the {SMEM_BYTES} an SM has: fewer stages, rows or "
            f"columns"
        )
    row_blocks = pl.cdiv(rows, br)
    groups, strips = pl.cdiv(row_blocks, config.row_steps), pl.cdiv(hidden + pad, bh)
    boxes = bh // box
    full = [jax.ShapeDtypeStruct((*x.shape[:-1], hidden + pad), x.dtype) for x in out_type]
    if sums:  # Padded to whole strips: every TMA store of a partial lands in bounds.
        full.append(jax.ShapeDtypeStruct((groups, sums, strips * bh), jnp.float32))
    full += [jax.ShapeDtypeStruct((strips, groups, window), jnp.float32)] * row_outs
    scratch = [
        _smem((boxes, 2, box), bias.dtype if bias is not None else jnp.float32, bias is not None),
        _smem((boxes, sums, box), jnp.float32, bool(sums)),
        *(plgpu.SMEM((stages, boxes, br, *x.shape[1:-1], box), x.dtype) for x in inputs),
        *(plgpu.SMEM((window,), jnp.float32) for _ in per_row),
        *(plgpu.SMEM((stages, boxes, br, *x.shape[1:-1], box), x.dtype) for x in out_type),
        *(plgpu.SMEM((window,), jnp.float32) for _ in range(row_outs)),
        plgpu.Barrier(num_arrivals=max(1, boxes * (bias is not None) + len(per_row))),
        plgpu.Barrier(num_arrivals=len(inputs) * boxes, num_barriers=stages),
    ]
    body = functools.partial(
        _streamed_kernel, block=block, ins=len(inputs), per_row=len(per_row),
        outs=len(out_type), row_outs=row_outs, has_bias=bias is not None, sums=sums,
        config=config, row_blocks=row_blocks,
    )  # fmt: skip
    operands = [*inputs, *per_row, *([] if bias is None else [bias])]
    results = list(
        _launch(
            body,
            *operands,
            out_type=full,
            scratch=scratch,
            grid=(groups, strips),
            reduction_bytes=reduction,
            name=name,
            cost=_cost(operands, full, flops_per_element=flops),
            interpret=interpret,
        )
    )
    outs = [x[..., :hidden] if pad else x for x in results[: len(out_type)]]
    totals = results[len(out_type) :]
    if sums:
        totals[0] = jnp.sum(totals[0], axis=0)[:, :hidden]
    for i in range(sums > 0, len(totals)):  # the rows' totals, in row order
        totals[i] = jnp.sum(totals[i], axis=0)[:, :group_rows].reshape(-1)[:rows]
    return outs + totals


def _streamed_forward(y, bias, weights, opts: Options, *, save_fp8, y_scale, config, interpret):
    """``(out (N, H), y_fp8 (N, 2, H) or None)``; the scaled store (``save_fp8 ==
    "scaled"``) divides each row by its ``y_scale``."""
    rows, _, hidden = y.shape
    config = config or default_config(rows, hidden, y.dtype)
    scaled = save_fp8 == "scaled"

    def block(load, inputs, scalars, outputs, bias):
        (y_block,), (out_block, *fp8_block), scalars = inputs, outputs, list(scalars)
        w = scalars.pop(0) if weights is not None else None
        a, b = load(y_block.at[:, 0]), load(y_block.at[:, 1])
        if save_fp8:  # of y itself, before the bias
            for half, x in enumerate((a, b)):
                q = _math.to_scaled_fp8(x, scalars[0]) if scaled else _math.to_fp8(x)
                _store(fp8_block[0].at[:, half], q)
        if bias is not None:
            a, b = a + bias[0], b + bias[1]
        _store(out_block, _math.forward(a, b, w, opts).astype(out_block.dtype))
        return (), ()

    out_type = [jax.ShapeDtypeStruct((rows, hidden), y.dtype)]
    if save_fp8:
        out_type.append(jax.ShapeDtypeStruct(y.shape, FP8_DTYPE))
    results = _stream(
        block, [y], bias, out_type, sums=0, config=config, interpret=interpret, flops=10,
        per_row=[x for x in (weights, y_scale if scaled else None) if x is not None],
        name="swiglu_forward_mosaic_gpu",
    )  # fmt: skip
    return results[0], results[1] if save_fp8 else None


def _streamed_backward(
    g, y, bias, weights, opts: Options, *, dy_dtype, y_scale, config, interpret
):  # fmt: skip
    """``(dy (N, 2, H), dbias (2, H) float32 or None, dweights (N,) float32 or None)``;
    ``y`` in ``g``'s dtype or the fp8 copy, scaled by ``y_scale`` where given."""
    rows, _, hidden = y.shape
    config = config or default_config(
        rows, hidden, dy_dtype, bias=bias is not None, weights=weights is not None
    )

    def block(load, inputs, scalars, outputs, bias):
        (g_block, y_block), (dy_block,), scalars = inputs, outputs, list(scalars)
        w = scalars.pop(0) if weights is not None else None
        a, b = load(y_block.at[:, 0]), load(y_block.at[:, 1])
        if y_scale is not None:
            a, b = (_math.from_scaled_fp8(x, scalars[0]) for x in (a, b))
        if bias is not None:
            a, b = a + bias[0], b + bias[1]
        g = load(g_block)
        da, db, h = _math.backward(g, a, b, w, opts)
        _store(dy_block.at[:, 0], da.astype(dy_block.dtype))
        _store(dy_block.at[:, 1], db.astype(dy_block.dtype))
        terms = () if bias is None else (da, db)
        return terms, () if weights is None else (jnp.sum(h * g, axis=1),)

    results = _stream(
        block, [g, y], bias, [jax.ShapeDtypeStruct(y.shape, dy_dtype)],
        sums=0 if bias is None else 2, config=config, interpret=interpret, flops=20,
        per_row=[x for x in (weights, y_scale) if x is not None],
        row_outs=int(weights is not None), name="swiglu_backward_mosaic_gpu",
    )  # fmt: skip
    dy = results.pop(0)
    dbias = results.pop(0) if bias is not None else None
    dweights = results.pop(0) if weights is not None else None
    return dy, dbias, dweights


# ---------------------------------------------------------------------------- builders


def _interpret_params(interpret):
    """``None`` (compiled), or the GPU interpreter's parameters (defaults for ``True``);
    tests pass their own to turn on race detection."""
    if isinstance(interpret, plgpu.InterpretGPUParams):
        return interpret
    return plgpu.InterpretGPUParams() if interpret else None


def _launch(body, *operands, out_type, scratch, grid, reduction_bytes, name, cost, interpret):
    kwargs = {"cost_estimate": cost} if _KERNEL_TAKES_COST else {}
    params = {"reduction_scratch_bytes": reduction_bytes} if reduction_bytes else {}
    call = plgpu.kernel(
        body,
        out_type=out_type,
        scratch_types=scratch,
        # Launched with the strips first (CUDA's x, fastest in launch order): the
        # instances running at the same time then cover contiguous stretches of rows, as
        # in the Triton kernels (rows-first order cost those 2-7% on an H100).
        grid=grid[::-1],
        grid_names=STREAM_GRID_NAMES[::-1],
        compiler_params=plgpu.CompilerParams(lowering_semantics=_SEMANTICS, **params),
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


def forward(
    y, bias, weights, opts: Options, *, save_fp8, y_scale=None, interpret=False, config=None
):
    """Returns ``(out (N, H) in y.dtype, y_fp8 (N, 2, H) float8_e4m3fn or None, y_scale
    (N, 1) float32 or None)``; the scaled store's ``y_scale`` from an XLA reduction
    unless given (module doc).

    ``interpret``: ``True`` or a ``plgpu.InterpretGPUParams`` (race detection, say) runs
    Pallas' GPU interpreter instead of the compiled kernel. ``config``: the strip
    (``default_config`` by default). Raises ``NotImplementedError`` for float64 (or
    other unsupported) ``y``.
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
    1)`` float32 ``y_scale`` where given. ``config``: the strip (``default_config`` by
    default). Raises ``NotImplementedError`` for float64 (or other unsupported) inputs.
    """
    dy_dtype = jnp.dtype(dy_dtype)
    _check_dtypes(g.dtype, dy_dtype, *([] if y.dtype == FP8_DTYPE else [y.dtype]))
    if y.shape[0] == 0:
        dy = jnp.zeros(y.shape, dy_dtype)
        dbias = None if bias is None else jnp.zeros(bias.shape, bias.dtype)
        dweights = None if weights is None else jnp.zeros(weights.shape, weights.dtype)
        return dy, dbias, dweights
    dy, dbias, dweights = _streamed_backward(
        g, y, bias, weights, opts, dy_dtype=dy_dtype, y_scale=y_scale, config=config,
        interpret=interpret,
    )  # fmt: skip
    if dbias is not None:
        dbias = dbias.astype(bias.dtype)
    if dweights is not None:
        dweights = dweights.reshape(weights.shape).astype(weights.dtype)
    return dy, dbias, dweights
