"""Flax layers around the swiglu_jax ops: a SwiGLU MLP for Flax NNX here, its linen
counterpart in :mod:`swiglu_jax.nn.linen`.

    from swiglu_jax.nn import SwiGLUMLP

    mlp = SwiGLUMLP(512, 1408, rngs=nnx.Rngs(0))
    out = mlp(x)                      # x: (..., 512)
    out = mlp(x, weights=router_p)    # MoE expert: router probabilities (..., 1)

Needs Flax (``pip install 'swiglu-jax[flax]'``).
"""

from __future__ import annotations

try:
    from flax import nnx
except ImportError as error:  # pragma: no cover - exercised only without flax
    raise ImportError("swiglu_jax.nn needs Flax: pip install 'swiglu-jax[flax]'") from error

import jax
import jax.numpy as jnp

from swiglu_jax.nn._common import OP_OPTIONS, apply_swiglu, check_options

__all__ = ["OP_OPTIONS", "SwiGLUMLP"]

DEFAULT_KERNEL_INIT = nnx.initializers.lecun_normal()
DEFAULT_BIAS_INIT = nnx.initializers.zeros_init()


class SwiGLUMLP(nnx.Module):
    """``down(swiglu(up(x) [+ b_up]) [* weights]) [+ b_down]``: the SwiGLU MLP of
    Llama-style transformers, with the activation (and the up-projection's bias and the
    router weights, when there are any) fused into one swiglu_jax op.

    Args:
      in_features: size of ``x``'s last axis, and of the output's.
      hidden_features: ``H``; the up projection makes ``2 H`` features, ``[gate | up]``.
      use_bias: biases on both projections, as Megatron's ``add_bias_linear``; the up
        projection's is added inside the fused op (``bias_swiglu``).
      dtype: the computation dtype (``None``: from the inputs and parameters).
      param_dtype: the parameters' dtype.
      kernel_init, bias_init: the projections' initialisers.
      rngs: the Flax random streams.
      **options: the op's options: ``clamp_value``, ``alpha``, ``linear_offset``,
        ``fp8_input_store``, ``cpu_offload_input``, ``implementation``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        use_bias: bool = False,
        dtype=None,
        param_dtype=jnp.float32,
        kernel_init=DEFAULT_KERNEL_INIT,
        bias_init=DEFAULT_BIAS_INIT,
        rngs: nnx.Rngs,
        **options,
    ):
        self.options = check_options("SwiGLUMLP", options)
        linear = {"dtype": dtype, "param_dtype": param_dtype, "kernel_init": kernel_init}
        self.up = nnx.Linear(in_features, 2 * hidden_features, use_bias=False, rngs=rngs, **linear)
        self.up_bias = (
            nnx.Param(bias_init(rngs.params(), (2 * hidden_features,), param_dtype))
            if use_bias
            else None
        )
        linear["bias_init"] = bias_init
        self.down = nnx.Linear(hidden_features, in_features, use_bias=use_bias, rngs=rngs, **linear)

    def __call__(self, x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
        """``x`` of shape ``(..., in_features)``; ``weights`` (optional) of shape
        ``(..., 1)``, e.g. an MoE router's probabilities for this expert."""
        bias = None if self.up_bias is None else self.up_bias[...]
        return self.down(apply_swiglu(self.up(x), bias, weights, self.options))
