"""CPU offload of a tensor saved for the backward (``cpu_offload_input=True``).

After the forward, the saved tensor is copied to pinned host memory on a side stream, so
the compute stream never waits for the copy, and the device copy is no longer held by
the autograd graph: once the caller drops its own reference, its memory is free for the
rest of the forward pass. The backward copies it back on the current stream after the
offload copy has finished. Tensors already in host memory stay where they are.

Megatron marks offloaded tensors with ``activation_offloading = True`` for its own
offloading context; the mark is kept on the saved tensor for tools that look for it.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _side_stream(device: torch.device) -> torch.cuda.Stream:
    return torch.cuda.Stream(device=device)


class Offloaded:
    """A device tensor on its way to (or in) pinned host memory; :meth:`restore` brings
    it back to its device for the backward."""

    def __init__(self, tensor: torch.Tensor):
        self.device = tensor.device
        self.host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        stream = _side_stream(tensor.device)
        stream.wait_stream(torch.cuda.current_stream(tensor.device))
        with torch.cuda.stream(stream):
            self.host.copy_(tensor, non_blocking=True)
            self.copied = torch.cuda.Event()
            self.copied.record(stream)
        # The caching allocator must not give the tensor's memory away before the copy.
        tensor.record_stream(stream)

    def restore(self) -> torch.Tensor:
        current = torch.cuda.current_stream(self.device)
        current.wait_event(self.copied)
        # torch's pinned-memory allocator keeps the host buffer until this copy is done.
        return self.host.to(self.device, non_blocking=True)
