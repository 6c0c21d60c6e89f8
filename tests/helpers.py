"""Inputs and calls shared by the tests: one function per variant, any layout."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import inspect
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

import swiglu_jax as sj
from swiglu_jax import testing

VARIANTS = ("plain", "bias", "weighted", "weighted_bias")
LAYOUTS = ("split", "stacked")
# Every kernel backend, interpreted on this host.
INTERPRETED = ("interpret:triton", "interpret:mosaic_gpu", "interpret:tpu")


# A clamp that a float32 bias sum can land on only by rounding: 2 + (1 + 2^-23) is
# 3 + 2^-23, half a float32 step above 3, a tie that rounds to even, to 3.0 itself.
CLAMP_TIE = 3.0
_JUST_ABOVE_ONE = 1 + 2.0**-23


def with_sums_on_the_clamp(y, bias, *, layout="split"):
    """Float32 ``(y, bias)`` with the last row's first gate element summing to
    ``CLAMP_TIE`` and its first linear element to ``-CLAMP_TIE`` after float32
    rounding, both a hair beyond before it: the ops, which clamp the float32 sum, pass
    the gradient there, where clamping the exact sum would zero it."""
    y, bias = np.array(y), np.array(bias)
    if layout == "stacked":
        gate, linear = (0, 0), (1, 0)
    else:
        gate, linear = (0,), (y.shape[-1] // 2,)
    last = (-1,) * (y.ndim - len(gate))
    y[(*last, *gate)], bias[gate] = 2.0, _JUST_ABOVE_ONE
    y[(*last, *linear)], bias[linear] = -2.0, -_JUST_ABOVE_ONE
    return jnp.asarray(y), jnp.asarray(bias)


def make_inputs(
    rng, variant, lead, hidden, dtype, *, layout="split", scale=2.0, weights_dtype=jnp.float32
):
    """``(y, bias, weights)`` for ``variant``, with ``None`` for what it does not use."""
    row = (2, hidden) if layout == "stacked" else (2 * hidden,)
    y = jnp.asarray(scale * rng.standard_normal((*lead, *row)), dtype)
    bias = weights = None
    if variant in ("bias", "weighted_bias"):
        bias = jnp.asarray(rng.standard_normal(row), dtype)
    if variant.startswith("weighted"):
        weights = jnp.asarray(rng.uniform(0.0, 1.0, (*lead, 1)), weights_dtype)
    return y, bias, weights


def apply(variant, y, bias, weights, **options):
    """The public op of ``variant``."""
    if variant == "plain":
        return sj.swiglu(y, **options)
    if variant == "bias":
        return sj.bias_swiglu(y, bias, **options)
    return sj.weighted_swiglu(y, weights, bias=bias, **options)


def differentiable_args(y, bias, weights):
    """The arguments ``apply`` differentiates, as a dict without the absent ones."""
    args = {"y": y, "bias": bias, "weights": weights}
    return {k: v for k, v in args.items() if v is not None}


def apply_dict(variant, args, **options):
    return apply(variant, args["y"], args.get("bias"), args.get("weights"), **options)


def random_like(rng, x):
    return jnp.asarray(rng.standard_normal(x.shape), x.dtype)


def reference_options(options):
    """The options the NumPy reference understands (it has no notion of offload)."""
    return {
        k: v for k, v in options.items() if k in ("clamp_value", "alpha", "linear_offset", "layout")
    }


def check_forward_and_vjp(
    rng, variant, lead, hidden, dtype, layout, options, *, scale=2.0, weights_dtype=jnp.float32
):
    """Forward and VJP (random cotangent) of ``variant`` against the float64 reference,
    each within the tolerance of its dtype."""
    y, bias, weights = make_inputs(
        rng, variant, lead, hidden, dtype, layout=layout, scale=scale, weights_dtype=weights_dtype
    )
    args = differentiable_args(y, bias, weights)
    out, vjp = jax.vjp(lambda a: apply_dict(variant, a, layout=layout, **options), args)

    ref_opts = reference_options({**options, "layout": layout})
    expected = testing.round_to(testing.swiglu_forward(y, bias, weights, **ref_opts), dtype)
    assert out.dtype == y.dtype and out.shape == (*lead, hidden)
    assert testing.relative_error(out, expected) <= testing.tolerance(dtype)

    g = random_like(rng, out)
    grads = vjp(g)[0]
    for name, grad in grads.items():
        assert grad.dtype == args[name].dtype and grad.shape == args[name].shape, name
    fp8 = options.get("fp8_input_store", False)
    errors = testing.gradient_errors(grads, g, y, bias, weights, fp8_input_store=fp8, **ref_opts)
    assert errors.keys() == args.keys()
    for name, (error, tolerance) in errors.items():
        assert error <= tolerance, (name, error)


GPT_OSS_FP8 = {"clamp_value": 7.0, "alpha": 1.702, "linear_offset": 1.0, "fp8_input_store": True}


def forward_and_grads(variant, args, g, **options):
    """The output and every gradient, as NumPy arrays (copies, so later runs can't touch them)."""
    out, vjp = jax.vjp(lambda a: apply_dict(variant, a, **options), args)
    return jax.tree.map(np.array, (out, vjp(g)[0]))


def assert_bitwise_equal(first, second):
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def check_repeatable(rng, variant, lead, hidden, dtype, *, recompile=True, **options):
    """Twice from the compiled executables and, with ``recompile``, once more after
    compiling afresh."""
    y, bias, weights = make_inputs(rng, variant, lead, hidden, dtype)
    args = differentiable_args(y, bias, weights)
    g = random_like(rng, jax.eval_shape(lambda a: apply_dict(variant, a, **options), args))
    first = forward_and_grads(variant, args, g, **options)
    assert_bitwise_equal(first, forward_and_grads(variant, args, g, **options))
    if recompile:
        jax.clear_caches()
        assert_bitwise_equal(first, forward_and_grads(variant, args, g, **options))


# Around the end of the e4m3 range (448; 464 is the rounding tie with the next binade),
# infinities, NaN, a subnormal and plain values.
FP8_EDGES = [0.0, 1.7, -(2.0**-9), 440.0, 448.0, 460.0, 464.0, 465.0, 479.0, 480.0, 500.0]
FP8_EDGES += [1e4, np.inf, -np.inf, np.nan, -460.0, -500.0, -1e4]


def check_kernel_gradients(dy, dbias, dweights, g, y, bias, weights, dy_dtype, **reference):
    """A kernel's backward results: ``dy`` in ``dy_dtype``, the bias and weights
    gradients present exactly where their inputs are and in their dtypes, each within
    its tolerance of the float64 reference (``reference``: ``swiglu_backward``'s
    options; a reduced gradient relative to its terms' magnitudes)."""
    assert dy.dtype == jnp.dtype(dy_dtype) and dy.shape == y.shape
    grads = {"y": dy}
    for name, grad, arg in (("bias", dbias, bias), ("weights", dweights, weights)):
        assert (grad is None) == (arg is None), name
        if arg is not None:
            assert grad.dtype == arg.dtype and grad.shape == arg.shape, name
            grads[name] = grad
    errors = testing.gradient_errors(grads, g, y, bias, weights, **reference)
    for name, (error, tolerance) in errors.items():
        assert error <= tolerance, (name, error)


def check_saved_copy(y, y_fp8, y_scale, save_fp8, layout="stacked"):
    """A kernel forward's saved copy against ``swiglu_jax.testing``: none without the fp8
    store, the bits of Megatron's cast with ``True``, the bits of the scaled copy and its
    float32 row scales with ``"scaled"``. Returns what the backward reads (``y`` or the
    copy)."""
    expected_q, expected_scale = testing.fp8_scaled_cast(y, layout)
    if save_fp8:
        assert y_fp8.dtype == jnp.float8_e4m3fn and y_fp8.shape == y.shape
        exact = expected_q if save_fp8 == "scaled" else testing.fp8_cast(y)
        np.testing.assert_array_equal(np.asarray(y_fp8).view(np.uint8), exact.view(np.uint8))
    else:
        assert y_fp8 is None
    if save_fp8 == "scaled":
        assert y_scale.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(y_scale), expected_scale)
    else:
        assert y_scale is None
    return y_fp8 if save_fp8 else y


