"""Special values, large magnitudes, and inputs left as they were."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DTYPES
from helpers import VARIANTS, apply_dict, differentiable_args, make_inputs

from swiglu_jax import testing


def assert_same_special_values(actual, expected):
    """Same NaN and infinity pattern; finite values close."""
    actual = testing.to_float64(actual)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("clamp_value", [None, 3.0])
def test_nan_and_inf_propagate_as_the_formula_says(clamp_value):
    """Special values follow IEEE arithmetic of the formula, forward and backward: a NaN
    anywhere in a pair makes its output NaN; an infinite gate gives inf * sigmoid or NaN
    (-inf * 0); a clamp bounds infinities but lets NaN through, gradients included."""
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, -2.0, 50.0, -50.0], np.float32)
    gate, up = np.meshgrid(specials, specials)
    y = jnp.asarray(np.concatenate([gate.reshape(-1, 1), up.reshape(-1, 1)], axis=-1))
    f = lambda y: apply_dict("plain", {"y": y}, clamp_value=clamp_value)
    out, vjp = jax.vjp(f, y)
    assert_same_special_values(out, testing.swiglu_forward(y, clamp_value=clamp_value))
    g = jnp.ones_like(out)
    (dy,) = vjp(g)
    assert_same_special_values(dy, testing.swiglu_backward(g, y, clamp_value=clamp_value)["y"])
    if clamp_value is None:
        assert np.isnan(out[np.isnan(y).any(axis=-1)]).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_large_magnitudes_give_no_spurious_nan(rng, variant):
    y, bias, weights = make_inputs(rng, variant, (64,), 32, jnp.float32, scale=1e4)
    args = differentiable_args(y, bias, weights)
    out, vjp = jax.vjp(lambda a: apply_dict(variant, a), args)
    assert np.isfinite(out).all()
    assert testing.relative_error(out, testing.swiglu_forward(y, bias, weights)) < 1e-6
    g = jnp.asarray(rng.standard_normal(out.shape), jnp.float32)
    expected = testing.swiglu_backward(g, y, bias, weights)
    for name, grad in vjp(g)[0].items():
        assert np.isfinite(grad).all(), name
        assert testing.relative_error(grad, expected[name]) < 1e-5, name


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_saturating_sigmoid(dtype):
    """Far from zero the gate is 0 or the identity, its derivative 0 or 1, exactly."""
    big = float(jnp.finfo(dtype).max) / 4
    y = jnp.asarray([[-big, 1.0], [big, 1.0], [-200.0, 1.0], [200.0, 1.0]], dtype)
    out, vjp = jax.vjp(lambda y: apply_dict("plain", {"y": y}), y)
    np.testing.assert_array_equal(
        np.asarray(out, np.float64)[:, 0], [0.0, np.float64(jnp.asarray(big, dtype)), 0.0, 200.0]
    )
    (dy,) = vjp(jnp.ones_like(out))
    np.testing.assert_array_equal(np.asarray(dy, np.float64)[:, 0], [0.0, 1.0, 0.0, 1.0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_inputs_are_not_modified(rng, variant):
    """NumPy and JAX inputs hold the same values after forward and backward."""
    y, bias, weights = make_inputs(rng, variant, (5, 3), 8, jnp.float32)
    numpy_args = {k: np.array(v) for k, v in differentiable_args(y, bias, weights).items()}
    copies = {k: v.copy() for k, v in numpy_args.items()}
    for args in (numpy_args, {k: jnp.asarray(v) for k, v in numpy_args.items()}):
        out, vjp = jax.vjp(lambda a: apply_dict(variant, a, fp8_input_store=True), args)
        vjp(jnp.ones_like(out))
        jax.jit(jax.grad(lambda a: jnp.sum(apply_dict(variant, a))))(args)
        for name, value in args.items():
            np.testing.assert_array_equal(np.asarray(value), copies[name])
