"""Special values, large magnitudes, the fp8 store beyond its range (plain and scaled),
and inputs left as they were: for XLA and every kernel backend in interpret mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DTYPES
from helpers import (
    CLAMP_TIE,
    INTERPRETED,
    VARIANTS,
    apply_dict,
    differentiable_args,
    fp8_edge_input,
    make_inputs,
    with_sums_on_the_clamp,
)

import swiglu_jax as sj
from swiglu_jax import _dispatch, testing
from swiglu_jax._options import Options


def assert_same_special_values(actual, expected):
    """Same NaN and infinity pattern; finite values close."""
    actual = testing.to_float64(actual)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-5, atol=1e-30)


SPECIALS = [np.nan, np.inf, -np.inf, 0.0, 1.0, -2.0, 50.0, -50.0, 1000.0, -1000.0]


# XLA with and without clamp and fp8 stores; each kernel backend with one of each.
SPECIAL_VALUE_CASES = [("auto", c, f) for c in (None, 3.0) for f in (False, True, "scaled")]
SPECIAL_VALUE_CASES += [
    (i, c, f) for i in INTERPRETED for c, f in ((None, True), (3.0, False), (None, "scaled"))
]


@pytest.mark.parametrize("implementation,clamp_value,fp8_input_store", SPECIAL_VALUE_CASES)
def test_nan_and_inf_propagate_as_the_formula_says(implementation, clamp_value, fp8_input_store):
    """Special values follow IEEE arithmetic of the formula, forward and backward: a NaN
    anywhere in a pair makes its output NaN; an infinite gate gives inf * sigmoid or NaN
    (-inf * 0); a clamp bounds infinities but lets NaN through, gradients included. With
    the fp8 store the backward sees the saturated input (+-inf and +-1000 as +-448); with
    the scaled one, +-inf as the row's largest finite magnitude, NaN kept."""
    specials = np.array(SPECIALS, np.float32)
    gate, up = np.meshgrid(specials, specials)
    y = jnp.asarray(np.concatenate([gate.reshape(-1, 1), up.reshape(-1, 1)], axis=-1))
    options = dict(
        clamp_value=clamp_value, fp8_input_store=fp8_input_store, implementation=implementation
    )
    out, vjp = jax.vjp(lambda y: apply_dict("plain", {"y": y}, **options), y)
    assert_same_special_values(out, testing.swiglu_forward(y, clamp_value=clamp_value))
    g = jnp.ones_like(out)
    (dy,) = vjp(g)
    expected = testing.swiglu_backward(
        g, y, clamp_value=clamp_value, fp8_input_store=fp8_input_store
    )
    assert_same_special_values(dy, expected["y"])
    if clamp_value is None:
        assert np.isnan(out[np.isnan(y).any(axis=-1)]).all()


# XLA with every variant, each kernel backend (interpreted) with the one that has them all.
IMPLEMENTATION_CASES = [("auto", v) for v in VARIANTS]
IMPLEMENTATION_CASES += [(i, "weighted_bias") for i in INTERPRETED]


@pytest.mark.parametrize("implementation,variant", IMPLEMENTATION_CASES)
def test_large_magnitudes_give_no_spurious_nan(rng, implementation, variant):
    y, bias, weights = make_inputs(rng, variant, (64,), 32, jnp.float32, scale=1e4)
    args = differentiable_args(y, bias, weights)
    out, vjp = jax.vjp(lambda a: apply_dict(variant, a, implementation=implementation), args)
    assert np.isfinite(out).all()
    assert testing.relative_error(out, testing.swiglu_forward(y, bias, weights)) < 1e-6
    g = jnp.asarray(rng.standard_normal(out.shape), jnp.float32)
    expected = testing.swiglu_backward(g, y, bias, weights)
    for name, grad in vjp(g)[0].items():
        assert np.isfinite(grad).all(), name
        assert testing.relative_error(grad, expected[name]) < 1e-5, name


@pytest.mark.parametrize("implementation", ["xla", *INTERPRETED])
def test_the_clamp_acts_on_the_float32_bias_sum(rng, implementation):
    """``y + bias`` is clamped as the ops compute it, in float32: a sum a hair above the
    clamp whose float32 rounding is the clamp itself is not clamped, so its gradient
    passes, in every implementation and in the reference (which once clamped the exact
    sum: one such element in 10^8, a relative error of 1e-4 to 1e-3 on dy and dbias)."""
    y, bias, weights = make_inputs(rng, "weighted_bias", (70,), 48, jnp.float32)
    y, bias = with_sums_on_the_clamp(y, bias)
    args = differentiable_args(y, bias, weights)
    options = {"clamp_value": CLAMP_TIE, "implementation": implementation}
    out, vjp = jax.vjp(lambda a: apply_dict("weighted_bias", a, **options), args)
    g = jnp.asarray(rng.standard_normal(out.shape), jnp.float32)
    grads = vjp(g)[0]
    expected = testing.swiglu_backward(g, y, bias, weights, clamp_value=CLAMP_TIE)
    tie = (-1, [0, 48])  # the last row's first gate and first linear element
    assert np.all(expected["y"][tie] != 0) and np.all(np.asarray(grads["y"])[tie] != 0)
    errors = testing.gradient_errors(grads, g, y, bias, weights, clamp_value=CLAMP_TIE)
    for name, (error, tolerance) in errors.items():
        assert error <= tolerance, (name, error)


