"""Zero-copy exchange of arrays between torch and JAX through DLPack.

``to_jax`` shares the tensors' memory whenever JAX can address it: a contiguous tensor
of a JAX dtype on a device JAX has. Otherwise it makes one copy (documented cases: a
non-contiguous tensor is made contiguous by torch; JAX copies a tensor whose data
pointer is not aligned as its runtime requires). Tensors that require grad are detached
first: the exchange carries data, autograd stays on the torch side.

Streams: the first CUDA tensor of a call goes through DLPack's handshake, in which torch
makes the stream JAX imports on wait for torch's current stream. That one wait covers
every tensor of the call (all were produced before it on torch's stream), so the others
skip torch's handshake, which costs an event and a stream object in Python per tensor.

``to_torch`` hands JAX's output buffer to torch without a copy; torch's current stream
waits (on the device, not the host) until JAX has written it.
"""

from __future__ import annotations

import contextlib

import jax
import torch


class _Handoff:
    """A tensor exported without torch's stream handshake (``stream=-1``): only for
    tensors already covered by the call's one handshake (see the module doc)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def __dlpack_device__(self):
        return self.tensor.__dlpack_device__()

    def __dlpack__(self, *, stream=None, max_version=None, **_):
        del stream  # The call's first import already ordered JAX after torch.
        return self.tensor.__dlpack__(stream=-1, max_version=max_version)


def _on(device: torch.device):
    """torch exports a CUDA tensor only from its own device's context."""
    if device.type == "cuda" and device.index != torch.cuda.current_device():
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def to_jax_all(*tensors: torch.Tensor | None) -> tuple[jax.Array | None, ...]:
    """The JAX views of one call's tensors (``None`` stays ``None``), with one stream
    handshake for all of them."""
    # Any copy (to contiguous) is enqueued on torch's stream before the handshake.
    ready = [None if t is None else t.detach().contiguous() for t in tensors]
    arrays, handshaken = [], False
    for tensor in ready:
        if tensor is None:
            arrays.append(None)
            continue
        with _on(tensor.device):
            if tensor.is_cuda and handshaken:
                arrays.append(jax.dlpack.from_dlpack(_Handoff(tensor)))
            else:
                arrays.append(jax.dlpack.from_dlpack(tensor))
                handshaken = tensor.is_cuda
    return tuple(arrays)


def to_jax(tensor: torch.Tensor) -> jax.Array:
    """The JAX view of ``tensor`` (its memory, where possible; see the module doc)."""
    return to_jax_all(tensor)[0]


def to_torch(array: jax.Array) -> torch.Tensor:
    """The torch tensor over ``array``'s buffer."""
    return torch.from_dlpack(array)
