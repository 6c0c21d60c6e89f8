"""The Mosaic TPU backend: one forward and one backward ``pallas_call``, each a single
pass over HBM, with one kernel body per direction for every variant (bias, weights,
clamp, fp8 store).

Layout. ``y`` arrives as ``(N, 2, H)``; its minor dims ``(2, H)`` tile badly on TPU
(``(8, 128)`` tiles, ``(16, 128)`` for 16-bit and ``(32, 128)`` for 8-bit types), so:

- ``"split"`` (``H % 128 == 0``, every LLM size): ``y`` is viewed as ``(N, 2H)`` (free
  in XLA, and the canonical form of Megatron's ``[gate | up]`` input) and read through
  two BlockSpecs on the same array, the gate block at column block ``j`` and the linear
  block at ``j + H / block_hidden`` (``block_hidden`` divides ``H``). An output with
  both halves (the fp8 copy, ``dy``) has one BlockSpec, so the grid gets a third axis
  ``k`` of size 2 that picks the half it writes; the input blocks keep their index
  across ``k`` and are fetched once.
- ``"stacked"`` (any other ``H``): ``(N, 2, H)`` itself with ``(block_rows, 2,
  block_hidden)`` blocks, legal for every ``H`` (2 is the full dim); ragged columns
  stay inside their half. The ``(2, block_hidden)`` slabs pad to a full sublane tile in
  VMEM, which the VMEM budget counts.

Edges. Edge blocks read unspecified values past ``N`` or ``H`` and drop out-of-bounds
writes, so only the reductions mask: ``dbias`` rows, ``dweights`` columns.

Scaled fp8 store: the row scales need each row's maximum before any of it is quantized.
The forward takes whole rows per block (``block_hidden = H``) where 32 such rows fit the
VMEM budget (``H`` up to about 5700 in bfloat16, 3800 in float32): the kernel then
computes the maximum from the blocks it has loaded, in the one pass. Wider rows get an
XLA reduction first (``_math.row_amax``: a second read of ``y``), whose scales the kernel
reads as it quantizes, as it does with scales the caller gives.

Reductions, in the same pass as ``dy``: ``dbias`` as float32 partial sums per row
block, ``(row_blocks, 2, H)``, summed afterwards by XLA (a ``1 / block_rows`` sized
array); ``dweights`` accumulated in a float32 ``(N, 1)`` output block that stays
resident while the grid walks the hidden axis (which is then ``"arbitrary"``).

No TPU was available while writing this: block sizes come from the VMEM arithmetic
in :func:`default_config`, not from measurements.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from swiglu_jax import _math
from swiglu_jax._options import Options
from swiglu_jax.kernels.config import BlockConfig

FP8_DTYPE = _math.FP8_DTYPE
COMPUTE_DTYPE = jnp.float32
NUM_LANES = 128
TILE_BYTES = 32  # a sublane tile is 8 rows of 32 bits: 8 float32, 16 bfloat16, 32 fp8
MAX_BLOCK_HIDDEN = 1024
MAX_BLOCK_ROWS = 1024
# Double-buffered input and output blocks of one grid step, leaving room for the
# float32 temporaries under the smallest default scoped-VMEM limit (16 MiB, v4/v5e).
VMEM_BLOCK_BUDGET = 8 * 2**20
F32_TEMPORARIES = 6  # float32 block-sized values the compiler may keep in VMEM


# ----------------------------------------------------------------------------- geometry


def _sublane_tile(dtype) -> int:
    """Rows of one ``(rows, 128)`` VMEM tile of ``dtype``: 8, 16 or 32."""
    return TILE_BYTES // min(np.dtype(dtype).itemsize, 4)


def _is_split(hidden: int) -> bool:
    return hidden % NUM_LANES == 0


def _split_block_hidden(hidden: int, limit: int) -> int:
    """The largest multiple of 128 that divides ``hidden`` (itself one) and is at most
    ``max(limit, 128)``."""
    lanes = hidden // NUM_LANES
    best = 1
    for d in range(1, lanes + 1):
        if lanes % d == 0 and d * NUM_LANES <= limit:
            best = d
    return best * NUM_LANES


def _block_hidden(hidden: int, requested: int) -> int:
    if _is_split(hidden):
        return _split_block_hidden(hidden, requested)
    if requested >= hidden:
        return hidden
    return max(NUM_LANES, requested // NUM_LANES * NUM_LANES)


def _block_rows(rows: int, requested: int, row_tile: int) -> int:
    if requested >= rows:
        return rows
    block = -(-requested // row_tile) * row_tile
    return rows if block >= rows else block


def _bytes_per_block_element(hidden: int, itemsize: int) -> int:
    """VMEM bytes per element of a ``(rows, block_hidden)`` tile in the costliest
    launch (the backward: ``g``, both halves of ``y`` and ``dy``, double-buffered, one
    half held over for ``k``), plus the float32 temporaries."""
    if _is_split(hidden):
        io = 2 * (itemsize + 2 * itemsize + 2 * itemsize) + itemsize
    else:  # a (2, block_hidden) slab fills a whole sublane tile
        io = 2 * (itemsize + 2 * TILE_BYTES)
    return io + 4 * F32_TEMPORARIES


def default_config(rows: int, hidden: int, dtype, *, whole_rows: bool = False) -> BlockConfig:
    """Blocks of at most ``MAX_BLOCK_ROWS x MAX_BLOCK_HIDDEN`` whose double-buffered
    working set fits ``VMEM_BLOCK_BUDGET``, in every variant and direction.

    Wide blocks keep DMAs long (the kernels are HBM-bound); the row count then fills
    the budget, in multiples of the fp8 sublane tile (32) so the same config serves
    the fp8 copy. With ``whole_rows``, blocks span all of ``H`` where 32 rows of it fit
    the budget (the scaled fp8 store's forward: see the module doc).
    """
    itemsize = min(np.dtype(dtype).itemsize, 4)
    fp8_tile = _sublane_tile(FP8_DTYPE)
    block_hidden = _block_hidden(hidden, MAX_BLOCK_HIDDEN)
    whole_row_bytes = fp8_tile * hidden * _bytes_per_block_element(hidden, itemsize)
    if whole_rows and whole_row_bytes <= VMEM_BLOCK_BUDGET:
        block_hidden = hidden
    per_row = block_hidden * _bytes_per_block_element(hidden, itemsize)
    block_rows = max(fp8_tile, min(MAX_BLOCK_ROWS, VMEM_BLOCK_BUDGET // per_row))
    block_rows = block_rows // fp8_tile * fp8_tile
    return BlockConfig(block_rows=min(rows, block_rows) or 1, block_hidden=block_hidden)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The static geometry of one launch."""

    rows: int
    hidden: int
    block_rows: int
    block_hidden: int

    @classmethod
    def make(cls, rows, hidden, config: BlockConfig | None, dtype, *block_dtypes):
        """Rounds ``config`` (or the default for ``dtype``) to legal TPU blocks:
        ``block_rows`` to a multiple of the largest sublane tile among ``block_dtypes``
        (or all rows), ``block_hidden`` to a multiple of 128 (dividing ``H`` in the
        split layout) or all of ``H``."""
        config = config or default_config(rows, hidden, dtype)
        row_tile = max(_sublane_tile(d) for d in block_dtypes)
        return cls(
            rows=rows,
            hidden=hidden,
            block_rows=_block_rows(rows, config.block_rows, row_tile),
            block_hidden=_block_hidden(hidden, config.block_hidden),
        )

    @property
    def split(self) -> bool:
        return _is_split(self.hidden)

    @property
    def row_blocks(self) -> int:
        return pl.cdiv(self.rows, self.block_rows)

    @property
    def hidden_blocks(self) -> int:
        return pl.cdiv(self.hidden, self.block_hidden)

    @property
    def ragged_rows(self) -> bool:
        return self.rows % self.block_rows != 0

    @property
    def ragged_hidden(self) -> bool:
        return self.hidden % self.block_hidden != 0

    def grid(self, two_halves_out: bool) -> tuple[int, ...]:
        """``(row_blocks, hidden_blocks)``, and ``k`` over the halves of a split output."""
        grid = (self.row_blocks, self.hidden_blocks)
        return (*grid, 2) if self.split and two_halves_out else grid

    # --- BlockSpecs; index maps take (i, j) or (i, j, k).

    def tile(self) -> pl.BlockSpec:
        """A ``(block_rows, block_hidden)`` block of an ``(N, H)`` array."""
        return pl.BlockSpec((self.block_rows, self.block_hidden), lambda i, j, *_: (i, j))

    def per_row(self) -> pl.BlockSpec:
        """A ``(block_rows, 1)`` block of an ``(N, 1)`` array."""
        return pl.BlockSpec((self.block_rows, 1), lambda i, j, *_: (i, 0))

    def halves(self, rows: int | None = None) -> list[pl.BlockSpec]:
        """The input specs of both halves of ``y``, or of ``bias`` with ``rows=1``: two
        on the ``(rows, 2H)`` view (split), one ``(rows, 2, bh)`` or ``(2, bh)`` block
        (stacked)."""
        bh, offset = self.block_hidden, self.hidden // self.block_hidden
        if self.split:
            br = self.block_rows if rows is None else rows
            row = (lambda i: i) if rows is None else (lambda i: 0)
            return [
                pl.BlockSpec((br, bh), lambda i, j, *_, shift=shift: (row(i), j + shift))
                for shift in (0, offset)
            ]
        if rows is None:
            return [pl.BlockSpec((self.block_rows, 2, bh), lambda i, j, *_: (i, 0, j))]
        return [pl.BlockSpec((2, bh), lambda i, j, *_: (0, j))]

    def both_halves_out(self) -> pl.BlockSpec:
        """The output spec of a ``y``-shaped array: half ``k`` of the split view, or the
        stacked block."""
        if self.split:
            offset = self.hidden // self.block_hidden
            return pl.BlockSpec(
                (self.block_rows, self.block_hidden), lambda i, j, k: (i, j + k * offset)
            )
        return self.halves()[0]

    def view(self, y):
        """``y`` as the kernel addresses it: ``(N, 2H)`` split, unchanged stacked."""
        return y.reshape(y.shape[0], -1) if self.split else y

    def bias_view(self, bias):
        """``bias`` as the kernel addresses it: ``(1, 2H)`` split, unchanged stacked."""
        return bias.reshape(1, -1) if self.split else bias


# ----------------------------------------------------------------------------- kernels


def _take(refs, counts):
    """Splits the flat ``refs`` into groups of ``counts``: a count of 0 gives ``None``,
    an int the ref, a tuple ``(n,)`` a list of ``n`` refs (``None`` if ``n`` is 0)."""
    refs, groups = list(refs), []
    for count in counts:
        n = count[0] if isinstance(count, tuple) else count
        group, refs = refs[:n], refs[n:]
        if n == 0:
            groups.append(None)
        else:
            groups.append(group if isinstance(count, tuple) else group[0])
    assert not refs
    return groups


def _half(refs, half: int):
    """Half ``half`` of a ``y``-like block: its own ref (split) or ``[:, half, :]``."""
    if len(refs) == 2:
        return refs[half][...]
    return refs[0][:, half, :]


def _bias_half(refs, half: int):
    """A ``(1, block_hidden)`` row of the bias block."""
    if len(refs) == 2:
        return refs[half][...]
    return refs[0][pl.ds(half, 1), :]


def _load_halves(y_refs, bias_refs, scale=None):
    """The gate and linear halves of ``y + bias`` in float32, as ``_xla._halves``; ``y``
    the scaled fp8 copy where its ``(rows, 1)`` ``scale`` is given."""
    a, b = (_half(y_refs, h).astype(COMPUTE_DTYPE) for h in (0, 1))
    if scale is not None:
        a, b = _math.from_scaled_fp8(a, scale), _math.from_scaled_fp8(b, scale)
    if bias_refs is not None:
        a = a + _bias_half(bias_refs, 0).astype(COMPUTE_DTYPE)
        b = b + _bias_half(bias_refs, 1).astype(COMPUTE_DTYPE)
    return a, b


def _when(condition):
    """``pl.when``, also for a static ``True`` (no ``k`` axis)."""
    if condition is True:
        return lambda body: body()
    return pl.when(condition)


def _cast_into(dst_ref, src_ref):
    dst_ref[...] = src_ref[...].astype(dst_ref.dtype)


def _fp8_into(dst_ref, src_ref, scale=None):
    """The fp8 copy of ``src_ref``'s block, divided by the ``(rows, 1)`` ``scale`` if given."""
    x = src_ref[...].astype(COMPUTE_DTYPE)
    dst_ref[...] = _math.to_fp8(x) if scale is None else _math.to_scaled_fp8(x, scale)


def _row_scale(y_refs):
    """``(block_rows, 1)``: the scale of each row of the block (both halves, all of ``H``)."""
    amax = [
        jnp.max(_math.finite_magnitude(_half(y_refs, h).astype(COMPUTE_DTYPE)), 1, keepdims=True)
        for h in (0, 1)
    ]
    return _math.scale_from_amax(jnp.maximum(*amax))


def _forward_kernel(
    *refs, opts: Options, plan: _Plan, has_bias, has_weights, save_fp8, scale_given
):
    """Refs: ``y`` (its halves), ``[bias]``, ``[weights]``, ``[y_scale given]``, then
    ``out``, ``[y_fp8]``, ``[y_scale computed]``."""
    halves = 2 if plan.split else 1
    scaled = save_fp8 == "scaled"
    y_refs, bias_refs, w_ref, scale_in_ref, out_ref, fp8_ref, scale_out_ref = _take(
        refs,
        (
            (halves,),
            (halves * has_bias,),
            int(has_weights),
            int(scale_given),
            1,
            int(bool(save_fp8)),
            int(scaled and not scale_given),
        ),
    )
    k = pl.program_id(2) if plan.split and save_fp8 else None
    first_step = True if k is None else k == 0

    @_when(first_step)
    def _():
        a, b = _load_halves(y_refs, bias_refs)
        w = None if w_ref is None else w_ref[...].astype(COMPUTE_DTYPE)
        out_ref[...] = _math.forward(a, b, w, opts).astype(out_ref.dtype)
        if scale_out_ref is not None:  # the block holds whole rows (see forward)
            scale_out_ref[...] = _row_scale(y_refs)

    if not save_fp8:
        return
    scale = None
    if scaled:  # the output block stays resident across k: read back what k == 0 wrote
        scale = (scale_in_ref if scale_given else scale_out_ref)[...]
    if k is not None:  # split: half k of the copy
        for half, y_ref in enumerate(y_refs):
            pl.when(k == half)(functools.partial(_fp8_into, fp8_ref, y_ref, scale))
    elif scale is None:  # stacked, (rows, 2, bh) blocks
        _fp8_into(fp8_ref, y_refs[0])
    else:  # stacked, each half against the (rows, 1) scale
        for half in (0, 1):
            fp8_ref[:, half, :] = _math.to_scaled_fp8(_half(y_refs, half), scale)


def _masked(x, plan: _Plan, *, rows: bool, columns: bool):
    """``x`` with the out-of-bounds rows / columns of an edge block set to 0."""
    br, bh = x.shape
    valid = None
    if rows and plan.ragged_rows:
        row = pl.program_id(0) * plan.block_rows + jax.lax.broadcasted_iota(jnp.int32, (br, bh), 0)
        valid = row < plan.rows
    if columns and plan.ragged_hidden:
        col = pl.program_id(1) * plan.block_hidden + jax.lax.broadcasted_iota(
            jnp.int32, (br, bh), 1
        )
        valid = col < plan.hidden if valid is None else valid & (col < plan.hidden)
    return x if valid is None else jnp.where(valid, x, 0)


def _backward_kernel(*refs, opts: Options, plan: _Plan, has_bias, has_weights, has_scale):
    halves = 2 if plan.split else 1
    g_ref, y_refs, bias_refs, w_ref, scale_ref, dy_ref, dbias_ref, dw_ref, db_scratch = _take(
        refs,
        (
            1,
            (halves,),
            (halves * has_bias,),
            int(has_weights),
            int(has_scale),
            1,
            int(has_bias),
            int(has_weights),
            int(plan.split),
        ),
    )
    k = pl.program_id(2) if plan.split else None

    @_when(True if k is None else k == 0)
    def _():
        a, b = _load_halves(y_refs, bias_refs, None if scale_ref is None else scale_ref[...])
        g = g_ref[...].astype(COMPUTE_DTYPE)
        w = None if w_ref is None else w_ref[...].astype(COMPUTE_DTYPE)
        da, db, h = _math.backward(g, a, b, w, opts)
        if k is None:
            dy_ref[:, 0, :] = da.astype(dy_ref.dtype)
            dy_ref[:, 1, :] = db.astype(dy_ref.dtype)
        else:
            dy_ref[...] = da.astype(dy_ref.dtype)
            db_scratch[...] = db.astype(db_scratch.dtype)
        if dbias_ref is not None:
            for half, d in enumerate((da, db)):
                partial = _masked(d, plan, rows=True, columns=False)
                dbias_ref[pl.ds(half, 1), :] = jnp.sum(partial, axis=0, keepdims=True)
        if dw_ref is not None:
            partial = _masked(h * g, plan, rows=False, columns=True)
            partial = jnp.sum(partial, axis=1, keepdims=True)

            @pl.when(pl.program_id(1) == 0)
            def _():
                dw_ref[...] = partial

            @pl.when(pl.program_id(1) > 0)
            def _():
                dw_ref[...] += partial

    if k is not None:
        pl.when(k == 1)(functools.partial(_cast_into, dy_ref, db_scratch))


# ----------------------------------------------------------------------------- launches


def _interpret_params(interpret):
    """``False``, or the TPU interpreter's parameters (defaults for ``True``)."""
    if isinstance(interpret, pltpu.InterpretParams):
        return interpret
    return pltpu.InterpretParams() if interpret else False


def _check_dtypes(*dtypes):
    for dtype in dtypes:
        if dtype is not None and np.dtype(dtype) == np.float64:
            raise NotImplementedError("the Mosaic TPU kernels have no float64 arithmetic")


def _nbytes(*arrays) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in arrays if x is not None)


