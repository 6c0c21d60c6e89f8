"""The XLA implementation: the shared math on whole arrays, which XLA fuses.

Both functions work on the canonical shapes the op layer hands every implementation:
``y`` is ``(N, 2, H)`` (gate at index 0), ``bias`` is ``(2, H)`` or ``None``, ``weights``
is ``(N, 1)`` or ``None``, the cotangent ``g`` is ``(N, H)`` and the row scales of the
scaled fp8 store ``y_scale`` are ``(N, 1)`` float32 or ``None``; unlike the kernels, they
also take several token axes in place of ``N`` (``(*L, 2, H)``), which lets XLA partition
them for any sharding of those axes. Arithmetic is float32 (float64 for float64 input)
with one rounding per output.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from swiglu_jax import _math
from swiglu_jax._options import Options
from swiglu_jax.reference import compute_dtype


def _halves(y, y_scale, bias, dtype):
    """The gate and linear halves of ``y + bias`` in ``dtype``, ``y`` first read back
    from the scaled fp8 store where ``y_scale`` is given."""
    x = y if y_scale is None else _math.from_scaled_fp8(y, y_scale[..., None])
    x = x.astype(dtype)
    if bias is not None:
        x = x + bias.astype(dtype)
    return x[..., 0, :], x[..., 1, :]


def _cast(x, dtype):
    return None if x is None else x.astype(dtype)


def fp8_store(y, save_fp8, y_scale=None):
    """``(y_fp8, y_scale)``, what the forward saves for the backward: ``(None, None)``
    without ``save_fp8``, ``(to_fp8(y), None)`` for ``True``, and for ``"scaled"`` the
    scaled copy with its ``(*L, 1)`` float32 row scales (``y_scale`` if given, else
    computed here)."""
    if not save_fp8:
        return None, None
    if save_fp8 != "scaled":
        return _kept(_math.to_fp8(y)), None
    if y_scale is None:
        y_scale = _math.scale_from_amax(_math.row_amax(y))
    return _kept(_math.to_scaled_fp8(y, y_scale[..., None])), y_scale


def _kept(y_fp8):
    """The fp8 copy behind an optimization barrier. Where the forward and the backward
    are compiled together, XLA on GPU (with ``xla_allow_excess_precision``, on by
    default) removes the lossy round trip ``y -> float8 -> float32`` as excess precision:
    the backward then reads ``y`` itself, neither rounded as the store promises (measured
    on an H200: 2% gradient error against the fp8 store's reference) nor freed for the
    fp8 copy. The barrier keeps the copy a value of its own."""
    return lax.optimization_barrier(y_fp8)


def forward(y, bias, weights, opts: Options, *, save_fp8, y_scale=None):
    """Returns ``(out, y_fp8, y_scale)``: the ``(N, H)`` output in ``y``'s dtype and
    ``fp8_store(y, save_fp8, y_scale)``."""
    dtype = compute_dtype(y.dtype)
    out = _math.forward(*_halves(y, None, bias, dtype), _cast(weights, dtype), opts)
    return out.astype(y.dtype), *fp8_store(y, save_fp8, y_scale)


def backward(g, y, bias, weights, opts: Options, *, dy_dtype, y_scale=None):
    """Returns ``(dy, dbias, dweights)``: ``dy`` of ``y``'s shape in ``dy_dtype``, and the
    bias and weights gradients reduced to their shapes and dtypes (``None`` when absent).

    ``y`` may be the ``float8_e4m3fn`` copy saved by the forward, with its row scales
    ``y_scale`` ``(N, 1)`` when it is the scaled copy.
    """
    dtype = compute_dtype(dy_dtype)
    g = g.astype(dtype)
    a, b = _halves(y, y_scale, bias, dtype)
    da, db, h = _math.backward(g, a, b, _cast(weights, dtype), opts)
    dx = jnp.stack([da, db], axis=-2)
    tokens = tuple(range(dx.ndim - 2))
    dbias = None if bias is None else jnp.sum(dx, axis=tokens).astype(bias.dtype)
    dweights = None
    if weights is not None:
        dweights = jnp.sum(h * g, axis=-1, keepdims=True).astype(weights.dtype)
    return dx.astype(dy_dtype), dbias, dweights
