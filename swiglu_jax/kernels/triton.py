"""The Triton-lowered Pallas kernels for GPUs (Ampere and newer).

Grid ``(hidden blocks, row blocks)`` (``_grid``); each program computes a ``(block_rows,
block_hidden)`` tile of the output from the matching gate and linear tiles of ``y``,
addressed in the ``(N, 2H)`` view with explicit masks at the ragged edges. (Blocked
``(bn, 2, bh)`` refs indexed ``[:, 0, :]`` lowered wrongly for ragged ``H`` on an H100
with jax 0.11.2, so every access here is an explicit masked 2-D load or store.)

The backward writes, besides ``dy``, partial sums for the bias gradient (``(row groups,
2H)`` in float32: a program sums the terms of its ``row_steps`` row blocks, adding them
in registers first, then over rows), which a second Triton kernel sums in a fixed order
(``sum_rows``), and for the weights gradient (``(N, hidden blocks)``), which a small XLA
reduction finishes: the full ``(N, 2H)`` gradient is read only once. (Summing the bias's
partial sums in the backward's own launch, in the last program of each hidden block to
arrive, was slower at every size: PERF_NOTES.md, session 7.)

The scaled fp8 store (``save_fp8="scaled"``) needs each row's maximum before it
quantizes any of it, so its forward gives each program whole rows: grid ``(1, row
blocks)``, the program sweeping its rows' hidden blocks twice where there are several
(``H > block_hidden``): once for the maximum, once for the output and the fp8 copy. The
second sweep reads what the first just read, from the L1/L2 cache rather than HBM (a row
of ``H = 14336`` in bfloat16 is 56 KiB), so HBM still sees ``y`` read once: the first
sweep's loads ask L2 to keep their lines (``evict_last``), the second sweep's loads and
the stores, which pass once, to drop theirs first (``SWEEP_EVICT``). XLA launches a
kernel that uses shared memory (these reductions do) preferring shared memory to L1, so
on the JAX path the second sweep is served by L2 alone; torch_bridge's launch leaves the
driver's default and finds part of the row in L1 (PERF_NOTES.md, session 11). So rows
are swept in one-warp segments instead (``_Segments``, ``SWEEP_IN_SEGMENTS``), whose
maximum crosses warps through global memory: no shared memory (session 12). Where the
caller gives the row scales (``H`` sharded: the maximum spans devices), the forward
keeps its usual tiles and only quantizes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from swiglu_jax import _math
from swiglu_jax._options import Options
from swiglu_jax.kernels.config import BlockConfig, next_power_of_2

FP8_DTYPE = _math.FP8_DTYPE
KERNEL_DTYPES = tuple(jnp.dtype(d) for d in (jnp.float16, jnp.bfloat16, jnp.float32))

# Tile shapes chosen by measurement (benchmarks/PERF_NOTES.md, H100). The elementwise
# kernels (the forward without the fp8 store, the backward without a reduction) take
# narrow tiles at every size: one row of NARROW_TILE_BYTES of each input, 8 bytes a
# thread (NARROW_BYTES_PER_THREAD), 8 warps: 1 x 1024 for 16-bit types, 1 x 512 for
# float32. Side by side at the benchmark's sizes from 8192 x 4096 to 32768 x 14336
# (gaps.py perthread_*): session 9, bf16 forward 101.2-103.0% of copy where 1 x 4096 with
# 16 warps (8 a thread) read 99.5-101.8 and XLA's fusion 101.3-102.8, backward +0.6-1.6
# points, level with XLA; session 10, float32 at 2 a thread (8 bytes) forward 102.1-103.0%
# where 4 a thread read 100.6-102.0 and torch.compile 102.1-103.0 (it autotunes to the
# same 512 elements with 8 warps), backward +0.3-0.4 points. 8 bytes a thread is the
# winner in both: bf16 at 2 a thread read 86-88%. At 4096 x 2048 the bf16 tiles read
# 93.9 / 95.0% (forward / backward, session 7) where 1 x 2048 with 8 warps read 91.2 / 94.3.
NARROW_TILE_BYTES = 2048
NARROW_BYTES_PER_THREAD = 8
# The forward with the fp8 store and kernels that need whole rows (the weighted backward,
# whose weights gradient sums each row) take wide tiles in large grids: TILE_ELEMENTS
# outputs, one row of up to MAX_BLOCK_HIDDEN contiguous columns per program (8 x 1024:
# 85-96% of copy bandwidth; 1 x 4096: 93-98%), ELEMENTS_PER_THREAD a thread (one 16-byte
# load of a 16-bit half, two of float32), from 4 up to 16 warps, or up to 8 (16 elements
# a thread in 1 x 4096 tiles) in the backward and in the float32 forward with the fp8
# store. Measured with 1 x 4096 tiles, 8 against 16 warps, side by side (session 7): 16
# warps 6-9 points ahead in the 16-bit forward with the fp8 store (H200); 8 warps 2.4
# ahead in the 16-bit weighted backward and 6 in the float32 forward with the fp8 store.
# The fp8 store at 4 elements a thread (session 9): within a point either way.
TILE_ELEMENTS = 2048
MAX_BLOCK_HIDDEN = 4096
ELEMENTS_PER_THREAD = 8
MAX_WARPS = 16
MAX_WARPS_BACKWARD = 8  # and the float32 forward with the fp8 store
# In grids of fewer outputs than SMALL_GRID_OUTPUTS (under 8 waves of threads at 8
# elements a thread on a 132-SM GPU) these kernels too take SMALL_GRID_ELEMENTS_PER_THREAD
# a thread: one row of up to SMALL_GRID_TILE_ELEMENTS columns for the fp8 store, whole
# rows where a kernel needs them: the weighted backward at 4096 x 2048 read 95.7 / 97.9%
# (bf16 / float32) with 1 x 2048 and 16 warps, 94.2 / 97.2% with 8 (session 9).
SMALL_GRID_OUTPUTS = 2**24
SMALL_GRID_TILE_ELEMENTS = 1024
SMALL_GRID_ELEMENTS_PER_THREAD = 4
# With a fused row reduction (the bias gradient) every program writes one float32
# partial row per hidden column, so programs cover many rows: a tall tile, and a loop over
# `row_steps` row blocks whose terms are added in registers and summed across warps once.
# 128 rows a program keep those partials to 4 / (128 * 2) = 1.6% of the bfloat16
# gradient's bytes. Eight tiles measured side by side on an H100 under both compilers of
# the IR, at 4096 x 4096, 4096 x 8192 and 8192 x 28672 (PERF_NOTES.md, session 9):
# 16 x 128 with 4 warps and 8 steps in 16-bit types read 83.0 / 87.7 / 94.8% of copy on
# the JAX path and 76.7 / 84.0 / 95.9% in the direct launch, where the one-step tiles
# of session 6 (64 x 128 with 8 warps under XLA, 32 x 128 with 4 under upstream triton)
# read 79.0 / 86.3 / 94.3 and 73.1 / 83.2 / 92.1; 32 x 128 with 4 warps and 4 steps in
# float32 read 89.3 / 93.3 / 97.2 (JAX path, was 86.5 / 91.8 / 96.8) and 87.0 / 92.9 /
# 97.4 (direct launch, was 88.5 / 93.3 / 96.6: within noise). One tile for both.
# Session 15 (JAX path, H100): the loop, not the bias, is what these kernels lose to the
# plain backward (the plain kernel in this tile reads 2-7% less with 8 steps than with
# one); taking each program's row blocks strided (see _backward_kernel) won back 1-2
# points in 16-bit types at 4096 x 4096 to 8192 x 8192 (level at 8192 x 28672), and
# float32 with 8 steps 0.4-2.1 at every size: 91.5 / 94.0 / 96.5 / 97.5% at 4096 x
# 4096, 4096 x 8192, 8192 x 8192 and 8192 x 28672, where 4 contiguous steps read 89.4 /
# 93.5 / 95.4 / 97.1.
REDUCING_TILE = (32, 128, 4, 8)  # rows, columns, warps, row steps
REDUCING_TILE_16BIT = (16, 128, 4, 8)


def default_config(
    rows: int,
    hidden: int,
    dtype,
    *,
    reduces_rows: bool = False,
    backward: bool = False,
    stores_fp8: bool = False,
    whole_rows: bool = False,
) -> BlockConfig:
    """Narrow tiles for the elementwise kernels (one row of up to ``NARROW_TILE_BYTES`` of
    each input, ``NARROW_BYTES_PER_THREAD`` a thread). Where the forward ``stores_fp8`` or
    the kernel needs ``whole_rows`` in a tile (the weights gradient's row sums): in large
    grids tiles of ``TILE_ELEMENTS`` outputs (one row of up to ``MAX_BLOCK_HIDDEN``),
    ``ELEMENTS_PER_THREAD`` a thread from 4 to ``MAX_WARPS`` warps (``MAX_WARPS_BACKWARD``
    for the ``backward`` kernel and the float32 fp8 store); in grids of fewer than
    ``SMALL_GRID_OUTPUTS`` outputs ``SMALL_GRID_ELEMENTS_PER_THREAD`` a thread, in one row
    of up to ``SMALL_GRID_TILE_ELEMENTS`` for the fp8 store, whole rows where needed. When
    the kernel ``reduces_rows``, ``REDUCING_TILE`` (``REDUCING_TILE_16BIT`` for a 16-bit
    ``dtype``).

    Triton needs power-of-two tiles; edge tiles are masked, so no size is excluded.
    """
    if reduces_rows:
        sixteen_bit = jnp.dtype(dtype).itemsize == 2
        tall, wide, warps, steps = REDUCING_TILE_16BIT if sixteen_bit else REDUCING_TILE
        block_hidden = min(next_power_of_2(hidden), wide)
        block_rows = min(next_power_of_2(max(rows, 1)), tall * wide // block_hidden)
        steps = min(steps, pl.cdiv(max(rows, 1), block_rows))
        return BlockConfig(block_rows, block_hidden, num_warps=warps, row_steps=steps)
    small = rows * hidden < SMALL_GRID_OUTPUTS
    if whole_rows:
        tile, widest = TILE_ELEMENTS, MAX_BLOCK_HIDDEN
        per_thread = SMALL_GRID_ELEMENTS_PER_THREAD if small else ELEMENTS_PER_THREAD
    elif not stores_fp8:
        itemsize = jnp.dtype(dtype).itemsize
        tile = widest = NARROW_TILE_BYTES // itemsize
        per_thread = NARROW_BYTES_PER_THREAD // itemsize
    elif small:
        tile = widest = SMALL_GRID_TILE_ELEMENTS
        per_thread = SMALL_GRID_ELEMENTS_PER_THREAD
    else:  # one tile shape for every dtype: the output tile bounds the registers
        tile, widest, per_thread = TILE_ELEMENTS, MAX_BLOCK_HIDDEN, ELEMENTS_PER_THREAD
    fewer = backward or (stores_fp8 and jnp.dtype(dtype).itemsize == 4)
    most = MAX_WARPS_BACKWARD if fewer and per_thread == ELEMENTS_PER_THREAD else MAX_WARPS
    block_hidden = min(next_power_of_2(hidden), widest)
    block_rows = min(next_power_of_2(max(rows, 1)), max(1, tile // block_hidden))
    num_warps = min(most, max(4, block_rows * block_hidden // (32 * per_thread)))
    return BlockConfig(block_rows, block_hidden, num_warps=num_warps)


def backward_config(rows: int, hidden: int, dtype, *, bias: bool, weights: bool) -> BlockConfig:
    """The backward kernel's tiles: with a ``bias``, the reducing tile (its gradient sums
    over rows); with ``weights``, whole rows where they fit one tile (their gradient sums
    each row: at 4096 x 2048 on an H100, 1024-column tiles read 91.2% of copy in bf16
    against 93.9% with whole rows, PERF_NOTES.md, session 8); else ``default_config``'s."""
    return default_config(rows, hidden, dtype, reduces_rows=bias, backward=True, whole_rows=weights)


