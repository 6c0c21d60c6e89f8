"""The Mosaic GPU kernels against the float64 NumPy reference.

On a CPU host the kernels run in Pallas' GPU interpret mode (slow: shapes stay small),
with its race detector on and unwritten memory (shared memory, outputs) filled with NaN,
so that a TMA copy not waited for, shared memory not committed before a TMA store, or
two blocks writing the same partial sums fail here; on a CUDA backend the same tests run
the compiled kernels. ``test_lowers_for_cuda`` checks on any host that every variant
lowers to a Mosaic GPU custom call.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import strategies
from conftest import SEED, examples
from helpers import CLAMP_TIE, check_kernel_gradients, check_saved_copy, with_sums_on_the_clamp
from hypothesis import given, seed
from hypothesis import strategies as st
from jax._src.pallas.mosaic_gpu.interpret import gpu_callbacks
from jax.experimental.pallas import mosaic_gpu as plgpu

from swiglu_jax import testing
from swiglu_jax._options import Options
from swiglu_jax.kernels import mosaic_gpu
from swiglu_jax.kernels.config import BlockConfig

INTERPRET = jax.default_backend() != "gpu"

VARIANTS = ("plain", "bias", "weighted", "weighted_bias")
OPTIONS = {
    "default": {},
    "clamp": {"clamp_value": 1.5},
    "gpt_oss": {"clamp_value": 7.0, "alpha": 1.702, "linear_offset": 1.0},
}
# Strips of 128 columns, groups of 3 blocks of 4 rows: several of each on small shapes.
SMALL_STRIPS = BlockConfig(4, 128, num_stages=2, row_steps=3)


def interpret_params() -> plgpu.InterpretGPUParams | bool:
    """The GPU interpreter with race detection that records races (jax 0.12 would raise
    on one by default, 0.11 only prints) and NaN in unwritten memory; ``False`` (the
    compiled kernels) on a GPU."""
    if not INTERPRET:
        return False
    extra = {}
    if "on_race" in inspect.signature(plgpu.InterpretGPUParams).parameters:
        extra["on_race"] = "warn"
    return plgpu.InterpretGPUParams(detect_races=True, uninitialized_memory="nan", **extra)


@pytest.fixture(autouse=True)
def _fresh_interpreter():
    yield
    if INTERPRET:
        gpu_callbacks.reset_gpu_interpret_mode_state()


def run_kernel(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, interpreted on CPU without a race (each launch has its
    own race record, so each is checked on its own) and with every output finite."""
    results = jax.block_until_ready(fn(*args, interpret=interpret_params(), **kwargs))
    if INTERPRET:
        races_found = gpu_callbacks.get_races().races_found
        assert not races_found, "the interpreter detected a race"
    for x in results:
        if x is not None:
            assert np.isfinite(np.asarray(x).astype(np.float32)).all(), "NaN or inf leaked"
    return results


def make_inputs(rng, variant, rows, hidden, dtype):
    """``(y (N, 2, H), bias (2, H) | None, weights (N, 1) float32 | None, g (N, H))``."""
    y = jnp.asarray(2.0 * rng.standard_normal((rows, 2, hidden)), dtype)
    g = jnp.asarray(rng.standard_normal((rows, hidden)), dtype)
    bias = weights = None
    if variant in ("bias", "weighted_bias"):
        bias = jnp.asarray(rng.standard_normal((2, hidden)), dtype)
    if variant.startswith("weighted"):
        weights = jnp.asarray(rng.uniform(0.0, 1.0, (rows, 1)), jnp.float32)
    return y, bias, weights, g


def check(actual, expected, dtype, name):
    assert actual.dtype == jnp.dtype(dtype), name
    assert actual.shape == expected.shape, name
    error = testing.relative_error(actual, expected)
    assert error <= testing.tolerance(dtype), (name, error)


def check_kernels(rng, variant, rows, hidden, dtype, options, save_fp8=False, stream=None):
    """Forward (and its fp8 copy: ``save_fp8`` False, True or "scaled") and backward on
    random inputs against ``swiglu_jax.testing``."""
    inputs = make_inputs(rng, variant, rows, hidden, dtype)
    check_inputs(inputs, dtype, options, save_fp8=save_fp8, stream=stream)


