"""torch_bridge on a CUDA GPU: zero-copy pointers, stream safety, the caching allocator,
and device placement. Skipped without a GPU (CI has none); benchmarks/gpu_check.py runs
it on the GPU machine."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU visible to torch", allow_module_level=True)

from helpers import usage  # noqa: E402

import torch_bridge as tb  # noqa: E402
from swiglu_jax import testing  # noqa: E402
from torch_bridge import _exchange  # noqa: E402


@pytest.fixture(autouse=True, params=["jax", "direct"])
def launch_mode(request):
    """Every test under both launch paths: through DLPack and JAX, and direct."""
    mode = tb.get_launch()
    tb.set_launch(request.param)
    yield request.param
    tb.set_launch(mode)


def reference(y, b=None):
    return testing.swiglu_forward(
        y.detach().double().cpu().numpy(),
        None if b is None else b.detach().double().cpu().numpy(),
    )


def test_zero_copy_on_cuda():
    y = torch.randn(256, 512, device="cuda", dtype=torch.bfloat16)
    assert _exchange.to_jax(y).unsafe_buffer_pointer() == y.data_ptr()
    array = _exchange.to_jax(y)
    assert _exchange.to_torch(array).data_ptr() == array.unsafe_buffer_pointer()


@pytest.mark.parametrize("fp8_input_store", [True, "scaled"])
def test_correct_on_cuda(fp8_input_store):
    y = torch.randn(1000, 2 * 1408, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(2 * 1408, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    out = tb.bias_swiglu(y, b, fp8_input_store=fp8_input_store)
    assert out.device == y.device
    error = testing.relative_error(out.float().cpu().detach().numpy(), reference(y.detach(), b))
    assert error <= testing.tolerance("bfloat16")
    out.float().sum().backward()
    assert y.grad.shape == y.shape and b.grad.shape == b.shape


def test_waits_for_torch_producer_and_torch_waits_for_jax():
    """The input is still being written by a long torch kernel when the bridge is
    called, and the output is read by torch right away: repeated on large tensors."""
    a = torch.randn(4096, 4096, device="cuda")
    for _ in range(5):
        y = (a @ a @ a)[:, :4096].to(torch.bfloat16).contiguous()  # slow producer
        out = tb.swiglu(y)
        checksum = out.float().sum()  # consumer on torch's stream, no sync in between
        torch.cuda.synchronize()
        expected = reference(y)
        assert testing.relative_error(out.float().cpu().numpy(), expected) <= 5e-3
        assert abs(float(checksum) - expected.sum()) <= 1e-2 * abs(expected).sum()


def test_every_tensor_of_a_call_waits_for_its_producer():
    """Only the call's first tensor goes through DLPack's stream handshake: the later
    ones, here made by slow kernels right before the call, must still be waited for."""
    a = torch.randn(4096, 4096, device="cuda") / 64  # keeps a @ a @ a near unit scale
    for _ in range(5):
        g = torch.randn(4096, 2048, device="cuda", dtype=torch.bfloat16)
        y = (a @ a @ a).to(torch.bfloat16)  # slow producer of the second tensor
        bias = (a @ a)[0].to(torch.bfloat16)  # and of the third
        dy = tb.bias_swiglu_back(g, y, bias)
        torch.cuda.synchronize()
        expected = testing.swiglu_backward(*(x.double().cpu().numpy() for x in (g, y, bias)))
        assert testing.relative_error(dy.double().cpu().numpy(), expected["y"]) <= 1e-2


def test_side_stream_producer():
    side = torch.cuda.Stream()
    for _ in range(5):
        with torch.cuda.stream(side):
            y = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16) * 3
        torch.cuda.current_stream().wait_stream(side)
        y.record_stream(torch.cuda.current_stream())
        out = tb.swiglu(y)
        torch.cuda.synchronize()
        assert testing.relative_error(out.float().cpu().numpy(), reference(y)) <= 5e-3


def test_freed_input_is_not_overwritten_while_read():
    """The caller drops its input right after the call and torch reuses the memory at
    once; the result must be that of the original input."""
    for _ in range(5):
        y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        expected = reference(y)
        out = tb.swiglu(y)
        del y
        junk = torch.full((8192, 8192), float("nan"), device="cuda", dtype=torch.bfloat16)
        torch.cuda.synchronize()
        assert testing.relative_error(out.float().cpu().numpy(), expected) <= 5e-3
        del junk


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_gpu():
    y = torch.randn(64, 256, device="cuda:1")
    out = tb.swiglu(y)
    assert out.device == y.device
    assert {device.id for device in _exchange.to_jax(y).devices()} == {1}


def _layers_step(layers, rows, features, hidden, **options):
    """Device memory of one forward + backward through ``layers`` SwiGLU MLP layers whose
    up projections the caller drops after the op (as in a model): what the forward leaves
    held for the backward (after the offload copies have landed), the peak during the
    backward, and the input's gradient."""
    torch.manual_seed(0)
    ups = [torch.randn(features, 2 * hidden, device="cuda", dtype=torch.bfloat16) / 32]
    downs = [torch.randn(hidden, features, device="cuda", dtype=torch.bfloat16) / 64]
    ups, downs = ups * layers, downs * layers
    x = torch.randn(rows, features, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    h = x
    for up, down in zip(ups, downs, strict=True):
        h = tb.bias_swiglu_impl(h @ up, None, **options) @ down
        # Unit scale for the next layer: a SwiGLU MLP shrinks small activations
        # quadratically, and after a few layers the fp8 cast would round them to 0.
        h = h / h.detach().float().square().mean().sqrt().to(h.dtype)
    torch.cuda.synchronize()
    torch.empty(1, device="cuda")  # the allocator frees blocks whose side-stream use ended
    held = torch.cuda.memory_allocated() - start
    torch.cuda.reset_peak_memory_stats()
    h.float().square().sum().backward()
    torch.cuda.synchronize()
    return held, torch.cuda.max_memory_allocated() - start, x.grad


def test_fp8_store_and_offload_hold_less_for_the_backward(launch_mode):
    """Offload copies run on a side stream beside the forward, so a forward with little
    compute per layer (as here) finishes before they land: the memory they free shows in
    what the forward leaves held for the backward, and in the backward's peak.

    Measured with the direct launch, whose every tensor comes from torch's allocator:
    on the JAX path, JAX's outputs (the fp8 copies, dy) sit in JAX's pool, which torch's
    counters do not see (benchmarks/experiments/offload_peak.py prints both)."""
    if launch_mode == "jax":
        pytest.skip("torch's counters miss JAX's pool: measured under the direct launch")
    shape = {"layers": 4, "rows": 8192, "features": 1024, "hidden": 4096}
    plain, plain_peak, grad = _layers_step(**shape)
    fp8, _, grad_fp8 = _layers_step(**shape, fp8_input_store=True)
    offload, offload_peak, grad_offload = _layers_step(**shape, cpu_offload_input=True)
    saved_bytes = shape["rows"] * 2 * shape["hidden"] * 2  # one layer's bf16 input
    # fp8 holds half of each layer's input; offload holds none of it on the device.
    assert plain - fp8 >= 0.9 * shape["layers"] * saved_bytes / 2, (plain, fp8)
    assert plain - offload >= 0.9 * shape["layers"] * saved_bytes, (plain, offload)
    assert offload_peak < plain_peak, (offload_peak, plain_peak)
    assert torch.equal(grad, grad_offload)  # the offloaded input comes back bit for bit
    error = testing.relative_error(grad_fp8.double().cpu().numpy(), grad.double().cpu().numpy())
    assert error < 0.1


def test_offload_round_trip_under_memory_pressure():
    """The input's device memory is reused by torch right after the forward; the
    backward must still see the original values (the offload copy ran first)."""
    for _ in range(3):
        y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        b = torch.randn(8192, device="cuda", dtype=torch.bfloat16)
        out = tb.bias_swiglu_impl(y * 1, b, False, True)  # y * 1 is freed by torch
        junk = torch.full((8192, 8192), float("nan"), device="cuda", dtype=torch.bfloat16)
        out.float().sum().backward()
        del junk
        y_again = y.detach().clone().requires_grad_()
        tb.bias_swiglu_impl(y_again, b, False, False).float().sum().backward()
        assert torch.equal(y.grad, y_again.grad)


def cuda_inputs(seed, rows=1024, hidden=1408, dtype=torch.bfloat16):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    y = (2 * torch.randn(rows, 2 * hidden, device="cuda", generator=gen)).to(dtype)
    bias = torch.randn(2 * hidden, device="cuda", generator=gen).to(dtype)
    weights = torch.rand(rows, 1, device="cuda", generator=gen)
    g = torch.randn(rows, hidden, device="cuda", generator=gen).to(dtype)
    return y.requires_grad_(), bias.requires_grad_(), weights.requires_grad_(), g


def step(y, bias, weights, g):
    """Forward and backward through every fused path; the output and the gradients."""
    for x in (y, bias, weights):
        x.grad = None
    out = tb.weighted_swiglu(y, weights, bias=bias, fp8_input_store=True)
    out.backward(g)
    return out.detach(), y.grad, bias.grad, weights.grad


def jax_bytes_in_use() -> int:
    import jax

    return jax.devices("cuda")[0].memory_stats()["bytes_in_use"]


def test_10000_calls_keep_device_and_host_memory_flat():
    """torch's allocator, JAX's and the host's resident memory do not grow over the
    second half of 10,000 forward + backward calls."""
    inputs = cuda_inputs(0)
    for _ in range(5_000):
        step(*inputs)
    torch.cuda.synchronize()
    before = (torch.cuda.memory_allocated(), jax_bytes_in_use(), *usage())
    for _ in range(5_000):
        step(*inputs)
    torch.cuda.synchronize()
    after = (torch.cuda.memory_allocated(), jax_bytes_in_use(), *usage())
    torch_growth, jax_growth, rss_growth, objects_growth, arrays_growth = (
        a - b for a, b in zip(after, before, strict=True)
    )
    # One leaked output a call would be 14 GiB by the end.
    assert torch_growth < 16 * 2**20, f"torch allocated {torch_growth} more bytes"
    assert jax_growth < 16 * 2**20, f"JAX holds {jax_growth} more bytes"
    assert rss_growth < 16 * 2**20, f"host resident memory grew by {rss_growth} bytes"
    assert objects_growth <= 10 and arrays_growth <= 8  # other tests' garbage; a leak: 5000


def test_bitwise_repeatable_on_cuda():
    inputs = cuda_inputs(1)
    first = [x.clone() for x in step(*inputs)]
    for _ in range(3):
        for a, b in zip(first, step(*inputs), strict=True):
            assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def test_two_streams_at_once():
    """Two threads, each on its own torch stream, call the bridge at the same time on
    inputs their stream has just produced; each gets exactly the results of a call
    alone on the default stream."""
    import threading

    inputs = [cuda_inputs(seed) for seed in (2, 3)]
    expected = [[x.clone() for x in step(*i)] for i in inputs]
    torch.cuda.synchronize()
    streams = [torch.cuda.Stream() for _ in inputs]
    failures, start = [], threading.Barrier(2)

    def work(k):
        with torch.cuda.stream(streams[k]):
            a = torch.randn(2048, 2048, device="cuda") / 45
            start.wait()
            for _ in range(50):
                # A slow producer on this stream, then the inputs copied after it.
                slow = (a @ a @ a).sum() * 0
                mine = [(x.detach() + slow.to(x.dtype)).requires_grad_() for x in inputs[k][:3]]
                results = step(*mine, inputs[k][3])
                if not all(torch.equal(e, r) for e, r in zip(expected[k], results, strict=True)):
                    failures.append(k)
                    return
            streams[k].synchronize()

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_tensors_on_different_devices():
    y = torch.ones(3, 8, device="cuda")
    with pytest.raises(ValueError, match=r"^bias_swiglu: bias is on cpu but y is on cuda"):
        tb.bias_swiglu(y, torch.ones(8))
    with pytest.raises(ValueError, match=r"^swiglu_back: g is on cpu but y is on cuda"):
        tb.swiglu_back(torch.ones(3, 4), y)
