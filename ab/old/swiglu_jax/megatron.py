"""Megatron-Core's entry points (``core.fusions.fused_bias_swiglu``) with its contract.

``input`` is ``[tokens, 2H]`` or ``[s, b, 2H]`` (any other rank is an ``AssertionError``,
as in Megatron) and ``bias`` may be ``None``. Beyond Megatron: the weighted op takes a bias
too, both take ``alpha``/``linear_offset``/``implementation`` keywords, and
``fp8_input_store`` may be ``"scaled"`` (see :func:`swiglu_jax.swiglu`).
"""

from __future__ import annotations

import math

import jax

from swiglu_jax import _validation
from swiglu_jax._options import Fp8Store, Options
from swiglu_jax.ops import forward


def check_rank(fn: str, input) -> tuple[int, ...]:
    """Megatron's contract for its ``*_impl`` entry points (JAX arrays or torch tensors):
    2-D or 3-D ``input``, else an ``AssertionError`` naming ``fn``; returns the shape."""
    shape = tuple(input.shape)
    if len(shape) not in (2, 3):
        # Raised, not asserted, so that `python -O` keeps Megatron's contract.
        raise AssertionError(
            f"{fn}: input must be 2-D [tokens, 2H] or 3-D [s, b, 2H], "
            f"got {len(shape)}-D input of shape {shape}"
        )
    return shape


def bias_swiglu_impl(
    input,
    bias,
    fp8_input_store: Fp8Store = False,
    cpu_offload_input: bool = False,
    clamp_value: float | None = None,
    *,
    alpha: float = 1.0,
    linear_offset: float = 0.0,
    implementation: str | None = None,
) -> jax.Array:
    """``swiglu(input [+ bias])`` for 2-D or 3-D ``input``; ``bias`` is ``(2H,)`` or ``None``.

    Raises:
      AssertionError: ``input`` is not 2-D or 3-D.
      TypeError, ValueError, NotImplementedError: as :func:`swiglu_jax.swiglu`.
    """
    fn = "bias_swiglu_impl"
    input = _validation.float_array(fn, "input", input)
    check_rank(fn, input)
    opts = Options(
        clamp_value,
        alpha,
        linear_offset,
        fp8_input_store,
        cpu_offload_input,
        implementation=implementation,
    )
    return forward(fn, input, bias, None, opts, y_name="input")


def weighted_bias_swiglu_impl(
    input,
    bias,
    weights,
    fp8_input_store: Fp8Store = False,
    clamp_value: float | None = None,
    *,
    cpu_offload_input: bool = False,
    alpha: float = 1.0,
    linear_offset: float = 0.0,
    implementation: str | None = None,
) -> jax.Array:
    """``swiglu(input [+ bias]) * weights`` for 2-D or 3-D ``input``.

    ``weights`` holds one weight per token: ``input.shape[:-1] + (1,)``, or ``(tokens, 1)``
    with ``tokens`` the product of ``input.shape[:-1]`` (Megatron's flattened form). Its
    gradient comes back in the shape it was given.

    Raises:
      AssertionError: ``input`` is not 2-D or 3-D.
      ValueError: ``weights`` has neither accepted shape.
      TypeError, ValueError, NotImplementedError: as :func:`swiglu_jax.weighted_swiglu`.
    """
    fn = "weighted_bias_swiglu_impl"
    input = _validation.float_array(fn, "input", input)
    shape = check_rank(fn, input)
    weights = _validation.float_array(fn, "weights", _validation.required(fn, "weights", weights))
    token_shape, tokens = (*shape[:-1], 1), math.prod(shape[:-1])
    if weights.shape == (tokens, 1):
        weights = weights.reshape(token_shape)
    elif weights.shape != token_shape:
        raise ValueError(
            f"{fn}: weights must have shape {token_shape} or {(tokens, 1)} (one weight per "
            f"token) for input.shape={shape}, got weights.shape={weights.shape}"
        )
    opts = Options(
        clamp_value,
        alpha,
        linear_offset,
        fp8_input_store,
        cpu_offload_input,
        implementation=implementation,
    )
    return forward(fn, input, bias, weights, opts, y_name="input")
