"""The Mosaic TPU kernels, on CPU: numerics in TPU interpret mode (race detection on,
uninitialised memory NaN, two simulated cores) against the float64 reference, and
lowering for TPU from this host."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import strategies
from conftest import DTYPES, SEED, examples
from helpers import check_kernel_gradients, check_saved_copy
from hypothesis import given, seed
from hypothesis import strategies as st
from jax._src.pallas.mosaic.interpret import interpret_pallas_call
from jax.experimental.pallas import tpu as pltpu

from swiglu_jax import testing
from swiglu_jax._options import Options
from swiglu_jax.kernels import tpu
from swiglu_jax.kernels.config import BlockConfig

FP8 = jnp.float8_e4m3fn
VARIANTS = {
    "plain": (False, False, {}),
    "bias": (True, False, {}),
    "weights": (False, True, {}),
    "weights_bias": (True, True, {}),
    "clamp": (False, False, {"clamp_value": 1.5}),
    "gpt_oss": (True, True, {"clamp_value": 7.0, "alpha": 1.702, "linear_offset": 1.0}),
}
# Several blocks in both dims, ragged rows: the split layout (H % 128 == 0) ...
SPLIT_MULTI_BLOCK = ((70, 256), BlockConfig(block_rows=32, block_hidden=128))
# ... and the stacked one, ragged in both dims.
STACKED_MULTI_BLOCK = ((70, 300), BlockConfig(block_rows=32, block_hidden=128))


def interpret_params(cores: int = 2) -> pltpu.InterpretParams:
    """TPU interpret mode that records races (jax 0.12 would raise on one by default,
    0.11 only prints) and fills unwritten memory with NaN, on two (or ``cores``) cores so
    the ``"parallel"`` grid axes really are split."""
    extra = {}
    if "on_race" in inspect.signature(pltpu.InterpretParams).parameters:
        extra["on_race"] = "warn"
    return pltpu.InterpretParams(
        detect_races=True, uninitialized_memory="nan", num_cores_or_threads=cores, **extra
    )


@pytest.fixture(autouse=True)
def _fresh_interpreter():
    yield
    pltpu.reset_tpu_interpret_mode_state()


def run_kernel(fn, *args, cores=2, **kwargs):
    """``fn(*args, **kwargs)`` interpreted, asserting it raced nowhere and left no NaN."""
    results = jax.block_until_ready(fn(*args, interpret=interpret_params(cores), **kwargs))
    races = interpret_pallas_call.races
    assert races is not None and not races.races_found, "the interpreter detected a race"
    for x in results:
        if x is not None:
            assert np.isfinite(np.asarray(x).astype(np.float32)).all(), "NaN or inf leaked"
    return results


def make_inputs(rng, rows, hidden, dtype, has_bias, has_weights):
    normal = lambda *shape: rng.standard_normal(shape, dtype=np.float32)
    y = jnp.asarray(normal(rows, 2, hidden) * 2, dtype)
    bias = jnp.asarray(normal(2, hidden), dtype) if has_bias else None
    weights = jnp.asarray(normal(rows, 1), jnp.float32) if has_weights else None
    g = jnp.asarray(normal(rows, hidden), dtype)
    return y, bias, weights, g


def assert_close(actual, expected, dtype):
    assert actual.dtype == jnp.dtype(dtype)
    error = testing.relative_error(actual, expected)
    assert error <= testing.tolerance(dtype), f"relative error {error}"


def check(
    rng, rows, hidden, dtype, variant, *, config=None, save_fp8=False, cores=2, give_scale=False
):
    """Forward and backward of ``variant`` against the float64 reference, on ``cores``
    simulated cores, without races. ``save_fp8``: False, True or "scaled" (the row scales
    given to the kernel with ``give_scale``)."""
    has_bias, has_weights, kwargs = VARIANTS[variant]
    y, bias, weights, g = make_inputs(rng, rows, hidden, dtype, has_bias, has_weights)
    opts = Options(**kwargs)
    ref = dict(bias=bias, weights=weights, layout="stacked", **kwargs)
    # The scales the scaled store would compute, handed to the kernel with give_scale.
    given = jnp.asarray(testing.fp8_scaled_cast(y, "stacked")[1]) if give_scale else None

    out, y_fp8, y_scale = run_kernel(
        tpu.forward,
        y,
        bias,
        weights,
        opts,
        save_fp8=save_fp8,
        y_scale=given,
        config=config,
        cores=cores,
    )
    assert out.shape == (rows, hidden)
    assert_close(out, testing.swiglu_forward(y, **ref), dtype)
    y_saved = check_saved_copy(y, y_fp8, y_scale, save_fp8)

    dy, dbias, dweights = run_kernel(
        tpu.backward,
        g,
        y_saved,
        bias,
        weights,
        opts,
        dy_dtype=dtype,
        y_scale=y_scale,
        config=config,
        cores=cores,
    )
    check_kernel_gradients(
        dy, dbias, dweights, g, y, dy_dtype=dtype, fp8_input_store=save_fp8, **ref
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_variants(rng, variant, dtype):
    (rows, hidden), config = SPLIT_MULTI_BLOCK
    check(rng, rows, hidden, dtype, variant, config=config)


@pytest.mark.parametrize("variant", ["plain", "gpt_oss"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_variants_stacked_layout(rng, variant, dtype):
    (rows, hidden), config = STACKED_MULTI_BLOCK
    check(rng, rows, hidden, dtype, variant, config=config)


@pytest.mark.parametrize("hidden", [1, 3, 129, 200, 256])
@pytest.mark.parametrize("rows", [1, 7, 37, 130])
def test_shapes(rng, rows, hidden):
    # Default config; weights and bias so both reductions see the ragged edges.
    dtype = DTYPES[(rows + hidden) % len(DTYPES)]
    check(rng, rows, hidden, dtype, "weights_bias")


@pytest.mark.parametrize("shape_and_config", [SPLIT_MULTI_BLOCK, STACKED_MULTI_BLOCK])
@pytest.mark.parametrize("dtype", DTYPES)
def test_save_fp8(rng, dtype, shape_and_config):
    (rows, hidden), config = shape_and_config
    check(rng, rows, hidden, dtype, "gpt_oss", config=config, save_fp8=True)


# The scaled store: whole rows in a block (the maximum fused), split and stacked, with
# and without the k axis; rows over several blocks (an XLA maximum first).
SCALED_CASES = {
    "split_whole_rows": ((70, 256), BlockConfig(block_rows=32, block_hidden=256)),
    "stacked_whole_rows": ((70, 200), BlockConfig(block_rows=32, block_hidden=256)),
    "split_multi_block": SPLIT_MULTI_BLOCK,
    "stacked_multi_block": STACKED_MULTI_BLOCK,
    "default_config": ((37, 256), None),
}


@pytest.mark.parametrize("case", SCALED_CASES)
@pytest.mark.parametrize("variant", ["plain", "gpt_oss"])
def test_scaled_fp8_store(rng, variant, case):
    (rows, hidden), config = SCALED_CASES[case]
    check(rng, rows, hidden, jnp.bfloat16, variant, config=config, save_fp8="scaled")


@pytest.mark.parametrize("dtype", DTYPES)
def test_scaled_fp8_store_with_given_scales(rng, dtype):
    (rows, hidden), config = SPLIT_MULTI_BLOCK
    check(rng, rows, hidden, dtype, "gpt_oss", config=config, save_fp8="scaled", give_scale=True)


def test_scaled_default_config_takes_whole_rows_that_fit():
    for hidden, whole in ((256, True), (4096, True), (14336, False), (300, True)):
        config = tpu.default_config(4096, hidden, jnp.bfloat16, whole_rows=True)
        assert (config.block_hidden == hidden) == whole, hidden
        per_element = tpu._bytes_per_block_element(hidden, 2)
        if whole:
            assert config.block_rows * hidden * per_element <= tpu.VMEM_BLOCK_BUDGET


# The race detector's sweep: every variant's accumulations (the weights gradient across
# hidden blocks, the bias partials per row block, the split path's k axis and scratch)
# on more cores than row blocks, as many, and fewer.
RACE_SWEEP = {
    "split_3x3": ((96, 384), BlockConfig(block_rows=32, block_hidden=128)),
    "split_ragged_rows": ((70, 256), BlockConfig(block_rows=16, block_hidden=128)),
    "stacked_ragged": ((70, 300), BlockConfig(block_rows=32, block_hidden=128)),
}


@pytest.mark.parametrize(
    "case,cores",
    [("split_3x3", 2), ("split_3x3", 4), ("split_ragged_rows", 4), ("stacked_ragged", 2)],
)
def test_race_sweep(rng, case, cores):
    (rows, hidden), config = RACE_SWEEP[case]
    check(rng, rows, hidden, jnp.bfloat16, "gpt_oss", config=config, save_fp8=True, cores=cores)


@pytest.mark.parametrize("cores", [2, 4])
@pytest.mark.parametrize("case", ["split_whole_rows", "stacked_whole_rows"])
def test_race_sweep_scaled(rng, case, cores):
    """The fused row scales: written at k == 0, read back at k == 1."""
    (rows, hidden), config = SCALED_CASES[case]
    check(rng, rows, hidden, jnp.bfloat16, "gpt_oss", config=config, save_fp8="scaled", cores=cores)


@seed(SEED)
@examples(0.12)
@given(
    data_seed=strategies.seeds,
    rows=st.integers(1, 100),
    hidden=strategies.hidden_sizes(300),
    dtype=strategies.dtypes,
    variant=st.sampled_from(list(VARIANTS)),
    config=st.builds(
        BlockConfig,
        block_rows=st.sampled_from([8, 16, 32, 64]),
        block_hidden=st.sampled_from([128, 256]),
    ),
    save_fp8=st.sampled_from([False, True, "scaled"]),
)
def test_any_blocks(data_seed, rows, hidden, dtype, variant, config, save_fp8):
    """Any block shape (rounded to legal TPU blocks) gives the same answers, without
    races or reads of uninitialised memory."""
    pltpu.reset_tpu_interpret_mode_state()  # race records are per example
    rng = np.random.default_rng(data_seed)
    check(rng, rows, hidden, dtype, variant, config=config, save_fp8=save_fp8)


def test_save_fp8_default_config(rng):
    check(rng, 37, 256, jnp.bfloat16, "weights_bias", save_fp8=True)


def test_bfloat16_input_float32_weights_and_bias(rng):
    y, _, weights, g = make_inputs(rng, 37, 256, jnp.bfloat16, False, True)
    bias = jnp.asarray(rng.standard_normal((2, 256)), jnp.float32)
    opts = Options(clamp_value=7.0, alpha=1.702, linear_offset=1.0)
    out, _, _ = run_kernel(tpu.forward, y, bias, weights, opts, save_fp8=False)
    assert out.dtype == jnp.bfloat16
    expected = testing.swiglu_forward(
        y, bias, weights, clamp_value=7.0, alpha=1.702, linear_offset=1.0, layout="stacked"
    )
    assert_close(out, expected, jnp.bfloat16)
    _, dbias, _ = run_kernel(tpu.backward, g, y, bias, weights, opts, dy_dtype=jnp.bfloat16)
    assert dbias.dtype == jnp.float32


def test_empty():
    y = jnp.zeros((0, 2, 5), jnp.bfloat16)
    bias, weights = jnp.zeros((2, 5), jnp.float32), jnp.zeros((0, 1), jnp.float32)
    out, y_fp8, _ = tpu.forward(y, bias, weights, Options(), save_fp8=True, interpret=True)
    assert out.shape == (0, 5) and y_fp8.shape == (0, 2, 5) and y_fp8.dtype == FP8
    _, y_fp8, y_scale = tpu.forward(y, bias, weights, Options(), save_fp8="scaled")
    assert y_fp8.shape == (0, 2, 5) and y_scale.shape == (0, 1)
    g = jnp.zeros((0, 5), jnp.bfloat16)
    dy, dbias, dweights = tpu.backward(
        g, y, bias, weights, Options(), dy_dtype=jnp.bfloat16, interpret=True
    )
    assert dy.shape == (0, 2, 5) and dy.dtype == jnp.bfloat16
    np.testing.assert_array_equal(dbias, np.zeros((2, 5)))
    assert dbias.dtype == jnp.float32 and dweights.shape == (0, 1)


def test_float64_not_implemented():
    y = np.zeros((4, 2, 8))
    with pytest.raises(NotImplementedError):
        tpu.forward(y, None, None, Options(), save_fp8=False, interpret=True)
    with pytest.raises(NotImplementedError):
        tpu.backward(y[:, 0], y, None, None, Options(), dy_dtype=np.float64, interpret=True)


@pytest.mark.parametrize("rows", [1, 8, 100, 4096, 65536])
@pytest.mark.parametrize("hidden", [1, 200, 1408, 4096, 14336, 100_000])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_default_config(rows, hidden, dtype):
    config = tpu.default_config(rows, hidden, dtype)
    assert 1 <= config.block_rows <= rows
    assert config.block_rows == rows or config.block_rows % 32 == 0
    assert config.block_hidden == hidden or config.block_hidden % 128 == 0
    if hidden % 128 == 0:
        assert hidden % config.block_hidden == 0
    per_element = tpu._bytes_per_block_element(hidden, jnp.dtype(dtype).itemsize)
    if config.block_rows > 32:
        assert config.block_rows * config.block_hidden * per_element <= tpu.VMEM_BLOCK_BUDGET


# ----------------------------------------------------------------------------- lowering


def lowers_for_tpu(fn, *args) -> bool:
    structs = [None if x is None else jax.ShapeDtypeStruct(x.shape, x.dtype) for x in args]
    exported = jax.export.export(jax.jit(fn), platforms=["tpu"])(*structs)
    return "tpu_custom_call" in exported.mlir_module()


@pytest.mark.parametrize("hidden", [256, 200])
@pytest.mark.parametrize("variant", VARIANTS)
def test_lowers_for_tpu(variant, hidden):
    has_bias, has_weights, kwargs = VARIANTS[variant]
    opts = Options(**kwargs)
    rows, dtype = 1000, jnp.bfloat16
    y = jax.ShapeDtypeStruct((rows, 2, hidden), dtype)
    bias = jax.ShapeDtypeStruct((2, hidden), dtype) if has_bias else None
    weights = jax.ShapeDtypeStruct((rows, 1), jnp.float32) if has_weights else None
    g = jax.ShapeDtypeStruct((rows, hidden), dtype)
    y_fp8 = jax.ShapeDtypeStruct(y.shape, FP8)
    y_scale = jax.ShapeDtypeStruct((rows, 1), jnp.float32)
    for save_fp8 in (False, True, "scaled"):
        forward = lambda y, b, w, s=save_fp8: tpu.forward(y, b, w, opts, save_fp8=s)
        assert lowers_for_tpu(forward, y, bias, weights)
    forward = lambda y, b, w, s: tpu.forward(y, b, w, opts, save_fp8="scaled", y_scale=s)
    assert lowers_for_tpu(forward, y, bias, weights, y_scale)
    for saved, scale in ((y, None), (y_fp8, None), (y_fp8, y_scale)):
        backward = lambda g, y, b, w, s: tpu.backward(g, y, b, w, opts, dy_dtype=dtype, y_scale=s)
        assert lowers_for_tpu(backward, g, saved, bias, weights, scale)
