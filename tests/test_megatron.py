"""Megatron-Core's entry points: bias_swiglu_impl and weighted_bias_swiglu_impl."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import swiglu_jax as sj
from swiglu_jax import testing

SHAPES = [(13, 48), (4, 3, 48)]


@pytest.mark.parametrize("fp8", [True, "scaled"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("clamp_value", [None, 1.0])
def test_bias_swiglu_impl(rng, shape, with_bias, clamp_value, fp8):
    y = jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
    bias = jnp.asarray(rng.standard_normal(shape[-1]), jnp.bfloat16) if with_bias else None
    out, vjp = jax.vjp(lambda y, b: sj.bias_swiglu_impl(y, b, fp8, False, clamp_value), y, bias)
    assert out.shape == (*shape[:-1], shape[-1] // 2) and out.dtype == jnp.bfloat16
    assert testing.relative_error(
        out, testing.swiglu_forward(y, bias, clamp_value=clamp_value)
    ) <= testing.tolerance(jnp.bfloat16)
    g = jnp.asarray(rng.standard_normal(out.shape), jnp.bfloat16)
    dy, dbias = vjp(g)
    expected = testing.swiglu_backward(g, y, bias, clamp_value=clamp_value, fp8_input_store=fp8)
    assert testing.relative_error(dy, expected["y"]) <= testing.tolerance(jnp.bfloat16)
    if with_bias:
        assert dbias.shape == bias.shape
        assert testing.relative_error(dbias, expected["bias"]) <= testing.tolerance(jnp.bfloat16)
    else:
        assert dbias is None


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("flat_weights", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_weighted_bias_swiglu_impl(rng, shape, flat_weights, with_bias):
    """Weights as input.shape[:-1] + (1,) or Megatron's flattened (tokens, 1); with bias too."""
    y = jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
    tokens = int(np.prod(shape[:-1]))
    w_shape = (tokens, 1) if flat_weights else (*shape[:-1], 1)
    weights = jnp.asarray(rng.uniform(size=w_shape), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(shape[-1]), jnp.bfloat16) if with_bias else None
    out, vjp = jax.vjp(
        lambda y, b, w: sj.weighted_bias_swiglu_impl(y, b, w, "scaled", clamp_value=2.0),
        y,
        bias,
        weights,
    )
    weights_nd = weights.reshape(*shape[:-1], 1)
    expected_out = testing.swiglu_forward(y, bias, weights_nd, clamp_value=2.0)
    assert out.shape == expected_out.shape and out.dtype == jnp.bfloat16
    assert testing.relative_error(out, expected_out) <= testing.tolerance(jnp.bfloat16)
    g = jnp.asarray(rng.standard_normal(out.shape), jnp.bfloat16)
    dy, dbias, dweights = vjp(g)
    expected = testing.swiglu_backward(
        g, y, bias, weights_nd, clamp_value=2.0, fp8_input_store="scaled"
    )
    assert dweights.shape == w_shape and dweights.dtype == jnp.float32
    assert testing.relative_error(dweights.reshape(weights_nd.shape), expected["weights"]) < 1e-5
    assert testing.relative_error(dy, expected["y"]) <= testing.tolerance(jnp.bfloat16)
    if with_bias:
        assert testing.relative_error(dbias, expected["bias"]) <= testing.tolerance(jnp.bfloat16)


def test_impl_matches_the_ops(rng):
    y = jnp.asarray(rng.standard_normal((6, 2, 10)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(10), jnp.float32)
    np.testing.assert_array_equal(sj.bias_swiglu_impl(y, bias), sj.bias_swiglu(y, bias))
    np.testing.assert_array_equal(sj.bias_swiglu_impl(y, None), sj.swiglu(y))
    options = {"alpha": 1.702, "linear_offset": 1.0, "clamp_value": 7.0}
    np.testing.assert_array_equal(
        sj.bias_swiglu_impl(y, bias, **options), sj.bias_swiglu(y, bias, **options)
    )
