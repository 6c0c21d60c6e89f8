"""The Flax linen SwiGLU MLP, for linen codebases (NNX: :class:`swiglu_jax.nn.SwiGLUMLP`).

from swiglu_jax.nn.linen import SwiGLUMLP

mlp = SwiGLUMLP(hidden_features=1408)
params = mlp.init(key, x)
out = mlp.apply(params, x, weights=router_p)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

try:
    import flax.linen as nn
except ImportError as error:  # pragma: no cover - exercised only without flax
    raise ImportError("swiglu_jax.nn.linen needs Flax: pip install 'swiglu-jax[flax]'") from error

import jax
import jax.numpy as jnp

from swiglu_jax.nn._common import apply_swiglu, check_options

__all__ = ["SwiGLUMLP"]


class SwiGLUMLP(nn.Module):
    """``down(swiglu(up(x) [+ b_up]) [* weights]) [+ b_down]``, as the NNX layer.

    Attributes:
      hidden_features: ``H``; the up projection makes ``2 H`` features, ``[gate | up]``.
      out_features: the output size (``None``: ``x``'s last axis).
      use_bias: biases on both projections; the up projection's is fused into the op.
      dtype, param_dtype, kernel_init, bias_init: as ``nn.Dense``'s.
      options: the op's options (``clamp_value``, ``alpha``, ``linear_offset``,
        ``fp8_input_store``, ``cpu_offload_input``, ``implementation``).
    """

    hidden_features: int
    out_features: int | None = None
    use_bias: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()
    options: dict = dataclasses.field(default_factory=dict)

    @nn.compact
    def __call__(self, x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
        options = check_options("SwiGLUMLP", self.options)
        dense = {
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
            "kernel_init": self.kernel_init,
        }
        y = nn.Dense(2 * self.hidden_features, use_bias=False, name="up", **dense)(x)
        bias = (
            self.param("up_bias", self.bias_init, (2 * self.hidden_features,), self.param_dtype)
            if self.use_bias
            else None
        )
        h = apply_swiglu(y, bias, weights, options)
        out_features = self.out_features or x.shape[-1]
        return nn.Dense(
            out_features, use_bias=self.use_bias, bias_init=self.bias_init, name="down", **dense
        )(h)