def fp8_edge_input(dtype):
    """``(8, 2, H)``, the canonical shape: every edge value in both halves of every row."""
    return jnp.asarray(np.broadcast_to(np.array(FP8_EDGES), (8, 2, len(FP8_EDGES))), dtype)


def resident_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def usage() -> tuple[int, int, int]:
    """Resident bytes, Python objects tracked by the collector, and live JAX arrays,
    after returning freed heap memory to the system (glibc), which keeps other tests'
    garbage out of the resident size."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return resident_bytes(), len(gc.get_objects()), len(jax.live_arrays())


def megatron_functions(module, y, bias, weights, g) -> dict:
    """The audit table (see :func:`error_audit`) of the Megatron names that both packages
    export: name -> ``(function, good keyword arguments, required argument names)``."""
    return {
        "swiglu": (module.swiglu, dict(y=y), ("y",)),
        "bias_swiglu": (module.bias_swiglu, dict(y=y, bias=bias), ("y", "bias")),
        "weighted_swiglu": (
            module.weighted_swiglu,
            dict(y=y, weights=weights, bias=bias),
            ("y", "weights"),
        ),
        "swiglu_back": (module.swiglu_back, dict(g=g, y=y), ("g", "y")),
        "bias_swiglu_back": (
            module.bias_swiglu_back,
            dict(g=g, y=y, bias=bias),
            ("g", "y", "bias"),
        ),
        "weighted_swiglu_back": (
            module.weighted_swiglu_back,
            dict(g=g, y=y, weights=weights, bias=bias),
            ("g", "y", "weights"),
        ),
        "bias_swiglu_impl": (module.bias_swiglu_impl, dict(input=y, bias=bias), ("input",)),
        "weighted_bias_swiglu_impl": (
            module.weighted_bias_swiglu_impl,
            dict(input=y, bias=bias, weights=weights),
            ("input", "weights"),
        ),
    }


def error_audit(functions, bad_values, missing_message):
    """``pytest.param(call, error, message)`` for every public function with each of its
    arguments in turn replaced by each bad value of that argument.

    ``functions``: name -> ``(function, good keyword arguments, required argument names)``;
    the arguments tried are those in the function's signature. ``bad_values``: argument
    -> {label: ``(value, error type, message regex)``}, the regex formatted with ``fn``
    (the function's name) and ``name`` (the argument's). A required argument is also
    tried as ``None``, expecting a ``TypeError`` matching ``missing_message``.
    """
    cases = []
    for fn_name, (fn, good, required) in functions.items():
        for arg in inspect.signature(fn).parameters:
            bad = dict(bad_values.get(arg, {}))
            if arg in required:
                bad["None"] = (None, TypeError, missing_message)
            for label, (value, error, message) in bad.items():
                call = functools.partial(fn, **{**good, arg: value})
                message = message.format(fn=fn_name, name=arg)
                cases.append(pytest.param(call, error, message, id=f"{fn_name}-{arg}-{label}"))
    return cases


def as_np(x):
    return None if x is None else np.asarray(x)


# A Hopper GPU to lower for when this host has none (the Triton and Mosaic GPU lowerings
# ask the device for its compute capability).
H100 = jax.sharding.AbstractDevice(
    device_kind="NVIDIA H100 80GB HBM3", num_cores=132, platform="gpu"
)
GPU_CUSTOM_CALLS = ("__gpu$xla.gpu.triton", "mosaic_gpu_v2", "mosaic_gpu")


def exported_text(f, *args, platform: str) -> str:
    """The StableHLO text of ``jax.jit(f)`` exported for ``platform`` from this host."""
    specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args)
    checks = [jax.export.DisabledSafetyCheck.custom_call(t) for t in GPU_CUSTOM_CALLS]
    exporter = jax.export.export(jax.jit(f), platforms=[platform], disabled_checks=checks)
    if platform != "cuda":
        return exporter(*specs).mlir_module()
    mesh = jax.sharding.AbstractMesh((1,), ("x",), abstract_device=H100)
    with jax.sharding.use_abstract_mesh(mesh):
        return exporter(*specs).mlir_module()


def junk_calls(functions: dict, junk: list):
    """A strategy for ``(name, fn, kwargs)``: a function of ``functions`` (name -> ``(fn,
    good kwargs, ...)``) with each argument drawn from its good value or from ``junk``."""

    @st.composite
    def calls(draw):
        name = draw(st.sampled_from(sorted(functions)))
        fn, good = functions[name][:2]
        kwargs = {}
        for arg, param in inspect.signature(fn).parameters.items():
            default = good.get(arg, param.default)
            kwargs[arg] = draw(st.one_of(st.just(default), st.sampled_from(junk)))
        return name, fn, kwargs

    return calls()
