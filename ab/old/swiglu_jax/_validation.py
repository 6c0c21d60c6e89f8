"""Validation of the arrays every public function takes, before anything is computed.

Errors are ``TypeError`` (not an array, not floating, missing) or ``ValueError`` (a shape
that does not fit ``y``'s), and their messages start with the public function's name and
name the offending argument with its shape or dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SUPPORTED_DTYPES = tuple(np.dtype(d) for d in (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64))


def required(fn: str, name: str, x):
    if x is None:
        raise TypeError(f"{fn}: {name} is required, got None")
    return x


def float_array(fn: str, name: str, x) -> jax.Array:
    """``x`` as a JAX array of a supported floating dtype, or a ``TypeError``."""
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{fn}: {name} must be a floating-point array, got {x!r}")
    try:
        x = jnp.asarray(x)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{fn}: {name} must be a floating-point array, got {type(x).__name__}: {error}"
        ) from error
    if x.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(d.name for d in SUPPORTED_DTYPES)
        raise TypeError(
            f"{fn}: {name} must have a floating dtype ({names}), "
            f"got {name}.dtype={x.dtype} with {name}.shape={x.shape}"
        )
    return x


def lead_and_hidden(fn: str, y, layout: str, y_name: str = "y") -> tuple[tuple[int, ...], int]:
    """The token (leading) shape of ``y`` and the hidden size ``H`` of its output."""
    if layout == "stacked":
        if y.ndim < 2 or y.shape[-2] != 2 or y.shape[-1] == 0:
            raise ValueError(
                f"{fn}: {y_name} must have shape (..., 2, H) with H > 0 for layout='stacked' "
                f"(gate at index 0 of the second-to-last axis), got {y_name}.shape={y.shape}"
            )
        return y.shape[:-2], y.shape[-1]
    if y.ndim < 1 or y.shape[-1] == 0 or y.shape[-1] % 2:
        raise ValueError(
            f"{fn}: {y_name} must have an even, nonzero last axis holding [gate | up] for "
            f"layout='split', got {y_name}.shape={y.shape}"
        )
    return y.shape[:-1], y.shape[-1] // 2


def _check_shape(fn, name, x, expected, y_description: str, why: str):
    if x.shape != expected:
        raise ValueError(
            f"{fn}: {name} must have shape {expected} ({why}) for {y_description}, "
            f"got {name}.shape={x.shape}"
        )


def validated(fn: str, layout: str, y, bias=None, weights=None, g=None, *, y_name: str = "y"):
    """``(y, bias, weights, g)`` as JAX arrays (``None`` where absent), checked against
    each other's shapes; ``y_name`` is what the caller calls ``y`` (Megatron: ``input``)."""
    y = float_array(fn, y_name, y)
    lead, hidden = lead_and_hidden(fn, y, layout, y_name)
    y_description = f"{y_name}.shape={y.shape}"
    if bias is not None:
        bias = float_array(fn, "bias", bias)
        row_shape = (2, hidden) if layout == "stacked" else (2 * hidden,)
        _check_shape(fn, "bias", bias, row_shape, y_description, f"one row of {y_name}")
    if weights is not None:
        weights = float_array(fn, "weights", weights)
        _check_shape(fn, "weights", weights, (*lead, 1), y_description, "one weight per token")
    if g is not None:
        g = float_array(fn, "g", g)
        _check_shape(fn, "g", g, (*lead, hidden), y_description, "the output's shape")
    return y, bias, weights, g
