"""Property-based tests: random shapes, dtypes, layouts and options against the float64
reference, through the public ops, for XLA and for every kernel backend in interpret
mode. CI runs a bounded number of examples; ``SWIGLU_HYPOTHESIS_PROFILE=sweep`` a long
sweep (see conftest.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import strategies
from conftest import SEED, examples
from helpers import (
    INTERPRETED,
    apply_dict,
    check_forward_and_vjp,
    differentiable_args,
    make_inputs,
    reference_options,
)
from hypothesis import given, seed
from hypothesis import strategies as st

from swiglu_jax import testing


@seed(SEED)
@given(
    data_seed=strategies.seeds,
    variant=strategies.variants,
    lead=strategies.lead_shapes(max_rows=64),
    hidden=strategies.hidden_sizes(300),
    dtype=st.sampled_from([*strategies.KERNEL_DTYPES, jnp.float64]),
    weights_dtype=strategies.dtypes,
    layout=strategies.layouts,
    options=strategies.options(),
    scale=st.sampled_from([0.5, 2.0, 30.0]),
)
def test_xla(data_seed, variant, lead, hidden, dtype, weights_dtype, layout, options, scale):
    """The XLA path (``"auto"`` on this host), float64 included."""
    rng = np.random.default_rng(data_seed)
    with jax.enable_x64(dtype == jnp.float64):
        check_forward_and_vjp(
            rng, variant, lead, hidden, dtype, layout, options, scale=scale,
            weights_dtype=weights_dtype,
        )  # fmt: skip


@pytest.mark.parametrize("implementation", INTERPRETED)
@seed(SEED)
@examples(0.16)
@given(
    data_seed=strategies.seeds,
    variant=strategies.variants,
    lead=strategies.lead_shapes(max_rows=40, max_rank=2),
    hidden=strategies.hidden_sizes(140),
    dtype=strategies.dtypes,
    layout=strategies.layouts,
    options=strategies.options(offload=False),
)
def test_kernels_interpreted(
    implementation, data_seed, variant, lead, hidden, dtype, layout, options
):
    """Each kernel backend in interpret mode, behind the public ops and their VJP (each
    example compiles the interpreter: few examples, small shapes)."""
    rng = np.random.default_rng(data_seed)
    options = {**options, "implementation": implementation}
    check_forward_and_vjp(rng, variant, lead, hidden, dtype, layout, options)


@seed(SEED)
@given(
    data_seed=strategies.seeds,
    variant=strategies.variants,
    lead=strategies.lead_shapes(max_rows=64),
    hidden=strategies.hidden_sizes(300),
    dtype=strategies.dtypes,
    options=strategies.options(),
)
def test_layouts_agree(data_seed, variant, lead, hidden, dtype, options):
    """The stacked layout is a free view of the split one: the same numbers exactly,
    forward and input gradient; the reduced bias and weights gradients up to the order
    of a float32 sum (XLA may vectorize a reduction differently per layout)."""
    rng = np.random.default_rng(data_seed)
    y, bias, weights = make_inputs(rng, variant, lead, hidden, dtype)
    split = differentiable_args(y, bias, weights)
    stacked = {**split, "y": y.reshape(*lead, 2, hidden)}
    if bias is not None:
        stacked["bias"] = bias.reshape(2, hidden)

    g = jnp.asarray(rng.standard_normal((*lead, hidden)), dtype)

    def value_and_grads(args, layout):
        out, vjp = jax.vjp(lambda a: apply_dict(variant, a, layout=layout, **options), args)
        return out, vjp(g)[0]

    out_split, grads_split = value_and_grads(split, "split")
    out_stacked, grads_stacked = value_and_grads(stacked, "stacked")
    np.testing.assert_array_equal(out_split, out_stacked)
    np.testing.assert_array_equal(grads_split["y"], grads_stacked["y"].reshape(y.shape))
    fp8 = options.get("fp8_input_store", False)
    ref_opts = reference_options(options)
    scales = testing.swiglu_backward(
        g, y, bias, weights, fp8_input_store=fp8, magnitudes=True, **ref_opts
    )
    for name, grad in grads_split.items():
        stacked_grad = grads_stacked[name].reshape(grad.shape)
        error = testing.relative_error(grad, stacked_grad, scales[name])
        terms = testing.gradient_terms(name, y.shape)
        assert error <= testing.tolerance(jnp.float32, terms=terms), name
