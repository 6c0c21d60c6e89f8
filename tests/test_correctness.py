"""Forward and VJP of every op and option against the float64 NumPy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from conftest import DTYPES
from helpers import (
    INTERPRETED,
    LAYOUTS,
    VARIANTS,
    apply_dict,
    check_forward_and_vjp,
    differentiable_args,
    make_inputs,
    random_like,
    reference_options,
)

import swiglu_jax as sj
from swiglu_jax import testing

OPTIONS = {
    "default": {},
    "clamp": {"clamp_value": 1.5},
    "gpt_oss": {"clamp_value": 7.0, "alpha": 1.702, "linear_offset": 1.0},
    "fp8_store": {"fp8_input_store": True},
    "fp8_clamp": {"fp8_input_store": True, "clamp_value": 2.0},
    "scaled_fp8": {"fp8_input_store": "scaled"},
    "scaled_fp8_gpt_oss_offload": {
        "fp8_input_store": "scaled",
        "cpu_offload_input": True,
        "clamp_value": 7.0,
        "alpha": 1.702,
        "linear_offset": 1.0,
    },
    "offload": {"cpu_offload_input": True},
}

# (leading shape, H): one row, one column pair, odd row counts, H not a multiple of 8 or
# 128, and 3-D / 4-D inputs.
SHAPES = [((1,), 1), ((7,), 3), ((37,), 129), ((3, 5), 24), ((2, 3, 4), 5)]


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("variant", VARIANTS)
def test_options(rng, variant, dtype, layout, options):
    for lead, hidden in [((7,), 3), ((3, 5), 136)]:
        check_forward_and_vjp(rng, variant, lead, hidden, dtype, layout, options)


@pytest.mark.parametrize("lead,hidden", SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes(rng, variant, dtype, layout, lead, hidden):
    check_forward_and_vjp(rng, variant, lead, hidden, dtype, layout, {})


@pytest.mark.parametrize("y_dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("side_dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_mixed_dtypes(rng, y_dtype, side_dtype):
    """Bias and weights of another dtype than y: output in y's, gradients in their own."""
    y, bias, weights = make_inputs(
        rng, "weighted_bias", (9,), 20, y_dtype, weights_dtype=side_dtype
    )
    bias = bias.astype(side_dtype)
    args = differentiable_args(y, bias, weights)
    out, vjp = jax.vjp(lambda a: apply_dict("weighted_bias", a), args)
    assert out.dtype == y.dtype
    assert testing.relative_error(out, testing.swiglu_forward(y, bias, weights)) <= (
        testing.tolerance(y_dtype)
    )
    g = random_like(rng, out)
    grads = vjp(g)[0]
    expected = testing.swiglu_backward(g, y, bias, weights)
    for name in grads:
        assert grads[name].dtype == args[name].dtype
        assert testing.relative_error(grads[name], expected[name]) <= (
            testing.tolerance(grads[name].dtype)
        )


