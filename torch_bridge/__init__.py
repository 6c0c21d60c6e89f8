"""torch_bridge: swiglu_jax's ops on torch autograd through zero-copy DLPack.

A drop-in for ``megatron.core.fusions.fused_bias_swiglu``. The package is reserved here;
its functions arrive with the bridge (see the project's issues) and nothing is exported
until they work.
"""

__all__: list[str] = []
