"""What the NNX and linen layers share: the op options they accept and the call."""

from __future__ import annotations

import swiglu_jax as sj

# The swiglu_jax op options a layer passes on (the layout is the layer's business).
OP_OPTIONS = (
    "clamp_value",
    "alpha",
    "linear_offset",
    "fp8_input_store",
    "cpu_offload_input",
    "implementation",
)


def check_options(layer: str, options: dict) -> dict:
    unknown = sorted(set(options) - set(OP_OPTIONS))
    if unknown:
        raise TypeError(
            f"{layer}: unknown option(s) {unknown}; the op options are {list(OP_OPTIONS)}"
        )
    return dict(options)


def apply_swiglu(y, bias, weights, options: dict):
    """The fused op for the up projection's output ``y`` (split layout)."""
    if bias is not None:
        bias = bias.astype(y.dtype)
    if weights is not None:
        return sj.weighted_swiglu(y, weights, bias=bias, **options)
    if bias is not None:
        return sj.bias_swiglu(y, bias, **options)
    return sj.swiglu(y, **options)
