"""jit, vmap, grad, remat and export through the ops; what the forward saves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import VARIANTS, apply, apply_dict, differentiable_args, exported_text, make_inputs

from swiglu_jax import testing


def loss(variant, **options):
    def f(args):
        out = apply_dict(variant, args, **options)
        return jnp.sum(out.astype(jnp.float32) * jnp.cos(out.astype(jnp.float32)))

    return f


@pytest.mark.parametrize("variant", VARIANTS)
def test_jit_matches_eager(rng, variant):
    y, bias, weights = make_inputs(rng, variant, (6, 2), 40, jnp.bfloat16)
    args = differentiable_args(y, bias, weights)
    f = loss(variant, clamp_value=2.0, fp8_input_store=True)
    eager = jax.grad(f)(args)
    for transformed in (jax.jit(jax.grad(f)), jax.grad(jax.jit(f))):
        for name, grad in transformed(args).items():
            if name == "y":  # elementwise: the same code, the same bits
                np.testing.assert_array_equal(grad, eager[name])
            else:  # sums, which XLA may order differently in different programs
                terms = testing.gradient_terms(name, y.shape)
                tolerance = testing.tolerance(grad.dtype, terms=terms)
                assert testing.relative_error(grad, eager[name]) <= tolerance, name


@pytest.mark.parametrize("variant", VARIANTS)
def test_remat(rng, variant):
    """Under jax.checkpoint the forward is recomputed; the gradients stay the same."""
    y, bias, weights = make_inputs(rng, variant, (8,), 24, jnp.float32)
    args = differentiable_args(y, bias, weights)
    f = loss(variant, alpha=1.702, linear_offset=1.0, clamp_value=7.0)
    plain = jax.jit(jax.grad(f))(args)
    for policy in (None, jax.checkpoint_policies.nothing_saveable):
        rematted = jax.jit(jax.grad(jax.checkpoint(f, policy=policy)))(args)
        for name, grad in rematted.items():
            # Same math; XLA may order the float32 sums of the bias and weights
            # gradients differently in the two programs (seen: 6e-6 on one element).
            terms = testing.gradient_terms(name, y.shape)
            error = testing.relative_error(grad, plain[name])
            assert error <= testing.tolerance(jnp.float32, terms=terms), (name, error)


@pytest.mark.parametrize("variant", VARIANTS)
def test_vmap(rng, variant):
    """vmap over a batch axis equals the op on the stacked batch, gradients included."""
    y, bias, weights = make_inputs(rng, variant, (3, 5), 16, jnp.float32)
    # Batch bias per example too where there is one, to exercise batched side inputs.
    if bias is not None:
        bias = jnp.asarray(rng.standard_normal((3, 32)), jnp.float32)

    def per_example(y, bias, weights):
        return apply(variant, y, bias, weights, clamp_value=3.0)

    batched = jax.vmap(per_example)(y, bias, weights)
    for i in range(3):
        expected = testing.swiglu_forward(
            y[i],
            None if bias is None else bias[i],
            None if weights is None else weights[i],
            clamp_value=3.0,
        )
        assert testing.relative_error(batched[i], expected) < 1e-6

    def total(y, bias, weights):
        return jnp.sum(jax.vmap(per_example)(y, bias, weights) ** 2)

    argnums = tuple(i for i, x in enumerate((y, bias, weights)) if x is not None)
    grads = jax.jit(jax.grad(total, argnums=argnums))(y, bias, weights)
    per_grads = [
        jax.grad(lambda *a: jnp.sum(per_example(*a) ** 2), argnums=argnums)(
            y[i], None if bias is None else bias[i], None if weights is None else weights[i]
        )
        for i in range(3)
    ]
    for k, grad in enumerate(grads):
        np.testing.assert_allclose(grad, jnp.stack([g[k] for g in per_grads]), rtol=1e-5, atol=1e-5)


def test_vmap_with_shared_bias(rng):
    y, bias, _ = make_inputs(rng, "bias", (4, 3), 8, jnp.float32)
    out = jax.vmap(lambda y: apply("bias", y, bias, None))(y)
    assert testing.relative_error(out, testing.swiglu_forward(y, bias)) < 1e-6
    dbias = jax.grad(lambda b: jnp.sum(jax.vmap(lambda y: apply("bias", y, b, None))(y)))(bias)
    expected = testing.swiglu_backward(np.ones((4, 3, 8)), y, bias)["bias"]
    assert testing.relative_error(dbias, expected) < 1e-5


def residuals(variant, args, **options):
    """The arrays the VJP closure keeps from the forward."""
    _, vjp = jax.vjp(lambda a: apply_dict(variant, a, **options), args)
    return jax.tree.leaves(vjp)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_fp8_input_store_saves_fp8(rng, variant, dtype):
    """The saved input is the float8_e4m3fn array, not the original."""
    y, bias, weights = make_inputs(rng, variant, (16,), 64, dtype)
    args = differentiable_args(y, bias, weights)
    saved = residuals(variant, args, fp8_input_store=True)
    big = [r for r in saved if r.size == y.size]
    assert [r.dtype for r in big] == [jnp.float8_e4m3fn]
    assert sum(r.nbytes for r in saved) < y.nbytes // 2 + 4 * 64 * 2 + 4 * 16 + 1
    plain = [r for r in residuals(variant, args) if r.size == y.size]
    assert [r.dtype for r in plain] == [y.dtype]


def test_fp8_input_store_uses_the_rounded_input(rng):
    y = jnp.asarray(rng.standard_normal((32, 64)), jnp.bfloat16)
    g = jnp.asarray(rng.standard_normal((32, 32)), jnp.bfloat16)
    _, vjp = jax.vjp(lambda y: apply("plain", y, None, None, fp8_input_store=True), y)
    (dy,) = vjp(g)
    exact_at_rounded = testing.swiglu_backward(g, testing.fp8_round(y))["y"]
    exact_at_y = testing.swiglu_backward(g, y)["y"]
    assert testing.relative_error(dy, exact_at_rounded) <= testing.tolerance(jnp.bfloat16)
    assert testing.relative_error(dy, exact_at_y) > 0.02  # fp8 rounding is visible


def test_cpu_offload_changes_nothing_on_cpu(rng):
    y, bias, weights = make_inputs(rng, "weighted_bias", (8,), 16, jnp.float32)
    args = differentiable_args(y, bias, weights)
    f = loss("weighted_bias")
    g = loss("weighted_bias", cpu_offload_input=True)
    assert jax.jit(f)(args) == jax.jit(g)(args)
    for name, grad in jax.jit(jax.grad(g))(args).items():
        np.testing.assert_array_equal(grad, jax.jit(jax.grad(f))(args)[name])


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_cpu_offload_places_the_residual_in_host_memory(rng, platform):
    """Lowered for a backend with host memory, the saved input goes to pinned_host and back."""
    y, bias, _ = make_inputs(rng, "bias", (8,), 16, jnp.bfloat16)
    args = differentiable_args(y, bias, None)
    grad = jax.grad(loss("bias", cpu_offload_input=True))
    text = exported_text(grad, args, platform=platform)
    assert '_xla_buffer_placement = "pinned_host"' in text
    assert '_xla_buffer_placement = "device"' in text
    text = exported_text(jax.grad(loss("bias")), args, platform=platform)
    assert "pinned_host" not in text


@pytest.mark.parametrize("platform", ["cpu", "tpu", "cuda"])
def test_exports_for_every_platform(rng, platform):
    """Forward and backward lower for each platform from this CPU host."""
    y, bias, weights = make_inputs(rng, "weighted_bias", (8,), 16, jnp.bfloat16)
    args = differentiable_args(y, bias, weights)
    text = exported_text(
        jax.value_and_grad(loss("weighted_bias", fp8_input_store=True)), args, platform=platform
    )
    assert "f8E4M3FN" in text


def test_zero_rows():
    for variant in VARIANTS:
        y, bias, weights = make_inputs(np.random.default_rng(0), variant, (0,), 4, jnp.float32)
        args = differentiable_args(y, bias, weights)
        out, vjp = jax.vjp(lambda a, v=variant: apply_dict(v, a), args)
        assert out.shape == (0, 4)
        grads = vjp(jnp.zeros_like(out))[0]
        for name, grad in grads.items():
            assert grad.shape == args[name].shape
            assert not np.any(grad)
