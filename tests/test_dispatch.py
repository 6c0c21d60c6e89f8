"""implementation=: explicit choices, and "auto" resolved for the platform lowered for."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_inputs

import swiglu_jax as sj
from swiglu_jax import _dispatch, _xla


@pytest.mark.parametrize("implementation", [None, "auto", "xla"])
def test_available_implementations_agree(rng, implementation):
    y, bias, _ = make_inputs(rng, "bias", (5,), 12, jnp.float32)
    expected = sj.bias_swiglu(y, bias, implementation="xla")
    np.testing.assert_array_equal(sj.bias_swiglu(y, bias, implementation=implementation), expected)


@pytest.mark.parametrize("implementation", ["pallas", "interpret"])
def test_kernel_implementations_not_there_yet(implementation):
    with pytest.raises(NotImplementedError, match=f"implementation='{implementation}'"):
        sj.swiglu(jnp.ones((2, 4)), implementation=implementation)
    with pytest.raises(NotImplementedError, match=f"implementation='{implementation}'"):
        sj.swiglu_back(jnp.ones((2, 2)), jnp.ones((2, 4)), implementation=implementation)


# Constants no real implementation emits, one per direction.
FORWARD_MARKER, BACKWARD_MARKER = 12345.0, 54321.0
MARKERS = ("1.234500e+04", "5.432100e+04")


def _marked_forward(y, bias, weights, opts, *, save_fp8):
    out, y_fp8 = _xla.forward(y, bias, weights, opts, save_fp8=save_fp8)
    return out * FORWARD_MARKER, y_fp8


def _marked_backward(g, y, bias, weights, opts, *, dy_dtype):
    dy, dbias, dweights = _xla.backward(g, y, bias, weights, opts, dy_dtype=dy_dtype)
    return dy * BACKWARD_MARKER, dbias, dweights


@pytest.fixture
def fake_tpu_kernel(monkeypatch):
    fake = _dispatch.Implementation("fake", _marked_forward, _marked_backward)
    monkeypatch.setitem(_dispatch.KERNELS, "tpu", fake)


def _export_text(f, x, platform):
    spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    return jax.export.export(jax.jit(f), platforms=[platform])(spec).mlir_module()


def test_auto_follows_the_lowering_platform(fake_tpu_kernel, rng):
    """A function exported for TPU from a CPU host takes the TPU branch, forward and
    backward; lowered for CPU it takes XLA's; "xla" never takes the kernel."""
    y = jnp.asarray(rng.standard_normal((4, 8)), jnp.float32)
    auto = lambda y: jax.value_and_grad(lambda y: jnp.sum(sj.swiglu(y)))(y)
    forced = lambda y: jax.value_and_grad(lambda y: jnp.sum(sj.swiglu(y, implementation="xla")))(y)
    tpu = _export_text(auto, y, "tpu")
    assert all(marker in tpu for marker in MARKERS)
    for text in (_export_text(auto, y, "cpu"), _export_text(forced, y, "tpu")):
        assert not any(marker in text for marker in MARKERS)
    # Run here (CPU), auto computes with XLA.
    value, grad = jax.jit(auto)(y)
    expected_value, expected_grad = jax.jit(forced)(y)
    np.testing.assert_array_equal(value, expected_value)
    np.testing.assert_array_equal(grad, expected_grad)


def test_auto_with_several_platforms(fake_tpu_kernel, rng):
    """Exported for several platforms at once, each keeps its own branch."""
    y = jnp.asarray(rng.standard_normal((4, 8)), jnp.float32)
    spec = jax.ShapeDtypeStruct(y.shape, y.dtype)
    exported = jax.export.export(jax.jit(sj.swiglu), platforms=["cpu", "tpu"])(spec)
    assert MARKERS[0] in exported.mlir_module()
    np.testing.assert_array_equal(exported.call(y), sj.swiglu(y, implementation="xla"))
