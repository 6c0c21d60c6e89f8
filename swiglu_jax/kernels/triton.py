"""The Triton-lowered Pallas kernels for GPUs (Ampere and newer).

Grid ``(row blocks, hidden blocks)``; each program computes a ``(block_rows,
block_hidden)`` tile of the output from the matching gate and linear tiles of ``y``
(``(block_rows, 2, block_hidden)`` blocks of the ``(N, 2, H)`` view). Pallas masks the
loads and stores of edge tiles; the reductions mask their out-of-bounds terms themselves.

The backward writes, besides ``dy``, per-tile partial sums for the bias gradient
(``(row blocks, 2, H)`` in float32) and the weights gradient (``(N, hidden blocks)``),
which a small XLA reduction finishes: the full ``(N, 2H)`` gradient is read only once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from swiglu_jax import _math
from swiglu_jax._options import Options
from swiglu_jax.kernels.config import BlockConfig, next_power_of_2

FP8_DTYPE = jnp.float8_e4m3fn
KERNEL_DTYPES = tuple(jnp.dtype(d) for d in (jnp.float16, jnp.bfloat16, jnp.float32))

# Output elements one program computes by default: enough independent loads in flight
# per warp without spilling (16 KiB of bfloat16 output).
TILE_ELEMENTS = 8192
MAX_BLOCK_HIDDEN = 1024


def default_config(rows: int, hidden: int, dtype) -> BlockConfig:
    """Tiles of about ``TILE_ELEMENTS`` outputs, as wide as the hidden size allows.

    Triton needs power-of-two tiles; edge tiles are masked, so no size is excluded.
    """
    del dtype  # One tile shape serves every dtype: the output tile bounds the registers.
    block_hidden = min(next_power_of_2(hidden), MAX_BLOCK_HIDDEN)
    block_rows = min(next_power_of_2(max(rows, 1)), max(1, TILE_ELEMENTS // block_hidden))
    return BlockConfig(
        block_rows, block_hidden, num_warps=4 if block_rows * block_hidden <= 4096 else 8
    )


def _check(config: BlockConfig, *arrays):
    for x in arrays:
        if x is not None and x.dtype not in (*KERNEL_DTYPES, jnp.dtype(FP8_DTYPE)):
            raise NotImplementedError(f"the Triton kernels do not compute {x.dtype}")
    for name in ("block_rows", "block_hidden"):
        size = getattr(config, name)
        if size != next_power_of_2(size):
            raise ValueError(f"Triton tiles must be powers of two, got {name}={size}")


def _compiler_params(config: BlockConfig):
    return pltriton.CompilerParams(num_warps=config.num_warps, num_stages=config.num_stages)


def _tile_specs(config: BlockConfig, has_bias: bool, has_weights: bool):
    """BlockSpecs of ``y`` (or ``dy``), ``bias`` and ``weights`` for grid point ``(i, j)``."""
    bn, bh = config.block_rows, config.block_hidden
    specs = [pl.BlockSpec((bn, 2, bh), lambda i, j: (i, 0, j))]
    if has_bias:
        specs.append(pl.BlockSpec((2, bh), lambda i, j: (0, j)))
    if has_weights:
        specs.append(pl.BlockSpec((bn, 1), lambda i, j: (i, 0)))
    return specs


def _load_halves(y_ref, bias_ref):
    """The gate and linear tiles of ``y + bias`` in float32, and the raw tiles of ``y``."""
    gate, linear = y_ref[:, 0, :], y_ref[:, 1, :]
    a, b = gate.astype(jnp.float32), linear.astype(jnp.float32)
    if bias_ref is not None:
        a = a + bias_ref[0, :].astype(jnp.float32)[None, :]
        b = b + bias_ref[1, :].astype(jnp.float32)[None, :]
    return a, b, gate, linear


def _forward_kernel(*refs, opts: Options, has_bias: bool, has_weights: bool, save_fp8: bool):
    refs = list(refs)
    y_ref = refs.pop(0)
    bias_ref = refs.pop(0) if has_bias else None
    weights = refs.pop(0)[...].astype(jnp.float32) if has_weights else None
    out_ref = refs.pop(0)
    a, b, gate, linear = _load_halves(y_ref, bias_ref)
    out_ref[...] = _math.forward(a, b, weights, opts).astype(out_ref.dtype)
    if save_fp8:
        fp8_ref = refs.pop(0)
        fp8_ref[:, 0, :] = gate.astype(FP8_DTYPE)
        fp8_ref[:, 1, :] = linear.astype(FP8_DTYPE)


def _backward_kernel(
    *refs, opts: Options, has_bias: bool, has_weights: bool, rows: int, hidden: int
):
    refs = list(refs)
    g_ref, y_ref = refs.pop(0), refs.pop(0)
    bias_ref = refs.pop(0) if has_bias else None
    weights = refs.pop(0)[...].astype(jnp.float32) if has_weights else None
    dy_ref = refs.pop(0)
    g = g_ref[...].astype(jnp.float32)
    a, b, _, _ = _load_halves(y_ref, bias_ref)
    da, db, h = _math.backward(g, a, b, weights, opts)
    dy_ref[:, 0, :] = da.astype(dy_ref.dtype)
    dy_ref[:, 1, :] = db.astype(dy_ref.dtype)
    if not (has_bias or has_weights):
        return
    # Reductions: edge tiles hold garbage beyond the array, which must not be summed.
    bn, bh = g.shape
    row = pl.program_id(0) * bn + jax.lax.broadcasted_iota(jnp.int32, (bn, bh), 0)
    col = pl.program_id(1) * bh + jax.lax.broadcasted_iota(jnp.int32, (bn, bh), 1)
    if has_bias:
        dbias_ref = refs.pop(0)
        in_rows = row < rows
        dbias_ref[0, :] = jnp.sum(jnp.where(in_rows, da, 0.0), axis=0)
        dbias_ref[1, :] = jnp.sum(jnp.where(in_rows, db, 0.0), axis=0)
    if has_weights:
        dweights_ref = refs.pop(0)
        dweights_ref[...] = jnp.sum(jnp.where(col < hidden, h * g, 0.0), axis=1)


def forward(y, bias, weights, opts: Options, *, save_fp8: bool, interpret=False, config=None):
    rows, _, hidden = y.shape
    config = config or default_config(rows, hidden, y.dtype)
    _check(config, y, bias, weights)
    out_shapes = [jax.ShapeDtypeStruct((rows, hidden), y.dtype)]
    bn, bh = config.block_rows, config.block_hidden
    out_specs = [pl.BlockSpec((bn, bh), lambda i, j: (i, j))]
    if save_fp8:
        out_shapes.append(jax.ShapeDtypeStruct(y.shape, FP8_DTYPE))
        out_specs.append(pl.BlockSpec((bn, 2, bh), lambda i, j: (i, 0, j)))
    if rows == 0:
        return jnp.zeros(out_shapes[0].shape, y.dtype), (
            jnp.zeros(y.shape, FP8_DTYPE) if save_fp8 else None
        )
    inputs = [x for x in (y, bias, weights) if x is not None]
    kernel = functools.partial(
        _forward_kernel,
        opts=opts,
        has_bias=bias is not None,
        has_weights=weights is not None,
        save_fp8=save_fp8,
    )
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shapes,
        grid=(pl.cdiv(rows, bn), pl.cdiv(hidden, bh)),
        in_specs=_tile_specs(config, bias is not None, weights is not None),
        out_specs=out_specs,
        compiler_params=_compiler_params(config),
        interpret=interpret,
        name="swiglu_forward_triton",
        cost_estimate=_cost(inputs, out_shapes, rows * hidden),
    )(*inputs)
    return outs[0], (outs[1] if save_fp8 else None)


def backward(g, y, bias, weights, opts: Options, *, dy_dtype, interpret=False, config=None):
    rows, _, hidden = y.shape
    config = config or default_config(rows, hidden, dy_dtype)
    _check(config, g, y, bias, weights)
    if rows == 0:
        return (
            jnp.zeros(y.shape, dy_dtype),
            None if bias is None else jnp.zeros(bias.shape, bias.dtype),
            None if weights is None else jnp.zeros(weights.shape, weights.dtype),
        )
    bn, bh = config.block_rows, config.block_hidden
    grid = (pl.cdiv(rows, bn), pl.cdiv(hidden, bh))
    out_shapes = [jax.ShapeDtypeStruct(y.shape, dy_dtype)]
    out_specs = [pl.BlockSpec((bn, 2, bh), lambda i, j: (i, 0, j))]
    if bias is not None:
        out_shapes.append(jax.ShapeDtypeStruct((grid[0], 2, hidden), jnp.float32))
        out_specs.append(pl.BlockSpec((None, 2, bh), lambda i, j: (i, 0, j)))
    if weights is not None:
        out_shapes.append(jax.ShapeDtypeStruct((rows, grid[1]), jnp.float32))
        out_specs.append(pl.BlockSpec((bn, None), lambda i, j: (i, j)))
    inputs = [x for x in (g, y, bias, weights) if x is not None]
    kernel = functools.partial(
        _backward_kernel,
        opts=opts,
        has_bias=bias is not None,
        has_weights=weights is not None,
        rows=rows,
        hidden=hidden,
    )
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shapes,
        grid=grid,
        in_specs=[
            pl.BlockSpec((bn, bh), lambda i, j: (i, j)),
            *_tile_specs(config, bias is not None, weights is not None),
        ],
        out_specs=out_specs,
        compiler_params=_compiler_params(config),
        interpret=interpret,
        name="swiglu_backward_triton",
        cost_estimate=_cost(inputs, out_shapes, rows * hidden),
    )(*inputs)
    outs = list(outs)
    dy = outs.pop(0)
    dbias = outs.pop(0).sum(axis=0).astype(bias.dtype) if bias is not None else None
    dweights = (
        outs.pop(0).sum(axis=1, keepdims=True).astype(weights.dtype)
        if weights is not None
        else None
    )
    return dy, dbias, dweights


def _cost(inputs, out_shapes, elements: int) -> pl.CostEstimate:
    nbytes = sum(x.size * x.dtype.itemsize for x in inputs)
    nbytes += sum(s.size * jnp.dtype(s.dtype).itemsize for s in out_shapes)
    return pl.CostEstimate(flops=12 * elements, transcendentals=elements, bytes_accessed=nbytes)