def test_one_rounding_at_the_end(rng):
    """bfloat16 output is the exact result rounded once, not a chain of bf16 roundings."""
    y, bias, weights = make_inputs(rng, "weighted_bias", (64,), 256, jnp.bfloat16)
    out = np.asarray(sj.weighted_swiglu(y, weights, bias=bias), np.float64)
    exact = testing.swiglu_forward(y, bias, weights)
    rounded = exact.astype(jnp.bfloat16).astype(np.float64)
    # float32 arithmetic may land on the other side of a rounding tie now and then.
    assert np.mean(out != rounded) < 0.01


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_jnp_reference_agrees_with_numpy(rng, variant, layout, options):
    """The readable jnp spec and the NumPy reference say the same thing, autodiff included."""
    y, bias, weights = make_inputs(rng, variant, (6,), 10, jnp.float32, layout=layout)
    ref_opts = reference_options({**options, "layout": layout})
    args = differentiable_args(y, bias, weights)

    def spec(a):
        return sj.swiglu_reference(a["y"], a.get("bias"), a.get("weights"), **ref_opts)

    out, vjp = jax.vjp(spec, args)
    assert testing.relative_error(out, testing.swiglu_forward(y, bias, weights, **ref_opts)) < 1e-6
    g = random_like(rng, out)
    expected = testing.swiglu_backward(g, y, bias, weights, **ref_opts)
    for name, grad in vjp(g)[0].items():
        assert testing.relative_error(grad, expected[name]) < 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "options", [{}, {"clamp_value": 1.0}, OPTIONS["gpt_oss"]], ids=["default", "clamp", "gpt_oss"]
)
def test_finite_differences_float64(rng, variant, layout, options):
    """Gradients of the ops agree with central differences in float64."""
    with jax.enable_x64(True):
        y, bias, weights = make_inputs(
            rng, variant, (4,), 6, jnp.float64, layout=layout, weights_dtype=jnp.float64
        )
        clamp = options.get("clamp_value")
        if clamp is not None:
            # Keep every pre-activation away from the clamp's kinks.
            x = np.asarray(y) + (0 if bias is None else np.asarray(bias))
            near = np.abs(np.abs(x) - clamp) < 1e-2
            y = jnp.where(near, y + 0.1, y)
        args = differentiable_args(y, bias, weights)
        f = lambda a: apply_dict(variant, a, layout=layout, **options)
        jax.test_util.check_grads(f, (args,), order=1, modes=("rev",), eps=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_back_functions_match_vjp(rng, variant):
    """Megatron's raw gradient functions give what jax.vjp of the ops gives."""
    options = {"clamp_value": 3.0, "alpha": 1.2, "linear_offset": 0.5}
    y, bias, weights = make_inputs(rng, variant, (5, 3), 12, jnp.float32)
    args = differentiable_args(y, bias, weights)
    out, vjp = jax.vjp(lambda a: apply_dict(variant, a, **options), args)
    g = random_like(rng, out)
    grads = vjp(g)[0]
    if variant == "plain":
        np.testing.assert_array_equal(sj.swiglu_back(g, y, **options), grads["y"])
    elif variant == "bias":
        dy = sj.bias_swiglu_back(g, y, bias, **options)
        np.testing.assert_array_equal(dy, grads["y"])
        np.testing.assert_allclose(dy.sum(axis=(0, 1)), grads["bias"], rtol=1e-5, atol=1e-5)
    else:
        dy, dweights = sj.weighted_swiglu_back(g, y, weights, bias=bias, **options)
        np.testing.assert_array_equal(dy, grads["y"])
        # A float32 sum in two different programs: a sum's tolerance, not bit equality.
        terms = testing.gradient_terms("weights", y.shape)
        error = testing.relative_error(dweights, grads["weights"])
        assert error <= testing.tolerance(jnp.float32, terms=terms)
        assert dweights.dtype == weights.dtype


def test_back_functions_against_numpy(rng):
    """The raw gradients in bfloat16 with float32 weights, and the stacked layout."""
    y, bias, weights = make_inputs(rng, "weighted_bias", (11,), 7, jnp.bfloat16, layout="stacked")
    g = jnp.asarray(rng.standard_normal((11, 7)), jnp.bfloat16)
    dy, dweights = sj.weighted_swiglu_back(g, y, weights, bias=bias, layout="stacked")
    expected = testing.swiglu_backward(g, y, bias, weights, layout="stacked")
    assert dy.dtype == jnp.bfloat16 and dweights.dtype == jnp.float32
    assert testing.relative_error(dy, expected["y"]) <= testing.tolerance(jnp.bfloat16)
    assert testing.relative_error(dweights, expected["weights"]) <= 1e-5
    dy = sj.swiglu_back(g, y, layout="stacked")
    assert testing.relative_error(dy, testing.swiglu_backward(g, y, layout="stacked")["y"]) <= (
        testing.tolerance(jnp.bfloat16)
    )
    dy = sj.bias_swiglu_back(g, y, bias, layout="stacked")
    expected = testing.swiglu_backward(g, y, bias, layout="stacked")["y"]
    assert testing.relative_error(dy, expected) <= testing.tolerance(jnp.bfloat16)


@pytest.mark.parametrize("options", ["default", "fp8_clamp", "gpt_oss", "scaled_fp8"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("implementation", INTERPRETED)
def test_kernels_through_the_ops(rng, implementation, variant, layout, options):
    """Each kernel backend, interpreted on this host, behind the public ops and their VJP."""
    options = {**OPTIONS[options], "implementation": implementation}
    check_forward_and_vjp(rng, variant, (37,), 72, jnp.bfloat16, layout, options)
