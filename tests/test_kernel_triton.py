"""The Triton-lowered Pallas kernels: interpret mode against the float64 reference, and
lowering for CUDA from this CPU host."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import strategies
from conftest import DTYPES, SEED, examples
from helpers import check_kernel_gradients, check_saved_copy, exported_text
from hypothesis import given, seed
from hypothesis import strategies as st

from swiglu_jax import testing
from swiglu_jax._options import Options
from swiglu_jax.kernels import triton as kernels
from swiglu_jax.kernels.config import BlockConfig

OPTIONS = {
    "default": Options(),
    "clamp": Options(clamp_value=1.5),
    "gpt_oss": Options(clamp_value=7.0, alpha=1.702, linear_offset=1.0),
}
VARIANTS = {
    "plain": (False, False),
    "bias": (True, False),
    "weighted": (False, True),
    "weighted_bias": (True, True),
}
# Tiles smaller than the arrays, so that every shape has interior and ragged edge tiles.
SMALL_TILES = BlockConfig(block_rows=8, block_hidden=16)


def make(rng, rows, hidden, dtype, has_bias, has_weights):
    y = jnp.asarray(2 * rng.standard_normal((rows, 2, hidden)), dtype)
    bias = jnp.asarray(rng.standard_normal((2, hidden)), jnp.float32) if has_bias else None
    weights = jnp.asarray(rng.uniform(size=(rows, 1)), jnp.float32) if has_weights else None
    g = jnp.asarray(rng.standard_normal((rows, hidden)), dtype)
    return y, bias, weights, g


def reference_options(opts: Options) -> dict:
    return dict(
        clamp_value=opts.clamp_value,
        alpha=opts.alpha,
        linear_offset=opts.linear_offset,
        layout="stacked",
    )


def check(rng, rows, hidden, dtype, variant, opts, config, save_fp8, *, give_scale=False):
    """Forward (and its fp8 copy: ``save_fp8`` False, True or "scaled", its row scales
    given to the kernel with ``give_scale``) and backward against the reference."""
    y, bias, weights, g = make(rng, rows, hidden, dtype, *VARIANTS[variant])
    # The scales the scaled store would compute, handed to the kernel with give_scale.
    given = jnp.asarray(testing.fp8_scaled_cast(y, "stacked")[1]) if give_scale else None
    out, y_fp8, y_scale = kernels.forward(
        y, bias, weights, opts, save_fp8=save_fp8, y_scale=given, interpret=True, config=config
    )
    ref = reference_options(opts)
    assert out.dtype == y.dtype and out.shape == (rows, hidden)
    expected = testing.swiglu_forward(y, bias, weights, **ref)
    assert testing.relative_error(out, expected) <= testing.tolerance(dtype)
    saved = check_saved_copy(y, y_fp8, y_scale, save_fp8)
    dy, dbias, dweights = kernels.backward(
        g,
        saved,
        bias,
        weights,
        opts,
        dy_dtype=dtype,
        y_scale=y_scale,
        interpret=True,
        config=config,
    )
    check_kernel_gradients(
        dy, dbias, dweights, g, y, bias, weights, dtype, fp8_input_store=save_fp8, **ref
    )


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_variants(rng, dtype, variant, options):
    check(rng, 37, 40, dtype, variant, options, SMALL_TILES, save_fp8=False)


@pytest.mark.parametrize("rows,hidden", [(1, 1), (7, 3), (37, 129), (130, 200), (16, 32)])
@pytest.mark.parametrize("config", [None, SMALL_TILES], ids=["default", "small"])
def test_ragged_shapes(rng, rows, hidden, config):
    check(
        rng, rows, hidden, jnp.bfloat16, "weighted_bias", OPTIONS["clamp"], config, save_fp8=False
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("variant", ["plain", "weighted_bias"])
def test_fp8_store_in_the_forward_pass(rng, dtype, variant):
    check(rng, 21, 24, dtype, variant, OPTIONS["gpt_oss"], SMALL_TILES, save_fp8=True)


# Three row blocks a program in the backward: the bias gradient's terms added across them.
STEPPED_TILES = BlockConfig(block_rows=8, block_hidden=16, row_steps=3)


@pytest.mark.parametrize("save_fp8", [False, "scaled"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("rows", [1, 24, 37, 70])
def test_row_steps(rng, rows, variant, save_fp8):
    """Row groups of 3 x 8 rows: one group partly filled, exactly one, ragged, several;
    against the reference, and the bias partials one row a group, each program's row
    blocks strided by the number of groups."""
    check(rng, rows, 40, jnp.bfloat16, variant, OPTIONS["clamp"], STEPPED_TILES, save_fp8)
    y, bias, weights, g = make(rng, rows, 40, jnp.float32, *VARIANTS[variant])
    dy, dbias, _ = kernels.backward_partials(
        g, y, bias, weights, Options(), dy_dtype=jnp.float32, interpret=True,
        config=STEPPED_TILES,
    )  # fmt: skip
    if bias is not None:  # partial row i: row blocks i, i + G, i + 2G of G groups
        groups = -(-rows // 24)
        assert dbias.shape == (groups, 80)
        blocks = np.asarray(dy).reshape(rows, 80)
        blocks = np.pad(blocks, ((0, 24 * groups - rows), (0, 0))).reshape(3, groups, 8, 80)
        np.testing.assert_allclose(dbias, blocks.sum(axis=(0, 2)), rtol=1e-5, atol=1e-5)


def test_row_steps_lower_for_cuda(rng):
    """The looping backward becomes one Triton custom call (the loop inside it) and the
    sum of its partials a second."""
    y, bias, weights, g = make(rng, 70, 40, jnp.bfloat16, True, True)

    def backward(g, y, bias, weights):
        return kernels.backward(
            g, y, bias, weights, Options(), dy_dtype=y.dtype, config=STEPPED_TILES
        )

    text = exported_text(backward, g, y, bias, weights, platform="cuda")
    assert text.count("stablehlo.custom_call @__gpu$xla.gpu.triton") == 2


def test_block_config_rejects_bad_row_steps():
    for bad in (0, -1, 1.5, None):
        with pytest.raises(ValueError, match="row_steps"):
            BlockConfig(8, 16, row_steps=bad)


# Whole rows in one tile (one read of y), several hidden blocks swept twice, ragged both.
SCALED_CASES = {
    "one_block": (21, 24, None),
    "swept": (21, 40, SMALL_TILES),
    "swept_ragged": (37, 129, BlockConfig(block_rows=4, block_hidden=32)),
    "swept_default": (3, 11008, None),  # sweep_config: 3 blocks of 4096, the last ragged
    # 16-bit segments (kernels.segment_width: 256 columns): 2 blocks of 2, the last ragged
    "segments": (5, 768, BlockConfig(block_rows=1, block_hidden=512, num_warps=2)),
}


def test_sweep_config():
    """The scaled store's forward: whole rows where a row fits one tile, a 16-byte load
    of each half a thread (the measured tiles at 4096 x 2048 and 4096 x 4096), else one
    row a program, one 8192-column tile where the row fits it, else 4096-column sweeps,
    and 8 warps per byte of the input."""
    for rows, hidden, dtype, wanted in (
        (4096, 2048, jnp.bfloat16, BlockConfig(1, 2048, num_warps=8)),
        (4096, 2048, jnp.float32, BlockConfig(1, 2048, num_warps=16)),
        (4096, 4096, jnp.bfloat16, BlockConfig(1, 4096, num_warps=16)),
        (4096, 4096, jnp.float32, BlockConfig(1, 4096, num_warps=16)),
        (3, 1000, jnp.bfloat16, BlockConfig(2, 1024, num_warps=8)),
        (64, 5, jnp.float32, BlockConfig(64, 8, num_warps=4)),
    ):
        assert kernels.sweep_config(rows, hidden, dtype) == wanted
    for hidden, block in ((5000, 8192), (8192, 8192), (8193, 4096), (14336, 4096)):
        for dtype, warps in ((jnp.bfloat16, 16), (jnp.float16, 16), (jnp.float32, 32)):
            config = kernels.sweep_config(8192, hidden, dtype)
            assert (config.block_rows, config.block_hidden, config.num_warps) == (1, block, warps)


def test_segments_switch_off(monkeypatch):
    """``SWEEP_IN_SEGMENTS`` off sweeps rows in tiles."""
    sweep = BlockConfig(1, 4096, num_warps=16)
    assert kernels.segment_width(11008, jnp.bfloat16, sweep) == 256
    monkeypatch.setattr(kernels, "SWEEP_IN_SEGMENTS", False)
    assert kernels.segment_width(11008, jnp.bfloat16, sweep) is None
    assert kernels.segment_width(11008, jnp.float32, sweep) is None


def test_segment_width():
    """The scaled store's sweep takes rows in one warp's 16-byte columns (256 of a 16-bit
    type, 128 of float32) where ``H`` and the block are whole segments, each warp has at
    least one and a warp's lanes hold them all; the rest sweep tiles."""
    sweep = BlockConfig(1, 4096, num_warps=16)
    assert kernels.segment_width(11008, jnp.bfloat16, sweep) == 256
    assert kernels.segment_width(14336, jnp.float16, sweep) == 256
    assert kernels.segment_width(14336, jnp.float32, BlockConfig(1, 4096, num_warps=32)) == 128
    assert kernels.segment_width(14336, jnp.float32, kernels.sweep_config(8, 14336, "float32"))
    assert kernels.segment_width(11000, jnp.bfloat16, sweep) is None  # not whole segments
    assert kernels.segment_width(4096, jnp.bfloat16, sweep) is None  # one block: one read
    assert kernels.segment_width(8192, jnp.bfloat16, BlockConfig(2, 4096, num_warps=16)) is None
    assert kernels.segment_width(8192, jnp.bfloat16, BlockConfig(1, 512, num_warps=4)) is None
    wide = BlockConfig(1, 16384, num_warps=16)  # 64 segments: more than a warp's lanes
    assert kernels.segment_width(32768, jnp.bfloat16, wide) is None
    assert kernels.segment_width(11008, jnp.bfloat16, kernels.sweep_config(8, 11008, "bfloat16"))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32], ids=str)
