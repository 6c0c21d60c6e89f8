"""implementation=: explicit choices, and "auto"/"pallas" resolved for the platform the
computation is lowered for (not the one tracing it)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import exported_text, make_inputs

import swiglu_jax as sj
from swiglu_jax import testing

TRITON = "stablehlo.custom_call @__gpu$xla.gpu.triton"
TPU = "tpu_custom_call"


def value_and_grad(**options):
    """Forward and backward of bias_swiglu, as one function of (y, bias)."""

    def loss(y, bias):
        return jnp.sum(sj.bias_swiglu(y, bias, **options).astype(jnp.float32))

    return jax.value_and_grad(loss, argnums=(0, 1))


@pytest.mark.parametrize("implementation", [None, "auto", "xla", "interpret", "interpret:triton"])
def test_implementations_agree_on_cpu(rng, implementation):
    y, bias, _ = make_inputs(rng, "bias", (5,), 12, jnp.float32)
    expected = value_and_grad(implementation="xla")(y, bias)
    actual = value_and_grad(implementation=implementation)(y, bias)
    # The loss and the bias gradient are float32 sums, ordered differently by a kernel's
    # per-block partials and by XLA: a sum's tolerance relative to its terms' magnitudes,
    # not bit equality.
    ones = np.ones((*y.shape[:-1], y.shape[-1] // 2))
    scales = (
        np.abs(testing.swiglu_forward(y, bias)).sum(),
        None,
        testing.swiglu_backward(ones, y, bias, magnitudes=True)["bias"],
    )
    leaves = zip(jax.tree.leaves(actual), jax.tree.leaves(expected), scales, strict=True)
    for a, e, scale in leaves:
        error = testing.relative_error(a, e, scale)
        assert error <= testing.tolerance(jnp.float32, terms=y.size)


def test_pallas_on_cpu_is_a_clear_error(rng):
    y, bias, _ = make_inputs(rng, "bias", (5,), 12, jnp.float32)
    with pytest.raises(NotImplementedError, match=r"implementation='pallas'.*lowering for cpu"):
        value_and_grad(implementation="pallas")(y, bias)
    with pytest.raises(NotImplementedError, match="implementation='pallas'"):
        sj.swiglu_back(jnp.ones((2, 2)), jnp.ones((2, 4)), implementation="pallas")


@pytest.mark.parametrize("implementation", [None, "auto", "pallas"])
def test_kernels_where_the_lowering_platform_has_them(rng, implementation):
    """Exported from this CPU host: TPU and CUDA get the kernels forward and backward
    (on CUDA a third sums the bias gradient's partial sums)."""
    y, bias, _ = make_inputs(rng, "bias", (8,), 256, jnp.bfloat16)
    f = value_and_grad(implementation=implementation)
    assert exported_text(f, y, bias, platform="cuda").count(TRITON) == 3
    assert exported_text(f, y, bias, platform="tpu").count(TPU) >= 2
    if implementation != "pallas":
        cpu = exported_text(f, y, bias, platform="cpu")
        assert TPU not in cpu and "triton" not in cpu


def test_xla_never_uses_kernels(rng):
    y, bias, _ = make_inputs(rng, "bias", (8,), 256, jnp.bfloat16)
    f = value_and_grad(implementation="xla")
    assert "triton" not in exported_text(f, y, bias, platform="cuda")
    assert TPU not in exported_text(f, y, bias, platform="tpu")


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_explicit_backend(rng, platform):
    y, bias, _ = make_inputs(rng, "bias", (8,), 256, jnp.bfloat16)
    backend = "triton" if platform == "cuda" else "tpu"
    f = value_and_grad(implementation=f"pallas:{backend}")
    marker = TRITON if platform == "cuda" else TPU
    assert marker in exported_text(f, y, bias, platform=platform)


def test_auto_falls_back_to_xla_for_float64(rng):
    """The kernels decline float64; "auto" then computes with XLA, also on TPU and CUDA."""
    with jax.enable_x64(True):
        y, bias, _ = make_inputs(rng, "bias", (4,), 16, jnp.float64)
        f = value_and_grad()
        assert "triton" not in exported_text(f, y, bias, platform="cuda")
        assert TPU not in exported_text(f, y, bias, platform="tpu")
        np.testing.assert_allclose(f(y, bias)[0], value_and_grad(implementation="xla")(y, bias)[0])


def test_exported_for_several_platforms(rng):
    """One export for several platforms works with implementation="xla" and runs here.

    (Pallas kernels can't take part: JAX lowers every platform_dependent branch for every
    platform of a multi-platform export, and a pallas_call lowers for its own only.)
    """
    y = jnp.asarray(rng.standard_normal((4, 256)), jnp.float32)
    spec = jax.ShapeDtypeStruct(y.shape, y.dtype)
    f = jax.jit(lambda y: sj.swiglu(y, implementation="xla"))
    exported = jax.export.export(f, platforms=["cpu", "tpu", "cuda"])(spec)
    np.testing.assert_array_equal(exported.call(y), sj.swiglu(y, implementation="xla"))


@pytest.mark.parametrize(
    "capability,dtype,expected",
    [
        (None, jnp.bfloat16, ("triton",)),  # lowering for CUDA from a host without a GPU
        (7.5, jnp.bfloat16, ()),  # Turing: XLA
        (8.0, jnp.float32, ("triton",)),  # Ampere
        (9.0, jnp.bfloat16, ("triton", "mosaic_gpu")),  # Hopper: Triton faster
        (9.0, jnp.float32, ("triton", "mosaic_gpu")),  # also for float32 (RESULTS.md)
    ],
)
def test_cuda_backends_by_capability_and_dtype(monkeypatch, capability, dtype, expected):
    from swiglu_jax import _dispatch

    monkeypatch.setattr(_dispatch, "_local_cuda_capability", lambda: capability)
    assert _dispatch.cuda_kernel_backends(dtype) == expected