# The scaled store's forward reads a row that fits one tile once, each thread taking one
# 16-byte load of each half (8 elements of a 16-bit type, 4 of float32) with up to
# MAX_WARPS warps. Measured side by side on an H100 (PERF_NOTES.md, session 9): at 4096 x
# 2048 in bf16 1 x 2048 with 8 warps read 90.8% of copy, with 16 84.7%; in float32 16
# warps 97.0%, 8 94.8%; at 4096 x 4096 in float32, 1 x 4096 with 16 warps 98.5%, 8 96.3%.
SWEEP_BYTES_PER_THREAD = 16
# Rows of up to SWEEP_ONE_TILE columns take one tile of that width, read once. Wider rows
# are swept twice (module doc) in tiles of SWEEP_BLOCK_HIDDEN columns, and the second
# sweep must find the row still in L2: fewer rows in flight per SM (16 warps a program
# for 16-bit and 32 for 32-bit inputs: 16 or 8 elements of each half a thread), and cache
# policies (SWEEP_EVICT) that keep the first sweep's lines in L2 over the streams that
# pass once: the second sweep's loads and every store. Measured on an H100 side by side
# (PERF_NOTES.md, session 11) at H = 11008 and 14336: the policies lifted the JAX path
# from 79-85% of copy to 82-91%, the direct launch from 77-87% to 88-98%; then 4096-column
# tiles (where 4096 or 8192, whichever padded less, had given 8192 at 14336) +3.7 (bf16,
# JAX path) and +6.3-6.4 (direct launch); 2048 columns, 8 or 32 warps all slower. Without
# the policies, 1 x 4096 tiles of 8 warps gave 62-90% and one 16384-column tile a row (one
# read) 62-80% (session 9).
SWEEP_ONE_TILE = 8192
SWEEP_BLOCK_HIDDEN = 4096
SWEEP_EVICT = ("evict_last", "evict_first", "evict_first")  # sweep 1 loads, sweep 2 loads, stores
# Rows swept in one-warp segments (``segment_width``), measured faster on an H100
# (sessions 11 and 12); False sweeps them in tiles (a switch to measure one against the
# other).
SWEEP_IN_SEGMENTS = True