@pytest.mark.parametrize("options", ["default", "gpt_oss"])
def test_segments_are_the_tiles_sweep_bit_for_bit(rng, dtype, options):
    """The segments' sweep (``_Segments``) and the tiles' (``_Tile``) compute the same
    bits: out, the scaled copy and the scales, with a bias and weights, ragged blocks."""
    rows, hidden, bh = 6, 1280, 512  # 16-bit: 5 segments of 256, blocks of 2, 2 and 1
    width = kernels.segment_columns(dtype)  # float32: 10 of 128, blocks of 4, 4 and 2
    y = jnp.asarray(rng.standard_normal((rows, 2, hidden)) * 3, dtype).at[2, 1, 1100].set(99)
    bias = jnp.asarray(rng.standard_normal((2, hidden)), dtype)
    weights = jnp.asarray(rng.uniform(0.5, 2, (rows, 1)), jnp.float32)
    segments = BlockConfig(1, bh, num_warps=2)
    tiles = BlockConfig(1, bh, num_warps=8)  # more warps than segments: the tiles' sweep
    assert kernels.segment_width(hidden, dtype, segments) == width
    assert kernels.segment_width(hidden, dtype, tiles) is None
    run = lambda config: kernels.forward(
        y, bias, weights, OPTIONS[options], save_fp8="scaled", interpret=True, config=config
    )
    for got, want in zip(run(segments), run(tiles), strict=True):
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


