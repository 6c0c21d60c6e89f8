"""The XLA implementation: the shared math on whole arrays, which XLA fuses.

Both functions work on the canonical shapes the op layer hands every implementation:
``y`` is ``(N, 2, H)`` (gate at index 0), ``bias`` is ``(2, H)`` or ``None``, ``weights``
is ``(N, 1)`` or ``None`` and the cotangent ``g`` is ``(N, H)``; unlike the kernels, they
also take several token axes in place of ``N`` (``(*L, 2, H)``), which lets XLA partition
them for any sharding of those axes. Arithmetic is float32 (float64 for float64 input)
with one rounding per output.
"""

from __future__ import annotations

import jax.numpy as jnp

from swiglu_jax import _math
from swiglu_jax._options import Options
from swiglu_jax.reference import compute_dtype


def _halves(y, bias, dtype):
    """The gate and linear halves of ``y + bias`` in ``dtype``."""
    x = y.astype(dtype)
    if bias is not None:
        x = x + bias.astype(dtype)
    return x[..., 0, :], x[..., 1, :]


def _cast(x, dtype):
    return None if x is None else x.astype(dtype)


def forward(y, bias, weights, opts: Options, *, save_fp8: bool):
    """Returns ``(out, y_fp8)``: the ``(N, H)`` output in ``y``'s dtype and, when
    ``save_fp8``, the ``float8_e4m3fn`` copy of ``y`` to save for the backward."""
    dtype = compute_dtype(y.dtype)
    out = _math.forward(*_halves(y, bias, dtype), _cast(weights, dtype), opts)
    return out.astype(y.dtype), (_math.to_fp8(y) if save_fp8 else None)


def backward(g, y, bias, weights, opts: Options, *, dy_dtype):
    """Returns ``(dy, dbias, dweights)``: ``dy`` of ``y``'s shape in ``dy_dtype``, and the
    bias and weights gradients reduced to their shapes and dtypes (``None`` when absent).

    ``y`` may be the ``float8_e4m3fn`` copy saved by the forward.
    """
    dtype = compute_dtype(dy_dtype)
    g = g.astype(dtype)
    a, b = _halves(y, bias, dtype)
    da, db, h = _math.backward(g, a, b, _cast(weights, dtype), opts)
    dx = jnp.stack([da, db], axis=-2)
    tokens = tuple(range(dx.ndim - 2))
    dbias = None if bias is None else jnp.sum(dx, axis=tokens).astype(bias.dtype)
    dweights = None
    if weights is not None:
        dweights = jnp.sum(h * g, axis=-1, keepdims=True).astype(weights.dtype)
    return dx.astype(dy_dtype), dbias, dweights
