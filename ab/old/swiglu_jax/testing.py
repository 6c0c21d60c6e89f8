"""An independent float64 NumPy reference and the tolerances the tests hold us to.

Written from the formulas, not from ``swiglu_jax.reference``: the forward, and the
backward with its analytic derivative, so that a mistake shared by the JAX code and its
autodiff cannot hide. Used by the test suite and the demo.

Two steps follow the ops' precision (float32, float64 for float64 input), as the README
documents: ``y + bias`` is rounded to it, and ``clamp_value`` is compared in it. The
clamp's gradient mask is a step, so on the boundary only the ops' own rounding agrees.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

# Largest relative norm error ||actual - expected|| / ||expected|| allowed per dtype of
# the computed array: a few roundings to the dtype, with room for float32 reductions.
FLOAT32_EPS = float(np.finfo(np.float32).eps)
TOLERANCES = {
    "float64": 1e-12,
    "float32": 5e-6,
    "float16": 1e-3,
    "bfloat16": 5e-3,
}


def tolerance(dtype, *, terms: int = 1) -> float:
    """The tolerance for arrays of ``dtype`` whose elements each sum ``terms`` float32
    products (the bias gradient sums over rows, the weights gradient over the hidden
    axis): float32 rounding in a sum grows like ``sqrt(terms)``."""
    return max(TOLERANCES[np.dtype(dtype).name], 4 * FLOAT32_EPS * math.sqrt(terms))


def gradient_terms(name: str, y_shape, layout: str = "split") -> int:
    """How many terms each element of the gradient ``name`` ("y", "bias", "weights") sums."""
    hidden = y_shape[-1] if layout == "stacked" else y_shape[-1] // 2
    rows = math.prod(y_shape[:-2] if layout == "stacked" else y_shape[:-1])
    return {"y": 1, "bias": rows, "weights": hidden}[name]


def to_float64(x) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


def relative_error(actual, expected, scale=None) -> float:
    """``||actual - expected|| / ||scale||`` in float64, ``scale`` defaulting to
    ``expected`` (absolute if the norm is 0). A sum's ``scale`` is the sum of its terms'
    magnitudes (``swiglu_backward(..., magnitudes=True)``): float32 rounding in a sum is
    relative to those, not to a sum that cancels to near zero."""
    actual, expected = to_float64(actual), to_float64(expected)
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {actual.shape} vs {expected.shape}")
    scale = np.linalg.norm(expected if scale is None else to_float64(scale))
    error = np.linalg.norm(actual - expected)
    return float(error / scale) if scale > 0 else float(error)


def round_to(x, dtype) -> np.ndarray:
    """``x`` rounded once to ``dtype``, as the ops store their float32 results, back in
    float64: the reference for a tolerance relative to a norm, which would otherwise
    count ``dtype``'s underflow (float16 subnormals) as error when all values are tiny."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return np.asarray(x).astype(np.dtype(dtype)).astype(np.float64)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow for large ``|x|``."""
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _sum_precision(y) -> type:
    """The precision in which the ops add the bias to ``y``: float32, or float64 for
    float64 ``y`` (their compute precision)."""
    return np.float64 if np.asarray(y).dtype == np.float64 else np.float32


def _halves(y, bias, layout, precision=None):
    """The gate and linear halves of ``y + bias`` in float64, the sum rounded once to
    ``precision`` (default ``_sum_precision(y)``) as the ops round it.

    Everything after the sum is float64, but the sum itself must be the ops' own: the
    clamp's gradient mask is a step, and a float64 sum a hair above ``clamp_value``
    whose float32 rounding is ``clamp_value`` itself (about one element in 10^8 for
    normal inputs near a clamp of 3) would move a whole gradient term between clamped
    and free, a relative error of 1e-4 to 1e-3 in ``dy`` and ``dbias`` of a
    1000 x 5120 input.
    """
    precision = _sum_precision(y) if precision is None else precision
    x = to_float64(y)
    if bias is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            x = x.astype(precision) + to_float64(bias).astype(precision)
        x = x.astype(np.float64)
    if layout == "stacked":
        return x[..., 0, :], x[..., 1, :]
    h = x.shape[-1] // 2
    return x[..., :h], x[..., h:]


def _clamp_in(precision, clamp_value) -> float:
    """``clamp_value`` as the ops compare with it: rounded to their precision."""
    with np.errstate(over="ignore"):
        return float(precision(clamp_value))


FP8_MAX = 448.0


def fp8_cast(y) -> np.ndarray:
    """``y`` as ``float8_e4m3fn`` the way torch casts it (Megatron's fp8 input store,
    torch >= 2.12): round to nearest even, saturating at +-448 (infinities included),
    NaN kept. (ml_dtypes' own cast gives NaN beyond 464: hence the clip.)"""
    with np.errstate(invalid="ignore"):  # signalling NaNs
        y = np.asarray(y).astype(np.float64)
        y = np.where(y > FP8_MAX, FP8_MAX, np.where(y < -FP8_MAX, -FP8_MAX, y))
        return y.astype(ml_dtypes.float8_e4m3fn)