def _semantics(grid, arbitrary_hidden: bool) -> pltpu.CompilerParams:
    """Rows parallel; hidden parallel unless an output accumulates over it; ``k``
    arbitrary (its two steps share blocks)."""
    semantics = ["parallel", "arbitrary" if arbitrary_hidden else "parallel", "arbitrary"]
    return pltpu.CompilerParams(dimension_semantics=tuple(semantics[: len(grid)]))


def _variant_name(base, bias, weights, opts: Options, *suffixes) -> str:
    parts = [base]
    parts += ["bias"] if bias is not None else []
    parts += ["weights"] if weights is not None else []
    parts += ["clamp"] if opts.clamp_value is not None else []
    return "_".join([*parts, *suffixes])


def forward(
    y, bias, weights, opts: Options, *, save_fp8, y_scale=None, interpret=False, config=None
):
    """Returns ``(out, y_fp8, y_scale)``: ``out`` ``(N, H)`` in ``y``'s dtype and, with
    ``save_fp8``, ``y`` cast to ``float8_e4m3fn`` by the same pass (else ``None``), with
    its ``(N, 1)`` float32 row scales for ``"scaled"`` (module doc).

    Raises ``NotImplementedError`` for float64.
    """
    _check_dtypes(y.dtype, None if bias is None else bias.dtype)
    _check_dtypes(None if weights is None else weights.dtype)
    rows, _, hidden = y.shape
    scaled = save_fp8 == "scaled"
    if rows == 0:
        out = jnp.zeros((0, hidden), y.dtype)
        y_fp8 = jnp.zeros(y.shape, FP8_DTYPE) if save_fp8 else None
        return out, y_fp8, (jnp.zeros((0, 1), jnp.float32) if scaled else None)
    block_dtypes = [y.dtype] + [FP8_DTYPE] * bool(save_fp8)
    block_dtypes += [] if weights is None else [weights.dtype]
    whole_rows = scaled and y_scale is None
    config = config or default_config(rows, hidden, y.dtype, whole_rows=whole_rows)
    plan = _Plan.make(rows, hidden, config, y.dtype, *block_dtypes)
    if whole_rows and plan.hidden_blocks > 1:  # rows span blocks: the maximum first
        y_scale = _math.scale_from_amax(_math.row_amax(y))
    computes_scale = scaled and y_scale is None

    operands, in_specs = [plan.view(y)] * (2 if plan.split else 1), plan.halves()
    if bias is not None:
        bias_specs = plan.halves(rows=1)
        operands += [plan.bias_view(bias)] * len(bias_specs)
        in_specs += bias_specs
    for x in (weights, y_scale):
        if x is not None:
            operands.append(x)
            in_specs.append(plan.per_row())
    out_shape = [jax.ShapeDtypeStruct((rows, hidden), y.dtype)]
    out_specs = [plan.tile()]
    if save_fp8:
        out_shape.append(jax.ShapeDtypeStruct(plan.view(y).shape, FP8_DTYPE))
        out_specs.append(plan.both_halves_out())
    if computes_scale:
        out_shape.append(jax.ShapeDtypeStruct((rows, 1), jnp.float32))
        out_specs.append(plan.per_row())
    grid = plan.grid(two_halves_out=bool(save_fp8))

    kernel = functools.partial(
        _forward_kernel,
        opts=opts,
        plan=plan,
        has_bias=bias is not None,
        has_weights=weights is not None,
        save_fp8=save_fp8,
        scale_given=y_scale is not None,
    )
    elements = rows * hidden
    cost = pl.CostEstimate(
        flops=10 * elements,
        transcendentals=elements,
        bytes_accessed=_nbytes(y, bias, weights, y_scale, *out_shape),
    )
    suffix = ["fp8"] * (save_fp8 is True) + ["scaled_fp8"] * scaled
    results = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        compiler_params=_semantics(grid, arbitrary_hidden=False),
        cost_estimate=cost,
        interpret=_interpret_params(interpret),
        name=_variant_name("swiglu_fwd", bias, weights, opts, *suffix),
    )(*operands)
    y_fp8 = results[1].reshape(y.shape) if save_fp8 else None
    if computes_scale:
        y_scale = results[2]
    return results[0], y_fp8, y_scale


