"""The SwiGLU family in plain ``jax.numpy``: the executable specification.

Every implementation in this package (the fused XLA path, the Pallas kernels) must agree
with these functions; their gradients are whatever ``jax.grad`` makes of them, except at
the clamp boundary, where the ops pass the gradient through (``a == L`` is not clamped)
while autodiff of ``minimum`` would split it.

Shapes: ``y`` is ``(..., 2H)`` with ``[gate | up]`` halves for ``layout="split"`` and
``(..., 2, H)`` with the gate at index 0 for ``layout="stacked"``; ``bias`` has the shape of
one row (``(2H,)`` or ``(2, H)``); ``weights`` has the output's shape with a last axis of 1.
The output is ``(..., H)`` in ``y``'s dtype, computed in float32 (float64 for float64 input).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from swiglu_jax import _validation
from swiglu_jax._options import Options


def compute_dtype(dtype) -> jnp.dtype:
    """float32, or float64 for float64 input: the precision of all arithmetic inside."""
    return jnp.promote_types(dtype, jnp.float32)


def split_halves(y: jax.Array, layout: str) -> tuple[jax.Array, jax.Array]:
    """The gate ``a`` and the linear half ``b`` of ``y``."""
    if layout == "stacked":
        return y[..., 0, :], y[..., 1, :]
    gate, up = jnp.split(y, 2, axis=-1)
    return gate, up


def swiglu_reference(
    y: jax.Array,
    bias: jax.Array | None = None,
    weights: jax.Array | None = None,
    *,
    clamp_value: float | None = None,
    alpha: float = 1.0,
    linear_offset: float = 0.0,
    layout: str = "split",
) -> jax.Array:
    """``act(a) * (b + linear_offset) [* weights]`` with ``act(a) = a * sigmoid(alpha * a)``,
    where ``a, b`` are the halves of ``y [+ bias]``, clamped when ``clamp_value`` is set.

    Raises ``TypeError`` and ``ValueError`` for bad input, as :func:`swiglu_jax.swiglu`.
    """
    Options(clamp_value, alpha, linear_offset, layout=layout)  # validates them
    y, bias, weights, _ = _validation.validated("swiglu_reference", layout, y, bias, weights)
    dtype = compute_dtype(y.dtype)
    x = y.astype(dtype)
    if bias is not None:
        x = x + bias.astype(dtype)
    a, b = split_halves(x, layout)
    if clamp_value is not None:
        a = jnp.minimum(a, clamp_value)
        b = jnp.clip(b, -clamp_value, clamp_value)
    out = a * jax.nn.sigmoid(alpha * a) * (b + linear_offset)
    if weights is not None:
        out = out * weights.astype(dtype)
    return out.astype(y.dtype)
