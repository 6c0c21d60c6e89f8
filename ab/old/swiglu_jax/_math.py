"""The elementwise math every implementation shares, on float32 (or float64) values.

The XLA path applies these functions to whole arrays, the Pallas kernels to the blocks
they load, so every implementation computes the same expression in the same order.
``a`` is the gate and ``b`` the linear half, bias already added, before any clamp.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from swiglu_jax._options import Options

LOG2_E = 1.4426950408889634
FP8_DTYPE = jnp.float8_e4m3fn
FP8_MAX = 448.0  # the largest finite float8_e4m3fn
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32


def to_fp8(x):
    """``x`` as ``float8_e4m3fn`` the way torch casts it (``x.to(torch.float8_e4m3fn)``,
    Megatron's fp8 input store, torch >= 2.12): round to nearest even, saturating at
    +-448 (infinities included); NaN stays NaN.

    The explicit clip makes every backend agree: XLA's and ml_dtypes' plain ``astype``
    gives NaN beyond 464, while GPU conversion instructions saturate. Written with
    comparisons, which are false for NaN, so NaN reaches the cast whatever a backend's
    ``min``/``max`` do with it.
    """
    x = jnp.where(x > FP8_MAX, FP8_MAX, x)
    x = jnp.where(x < -FP8_MAX, -FP8_MAX, x)
    return x.astype(FP8_DTYPE)


# The scaled store (``fp8_input_store="scaled"``): each row of ``y`` (both halves, one
# token) is saved as ``q = to_fp8(y / scale)`` with ``scale = amax / 448``, ``amax`` the
# row's largest finite magnitude, and read back as ``q * scale``. The row's largest value
# then lands on 448 whatever its magnitude, so nothing saturates but infinities (to
# ``+-amax``) and small values keep e4m3's relative precision. The scale is floored at
# the smallest normal float32 (no subnormal divisor, which GPUs may flush to zero), and
# is 1 for a row without a finite nonzero value. All in float32.


def finite_magnitude(x):
    """``|x|`` where finite, 0 for infinities and NaN (comparisons are false for NaN)."""
    magnitude = jnp.abs(x)
    return jnp.where(magnitude <= FLOAT32_MAX, magnitude, 0.0)


def scale_from_amax(amax):
    """The float32 scale of a row whose largest finite magnitude is ``amax``: ``amax``
    times float32 ``1 / 448`` (a product: XLA would turn a division by a constant into
    one anyway, so every backend rounds the same)."""
    return jnp.where(amax > 0, jnp.maximum(amax * (1 / FP8_MAX), FLOAT32_TINY), 1.0)


def row_amax(y):
    """``(*L, 1)``: the largest finite magnitude of each row of ``y`` ``(*L, 2, H)``."""
    return jnp.max(finite_magnitude(y.astype(jnp.float32)), axis=(-2, -1))[..., None]


def to_scaled_fp8(x, scale):
    """``x / scale`` as ``float8_e4m3fn`` (``to_fp8``'s saturating cast), in float32.

    Computed as ``x * (1 / scale)``, one reciprocal per row: XLA rewrites a division by
    a broadcast into that product, so writing it out gives every backend the same bits.
    """
    return to_fp8(x.astype(jnp.float32) * (1 / scale))


def from_scaled_fp8(q, scale):
    """The float32 values a scaled ``q`` stands for: ``q * scale``."""
    return q.astype(jnp.float32) * scale


def sigmoid(x):
    """``1 / (1 + 2^(-x log2 e))``: 0 or 1 at large magnitudes, never NaN for finite ``x``.

    Written with ``exp2`` (not ``lax.logistic``, nor ``exp``) because every Pallas backend
    lowers it, and to one hardware instruction on GPUs: ``exp`` became libdevice's
    range-reduced ``expf``, 75 more instructions per thread than the whole rest of the
    forward kernel (benchmarks/PERF_NOTES.md).
    """
    return 1 / (1 + jnp.exp2(x * -LOG2_E))


def _scaled(alpha: float, x):
    return x if alpha == 1 else alpha * x


def _offset(x, linear_offset: float):
    return x if linear_offset == 0 else x + linear_offset


def _clamped(a, b, clamp_value):
    if clamp_value is None:
        return a, b
    return jnp.minimum(a, clamp_value), jnp.clip(b, -clamp_value, clamp_value)


def forward(a, b, weights, opts: Options):
    """``act(a) * (b + linear_offset) [* weights]`` with ``act(a) = a * sigmoid(alpha a)``."""
    a, b = _clamped(a, b, opts.clamp_value)
    out = a * sigmoid(_scaled(opts.alpha, a)) * _offset(b, opts.linear_offset)
    return out if weights is None else out * weights


def backward(g, a, b, weights, opts: Options):
    """Returns ``(da, db, h)``: the gradients with respect to the gate and the linear half
    for the output cotangent ``g``, and the unweighted output ``h``, whose product with
    ``g`` summed over the hidden axis is the weights' gradient."""
    a_clamped, b_clamped = _clamped(a, b, opts.clamp_value)
    sig = sigmoid(_scaled(opts.alpha, a_clamped))
    act = a_clamped * sig
    linear = _offset(b_clamped, opts.linear_offset)
    g_out = g if weights is None else g * weights
    # d/da [a sigmoid(alpha a)] = sigmoid(alpha a) (1 + alpha a (1 - sigmoid(alpha a)))
    da = g_out * linear * sig * (1 + _scaled(opts.alpha, a_clamped) * (1 - sig))
    db = g_out * act
    if opts.clamp_value is not None:
        # Zero where a clamp was active; NaN is never "clamped", so it propagates.
        da = jnp.where(a > opts.clamp_value, 0, da)
        db = jnp.where(jnp.abs(b) > opts.clamp_value, 0, db)
    return da, db, act * linear