def sweep_config(rows: int, hidden: int, dtype) -> BlockConfig:
    """The scaled store's forward tiles: where a row fits ``MAX_BLOCK_HIDDEN`` columns,
    whole rows in tiles of up to ``TILE_ELEMENTS``, ``SWEEP_BYTES_PER_THREAD`` of each half
    a thread; else one row a program, in one tile of ``SWEEP_ONE_TILE`` columns where the
    row fits it, else ``SWEEP_BLOCK_HIDDEN`` columns, 8 warps per byte of ``dtype``."""
    itemsize = jnp.dtype(dtype).itemsize
    if hidden <= MAX_BLOCK_HIDDEN:
        block_hidden = next_power_of_2(hidden)
        block_rows = min(next_power_of_2(max(rows, 1)), max(1, TILE_ELEMENTS // block_hidden))
        per_thread = SWEEP_BYTES_PER_THREAD // itemsize
        warps = min(MAX_WARPS, max(4, block_rows * block_hidden // (32 * per_thread)))
        return BlockConfig(block_rows, block_hidden, num_warps=warps)
    block_hidden = SWEEP_ONE_TILE if hidden <= SWEEP_ONE_TILE else SWEEP_BLOCK_HIDDEN
    return BlockConfig(1, block_hidden, num_warps=8 * itemsize)


# Pallas' Triton lowering switches to 64-bit offsets only for arrays above 2^32 bytes,
# so an 8-bit array of 2^31 elements or more would be addressed with overflowing 32-bit
# offsets (seen on an H100: wrong results, writes out of bounds). Such inputs are declined.
MAX_8BIT_ELEMENTS = 2**31 - 1


def _check(config: BlockConfig, *arrays):
    for x in arrays:
        if x is not None and x.dtype not in (*KERNEL_DTYPES, jnp.dtype(FP8_DTYPE)):
            raise NotImplementedError(f"the Triton kernels do not compute {x.dtype}")
        if x is not None and x.dtype.itemsize == 1 and x.size > MAX_8BIT_ELEMENTS:
            raise NotImplementedError(
                f"the Triton kernels address 8-bit arrays of at most 2^31 - 1 elements, "
                f"got {x.dtype} of shape {x.shape}"
            )
    for name in ("block_rows", "block_hidden"):
        size = getattr(config, name)
        if size != next_power_of_2(size):
            raise ValueError(f"Triton tiles must be powers of two, got {name}={size}")


def _compiler_params(config: BlockConfig):
    return pltriton.CompilerParams(num_warps=config.num_warps, num_stages=config.num_stages)


def _grid(rows: int, hidden: int, bn: int, bh: int) -> tuple[int, int]:
    """``(hidden blocks, row blocks)``: the hidden blocks vary fastest in launch order
    (CUDA's x), so the programs running at the same time sweep whole rows of contiguous
    memory. Rows first cost 2-7% of the copy bandwidth on an H100 wherever ``H`` spans
    more than one block (PERF_NOTES.md)."""
    return pl.cdiv(hidden, bh), pl.cdiv(rows, bn)


class _Area:
    """The masked loads and stores a program makes where it works: a subclass sets
    ``mask``, ``gate`` and ``linear`` (where the tile lies in each half of ``y``'s last
    axis, also the output's for ``gate``) and ``index(part)``, the index of a ref."""

    def load_halves(self, ref, evict=None):
        """The gate and linear tiles of ``y`` (unspecified outside the array: stores are
        masked, and reductions mask their terms); ``evict``: the L2 eviction policy."""
        return tuple(
            pltriton.load(ref.at[self.index(part)], mask=self.mask, eviction_policy=evict)
            for part in (self.gate, self.linear)
        )

    def store_halves(self, ref, gate, linear, evict=None):
        for part, x in ((self.gate, gate), (self.linear, linear)):
            self._store(ref, part, x, evict)

    def load(self, ref):
        """The tile of an ``(N, H)`` ref (the cotangent)."""
        return pltriton.load(ref.at[self.index(self.gate)], mask=self.mask)

    def store(self, ref, value, evict=None):
        """The tile of an ``(N, H)`` ref (the output)."""
        self._store(ref, self.gate, value, evict)

    def _store(self, ref, part, value, evict):
        index = ref.at[self.index(part)]
        pltriton.store(index, value.astype(ref.dtype), mask=self.mask, eviction_policy=evict)

    def row_maxima(self, gate, linear):
        """The largest finite magnitude of each row of the two tiles (the last axis)."""
        amax = lambda x: jnp.max(
            jnp.where(self.mask, _math.finite_magnitude(x.astype(jnp.float32)), 0.0), axis=-1
        )
        return jnp.maximum(amax(gate), amax(linear))


class _Tile(_Area):
    """Where program ``(i, j)`` works: rows ``i * bn + [0, bn)`` and output columns
    ``j * bh + [0, bh)``, with the masks of the ragged edges. Arrays are addressed as 2-D
    views, ``y`` as ``(N, 2H)``: the gate at columns ``[0, H)``, the linear half at
    ``[H, 2H)``."""

    def __init__(self, rows: int, hidden: int, bn: int, bh: int, i=None, j=None):
        i = pl.program_id(1) if i is None else i  # see _grid
        j = pl.program_id(0) if j is None else j
        self.i, self.j, self.hidden = i, j, hidden
        self.geometry = (rows, hidden, bn, bh)
        self.row_ok = (i * bn + jax.lax.iota(jnp.int32, bn)) < rows
        self.col_ok = (j * bh + jax.lax.iota(jnp.int32, bh)) < hidden
        self.mask = self.row_ok[:, None] & self.col_ok[None, :]
        self.row_block = pl.ds(i * bn, bn)
        self.gate = pl.ds(j * bh, bh)  # gate columns, and output columns
        self.linear = pl.ds(hidden + j * bh, bh)

    def index(self, cols):
        return self.row_block, cols

    def at_block(self, j) -> _Tile:
        """The tile of the same rows at hidden block ``j`` (a loop index: the program ids
        are read outside loops, where interpret mode can substitute them)."""
        return _Tile(*self.geometry, i=self.i, j=j)

    def at_row_block(self, i) -> _Tile:
        """The tile of the same columns at row block ``i`` (a loop index, as above)."""
        return _Tile(*self.geometry, i=i, j=self.j)

    def load_bias(self, ref):
        """Both halves of the ``(2H,)`` bias as ``(1, bh)`` rows, in float32."""
        gate = pltriton.load(ref.at[self.gate], mask=self.col_ok)
        linear = pltriton.load(ref.at[self.linear], mask=self.col_ok)
        return gate.astype(jnp.float32)[None, :], linear.astype(jnp.float32)[None, :]

    def load_per_row(self, ref):
        """The ``(bn, 1)`` values (token weights, row scales) of the ``(N, 1)`` ref, in
        float32."""
        values = pltriton.load(ref.at[self.row_block, pl.ds(0, 1)], mask=self.row_ok[:, None])
        return values.astype(jnp.float32)

    def store_per_row(self, ref, value):
        pltriton.store(ref.at[self.row_block, pl.ds(0, 1)], value, mask=self.row_ok[:, None])

    def row_amax(self, gate, linear):
        """``(bn, 1)``: the largest finite magnitude of each row of the two tiles."""
        return self.row_maxima(gate, linear)[:, None]

    def amax_zeros(self):
        return jnp.zeros((self.geometry[2], 1), jnp.float32)

    def row_maximum(self, amax, partials_ref, barrier):
        """Each row's maximum from ``row_amax``'s running values: they are it already."""
        del partials_ref, barrier
        return amax


class _Segments(_Area):
    """Where program ``(0, i)`` of a sweep works when each of its rows' hidden blocks is
    ``bh / width`` segments of ``width`` columns, one warp's 16-byte loads each
    (``segment_width``): arrays are addressed as ``(N, columns / width, width)`` views,
    ``y``'s gate at segments ``[0, H / width)``, the linear half after. A segment's
    maximum is a maximum over one warp's lanes, and the row's maximum is taken from the
    segments' maxima through global memory (``row_maximum``), where the tiles' sweep
    crosses warps through shared memory at every block. The kernel then uses no shared
    memory at all, and XLA launches it without preferring shared memory to L1, so the
    second sweep finds part of the row in L1 (PERF_NOTES.md, sessions 11 and 12)."""

    def __init__(self, rows: int, hidden: int, bn: int, bh: int, width: int, i=None, j=None):
        del bn  # one row a program
        self.i = pl.program_id(1) if i is None else i
        j = pl.program_id(0) if j is None else j  # 0, traced: slices past the end are masked
        self.geometry = (rows, hidden, 1, bh, width)
        self.count, self.segments = bh // width, hidden // width
        first = j * self.count
        ok = (first + jax.lax.iota(jnp.int32, self.count)) < self.segments
        self.mask = jnp.broadcast_to(ok[:, None], (self.count, width))
        self.gate = pl.ds(first, self.count)
        self.linear = pl.ds(self.segments + first, self.count)
        self.lanes = pl.ds(0, width)

    def index(self, segs):
        return self.i, segs, self.lanes

    def at_block(self, j) -> _Segments:
        return _Segments(*self.geometry, i=self.i, j=j)

    def load_bias(self, ref):
        """Both halves of the ``(2H / width, width)`` bias view, in float32."""
        return tuple(
            pltriton.load(ref.at[segs, self.lanes], mask=self.mask).astype(jnp.float32)
            for segs in (self.gate, self.linear)
        )

    def load_per_row(self, ref):
        """The row's value (token weight) of the ``(N, 1)`` ref: a float32 scalar."""
        return ref[self.i, 0].astype(jnp.float32)

    def store_per_row(self, ref, value):
        """The row's ``(segments, 1)`` value (``row_maximum``'s shape) in the ``(N, 1)``
        ref: every lane writes it to the same address, in the layout of the tile's rows."""
        shape = (self.count, WARP_LANES)
        zeros = jnp.zeros(shape, jnp.int32)
        pltriton.store(ref.at[self.i, zeros], jnp.broadcast_to(value, shape))

    def row_amax(self, gate, linear):
        """``(segments,)``: each segment's largest finite magnitude, over both halves."""
        return self.row_maxima(gate, linear)

    def amax_zeros(self):
        return jnp.zeros((self.count,), jnp.float32)

    def row_maximum(self, amax, partials_ref, barrier: bool):
        """The row's maximum as ``(segments, 1)``, the same value in every row: each warp
        stores its segments' maxima in slot 0 of the ``(N, segments, MAXIMA_SLOTS)``
        scratch, and after a barrier every warp reads them all back, one a lane, and
        takes their maximum across its lanes.

        Both accesses are ``(segments, WARP_LANES)`` (the store: every lane writing its
        segment's maximum to the same address), and the slots space the segments apart:
        Triton then lays them out as the tile's rows, a warp a segment, and moving the
        maxima needs no shared memory. A ``(segments, 1)`` store, or contiguous segments,
        takes a layout across warps, reached through shared memory, which made XLA launch
        the kernel preferring shared memory to L1. Reading the maxima as scalars kept
        them all in registers at once (38-40 a thread under XLA), where a lane holds one."""
        shape = (self.count, WARP_LANES)
        segs = jax.lax.broadcasted_iota(jnp.int32, shape, 0)
        lanes = jax.lax.broadcasted_iota(jnp.int32, shape, 1)
        slot = jnp.zeros(shape, jnp.int32)
        maxima = jnp.broadcast_to(amax[:, None], shape)
        pltriton.store(partials_ref.at[self.i, segs, slot], maxima)
        if barrier:
            pltriton.debug_barrier()
        ok = lanes < self.count
        maxima = pltriton.load(partials_ref.at[self.i, lanes, slot], mask=ok, other=0.0)
        return jnp.max(maxima, axis=1, keepdims=True)


WARP_LANES = 32
MAXIMA_SLOTS = 2  # the segments' maxima scratch: see _Segments.row_maximum


def segment_columns(dtype) -> int:
    """One warp's 16-byte loads across a row: 256 columns of a 16-bit type, 128 of
    float32."""
    return WARP_LANES * SWEEP_BYTES_PER_THREAD // jnp.dtype(dtype).itemsize


def segment_width(hidden: int, dtype, config: BlockConfig) -> int | None:
    """The columns of one warp's 16-byte loads (``segment_columns``) where the scaled
    store's sweep takes its rows in segments of that width (``_Segments``): one row a
    program, swept (``H`` above the block), ``H`` and the block whole segments, at least
    one segment a warp and at most one a lane; else ``None``.

    Measured side by side on an H100 (PERF_NOTES.md, session 12), segments against the
    tiles' sweep on the JAX path, at ``H`` = 11008 / 14336: bf16 94.6 / 95.1% of copy
    against 90.0 / 88.6, float32 99.1 / 96.4 against 91.2 / 81.5 (``sweep_config``'s
    4096-column blocks: a warp a segment). The segments need neither shared memory, which
    makes XLA's launch leave L1 to the second sweep, nor more than 32 registers a thread
    in float32, which keeps two 32-warp programs an SM."""
    if not SWEEP_IN_SEGMENTS:
        return None
    width = segment_columns(dtype)
    bn, bh = config.block_rows, config.block_hidden
    fits = bn == 1 and hidden > bh and hidden % width == 0 and bh % width == 0
    segments = bh // width  # at least one a warp, at most one a lane (row_maximum)
    return width if fits and config.num_warps <= segments <= WARP_LANES else None


def _taker(refs):
    """``take(present)``: the next of ``refs`` if ``present``, else ``None``."""
    refs = list(refs)
    return lambda present=True: refs.pop(0) if present else None


def _forward_kernel(
    *refs, opts: Options, tile, has_bias: bool, has_weights: bool, save_fp8, scale_given: bool,
    width: int | None = None, barrier: bool = True,
):  # fmt: skip
    """Refs: ``y, [bias], [weights], [y_scale given]``, then ``out, [y_fp8], [y_scale
    computed], [segment maxima]``. The scaled store without given scales sweeps whole
    rows (module doc), in segments of ``width`` columns where given (``_Segments``);
    ``barrier``: False in interpret mode, which runs a program's threads as one and has
    no barrier."""
    take = _taker(refs)
    y_ref, bias_ref, weights_ref = take(), take(has_bias), take(has_weights)
    scale_in_ref = take(scale_given)
    out_ref, fp8_ref = take(), take(bool(save_fp8))
    scale_out_ref = take(save_fp8 == "scaled" and not scale_given)
    partials_ref = take(width is not None)

    def compute(tile: _Tile, gate, linear, scale, evict=None):
        a, b = gate.astype(jnp.float32), linear.astype(jnp.float32)
        if has_bias:
            bias_a, bias_b = tile.load_bias(bias_ref)
            a, b = a + bias_a, b + bias_b
        weights = tile.load_per_row(weights_ref) if has_weights else None
        tile.store(out_ref, _math.forward(a, b, weights, opts), evict)
        if scale is not None:
            gate, linear = (_math.to_scaled_fp8(x, scale) for x in (gate, linear))
            tile.store_halves(fp8_ref, gate, linear, evict)
        elif save_fp8:
            tile.store_halves(fp8_ref, _math.to_fp8(gate), _math.to_fp8(linear))

    if scale_out_ref is None:  # one tile, quantized with the given scales if any
        tile = _Tile(*tile)
        scale = tile.load_per_row(scale_in_ref) if scale_given else None
        compute(tile, *tile.load_halves(y_ref), scale)
        return
    _, hidden, _, bh = tile
    blocks = pl.cdiv(hidden, bh)
    # hidden block 0: the grid has one (a traced 0, for the masks)
    first = _Tile(*tile) if width is None else _Segments(*tile, width)
    if blocks == 1:  # the rows fit the tile: one read
        gate, linear = first.load_halves(y_ref)
        amax = first.row_maximum(first.row_amax(gate, linear), partials_ref, barrier)
        scale = _math.scale_from_amax(amax)
        compute(first, gate, linear, scale)
    else:

        def maximum(j, amax):
            block = first.at_block(j)
            halves = block.load_halves(y_ref, SWEEP_EVICT[0])
            return jnp.maximum(amax, block.row_amax(*halves))

        amax = jax.lax.fori_loop(0, blocks, maximum, first.amax_zeros())
        scale = _math.scale_from_amax(first.row_maximum(amax, partials_ref, barrier))

        def quantize(k, carry):
            block = first.at_block(k)
            compute(block, *block.load_halves(y_ref, SWEEP_EVICT[1]), scale, SWEEP_EVICT[2])
            return carry

        jax.lax.fori_loop(0, blocks, quantize, 0)
    first.store_per_row(scale_out_ref, scale)


def _backward_kernel(
    *refs, opts: Options, tile, row_steps: int, has_bias: bool, has_weights: bool,
    has_scale: bool,
):  # fmt: skip
    """Refs: ``g, y, [bias], [weights], [y_scale]``, then ``dy, [dbias partials],
    [dweights partials]``. Program ``(j, i)`` of a grid of ``G`` row groups computes the
    ``row_steps`` tiles of row blocks ``i + k * G`` (a loop where there are several: the
    programs running together then work on neighbouring row blocks, as one-step programs
    do; blocks past the end are masked), adding their bias-gradient terms in registers,
    and sums those over rows once: partial row ``i``."""
    take = _taker(refs)
    g_ref, y_ref, bias_ref, weights_ref = take(), take(), take(has_bias), take(has_weights)
    scale_ref = take(has_scale)
    dy_ref, dbias_ref, dweights_ref = take(), take(has_bias), take(has_weights)

    def compute(tile: _Tile):
        """Stores the tile's ``dy`` and weights partials; returns its bias-gradient terms
        (zero outside the array)."""
        g = tile.load(g_ref).astype(jnp.float32)
        a, b = (x.astype(jnp.float32) for x in tile.load_halves(y_ref))
        if has_scale:
            scale = tile.load_per_row(scale_ref)
            a, b = _math.from_scaled_fp8(a, scale), _math.from_scaled_fp8(b, scale)
        if has_bias:
            bias_a, bias_b = tile.load_bias(bias_ref)
            a, b = a + bias_a, b + bias_b
        weights = tile.load_per_row(weights_ref) if has_weights else None
        da, db, h = _math.backward(g, a, b, weights, opts)
        tile.store_halves(dy_ref, da, db)
        if has_weights:  # (N, hidden blocks); terms outside the array must not count
            partial = jnp.sum(jnp.where(tile.mask, h * g, 0.0), axis=1)[:, None]
            pltriton.store(
                dweights_ref.at[tile.row_block, pl.ds(tile.j, 1)],
                partial,
                mask=tile.row_ok[:, None],
            )
        return jnp.where(tile.mask, da, 0.0), jnp.where(tile.mask, db, 0.0)

    group = _Tile(*tile)  # program ids read here, outside the loop (see _Tile.at_block)
    if row_steps == 1:
        terms = compute(group)
    else:
        rows, _, bn, _ = tile
        groups = pl.cdiv(rows, bn * row_steps)  # the grid's row groups

        def step(k, sums):
            terms = compute(group.at_row_block(group.i + k * groups))
            return tuple(s + t for s, t in zip(sums, terms, strict=True)) if has_bias else ()

        zeros = jnp.zeros(group.mask.shape, jnp.float32)
        terms = jax.lax.fori_loop(0, row_steps, step, (zeros, zeros) if has_bias else ())
    if has_bias:  # (row groups, 2H)
        row = pl.ds(group.i, 1)
        for cols, d in zip((group.gate, group.linear), terms, strict=True):
            partial = jnp.sum(d, axis=0)[None, :]
            pltriton.store(dbias_ref.at[row, cols], partial, mask=group.col_ok[None, :])


def forward(
    y, bias, weights, opts: Options, *, save_fp8, y_scale=None, interpret=False, config=None,
    segments=True,
):  # fmt: skip
    """Returns ``(out, y_fp8, y_scale)`` (``kernels/__init__.py``); the scaled store's row
    scales are computed in the kernel unless ``y_scale`` gives them. ``segments``: whether
    its sweep may take rows in segments (``segment_width``; torch_bridge's direct launch,
    which finds the rows in L1 anyway, keeps to the 2-D calling convention)."""
    rows, _, hidden = y.shape
    sweeps_rows = save_fp8 == "scaled" and y_scale is None
    if config is None and sweeps_rows:
        config = sweep_config(rows, hidden, y.dtype)
    config = config or default_config(rows, hidden, y.dtype, stores_fp8=bool(save_fp8))
    _check(config, y, bias, weights, y_scale)
    if save_fp8:
        _check(config, jax.ShapeDtypeStruct(y.shape, FP8_DTYPE))
    out_shapes = [jax.ShapeDtypeStruct((rows, hidden), y.dtype)]
    if save_fp8:
        out_shapes.append(jax.ShapeDtypeStruct((rows, 2 * hidden), FP8_DTYPE))
    if sweeps_rows:
        out_shapes.append(jax.ShapeDtypeStruct((rows, 1), jnp.float32))
    if rows == 0:
        return _forward_results(
            [jnp.zeros(s.shape, s.dtype) for s in out_shapes], y, save_fp8, y_scale
        )
    bn, bh = config.block_rows, config.block_hidden
    width = segment_width(hidden, y.dtype, config) if sweeps_rows and segments else None

    def view(shape):  # the last axis as (segments, width) where the sweep takes segments
        return shape if width is None else (*shape[:-1], shape[-1] // width, width)

    inputs = [y.reshape(view((rows, 2 * hidden)))]
    inputs += [x.reshape(view((x.size,))) for x in (bias,) if x is not None]
    inputs += [x for x in (weights, y_scale) if x is not None]
    kernel_shapes = [jax.ShapeDtypeStruct(view(s.shape), s.dtype) for s in out_shapes[:2]]
    kernel_shapes += out_shapes[2:]
    if width is not None:  # the segments' maxima (_Segments.row_maximum)
        kernel_shapes.append(jax.ShapeDtypeStruct((rows, bh // width, MAXIMA_SLOTS), jnp.float32))
    kernel = functools.partial(
        _forward_kernel,
        opts=opts,
        tile=(rows, hidden, bn, bh),
        has_bias=bias is not None,
        has_weights=weights is not None,
        save_fp8=save_fp8,
        scale_given=y_scale is not None,
        width=width,
        barrier=not interpret,
    )
    grid = _grid(rows, hidden, bn, bh)
    outs = pl.pallas_call(
        kernel,
        out_shape=kernel_shapes,
        grid=(1, grid[1]) if sweeps_rows else grid,  # whole rows: see the module doc
        compiler_params=_compiler_params(config),
        interpret=interpret,
        name="swiglu_forward_triton",
        cost_estimate=_cost(inputs, out_shapes, rows * hidden),
    )(*inputs)
    # back to 2-D; the segments' maxima, the last output where there is one, are dropped
    outs = [x.reshape(s.shape) for x, s in zip(outs, out_shapes, strict=False)]
    return _forward_results(outs, y, save_fp8, y_scale)


def _forward_results(outs, y, save_fp8, y_scale):
    """``(out, y_fp8 | None, y_scale | None)`` from the kernel's ``[out, y_fp8?, y_scale
    computed?]`` and the ``y_scale`` given, if any."""
    out, *rest = outs
    y_fp8 = rest.pop(0).reshape(y.shape) if save_fp8 else None
    return out, y_fp8, (rest.pop(0) if rest else y_scale)


def backward(
    g, y, bias, weights, opts: Options, *, dy_dtype, y_scale=None, interpret=False, config=None
):
    """Returns ``(dy, dbias, dweights)`` (``kernels/__init__.py``); ``y`` may be the fp8
    copy, scaled by the ``(N, 1)`` float32 ``y_scale`` where given."""
    dy, dbias, dweights = backward_partials(
        g, y, bias, weights, opts, dy_dtype=dy_dtype, y_scale=y_scale, interpret=interpret,
        config=config,
    )  # fmt: skip
    if bias is not None and y.shape[0]:  # for zero rows, the gradients came final
        dbias = sum_rows(dbias, bias.dtype, interpret=interpret).reshape(bias.shape)
    if weights is not None and y.shape[0]:
        dweights = dweights.sum(axis=1, keepdims=True).astype(weights.dtype)
    return dy, dbias, dweights


def backward_partials(
    g, y, bias, weights, opts: Options, *, dy_dtype, y_scale=None, interpret=False, config=None
):
    """The backward kernel alone: ``(dy, dbias partials, dweights partials)``, the
    partial sums in float32, ``(row groups, 2H)`` (a row group: the config's
    ``row_steps`` row blocks) and ``(N, hidden blocks)`` (``None``
    where absent; for zero rows, the final ``dbias`` and ``dweights`` already)."""
    rows, _, hidden = y.shape
    config = config or backward_config(
        rows, hidden, dy_dtype, bias=bias is not None, weights=weights is not None
    )
    _check(config, g, y, bias, weights, y_scale)
    if rows == 0:
        return (
            jnp.zeros(y.shape, dy_dtype),
            None if bias is None else jnp.zeros(bias.shape, bias.dtype),
            None if weights is None else jnp.zeros(weights.shape, weights.dtype),
        )
    bn, bh, steps = config.block_rows, config.block_hidden, config.row_steps
    row_groups, col_blocks = pl.cdiv(rows, bn * steps), pl.cdiv(hidden, bh)
    out_shapes = [jax.ShapeDtypeStruct((rows, 2 * hidden), dy_dtype)]
    if bias is not None:
        out_shapes.append(jax.ShapeDtypeStruct((row_groups, 2 * hidden), jnp.float32))
    if weights is not None:
        out_shapes.append(jax.ShapeDtypeStruct((rows, col_blocks), jnp.float32))
    inputs = [g, y.reshape(rows, 2 * hidden)]
    inputs += [x.reshape(-1) for x in (bias,) if x is not None]
    inputs += [x for x in (weights, y_scale) if x is not None]
    kernel = functools.partial(
        _backward_kernel,
        opts=opts,
        tile=(rows, hidden, bn, bh),
        row_steps=steps,
        has_bias=bias is not None,
        has_weights=weights is not None,
        has_scale=y_scale is not None,
    )
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shapes,
        grid=_grid(rows, hidden, bn * steps, bh),
        compiler_params=_compiler_params(config),
        interpret=interpret,
        name="swiglu_backward_triton",
        cost_estimate=_cost(inputs, out_shapes, rows * hidden),
    )(*inputs)
    outs = list(outs)
    dy = outs.pop(0).reshape(y.shape)
    dbias = outs.pop(0) if bias is not None else None
    dweights = outs.pop(0) if weights is not None else None
    return dy, dbias, dweights


# The bias gradient's partial sums, (row groups, 2H) float32, are summed by a kernel of
# their own, one launch that also casts, on the JAX path and on torch_bridge's direct
# launch alike (which had torch's sum and cast: two launches). Each program of SUM_WARPS
# warps sums a strip of SUM_COLUMNS columns (128-byte rows of float32), up to SUM_ROWS
# rows at a time, in a fixed order: deterministic.
SUM_COLUMNS = 32
SUM_ROWS = 64
SUM_WARPS = 4


def _sum_rows_kernel(partials_ref, out_ref, *, rows: int, columns: int, block_shape: tuple):
    block_rows, block_cols = block_shape
    j = pl.program_id(0)
    cols = pl.ds(j * block_cols, block_cols)
    col_ok = (j * block_cols + jax.lax.iota(jnp.int32, block_cols)) < columns

    def add(k, total):
        row_ok = (k * block_rows + jax.lax.iota(jnp.int32, block_rows)) < rows
        mask = row_ok[:, None] & col_ok[None, :]
        block = pltriton.load(partials_ref.at[pl.ds(k * block_rows, block_rows), cols], mask=mask)
        return total + jnp.sum(jnp.where(mask, block, 0.0), axis=0)

    total = jax.lax.fori_loop(
        0, pl.cdiv(rows, block_rows), add, jnp.zeros((block_cols,), jnp.float32)
    )
    pltriton.store(out_ref.at[cols], total.astype(out_ref.dtype), mask=col_ok)


def sum_rows(partials, dtype, *, interpret=False, columns=SUM_COLUMNS, warps=SUM_WARPS):
    """``partials.sum(axis=0).astype(dtype)`` for float32 ``(R, C)`` partial sums (the
    bias gradient's), by one Triton kernel, in a fixed order: programs of ``warps`` warps
    summing ``columns`` columns each (a power of two)."""
    rows, width = partials.shape
    block_shape = (min(SUM_ROWS, next_power_of_2(rows)), columns)
    return pl.pallas_call(
        functools.partial(_sum_rows_kernel, rows=rows, columns=width, block_shape=block_shape),
        out_shape=jax.ShapeDtypeStruct((width,), dtype),
        grid=(pl.cdiv(width, columns),),
        compiler_params=pltriton.CompilerParams(num_warps=warps, num_stages=1),
        interpret=interpret,
        name="swiglu_sum_rows_triton",
    )(partials)


def _cost(inputs, out_shapes, elements: int) -> pl.CostEstimate:
    nbytes = sum(x.size * x.dtype.itemsize for x in inputs)
    nbytes += sum(s.size * jnp.dtype(s.dtype).itemsize for s in out_shapes)
    return pl.CostEstimate(flops=12 * elements, transcendentals=elements, bytes_accessed=nbytes)