def test_a_clamp_between_two_float32_acts_as_its_rounding():
    """float32(0.1) lies just above 0.1: with ``clamp_value=0.1`` it is the clamp itself,
    not beyond it, so its gradient passes, in the ops and in the reference."""
    y = jnp.full((1, 2), 0.1, jnp.float32)
    dy = jax.grad(lambda y: sj.swiglu(y, clamp_value=0.1).sum())(y)
    expected = testing.swiglu_backward(np.ones((1, 1)), y, clamp_value=0.1)["y"]
    assert np.all(expected != 0)
    np.testing.assert_allclose(np.asarray(dy, np.float64), expected, rtol=1e-6)


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


FP8_IMPLEMENTATIONS = {
    "xla": _dispatch.XLA,
    **{name: _dispatch.kernel(name.split(":")[1], interpret=True) for name in INTERPRETED},
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("implementation", FP8_IMPLEMENTATIONS)
def test_fp8_store_saturates_like_torchs_cast(implementation, dtype):
    """Beyond the e4m3 range the fp8 copy saturates to +-448 (infinities included) and NaN
    stays NaN, as ``y.to(torch.float8_e4m3fn)`` does (Megatron's store, torch >= 2.12):
    the same in every implementation (``testing.fp8_cast`` is that cast; it is checked
    against torch in test_torch_bridge.py)."""
    y = fp8_edge_input(dtype)
    forward = FP8_IMPLEMENTATIONS[implementation].forward
    _, y_fp8, _ = forward(y, None, None, Options(), save_fp8=True)
    assert y_fp8.dtype == jnp.float8_e4m3fn
    saved = np.asarray(y_fp8, np.float64)
    np.testing.assert_array_equal(saved, testing.fp8_round(y))
    assert np.nanmax(np.abs(saved)) == testing.FP8_MAX
    assert np.isnan(saved).sum() == np.isnan(np.asarray(y, np.float64)).sum()  # NaN only


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("implementation", FP8_IMPLEMENTATIONS)
def test_scaled_fp8_store_of_edge_values(implementation, dtype):
    """Each row scaled by its largest finite magnitude over 448: no finite value
    saturates, infinities become that magnitude, NaN stays NaN, an all-zero row (and one
    of infinities and NaN only) gets scale 1; bit for bit the reference's."""
    edges = np.asarray(fp8_edge_input(dtype), np.float32)
    rows = np.concatenate([edges[:2], np.zeros((1, 2, edges.shape[-1]), np.float32)])
    rows[2, 0, :3] = [np.inf, np.nan, -np.inf]
    y = jnp.asarray(rows, dtype)
    forward = FP8_IMPLEMENTATIONS[implementation].forward
    _, q, scale = forward(y, None, None, Options(), save_fp8="scaled")
    expected_q, expected_scale = testing.fp8_scaled_cast(y, "stacked")
    assert q.dtype == jnp.float8_e4m3fn and scale.dtype == jnp.float32 and scale.shape == (3, 1)
    np.testing.assert_array_equal(np.asarray(q).view(np.uint8), expected_q.view(np.uint8))
    np.testing.assert_array_equal(np.asarray(scale), expected_scale)
    finite_max = np.nanmax(np.where(np.isfinite(rows[0]), np.abs(rows[0]), 0))
    assert expected_scale[0, 0] == np.float32(np.float32(finite_max) * np.float32(1 / 448))
    assert expected_scale[2, 0] == 1.0
    restored = testing.fp8_round(y, "scaled", "stacked")
    # Values in e4m3's normal range once scaled (>= 2^-6) round by at most 2^-4.
    normal = np.isfinite(rows) & (np.abs(rows) >= 2.0**-6 * expected_scale[..., None])
    ratio = restored[normal] / rows[normal]
    assert np.all(np.abs(ratio - 1) <= 2**-4)  # nothing saturated
    np.testing.assert_array_equal(np.isnan(restored), np.isnan(rows))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("implementation", ["xla", *INTERPRETED])
def test_scaled_fp8_store_gives_no_nan_up_to_the_dtype_max(rng, implementation, dtype):
    """Rows reaching the largest finite value of the dtype (float32's included, where
    ``448 * scale`` must not overflow) differentiate without NaN or infinity."""
    biggest = float(jnp.finfo(dtype).max)
    y = rng.standard_normal((8, 2 * 16)).astype(np.float32)
    y[:, 0], y[:, 17] = biggest, -biggest
    y[1, :] = 0.0  # and a row of zeros
    y = jnp.asarray(y, dtype)
    f = lambda y: sj.swiglu(y, fp8_input_store="scaled", implementation=implementation)
    out, vjp = jax.vjp(f, y)
    (dy,) = vjp(jnp.ones_like(out))
    assert not np.isnan(np.asarray(dy, np.float32)).any()
    # Finite wherever the exact gradient fits the dtype with room to spare.
    expected = testing.swiglu_backward(np.ones(out.shape), y, fp8_input_store="scaled")["y"]
    assert np.isfinite(np.asarray(dy, np.float32)[np.abs(expected) < biggest / 2]).all()


def outlier_input(rng, rows=64, hidden=32):
    """Small values (about 1e-3) everywhere, and in every 16th row an outlier pair of
    1e4 (a gate and its linear partner): the plain cast saturates the outliers at 448
    and flushes the small values to e4m3's subnormals or zero."""
    y = 1e-3 * rng.standard_normal((rows, 2 * hidden))
    for row in range(0, rows, 16):
        column = rng.integers(hidden)
        y[row, column], y[row, hidden + column] = 1e4, -1e4
    return y.astype(np.float32)


@pytest.mark.parametrize("implementation", ["xla", *INTERPRETED])
def test_scaled_fp8_store_beats_the_plain_cast_on_outliers(rng, implementation):
    """Gradients against the exact (float64, unrounded) reference: the scaled store keeps
    e4m3's relative precision, overall and on rows without outliers; the plain cast
    loses the outliers and the small values."""
    y = jnp.asarray(outlier_input(rng))
    w = jnp.asarray(rng.uniform(0.5, 1.0, (y.shape[0], 1)), jnp.float32)
    g = jnp.asarray(rng.standard_normal((y.shape[0], y.shape[1] // 2)), jnp.float32)
    exact = testing.swiglu_backward(g, y, weights=w)
    errors = {}
    for store in (True, "scaled"):
        f = lambda y, w, s=store: sj.weighted_swiglu(
            y, w, fp8_input_store=s, implementation=implementation
        )
        dy, dw = jax.vjp(f, y, w)[1](g)
        plain_rows = np.ones(y.shape[0], bool)
        plain_rows[::16] = False  # rows without outliers
        errors[store] = (
            testing.relative_error(dy, exact["y"]),
            testing.relative_error(np.asarray(dy)[plain_rows], exact["y"][plain_rows]),
            testing.relative_error(dw, exact["weights"]),
        )
    for scaled, plain in zip(errors["scaled"], errors[True], strict=True):
        assert scaled <= 0.1, errors  # e4m3: 3 mantissa bits, 2^-4 relative rounding
        assert plain >= 10 * scaled, errors


def buffers(tree) -> set[int]:
    return {x.unsafe_buffer_pointer() for x in jax.tree.leaves(tree) if x.size}


def back(variant, g, args, **options):
    """The raw gradient function (Megatron's ``*_back``) of ``variant``."""
    y, bias, weights = args["y"], args.get("bias"), args.get("weights")
    if variant == "plain":
        return sj.swiglu_back(g, y, **options)
    if variant == "bias":
        return sj.bias_swiglu_back(g, y, bias, **options)
    return sj.weighted_swiglu_back(g, y, weights, bias=bias, **options)


@pytest.mark.parametrize("implementation,variant", IMPLEMENTATION_CASES)
def test_inputs_are_not_modified_nor_aliased(rng, implementation, variant):
    """NumPy and JAX inputs hold the same values after forward and backward (VJP, grad,
    and the raw ``*_back`` functions), and no output shares an input's buffer."""
    y, bias, weights = make_inputs(rng, variant, (5, 3), 8, jnp.float32)
    numpy_args = {k: np.array(v) for k, v in differentiable_args(y, bias, weights).items()}
    copies = {k: v.copy() for k, v in numpy_args.items()}
    options = {"implementation": implementation}
    for args in (numpy_args, {k: jnp.asarray(v) for k, v in numpy_args.items()}):
        out, vjp = jax.vjp(lambda a: apply_dict(variant, a, fp8_input_store=True, **options), args)
        g = jnp.ones_like(out)
        outputs = [out, vjp(g), back(variant, g, args, **options)]
        outputs.append(
            jax.jit(jax.grad(lambda a: jnp.sum(apply_dict(variant, a, **options))))(args)
        )
        for name, value in args.items():
            np.testing.assert_array_equal(np.asarray(value), copies[name])
        assert not buffers(outputs) & buffers(
            [a for a in args.values() if isinstance(a, jax.Array)]
        )