def fp8_scaled_cast(y, layout: str = "split") -> tuple[np.ndarray, np.ndarray]:
    """``(q, scale)``: ``y`` through the scaled fp8 store (``fp8_input_store="scaled"``),
    in float32 arithmetic as the ops do it. ``scale`` holds one float32 per row (``(...,
    1)``): the row's largest finite magnitude times float32 ``1 / 448``, at least the
    smallest normal float32, 1 for a row without a finite nonzero value; ``q =
    fp8_cast(y * (1 / scale))``.
    A row is the last axis of the split layout, the last two of the stacked one."""
    axes = (-2, -1) if layout == "stacked" else (-1,)
    with np.errstate(invalid="ignore"):
        y = np.asarray(y).astype(np.float32)
        magnitude = np.abs(y)
        amax = np.where(magnitude <= np.finfo(np.float32).max, magnitude, 0).max(axis=axes)
        amax = amax.astype(np.float32)
        scale = np.maximum(amax * np.float32(1 / FP8_MAX), np.finfo(np.float32).tiny)
        scale = np.where(amax > 0, scale, np.float32(1)).astype(np.float32)[..., None]
        expanded = scale[..., None] if layout == "stacked" else scale
        return fp8_cast(y * (np.float32(1) / expanded)), scale


def fp8_round(y, fp8_input_store=True, layout: str = "split") -> np.ndarray:
    """``y`` through the fp8 input store (``True`` or ``"scaled"``) and back, in float64
    (the scaled store's product ``q * scale`` rounded to float32, as the ops compute it)."""
    if fp8_input_store != "scaled":
        return fp8_cast(y).astype(np.float64)
    q, scale = fp8_scaled_cast(y, layout)
    if layout == "stacked":
        scale = scale[..., None]
    return (q.astype(np.float32) * scale).astype(np.float64)


def swiglu_forward(
    y,
    bias=None,
    weights=None,
    *,
    clamp_value=None,
    alpha=1.0,
    linear_offset=0.0,
    layout="split",
) -> np.ndarray:
    """The forward of every op in float64: ``(..., H)``."""
    precision = _sum_precision(y)
    a, b = _halves(y, bias, layout, precision)
    if clamp_value is not None:
        clamp_value = _clamp_in(precision, clamp_value)
        a = np.minimum(a, clamp_value)
        b = np.clip(b, -clamp_value, clamp_value)
    with np.errstate(invalid="ignore", over="ignore"):
        out = a * sigmoid(alpha * a) * (b + linear_offset)
        if weights is not None:
            out = out * to_float64(weights)
    return out


def swiglu_backward(
    g,
    y,
    bias=None,
    weights=None,
    *,
    clamp_value=None,
    alpha=1.0,
    linear_offset=0.0,
    layout="split",
    fp8_input_store=False,
    magnitudes=False,
) -> dict[str, np.ndarray]:
    """The gradients in float64: ``{"y", "bias", "weights"}`` (the last two when given).

    With ``fp8_input_store`` (``True`` or ``"scaled"``) the derivative is taken at
    ``fp8_round(y, fp8_input_store, layout)``, as the ops do. With ``magnitudes`` the
    bias and weights gradients sum their terms' magnitudes instead: the ``scale`` of
    their ``relative_error``.
    """
    term = np.abs if magnitudes else np.asarray
    precision = _sum_precision(y)
    if fp8_input_store:
        y = fp8_round(y, fp8_input_store, layout)
    a, b = _halves(y, bias, layout, precision)
    g = to_float64(g)
    with np.errstate(invalid="ignore", over="ignore"):
        if clamp_value is not None:
            clamp_value = _clamp_in(precision, clamp_value)
            a_free, b_free = ~(a > clamp_value), ~(np.abs(b) > clamp_value)
            a = np.minimum(a, clamp_value)
            b = np.clip(b, -clamp_value, clamp_value)
        s = sigmoid(alpha * a)
        swish = a * s
        grads = {}
        if weights is not None:
            grads["weights"] = np.sum(term(swish * (b + linear_offset) * g), axis=-1, keepdims=True)
            g = g * to_float64(weights)
        da = g * (b + linear_offset) * (s + alpha * a * s * (1 - s))
        db = g * swish
    if clamp_value is not None:
        da, db = np.where(a_free, da, 0.0), np.where(b_free, db, 0.0)
    if layout == "stacked":
        dy = np.stack([da, db], axis=-2)
    else:
        dy = np.concatenate([da, db], axis=-1)
    grads["y"] = dy
    if bias is not None:
        grads["bias"] = term(dy).reshape(-1, *np.shape(bias)).sum(axis=0)
    return grads


def gradient_errors(grads, g, y, bias=None, weights=None, **options) -> dict[str, tuple]:
    """``{name: (error, tolerance)}`` for each of ``grads`` ("y", "bias", "weights", as
    NumPy-convertible arrays) against the float64 reference, ``options`` as
    ``swiglu_backward`` takes them. Each error is relative to the reference rounded to
    the gradient's dtype, a reduced gradient's to its terms' magnitudes; the tolerance
    is the dtype's, or float32 rounding in a sum of ``gradient_terms`` terms."""
    expected = swiglu_backward(g, y, bias, weights, **options)
    scales = swiglu_backward(g, y, bias, weights, magnitudes=True, **options)
    layout = options.get("layout", "split")
    errors = {}
    for name, grad in grads.items():
        dtype = np.asarray(grad).dtype
        error = relative_error(grad, round_to(expected[name], dtype), scales[name])
        terms = gradient_terms(name, np.shape(y), layout)
        errors[name] = (error, tolerance(dtype, terms=terms))
    return errors