def check_inputs(inputs, dtype, options, save_fp8=False, stream=None):
    """Forward (and its fp8 copy) and backward of ``(y, bias, weights, g)``; ``stream``
    the strip of both (``None``: each its default)."""
    y, bias, weights, g = inputs
    opts = Options(**options)
    out, y_fp8, y_scale = run_kernel(
        mosaic_gpu.forward, y, bias, weights, opts, save_fp8=save_fp8, config=stream
    )
    expected = testing.swiglu_forward(y, bias, weights, layout="stacked", **options)
    check(out, expected, dtype, "out")

    saved = check_saved_copy(y, y_fp8, y_scale, save_fp8)

    dy, dbias, dweights = run_kernel(
        mosaic_gpu.backward,
        g,
        saved,
        bias,
        weights,
        opts,
        dy_dtype=dtype,
        y_scale=y_scale,
        config=stream,
    )
    check_kernel_gradients(
        dy, dbias, dweights, g, y, bias, weights, dtype,
        layout="stacked", fp8_input_store=save_fp8, **options,
    )  # fmt: skip


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_and_options(rng, variant, options):
    check_kernels(rng, variant, 37, 40, jnp.float32, options)


@pytest.mark.parametrize("variant", ["bias", "weighted_bias"])  # without, with row sums
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("rows, hidden", [(1, 1), (7, 3), (37, 129), (130, 200)])
def test_dtypes_and_ragged_shapes(rng, rows, hidden, dtype, variant):
    check_kernels(rng, variant, rows, hidden, dtype, OPTIONS["gpt_oss"])


# Strips: one box of 128 or 256 columns, two of 256; 4 to 12 rows a step (one to three
# rows a warp); 1 to 3 steps in flight; row groups of 1 to 5 steps.
STRIPS = [
    BlockConfig(4, 128, num_stages=2, row_steps=3),
    BlockConfig(4, 256, num_stages=1, row_steps=5),
    BlockConfig(8, 512, num_stages=2, row_steps=2),
    BlockConfig(12, 128, num_stages=3, row_steps=1),
]


