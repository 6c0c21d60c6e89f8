"""Zero-copy exchange of arrays between torch and JAX through DLPack.

``to_jax`` shares the tensor's memory whenever JAX can address it: a contiguous tensor
of a JAX dtype on a device JAX has. Otherwise it makes one copy (documented cases: a
non-contiguous tensor is made contiguous by torch; JAX copies a tensor whose data
pointer is not aligned as its runtime requires). Tensors that require grad are detached
first: the exchange carries data, autograd stays on the torch side.

``to_torch`` hands JAX's output buffer to torch without a copy.
"""

from __future__ import annotations

import jax
import torch


def to_jax(tensor: torch.Tensor) -> jax.Array:
    """The JAX view of ``tensor`` (its memory, where possible; see the module doc)."""
    tensor = tensor.detach()
    if not tensor.is_contiguous():
        tensor = tensor.contiguous()
    return jax.dlpack.from_dlpack(tensor)


def to_torch(array: jax.Array) -> torch.Tensor:
    """The torch tensor over ``array``'s buffer."""
    return torch.from_dlpack(array)
