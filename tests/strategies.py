"""Hypothesis strategies for the property tests: shapes, dtypes, layouts and options.

Shapes aim at the edges: one column pair (``H = 1``), hidden sizes that are not
multiples of 8 or 128 (and some that are, for the TPU kernels' split path), row counts
that are multiples of no block size, zero rows, and inputs of rank 1 to 4.
"""

from __future__ import annotations

import jax.numpy as jnp
from helpers import LAYOUTS, VARIANTS
from hypothesis import strategies as st

KERNEL_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
dtypes = st.sampled_from(KERNEL_DTYPES)
layouts = st.sampled_from(LAYOUTS)
variants = st.sampled_from(VARIANTS)
seeds = st.integers(0, 2**32 - 1)  # for the NumPy generator of the inputs' values


@st.composite
def lead_shapes(draw, max_rows: int, max_rank: int = 3) -> tuple[int, ...]:
    """A token shape of 0 to ``max_rank`` axes holding at most ``max_rows`` rows."""
    shape, budget = [], max_rows
    for _ in range(draw(st.integers(0, max_rank))):
        size = draw(st.integers(0, budget))
        shape.append(size)
        budget = max(1, budget // max(size, 1))
    return tuple(shape)


def hidden_sizes(max_hidden: int):
    """Any ``H`` up to ``max_hidden``, with the multiples of 128 and their neighbours."""
    edges = [h for h in (127, 128, 129, 256) if h <= max_hidden]
    return st.one_of(st.integers(1, max_hidden), *([st.sampled_from(edges)] if edges else []))


def options(*, fp8: bool = True, offload: bool = True):
    """Keyword options of the ops: any subset, with values in their valid ranges. Floats
    of float32, the precision the ops apply them in: a clamp value between two float32
    numbers would clamp an input equal to the upper one in float64 but not in float32."""
    optional = {
        "clamp_value": st.floats(0.25, 8.0, width=32),
        "alpha": st.floats(0.125, 3.0, width=32),
        "linear_offset": st.floats(-2.0, 2.0, width=32),
    }
    if fp8:
        optional["fp8_input_store"] = st.sampled_from([False, True, "scaled"])
    if offload:
        optional["cpu_offload_input"] = st.booleans()
    return st.fixed_dictionaries({}, optional=optional)
