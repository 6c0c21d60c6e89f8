"""The XLA implementation: forward and backward in ``jax.numpy`` that XLA fuses.

Both functions work on the canonical shapes the op layer hands every implementation:
``y`` is ``(N, 2, H)`` (gate at index 0), ``bias`` is ``(2, H)`` or ``None``, ``weights``
is ``(N, 1)`` or ``None`` and the cotangent ``g`` is ``(N, H)``. Arithmetic is float32
(float64 for float64 input) with one rounding per output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from swiglu_jax._options import Options
from swiglu_jax.reference import compute_dtype

FP8_DTYPE = jnp.float8_e4m3fn


def _halves(y, bias, dtype):
    """The gate and linear halves of ``y + bias`` in ``dtype``, before any clamp."""
    x = y.astype(dtype)
    if bias is not None:
        x = x + bias.astype(dtype)
    return x[:, 0, :], x[:, 1, :]


def _clamp(a, b, clamp_value):
    if clamp_value is None:
        return a, b
    return jnp.minimum(a, clamp_value), jnp.clip(b, -clamp_value, clamp_value)


def forward(y, bias, weights, opts: Options, *, save_fp8: bool):
    """Returns ``(out, y_fp8)``: the ``(N, H)`` output in ``y``'s dtype and, when
    ``save_fp8``, the ``float8_e4m3fn`` copy of ``y`` to save for the backward."""
    dtype = compute_dtype(y.dtype)
    a, b = _clamp(*_halves(y, bias, dtype), opts.clamp_value)
    out = a * jax.nn.sigmoid(opts.alpha * a) * (b + opts.linear_offset)
    if weights is not None:
        out = out * weights.astype(dtype)
    return out.astype(y.dtype), (y.astype(FP8_DTYPE) if save_fp8 else None)


def backward(g, y, bias, weights, opts: Options, *, dy_dtype):
    """Returns ``(dy, dbias, dweights)``: ``dy`` of ``y``'s shape in ``dy_dtype``, and the
    bias and weights gradients reduced to their shapes and dtypes (``None`` when absent).

    ``y`` may be the ``float8_e4m3fn`` copy saved by the forward.
    """
    dtype = compute_dtype(dy_dtype)
    a_raw, b_raw = _halves(y, bias, dtype)
    a, b = _clamp(a_raw, b_raw, opts.clamp_value)
    sig = jax.nn.sigmoid(opts.alpha * a)
    act = a * sig
    linear = b + opts.linear_offset
    grad = g.astype(dtype)
    if weights is not None:
        dweights = jnp.sum(act * linear * grad, axis=-1, keepdims=True).astype(weights.dtype)
        grad = grad * weights.astype(dtype)
    else:
        dweights = None
    # d/da [a * sigmoid(alpha a)] = sigmoid(alpha a) * (1 + alpha a (1 - sigmoid(alpha a)))
    da = grad * linear * sig * (1 + opts.alpha * a * (1 - sig))
    db = grad * act
    if opts.clamp_value is not None:
        # Zero where a clamp was active; NaN is never "clamped", so it propagates.
        da = jnp.where(a_raw > opts.clamp_value, 0, da)
        db = jnp.where(jnp.abs(b_raw) > opts.clamp_value, 0, db)
    dx = jnp.stack([da, db], axis=1)
    dbias = None if bias is None else jnp.sum(dx, axis=0).astype(bias.dtype)
    return dx.astype(dy_dtype), dbias, dweights
