"""On a CUDA GPU: every implementation, variant, option and dtype against the float64
reference, forward and backward, and one input above 2^31 elements. Skipped without a GPU
(CI has none); `benchmarks/gpu_check.py` runs this file on the GPU machine."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    GPT_OSS_FP8,
    VARIANTS,
    apply_dict,
    check_repeatable,
    differentiable_args,
    fp8_edge_input,
    make_inputs,
    random_like,
    reference_options,
)

import swiglu_jax as sj
from swiglu_jax import _dispatch, testing
from swiglu_jax._options import Options
from swiglu_jax.kernels import triton as triton_kernels


def _cuda_capability() -> float | None:
    return _dispatch._local_cuda_capability()


CAPABILITY = _cuda_capability()
pytestmark = pytest.mark.skipif(CAPABILITY is None, reason="needs a CUDA GPU")

KERNELS = ["pallas:triton"]
if CAPABILITY is not None and CAPABILITY >= _dispatch.MIN_MOSAIC_GPU_CAPABILITY:
    KERNELS.append("pallas:mosaic_gpu")

OPTIONS = {
    "default": {},
    "clamp": {"clamp_value": 1.5},
    "gpt_oss": {"clamp_value": 7.0, "alpha": 1.702, "linear_offset": 1.0},
    "fp8_store": {"fp8_input_store": True},
    "scaled_fp8_store": {"fp8_input_store": "scaled"},
    "offload": {"cpu_offload_input": True},
}
SHAPES = [((1,), 1), ((7,), 3), ((37,), 129), ((3, 5), 200), ((4096,), 1408), ((1000,), 5120)]


def check(rng, implementation, variant, lead, hidden, dtype, layout, options):
    y, bias, weights = make_inputs(rng, variant, lead, hidden, dtype, layout=layout)
    args = differentiable_args(y, bias, weights)
    opts = {**options, "layout": layout, "implementation": implementation}
    out, vjp = jax.jit(lambda a: jax.vjp(lambda a: apply_dict(variant, a, **opts), a))(args)
    ref_opts = reference_options(opts)
    expected = testing.swiglu_forward(y, bias, weights, **ref_opts)
    assert out.dtype == y.dtype and out.shape == expected.shape
    assert testing.relative_error(out, expected) <= testing.tolerance(dtype)
    g = random_like(rng, out)
    grads = jax.jit(lambda v, g: v(g)[0])(vjp, g)
    for name, grad in grads.items():
        assert grad.dtype == args[name].dtype and grad.shape == args[name].shape
    fp8 = options.get("fp8_input_store", False)
    errors = testing.gradient_errors(grads, g, y, bias, weights, fp8_input_store=fp8, **ref_opts)
    for name, (error, tolerance) in errors.items():
        assert error <= tolerance, (name, error)


# Each case compiles its own kernels: the product is kept to what can differ on a GPU.
CASES = [(name, dtype) for name in OPTIONS for dtype in (jnp.float32, jnp.bfloat16)]
CASES.append(("default", jnp.float16))


@pytest.mark.parametrize("name,dtype", CASES, ids=lambda c: getattr(c, "__name__", c))
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("implementation", KERNELS)
def test_options(rng, implementation, variant, name, dtype):
    check(rng, implementation, variant, (37,), 200, dtype, "split", OPTIONS[name])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("implementation", ["auto", "xla", *KERNELS])
def test_stacked_layout(rng, implementation, variant):
    check(
        rng,
        implementation,
        variant,
        (3, 11),
        136,
        jnp.bfloat16,
        "stacked",
        {"fp8_input_store": True, "clamp_value": 2.0},
    )


@pytest.mark.parametrize("lead,hidden", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("implementation", KERNELS)
def test_shapes(rng, implementation, dtype, lead, hidden):
    check(rng, implementation, "weighted_bias", lead, hidden, dtype, "split", {"clamp_value": 3.0})


@pytest.mark.parametrize("store", [True, "scaled"], ids=["cast", "scaled"])
@pytest.mark.parametrize("implementation", ["xla", "auto", *KERNELS])
def test_fp8_store_holds_in_one_compiled_step(rng, implementation, store):
    """Forward and backward compiled together, as in a training step: the gradient is
    the fp8 store's (computed from the rounded copy), not the exact input's. Without its
    optimization barrier, XLA on GPU drops the rounding as excess precision."""
    y = (2 * rng.standard_normal((512, 2, 768))).astype(np.float32)
    g = rng.standard_normal((512, 768)).astype(np.float32)
    yj, gj = jnp.asarray(y, jnp.bfloat16), jnp.asarray(g, jnp.bfloat16)

    @jax.jit
    def step(y, g):
        _, vjp = jax.vjp(
            lambda y: sj.swiglu(
                y, fp8_input_store=store, layout="stacked", implementation=implementation
            ),
            y,
        )
        return vjp(g)[0]

    dy = np.asarray(step(yj, gj).astype(jnp.float32))
    y64, g64 = np.asarray(yj.astype(jnp.float32)), np.asarray(gj.astype(jnp.float32))
    stored = testing.swiglu_backward(g64, y64, fp8_input_store=store, layout="stacked")["y"]
    exact = testing.swiglu_backward(g64, y64, layout="stacked")["y"]
    assert testing.relative_error(dy, stored) <= testing.tolerance(jnp.bfloat16)
    assert testing.relative_error(dy, exact) > 2 * testing.tolerance(jnp.bfloat16)


@pytest.mark.parametrize("implementation", ["xla", "auto"])
def test_offload_keeps_the_saved_input_in_host_memory(rng, implementation):
    """Forward and backward compiled together: with ``cpu_offload_input`` the compiled
    step holds buffers in host memory (``S(5)``), and without it none; the gradient is
    the plain one. (XLA folded the round trip away before the barrier in ops.py; on an
    H100 4 layers' 704 MiB of saved inputs then went to host memory.)"""
    y = jnp.asarray(rng.standard_normal((512, 2 * 768)), jnp.bfloat16)
    g = jnp.asarray(rng.standard_normal((512, 768)), jnp.bfloat16)

    def step(offload):
        def grad(y, g):
            swiglu = functools.partial(
                sj.swiglu, cpu_offload_input=offload, implementation=implementation
            )
            return jax.vjp(swiglu, y)[1](g)[0]

        return jax.jit(grad).lower(y, g).compile()

    offloaded, plain = step(True), step(False)
    assert offloaded.as_text().count("S(5)") > 0
    assert plain.as_text().count("S(5)") == 0
    np.testing.assert_array_equal(np.asarray(offloaded(y, g)), np.asarray(plain(y, g)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=str)
@pytest.mark.parametrize("implementation", ["xla", *KERNELS])
def test_fp8_store_saturates_like_torchs_cast(implementation, dtype):
    """Compiled, where a GPU's conversion instruction might differ from interpret mode:
    the fp8 copy saturates beyond +-448 (infinities included) and keeps NaN."""
    impl = _dispatch.XLA if implementation == "xla" else _dispatch.kernel(implementation[7:])
    y = fp8_edge_input(dtype)
    forward = jax.jit(lambda y: impl.forward(y, None, None, Options(), save_fp8=True)[1])
    saved = np.asarray(forward(y), np.float64)
    np.testing.assert_array_equal(saved, testing.fp8_round(y))


# 9216: rows swept in one-warp segments (kernels.triton.segment_width: 256 columns of a
# 16-bit type, 128 of float32), whose maxima cross warps through global memory and a
# barrier.
@pytest.mark.parametrize("hidden", [24, 5000, 9216], ids=["one_tile", "swept_rows", "segments"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=str)
@pytest.mark.parametrize("implementation", ["xla", *KERNELS])
def test_scaled_fp8_store_compiled(rng, implementation, dtype, hidden):
    """Compiled: the row scales are the reference's bits (a product), the scaled copy
    within one e4m3 step of it (a GPU's reciprocal may round a tie the other way), NaN
    where the input has NaN."""
    if hidden == 9216:  # the case still takes segments
        config = triton_kernels.sweep_config(64, hidden, dtype)
        width = triton_kernels.segment_columns(dtype)
        assert triton_kernels.segment_width(hidden, dtype, config) == width
    impl = _dispatch.XLA if implementation == "xla" else _dispatch.kernel(implementation[7:])
    y = np.asarray(rng.standard_normal((64, 2, hidden)) * rng.uniform(1e-3, 1e3, (64, 1, 1)))
    y[:8, :, :18] = np.asarray(fp8_edge_input(jnp.float32))[:, :, :18]
    y = jnp.asarray(y, dtype)
    forward = jax.jit(lambda y: impl.forward(y, None, None, Options(), save_fp8="scaled")[1:])
    q, scale = forward(y)
    expected_q, expected_scale = testing.fp8_scaled_cast(y, "stacked")
    np.testing.assert_array_equal(np.asarray(scale), expected_scale)
    q, expected_q = np.asarray(q, np.float64), expected_q.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(q), np.isnan(expected_q))
    step = np.maximum(np.abs(expected_q) * 2.0**-3, 2.0**-9)
    assert np.all(np.abs(q - expected_q)[~np.isnan(q)] <= step[~np.isnan(q)])
    assert np.mean(q[~np.isnan(q)] != expected_q[~np.isnan(q)]) <= 1e-3


@pytest.mark.parametrize("variant", ["bias", "weighted_bias"])
@pytest.mark.parametrize("implementation", ["auto", "xla", *KERNELS])
def test_bitwise_repeatable(rng, implementation, variant):
    """Outputs and gradients, bias and weights reductions included (many row blocks of
    partial sums), are the same bits run after run, and after recompiling."""
    options = {"implementation": implementation, **GPT_OSS_FP8}
    check_repeatable(rng, variant, (4096,), 1408, jnp.bfloat16, **options)


LARGE_ROWS, LARGE_HIDDEN = 2**31 // (2 * 8192) + 3, 8192  # y: 2^31 + 3 * 16384 elements


@functools.cache
def large_inputs():
    key = jax.random.key(0)
    shape = (LARGE_ROWS, 2 * LARGE_HIDDEN)
    y = jax.random.normal(key, shape, jnp.bfloat16)
    weights = jax.random.uniform(jax.random.fold_in(key, 1), (LARGE_ROWS, 1), jnp.float32)
    bias = jax.random.normal(jax.random.fold_in(key, 2), (2 * LARGE_HIDDEN,), jnp.bfloat16)
    g = jax.random.normal(jax.random.fold_in(key, 3), (LARGE_ROWS, LARGE_HIDDEN), jnp.bfloat16)
    return y, bias, weights, g


def run_large(implementation, fp8_input_store):
    """Forward and all gradients of weighted bias_swiglu on the large inputs."""
    y, bias, weights, g = large_inputs()

    def f(y, bias, weights, g):
        out, vjp = jax.vjp(
            lambda y, b, w: sj.weighted_swiglu(
                y, w, bias=b, fp8_input_store=fp8_input_store, implementation=implementation
            ),
            y,
            bias,
            weights,
        )
        return out, *vjp(g)

    return jax.jit(f)(y, bias, weights, g)


@functools.cache
def large_expected(fp8_input_store):
    return jax.block_until_ready(run_large("xla", fp8_input_store))


@jax.jit
def _relative_error(a, b):
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    return jnp.linalg.norm(a - b) / jnp.linalg.norm(b)


@pytest.mark.large
@pytest.mark.parametrize(
    "fp8_input_store", [False, True, "scaled"], ids=["plain", "fp8_store", "scaled_fp8_store"]
)
@pytest.mark.parametrize("implementation", ["auto", *KERNELS])
def test_above_2_to_the_31_elements(implementation, fp8_input_store):
    """bfloat16 weighted + bias, y of more than 2^31 elements: the kernels against XLA on
    the whole tensor, and against float64 at the far end. The Triton kernels decline an
    fp8 copy of 2^31 elements or more (32-bit offsets), which "auto" then routes to the
    next backend."""
    if implementation == "pallas:triton" and fp8_input_store:
        with pytest.raises(NotImplementedError, match="2\\^31"):
            run_large(implementation, fp8_input_store)
        return
    y, bias, weights, g = large_inputs()
    assert y.size > 2**31
    results = run_large(implementation, fp8_input_store)
    expected = large_expected(fp8_input_store)
    # First each side against float64 at both ends, so that a disagreement below names
    # the side that is wrong (XLA included) and where.
    errors = {}
    for end, rows in (("head", slice(0, 5)), ("tail", slice(LARGE_ROWS - 5, LARGE_ROWS))):
        # (the tail's offsets are beyond 2^31; a row's scale comes from the row alone)
        y_end, bias_np, w_end = np.asarray(y[rows]), np.asarray(bias), np.asarray(weights[rows])
        exact = {
            "out": testing.swiglu_forward(y_end, bias_np, w_end),
            "dy": testing.swiglu_backward(
                np.asarray(g[rows]), y_end, bias_np, w_end, fp8_input_store=fp8_input_store
            )["y"],
        }
        for side, arrays in ((implementation, results), ("xla", expected)):
            for i, name in enumerate(exact):
                error = testing.relative_error(np.asarray(arrays[i][rows]), exact[name])
                errors[side, end, name] = float(error)
    assert max(errors.values()) <= testing.tolerance(jnp.bfloat16), errors
    names = ("out", "dy", "dbias", "dweights")
    for name, actual, exp in zip(names, results, expected, strict=True):
        assert float(_relative_error(actual, exp)) <= 5e-3, name