def backward(
    g, y, bias, weights, opts: Options, *, dy_dtype, y_scale=None, interpret=False, config=None
):
    """Returns ``(dy, dbias, dweights)``: ``dy`` ``(N, 2, H)`` in ``dy_dtype``, ``dbias``
    ``(2, H)`` in ``bias``'s dtype and ``dweights`` ``(N, 1)`` in ``weights``' (``None``
    when absent), all from one pass. ``y`` may be the saved ``float8_e4m3fn`` copy,
    scaled by the ``(N, 1)`` float32 ``y_scale`` where given.

    Raises ``NotImplementedError`` for float64.
    """
    _check_dtypes(g.dtype, y.dtype, dy_dtype, None if bias is None else bias.dtype)
    _check_dtypes(None if weights is None else weights.dtype)
    rows, _, hidden = y.shape
    if rows == 0:
        dy = jnp.zeros(y.shape, dy_dtype)
        dbias = None if bias is None else jnp.zeros(bias.shape, bias.dtype)
        dweights = None if weights is None else jnp.zeros(weights.shape, weights.dtype)
        return dy, dbias, dweights
    block_dtypes = [g.dtype, y.dtype, dy_dtype]
    block_dtypes += [] if weights is None else [weights.dtype]
    plan = _Plan.make(rows, hidden, config, dy_dtype, *block_dtypes)

    operands = [g] + [plan.view(y)] * (2 if plan.split else 1)
    in_specs = [plan.tile(), *plan.halves()]
    if bias is not None:
        bias_specs = plan.halves(rows=1)
        operands += [plan.bias_view(bias)] * len(bias_specs)
        in_specs += bias_specs
    for x in (weights, y_scale):
        if x is not None:
            operands.append(x)
            in_specs.append(plan.per_row())
    out_shape = [jax.ShapeDtypeStruct(plan.view(y).shape, dy_dtype)]
    out_specs = [plan.both_halves_out()]
    if bias is not None:
        out_shape.append(jax.ShapeDtypeStruct((plan.row_blocks, 2, hidden), COMPUTE_DTYPE))
        out_specs.append(
            pl.BlockSpec((pl.Squeezed(), 2, plan.block_hidden), lambda i, j, *_: (i, 0, j))
        )
    if weights is not None:
        out_shape.append(jax.ShapeDtypeStruct((rows, 1), COMPUTE_DTYPE))
        out_specs.append(plan.per_row())
    scratch = [pltpu.VMEM((plan.block_rows, plan.block_hidden), dy_dtype)] * plan.split
    grid = plan.grid(two_halves_out=True)

    kernel = functools.partial(
        _backward_kernel,
        opts=opts,
        plan=plan,
        has_bias=bias is not None,
        has_weights=weights is not None,
        has_scale=y_scale is not None,
    )
    elements = rows * hidden
    cost = pl.CostEstimate(
        flops=20 * elements,
        transcendentals=elements,
        bytes_accessed=_nbytes(g, y, bias, weights, y_scale)
        + 2 * elements * np.dtype(dy_dtype).itemsize
        + 4 * (2 * plan.row_blocks * hidden * (bias is not None) + rows * (weights is not None)),
    )
    results = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        scratch_shapes=scratch,
        compiler_params=_semantics(grid, arbitrary_hidden=weights is not None),
        cost_estimate=cost,
        interpret=_interpret_params(interpret),
        name=_variant_name("swiglu_bwd", bias, weights, opts, *["scaled"] * (y_scale is not None)),
    )(*operands)
    results = list(results)
    dy = results.pop(0).reshape(y.shape)
    dbias = None if bias is None else jnp.sum(results.pop(0), axis=0).astype(bias.dtype)
    dweights = None if weights is None else results.pop(0).astype(weights.dtype)
    return dy, dbias, dweights