@pytest.mark.parametrize("stream", STRIPS, ids=str)
@pytest.mark.parametrize("variant", ["plain", "bias", "weighted"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_streamed_strips(rng, variant, dtype, stream):
    """Several strips (the last partial) and row groups (the last short, its last block
    ragged): 130 rows by H = 600."""
    check_kernels(rng, variant, 130, 600, dtype, OPTIONS["clamp"], stream=stream)


# Strips with per-row values in and out: groups of 4 to 72 rows.
PER_ROW_STRIPS = [
    BlockConfig(4, 128, num_stages=2, row_steps=3),
    BlockConfig(8, 512, num_stages=2, row_steps=2),
    BlockConfig(4, 256, num_stages=1, row_steps=1),
    BlockConfig(8, 256, num_stages=3, row_steps=9),
]


@pytest.mark.parametrize("stream", PER_ROW_STRIPS, ids=str)
def test_streamed_per_row_values(rng, stream):
    """Token weights and the scaled store's row scales, copied once an instance in
    windows of 32 rows (72 rows a group in the last strip: three windows), and the
    weights gradient's row sums, stored the same way."""
    options = OPTIONS["gpt_oss"]
    check_kernels(
        rng, "weighted_bias", 130, 600, jnp.bfloat16, options, save_fp8="scaled", stream=stream
    )
    y, bias, _, g = make_inputs(rng, "bias", 130, 600, jnp.bfloat16)  # the scaled backward
    check_inputs((y, bias, None, g), jnp.bfloat16, options, save_fp8="scaled", stream=stream)


def test_per_row_groups_beyond_one_box_are_refused():
    """With per-row values, in or out: groups of 320 rows."""
    y, weights = jnp.zeros((4, 2, 8), jnp.float32), jnp.ones((4, 1), jnp.float32)
    stream = BlockConfig(8, 256, row_steps=40)
    with pytest.raises(ValueError, match="row_steps \\* block_rows of at most 256"):
        mosaic_gpu.forward(y, None, weights, Options(), save_fp8=False, config=stream)
    with pytest.raises(ValueError, match="row_steps \\* block_rows of at most 256"):
        mosaic_gpu.backward(y[:, 0], y, None, weights, Options(), dy_dtype=y.dtype, config=stream)


@pytest.mark.parametrize("stream", STRIPS[:2], ids=str)
def test_streamed_fp8_copy(rng, stream):
    """The forward's unscaled fp8 store, and the backward from it."""
    options = OPTIONS["gpt_oss"]
    check_kernels(rng, "bias", 37, 300, jnp.bfloat16, options, save_fp8=True, stream=stream)


def test_streamed_backward_bias_in_another_dtype(rng):
    """A float32 bias with bfloat16 activations: the gradient comes back in float32."""
    y, bias, _, g = make_inputs(rng, "bias", 37, 300, jnp.bfloat16)
    bias = bias.astype(jnp.float32)
    dy, dbias, _ = run_kernel(mosaic_gpu.backward, g, y, bias, None, Options(), dy_dtype=y.dtype)
    assert dbias.dtype == jnp.float32
    check_kernel_gradients(dy, dbias, None, g, y, bias, None, jnp.bfloat16, layout="stacked")


# Columns not whole 128-column boxes or whole 256-column boxes; rows not a multiple of
# the 4 warps (one row: a one-row block's TMA store, a contiguous slice, spilled past
# the hidden edge into the next row on an H100, session 13), or beyond one box.
UNSUPPORTED_STRIPS = [
    BlockConfig(4, 192), BlockConfig(4, 384), BlockConfig(4, 64), BlockConfig(512, 256),
    BlockConfig(1, 256), BlockConfig(2, 256), BlockConfig(6, 128),
]  # fmt: skip


@pytest.mark.parametrize("stream", UNSUPPORTED_STRIPS, ids=str)
def test_unsupported_strips_are_refused(stream):
    y = jnp.zeros((4, 2, 8), jnp.float32)
    with pytest.raises(ValueError, match="need block_rows a multiple of 4 up to 256"):
        mosaic_gpu.backward(y[:, 0], y, None, None, Options(), dy_dtype=y.dtype, config=stream)
    with pytest.raises(ValueError, match="need block_rows a multiple of 4 up to 256"):
        mosaic_gpu.forward(y, None, None, Options(), save_fp8=False, config=stream)


def test_strips_beyond_shared_memory_are_refused():
    """Three float32 stages of 8 x 512: 240 KB of rings, more than an SM has."""
    y = jnp.zeros((4, 2, 8), jnp.float32)
    stream = BlockConfig(8, 512, num_stages=3)
    with pytest.raises(ValueError, match="245760 bytes of shared memory"):
        mosaic_gpu.backward(y[:, 0], y, None, None, Options(), dy_dtype=y.dtype, config=stream)
    # The forward's rings: y in, out and the fp8 copy out, (8 + 4 + 2) bytes a column-row.
    stream = BlockConfig(8, 1024, num_stages=3)
    with pytest.raises(ValueError, match="344064 bytes of shared memory"):
        mosaic_gpu.forward(y, None, None, Options(), save_fp8=True, config=stream)


@pytest.mark.parametrize("sums", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("rows", [1, 5, 4096, 100_000])
def test_default_config(rows, sums):
    """The measured strip for every size; steps never beyond the rows' blocks, and with
    the weights gradient's row sums one window of rows a group."""
    bias, weights = sums
    config = mosaic_gpu.default_config(rows, 2048, jnp.bfloat16, bias=bias, weights=weights)
    br, bh, stages = mosaic_gpu.STREAM_TILE
    assert (config.block_rows, config.block_hidden, config.num_stages) == (br, bh, stages)
    steps = mosaic_gpu.STREAM_STEPS_PLAIN
    if weights:
        steps = mosaic_gpu.STREAM_STEPS_ROW_SUMS
        assert steps * br == mosaic_gpu.ROW_WINDOW
    steps = mosaic_gpu.STREAM_STEPS if bias else steps
    assert config.row_steps == min(steps, -(-rows // br))


@pytest.mark.parametrize("variant", ["plain", "weighted_bias"])
def test_several_blocks_in_both_dimensions(rng, variant):
    # 11 row groups (the last of one ragged block) by 3 strips (the last partial).
    check_kernels(rng, variant, 130, 300, jnp.bfloat16, OPTIONS["clamp"], stream=SMALL_STRIPS)


@pytest.mark.parametrize("variant", ["plain", "weighted_bias"])
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_fp8_store(rng, variant, options):
    check_kernels(rng, variant, 70, 48, jnp.bfloat16, options, save_fp8=True)


def test_bias_sums_rounding_onto_the_clamp(rng):
    """The case that failed once on an H100 (``test_gpu.py::test_shapes``, float32, 1000
    rows, H = 5120, dbias 4.8e-4 off): weighted + bias with a clamp of 3, rows in three
    blocks (the last ragged), H = 5120, and bias sums that round onto the clamp in the
    ragged block. The kernels clamp the float32 sum, as documented; the reference used
    to clamp the exact one, which put dy and dbias about 1e-3 off."""
    y, bias, weights, g = make_inputs(rng, "weighted_bias", 130, 5120, jnp.float32)
    y, bias = with_sums_on_the_clamp(y, bias, layout="stacked")
    check_inputs((y, bias, weights, g), jnp.float32, {"clamp_value": CLAMP_TIE})


def test_fp8_store_float32_ragged(rng):
    check_kernels(rng, "bias", 7, 3, jnp.float32, OPTIONS["gpt_oss"], save_fp8=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_scaled_fp8_store(rng, variant):
    # Several strips and row groups, ragged: the scales come from whole rows.
    options = OPTIONS["gpt_oss"]
    check_kernels(rng, variant, 130, 300, jnp.bfloat16, options, "scaled", SMALL_STRIPS)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16])
def test_scaled_fp8_store_dtypes_ragged(rng, dtype):
    check_kernels(rng, "weighted_bias", 7, 3, dtype, OPTIONS["clamp"], save_fp8="scaled")


@seed(SEED)
@examples(0.12)
@given(
    data_seed=strategies.seeds,
    rows=st.integers(1, 130),
    hidden=strategies.hidden_sizes(140),
    dtype=strategies.dtypes,
    variant=st.sampled_from(VARIANTS),
    options=strategies.options(fp8=False, offload=False),
    save_fp8=st.sampled_from([False, True, "scaled"]),
    stream=st.builds(
        BlockConfig,
        block_rows=st.sampled_from([4, 8]),
        block_hidden=st.sampled_from([128, 256]),  # float32's rings fit in shared memory
        num_stages=st.integers(1, 3),
        row_steps=st.integers(1, 4),
    ),
)
def test_any_strips(data_seed, rows, hidden, dtype, variant, options, save_fp8, stream):
    """Every legal strip gives the same answers: interior, ragged and single blocks."""
    rng = np.random.default_rng(data_seed)
    check_kernels(rng, variant, rows, hidden, dtype, options, save_fp8, stream)


def test_no_rows_launches_nothing():
    y = jnp.zeros((0, 2, 8), jnp.bfloat16)
    bias, weights = jnp.zeros((2, 8), jnp.float32), jnp.zeros((0, 1), jnp.float32)
    out, y_fp8, _ = mosaic_gpu.forward(y, bias, weights, Options(), save_fp8=True)
    assert out.shape == (0, 8) and y_fp8.shape == (0, 2, 8)
    _, y_fp8, y_scale = mosaic_gpu.forward(y, bias, weights, Options(), save_fp8="scaled")
    assert y_fp8.shape == (0, 2, 8) and y_scale.shape == (0, 1)
    dy, dbias, dweights = mosaic_gpu.backward(
        out, y, bias, weights, Options(), dy_dtype=jnp.bfloat16
    )
    assert dy.shape == y.shape and dweights.shape == (0, 1)
    np.testing.assert_array_equal(dbias, np.zeros((2, 8)))


def test_float64_is_not_implemented():
    with jax.enable_x64(True):
        y = jnp.zeros((4, 2, 8), jnp.float64)
        with pytest.raises(NotImplementedError, match="float64"):
            mosaic_gpu.forward(y, None, None, Options(), save_fp8=False)
        with pytest.raises(NotImplementedError, match="float64"):
            mosaic_gpu.backward(y[:, 0], y, None, None, Options(), dy_dtype=jnp.float64)


@pytest.mark.parametrize("save_fp8", [False, True, "scaled"], ids=["plain", "fp8", "scaled"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_lowers_for_cuda(variant, save_fp8):
    """Lowering runs the whole Pallas -> Mosaic GPU pipeline (layouts, TMA descriptors)
    without a GPU; only the final PTX compilation waits for one."""
    dtype = jnp.bfloat16
    y, bias, weights, g = make_inputs(np.random.default_rng(0), variant, 70, 200, dtype)
    opts = Options(**OPTIONS["gpt_oss"])

    def run(y, bias, weights, g):
        out, y_fp8, y_scale = mosaic_gpu.forward(y, bias, weights, opts, save_fp8=save_fp8)
        saved = y_fp8 if save_fp8 else y
        return out, mosaic_gpu.backward(
            g, saved, bias, weights, opts, dy_dtype=dtype, y_scale=y_scale
        )

    lowered = jax.jit(run).trace(y, bias, weights, g).lower(lowering_platforms=("cuda",))
    assert lowered.as_text().count("mosaic_gpu") >= 2
