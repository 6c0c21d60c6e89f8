"""Inputs and calls shared by the tests: one function per variant, any layout."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import swiglu_jax as sj

VARIANTS = ("plain", "bias", "weighted", "weighted_bias")
LAYOUTS = ("split", "stacked")


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


def as_np(x):
    return None if x is None else np.asarray(x)