@pytest.mark.parametrize("case", SCALED_CASES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_scaled_fp8_store(rng, variant, case, monkeypatch):
    rows, hidden, config = SCALED_CASES[case]
    monkeypatch.setattr(kernels, "SWEEP_IN_SEGMENTS", case == "segments")
    check(rng, rows, hidden, jnp.bfloat16, variant, OPTIONS["gpt_oss"], config, "scaled")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_scaled_fp8_store_with_given_scales(rng, dtype):
    """The scales of a row sharded over devices come from the caller: usual tiles."""
    check(
        rng,
        21,
        40,
        dtype,
        "weighted_bias",
        OPTIONS["clamp"],
        SMALL_TILES,
        "scaled",
        give_scale=True,
    )


@seed(SEED)
@examples(0.2)
@given(
    data_seed=strategies.seeds,
    rows=st.integers(1, 40),
    hidden=strategies.hidden_sizes(140),
    dtype=strategies.dtypes,
    variant=st.sampled_from(list(VARIANTS)),
    options=strategies.options(fp8=False, offload=False),
    config=st.builds(
        BlockConfig,
        block_rows=st.sampled_from([2, 4, 8, 16, 64]),
        block_hidden=st.sampled_from([16, 32, 64, 256]),
        row_steps=st.sampled_from([1, 2, 3]),
    ),
    save_fp8=st.sampled_from([False, True, "scaled"]),
)
def test_any_tiles(data_seed, rows, hidden, dtype, variant, options, config, save_fp8):
    """Every legal tile shape and row steps give the same answers: interior, ragged and
    single tiles (at most 20 x 9 of them: interpret mode runs each program in turn)."""
    rng = np.random.default_rng(data_seed)
    check(rng, rows, hidden, dtype, variant, Options(**options), config, save_fp8)


def test_zero_rows():
    y = jnp.zeros((0, 2, 8), jnp.bfloat16)
    out, y_fp8, _ = kernels.forward(y, None, None, Options(), save_fp8=True, interpret=True)
    assert out.shape == (0, 8) and y_fp8.shape == (0, 2, 8)
    _, y_fp8, y_scale = kernels.forward(y, None, None, Options(), save_fp8="scaled")
    assert y_fp8.shape == (0, 2, 8) and y_scale.shape == (0, 1)
    bias, weights = jnp.ones((2, 8)), jnp.ones((0, 1))
    dy, dbias, dweights = kernels.backward(
        jnp.zeros((0, 8), jnp.bfloat16),
        y,
        bias,
        weights,
        Options(),
        dy_dtype=jnp.bfloat16,
        interpret=True,
    )
    assert dy.shape == (0, 2, 8) and not np.any(dbias) and dweights.shape == (0, 1)


@pytest.mark.parametrize("rows, columns", [(1, 37), (64, 4096), (65, 33), (300, 100)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_rows(rng, rows, columns, dtype):
    """The bias gradient's partial sums, summed over rows by their own kernel: against
    float64, for one partial row (then exactly itself), ragged strips and several loop
    steps; the input is left as it was."""
    partials = jnp.asarray(rng.standard_normal((rows, columns)), jnp.float32)
    before = np.asarray(partials).copy()
    total = kernels.sum_rows(partials, dtype, interpret=True)
    assert total.shape == (columns,) and total.dtype == jnp.dtype(dtype)
    expected = testing.to_float64(partials).sum(axis=0)
    assert testing.relative_error(total, expected) <= testing.tolerance(dtype, terms=rows)
    if rows == 1:
        np.testing.assert_array_equal(np.asarray(total), before[0].astype(dtype))
    np.testing.assert_array_equal(np.asarray(partials), before)


@pytest.mark.parametrize("columns, warps", [(16, 1), (128, 2), (256, 8)])
def test_sum_rows_blocks(rng, columns, warps):
    """Other strips than the default: ragged columns, two loop steps; the same sums."""
    partials = jnp.asarray(rng.standard_normal((97, 300)), jnp.float32)
    total = kernels.sum_rows(partials, jnp.float32, interpret=True, columns=columns, warps=warps)
    expected = testing.to_float64(partials).sum(axis=0)
    assert testing.relative_error(total, expected) <= testing.tolerance("float32", terms=97)


def test_declines_float64():
    with jax.enable_x64(True), pytest.raises(NotImplementedError, match="float64"):
        kernels.forward(jnp.ones((2, 2, 4), jnp.float64), None, None, Options(), save_fp8=False)


def wanted_tile(rows, hidden, dtype, *, whole_rows, stores_fp8):
    """default_config's rule, spelled out: (most elements a tile, widest row, elements a
    thread, whether the warps are capped at MAX_WARPS_BACKWARD in the backward)."""
    small = rows * hidden < kernels.SMALL_GRID_OUTPUTS
    itemsize = jnp.dtype(dtype).itemsize
    if not (whole_rows or stores_fp8):  # elementwise: one row of NARROW_TILE_BYTES
        narrow = kernels.NARROW_TILE_BYTES // itemsize
        return narrow, narrow, kernels.NARROW_BYTES_PER_THREAD // itemsize, False
    if not small:  # one row of up to MAX_BLOCK_HIDDEN where H fills TILE_ELEMENTS
        return kernels.TILE_ELEMENTS, kernels.MAX_BLOCK_HIDDEN, kernels.ELEMENTS_PER_THREAD, True
    if whole_rows:
        tile, widest = kernels.TILE_ELEMENTS, kernels.MAX_BLOCK_HIDDEN
    else:
        tile = widest = kernels.SMALL_GRID_TILE_ELEMENTS
    return tile, widest, kernels.SMALL_GRID_ELEMENTS_PER_THREAD, False


@pytest.mark.parametrize("whole_rows", [False, True])
@pytest.mark.parametrize("stores_fp8", [False, True])
def test_default_config_serves_all_sizes(whole_rows, stores_fp8):
    flags = {"whole_rows": whole_rows, "stores_fp8": stores_fp8}
    for rows in (1, 3, 1000, 4096, 32768):
        for hidden in (1, 5, 128, 2048, 11008, 14336):
            for dtype in (jnp.bfloat16, jnp.float16, jnp.float32):
                most_elements, widest, per_thread, capped = wanted_tile(
                    rows, hidden, dtype, **flags
                )
                config = kernels.default_config(rows, hidden, dtype, **flags)
                tile = config.block_rows * config.block_hidden
                assert config.block_hidden == min(kernels.next_power_of_2(hidden), widest)
                assert config.block_rows == 1 or tile <= most_elements
                if whole_rows and hidden <= kernels.MAX_BLOCK_HIDDEN:
                    assert config.block_hidden >= hidden
                # per_thread elements a thread where 4 warps to the most allow it: fewer
                # with wide tiles in large grids, in the backward and float32's fp8 store.
                fp8_in_float32 = stores_fp8 and jnp.dtype(dtype).itemsize == 4
                for backward in (False, True):
                    found = kernels.default_config(rows, hidden, dtype, backward=backward, **flags)
                    assert (found.block_rows, found.block_hidden) == (
                        config.block_rows,
                        config.block_hidden,
                    )
                    few = capped and (backward or fp8_in_float32)
                    most = kernels.MAX_WARPS_BACKWARD if few else kernels.MAX_WARPS
                    assert 4 <= found.num_warps <= most
                    found_per_thread = tile // (32 * found.num_warps)
                    assert found_per_thread == per_thread or found.num_warps in (4, most)
            # Tall tiles and several row blocks a program when rows are reduced: few
            # float32 partial rows per output row, and no row steps past the last row.
            for dtype, wanted in (
                (jnp.bfloat16, kernels.REDUCING_TILE_16BIT),
                (jnp.float16, kernels.REDUCING_TILE_16BIT),
                (jnp.float32, kernels.REDUCING_TILE),
            ):
                tall, wide_columns, warps, steps = wanted
                reducing = kernels.default_config(rows, hidden, dtype, reduces_rows=True)
                assert reducing.block_hidden == min(kernels.next_power_of_2(hidden), wide_columns)
                assert reducing.block_rows >= min(tall, kernels.next_power_of_2(rows))
                assert reducing.num_warps == warps
                row_blocks = -(-rows // reducing.block_rows)
                assert reducing.row_steps == min(steps, row_blocks)
    # The tiles measured (PERF_NOTES.md): the elementwise kernels 1 x 1024 (16-bit) or
    # 1 x 512 (float32) with 8 warps at every size; the fp8 store 1 x 4096 with 16 warps
    # (bf16) or 8 (float32) beyond SMALL_GRID_OUTPUTS, 1 x 1024 with 8 below.
    for rows, hidden in ((4096, 2048), (8192, 14336)):
        for backward in (False, True):
            for dtype, columns in ((jnp.bfloat16, 1024), (jnp.float16, 1024), (jnp.float32, 512)):
                assert kernels.default_config(rows, hidden, dtype, backward=backward) == (
                    BlockConfig(1, columns, num_warps=8)
                )
    assert kernels.default_config(4096, 2048, jnp.bfloat16, stores_fp8=True) == BlockConfig(
        1, 1024, num_warps=8
    )
    for dtype, warps in ((jnp.bfloat16, 16), (jnp.float32, 8)):
        assert kernels.default_config(8192, 14336, dtype, stores_fp8=True) == BlockConfig(
            1, 4096, num_warps=warps
        )

    # The backward: whole rows with weights (their gradient sums each row: 16 warps at
    # 4096 x 2048, 4 elements a thread), the reducing tile with a bias, default tiles
    # otherwise.
    def backward(dtype=jnp.bfloat16, **flags):
        return kernels.backward_config(4096, 2048, dtype, **flags)

    assert backward(bias=False, weights=True) == BlockConfig(1, 2048, num_warps=16)
    assert backward(bias=True, weights=True) == BlockConfig(16, 128, num_warps=4, row_steps=8)
    assert backward(jnp.float32, bias=True, weights=False) == BlockConfig(
        32, 128, num_warps=4, row_steps=8
    )
    assert backward(bias=False, weights=False) == BlockConfig(1, 1024, num_warps=8)


@pytest.mark.parametrize("save_fp8", [True, "scaled"])
@pytest.mark.parametrize("hidden", [129, 5000])
@pytest.mark.parametrize("variant", VARIANTS)
def test_lowers_for_cuda(rng, variant, hidden, save_fp8):
    """Forward (with the fp8 store, plain or scaled: one tile or swept rows) and backward
    become Triton custom calls for CUDA, and with a bias a third sums its partials."""
    y, bias, weights, g = make(rng, 37, hidden, jnp.bfloat16, *VARIANTS[variant])
    opts = OPTIONS["gpt_oss"]

    def forward_and_backward(y, bias, weights, g):
        out, y_fp8, y_scale = kernels.forward(y, bias, weights, opts, save_fp8=save_fp8)
        return out, kernels.backward(
            g, y_fp8, bias, weights, opts, dy_dtype=y.dtype, y_scale=y_scale
        )

    text = exported_text(forward_and_backward, y, bias, weights, g, platform="cuda")
    has_bias = bias is not None
    assert text.count("stablehlo.custom_call @__gpu$xla.gpu.triton") == 2 + has_bias
    assert 'name = "swiglu_forward_triton"' in text and 'name = "swiglu_backward_triton"' in text
    assert ('name = "swiglu_sum_rows_triton"' in text) == has_bias
