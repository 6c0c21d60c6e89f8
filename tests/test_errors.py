"""Every bad input gets a clear error that names the argument and its shape or value."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import swiglu_jax as sj

Y = jnp.ones((3, 8), jnp.float32)
STACKED = jnp.ones((3, 2, 4), jnp.float32)
G = jnp.ones((3, 4), jnp.float32)
W = jnp.ones((3, 1), jnp.float32)
B = jnp.ones((8,), jnp.float32)

CASES = {
    # y
    "odd last axis": (lambda: sj.swiglu(jnp.ones((3, 7))), ValueError, r"y.shape=\(3, 7\)"),
    "empty last axis": (lambda: sj.swiglu(jnp.ones((3, 0))), ValueError, r"y.shape=\(3, 0\)"),
    "scalar y": (lambda: sj.swiglu(jnp.float32(1)), ValueError, r"y.shape=\(\)"),
    "stacked axis not 2": (
        lambda: sj.swiglu(jnp.ones((3, 3, 4)), layout="stacked"),
        ValueError,
        r"\(\.\.\., 2, H\).*y.shape=\(3, 3, 4\)",
    ),
    "stacked 1-D": (
        lambda: sj.swiglu(jnp.ones((4,)), layout="stacked"),
        ValueError,
        r"y.shape=\(4,\)",
    ),
    "integer y": (
        lambda: sj.swiglu(jnp.ones((3, 8), jnp.int32)),
        TypeError,
        r"y.dtype=int32 with y.shape=\(3, 8\)",
    ),
    "bool y": (lambda: sj.swiglu(np.ones((3, 8), bool)), TypeError, r"y.dtype=bool"),
    "complex y": (
        lambda: sj.swiglu(np.ones((3, 8), np.complex64)),
        TypeError,
        r"y.dtype=complex64",
    ),
    "fp8 y": (
        lambda: sj.swiglu(jnp.ones((3, 8), jnp.float8_e4m3fn)),
        TypeError,
        r"y.dtype=float8_e4m3fn",
    ),
    "None y": (lambda: sj.swiglu(None), TypeError, r"y must be a floating-point array"),
    "string y": (lambda: sj.swiglu("abc"), TypeError, r"y must be a floating-point array"),
    # bias
    "bias too long": (
        lambda: sj.bias_swiglu(Y, jnp.ones((9,))),
        ValueError,
        r"bias must have shape \(8,\).*y.shape=\(3, 8\).*bias.shape=\(9,\)",
    ),
    "bias per token": (
        lambda: sj.bias_swiglu(Y, jnp.ones((3, 8))),
        ValueError,
        r"bias.shape=\(3, 8\)",
    ),
    "bias split-shaped for stacked": (
        lambda: sj.bias_swiglu(STACKED, jnp.ones((8,)), layout="stacked"),
        ValueError,
        r"bias must have shape \(2, 4\).*bias.shape=\(8,\)",
    ),
    "integer bias": (
        lambda: sj.bias_swiglu(Y, jnp.ones((8,), jnp.int32)),
        TypeError,
        r"bias.dtype=int32",
    ),
    "missing bias": (lambda: sj.bias_swiglu(Y, None), TypeError, r"bias is required"),
    "weights with bias of wrong shape": (
        lambda: sj.weighted_swiglu(Y, W, bias=jnp.ones((4,))),
        ValueError,
        r"bias.shape=\(4,\)",
    ),
    # weights
    "weights without trailing 1": (
        lambda: sj.weighted_swiglu(Y, jnp.ones((3,))),
        ValueError,
        r"weights must have shape \(3, 1\).*weights.shape=\(3,\)",
    ),
    "weights per feature": (
        lambda: sj.weighted_swiglu(Y, jnp.ones((3, 4))),
        ValueError,
        r"weights.shape=\(3, 4\)",
    ),
    "integer weights": (
        lambda: sj.weighted_swiglu(Y, jnp.ones((3, 1), jnp.int32)),
        TypeError,
        r"weights.dtype=int32",
    ),
    "missing weights": (lambda: sj.weighted_swiglu(Y, None), TypeError, r"weights is required"),
    # g in the raw gradient functions
    "g of wrong shape": (
        lambda: sj.swiglu_back(jnp.ones((3, 8)), Y),
        ValueError,
        r"g must have shape \(3, 4\).*g.shape=\(3, 8\)",
    ),
    "integer g": (
        lambda: sj.swiglu_back(jnp.ones((3, 4), jnp.int32), Y),
        TypeError,
        r"g.dtype=int32",
    ),
    "bias_back wrong bias": (
        lambda: sj.bias_swiglu_back(G, Y, jnp.ones((3,))),
        ValueError,
        r"bias.shape=\(3,\)",
    ),
    "weighted_back wrong weights": (
        lambda: sj.weighted_swiglu_back(G, Y, jnp.ones((1, 3))),
        ValueError,
        r"weights.shape=\(1, 3\)",
    ),
    # options
    "clamp zero": (lambda: sj.swiglu(Y, clamp_value=0), ValueError, r"clamp_value.*got 0"),
    "clamp negative": (
        lambda: sj.swiglu(Y, clamp_value=-1.0),
        ValueError,
        r"clamp_value.*got -1.0",
    ),
    "clamp nan": (
        lambda: sj.swiglu(Y, clamp_value=float("nan")),
        ValueError,
        r"clamp_value.*got nan",
    ),
    "clamp inf": (
        lambda: sj.swiglu(Y, clamp_value=float("inf")),
        ValueError,
        r"clamp_value.*got inf",
    ),
    "clamp string": (lambda: sj.swiglu(Y, clamp_value="7"), TypeError, r"clamp_value.*'7'"),
    "clamp bool": (lambda: sj.swiglu(Y, clamp_value=True), TypeError, r"clamp_value.*True"),
    "clamp array": (
        lambda: sj.swiglu(Y, clamp_value=jnp.ones(())),
        TypeError,
        r"clamp_value must be a static Python real number",
    ),
    "clamp tracer": (
        lambda: jax.jit(lambda c: sj.swiglu(Y, clamp_value=c))(1.0),
        TypeError,
        r"clamp_value must be a static Python real number",
    ),
    "alpha nan": (lambda: sj.swiglu(Y, alpha=float("nan")), ValueError, r"alpha must be finite"),
    "alpha None": (lambda: sj.swiglu(Y, alpha=None), TypeError, r"alpha.*None"),
    "offset inf": (
        lambda: sj.swiglu(Y, linear_offset=float("-inf")),
        ValueError,
        r"linear_offset must be finite",
    ),
    "fp8 flag not bool": (
        lambda: sj.swiglu(Y, fp8_input_store=1),
        TypeError,
        r"fp8_input_store must be a Python bool",
    ),
    "offload flag not bool": (
        lambda: sj.swiglu(Y, cpu_offload_input="yes"),
        TypeError,
        r"cpu_offload_input must be a Python bool",
    ),
    "unknown layout": (
        lambda: sj.swiglu(Y, layout="interleaved"),
        ValueError,
        r"layout must be one of \('split', 'stacked'\), got 'interleaved'",
    ),
    "layout not a string": (lambda: sj.swiglu(Y, layout=2), ValueError, r"layout.*got 2"),
    "unknown implementation": (
        lambda: sj.swiglu(Y, implementation="cuda"),
        ValueError,
        r"implementation must be None or one of .*got 'cuda'",
    ),
    "back unknown implementation": (
        lambda: sj.swiglu_back(G, Y, implementation="triton"),
        ValueError,
        r"implementation.*'triton'",
    ),
    # Megatron's entry points
    "impl 1-D input": (
        lambda: sj.bias_swiglu_impl(jnp.ones((8,)), None),
        AssertionError,
        r"input must be 2-D .* or 3-D .*got 1-D input of shape \(8,\)",
    ),
    "impl 4-D input": (
        lambda: sj.bias_swiglu_impl(jnp.ones((2, 2, 2, 8)), B),
        AssertionError,
        r"bias_swiglu_impl: .*got 4-D input of shape \(2, 2, 2, 8\)",
    ),
    "weighted impl 4-D input": (
        lambda: sj.weighted_bias_swiglu_impl(jnp.ones((2, 2, 2, 8)), None, W),
        AssertionError,
        r"weighted_bias_swiglu_impl: .*got 4-D",
    ),
    "weighted impl weights": (
        lambda: sj.weighted_bias_swiglu_impl(jnp.ones((2, 3, 8)), None, jnp.ones((3, 2))),
        ValueError,
        r"weights must have shape \(2, 3, 1\) or \(6, 1\).*weights.shape=\(3, 2\)",
    ),
    "impl bad clamp": (
        lambda: sj.bias_swiglu_impl(Y, B, clamp_value=-2),
        ValueError,
        r"clamp_value",
    ),
    "impl odd last axis": (
        lambda: sj.bias_swiglu_impl(jnp.ones((3, 5)), None),
        ValueError,
        r"y.shape=\(3, 5\)",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input(case):
    call, error, message = case
    with pytest.raises(error, match=message):
        call()


def test_errors_name_the_function():
    with pytest.raises(ValueError, match=r"^weighted_swiglu_back: "):
        sj.weighted_swiglu_back(G, Y, jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"^bias_swiglu: "):
        sj.bias_swiglu(Y, jnp.ones((3,)))
