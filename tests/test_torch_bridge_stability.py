"""torch_bridge under repetition and concurrency, on the CPU: host memory stays flat over
thousands of forward + backward calls, results are bitwise repeatable, from two threads
at once too, outputs never share memory with inputs, and an input mutated or freed by
torch right after the call is not read again. tests/test_gpu_torch_bridge.py repeats
this on a GPU (10,000 calls, two streams).

``SWIGLU_STRESS=1`` runs the long variant (10,000 calls instead of 2,000)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import usage  # noqa: E402

import torch_bridge as tb  # noqa: E402
from swiglu_jax import testing  # noqa: E402

CALLS = 10_000 if os.environ.get("SWIGLU_STRESS") else 2_000
MiB = 2**20
LIVE_ARRAY_NOISE = 8  # a leak of one array a call would add CALLS // 2


def make(seed, rows=64, hidden=128, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    y = (2 * torch.randn(rows, 2 * hidden, generator=gen)).to(dtype).requires_grad_()
    bias = torch.randn(2 * hidden, generator=gen).to(dtype).requires_grad_()
    weights = torch.rand(rows, 1, generator=gen).requires_grad_()
    g = torch.randn(rows, hidden, generator=gen).to(dtype)
    return y, bias, weights, g


def step(y, bias, weights, g):
    """One forward and backward through every fused path (bias, weights, fp8 store);
    returns the output and the gradients, detached."""
    for x in (y, bias, weights):
        x.grad = None
    out = tb.weighted_swiglu(y, weights, bias=bias, fp8_input_store=True)
    out.backward(g)
    return out.detach(), y.grad, bias.grad, weights.grad


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
def test_many_calls_keep_host_memory_flat():
    """After a warm-up, the second half of the calls adds no resident memory, no Python
    objects and no live JAX arrays: nothing is kept per call (a leaked output alone would
    be 256 KiB a call, 250 MiB over the measured half, and a thousand live arrays).

    ``jax.live_arrays()`` counts the whole process: in a shared pytest worker another
    test's array may still be waiting for its collector at either end, so a few arrays
    either way are noise (CI once saw 17 against 16)."""
    inputs = make(0, rows=256, hidden=256)
    for _ in range(100 + CALLS // 2):  # warm-up: compilation, caches, allocator pools
        step(*inputs)
    rss, objects, arrays = usage()
    for _ in range(CALLS // 2):
        step(*inputs)
    rss_after, objects_after, arrays_after = usage()
    assert arrays_after - arrays <= LIVE_ARRAY_NOISE, f"{arrays_after - arrays} more arrays"
    assert objects_after - objects <= 10, f"{objects_after - objects} more Python objects"
    assert rss_after - rss < 32 * MiB, f"resident memory grew by {(rss_after - rss) / MiB} MiB"


def test_bitwise_repeatable():
    inputs = make(1)
    first = [x.clone() for x in step(*inputs)]
    for _ in range(3):
        for a, b in zip(first, step(*inputs), strict=True):
            assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def test_two_threads_at_once():
    """Two threads calling the bridge at the same time each get exactly the results of
    a call alone."""
    inputs = [make(seed) for seed in (2, 3)]
    expected = [[x.clone() for x in step(*i)] for i in inputs]
    failures, start = [], threading.Barrier(2)

    def work(thread):
        start.wait()
        # Each thread its own leaf tensors: autograd accumulates .grad per tensor.
        mine = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs[thread]]
        for _ in range(100):
            for a, b in zip(expected[thread], step(*mine), strict=True):
                if not torch.equal(a, b):
                    failures.append(thread)
                    return

    threads = [threading.Thread(target=work, args=(t,)) for t in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the memory of ``a`` and ``b`` overlaps."""
    a_start, b_start = a.untyped_storage().data_ptr(), b.untyped_storage().data_ptr()
    a_end = a_start + a.untyped_storage().nbytes()
    return a_start < b_start + b.untyped_storage().nbytes() and b_start < a_end


def test_outputs_never_share_memory_with_inputs():
    y, bias, weights, g = make(4)
    outputs = step(y, bias, weights, g)
    outputs += tb.weighted_swiglu_back(g, y.detach(), weights.detach(), bias=bias.detach())
    outputs += (tb.swiglu(y.detach()), tb.swiglu_back(g, y.detach()))
    for out in outputs:
        for x in (y, bias, weights, g):
            assert not overlaps(out, x)


def test_input_mutated_or_freed_right_after_the_call():
    """JAX computes asynchronously; the output torch receives is complete, so torch may
    overwrite or free the input at once. (A large input keeps the computation long.)"""
    y = 3 * torch.randn(2048, 2 * 2048, generator=torch.Generator().manual_seed(5))
    expected = testing.swiglu_forward(y.numpy())
    out = tb.swiglu(y)
    y.fill_(float("nan"))
    assert testing.relative_error(out.numpy(), expected) <= testing.tolerance("float32")

    y = torch.from_numpy(testing.fp8_round(expected[:, :1024]).astype(np.float32))
    g = torch.ones(2048, 512)
    expected = testing.swiglu_backward(g.numpy(), y.numpy())["y"]
    dy = tb.swiglu_back(g, y)
    del y, g
    junk = [torch.full((2048, 1024), float("nan")) for _ in range(4)]  # reuses the memory
    assert testing.relative_error(dy.numpy(), expected) <= testing.tolerance("float32")
    del junk


def test_input_modified_in_place_before_backward_is_refused():
    """As for any torch op, the saved input is checked by autograd's version counter."""
    y, bias, _, g = make(6)
    x = y * 1  # not a leaf, so it may be modified in place
    out = tb.bias_swiglu(x, bias)
    x.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward(g)
