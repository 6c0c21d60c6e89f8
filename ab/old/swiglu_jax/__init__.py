"""swiglu-jax: Megatron-Core's fused SwiGLU family as differentiable JAX ops.

``swiglu``, ``bias_swiglu`` and ``weighted_swiglu`` (with ``jax.grad`` through a custom
VJP), their raw gradients ``*_back``, and Megatron's ``bias_swiglu_impl`` /
``weighted_bias_swiglu_impl`` entry points. ``swiglu_jax.reference`` holds the plain
``jax.numpy`` specification; ``swiglu_jax.testing`` an independent float64 NumPy one.
"""

from swiglu_jax.megatron import bias_swiglu_impl, weighted_bias_swiglu_impl
from swiglu_jax.ops import (
    bias_swiglu,
    bias_swiglu_back,
    swiglu,
    swiglu_back,
    weighted_swiglu,
    weighted_swiglu_back,
)
from swiglu_jax.reference import swiglu_reference

__version__ = "0.1.0"

__all__ = [
    "bias_swiglu",
    "bias_swiglu_back",
    "bias_swiglu_impl",
    "swiglu",
    "swiglu_back",
    "swiglu_reference",
    "weighted_bias_swiglu_impl",
    "weighted_swiglu",
    "weighted_swiglu_back",
]
