"""torch_bridge's direct launch on a CUDA GPU: the same bits as the JAX path for every
variant, option and dtype, torch's stream order, any device, inputs the kernel cannot
take as they are, torch.compile, and the host time per call. Skipped without a GPU (CI
has none); the CPU side (IR, compilation, switch) is test_torch_bridge_direct.py.

    TORCH_BRIDGE_LAUNCH is irrelevant here: each test sets the mode it needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU visible to torch", allow_module_level=True)
pytest.importorskip("triton")

import torch_bridge as tb  # noqa: E402
from swiglu_jax import _dispatch, testing  # noqa: E402
from torch_bridge import _direct, _ops  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from bridge_overhead import per_call  # noqa: E402

GPT_OSS = {"clamp_value": 7.0, "alpha": 1.702, "linear_offset": 1.0}
VARIANTS = ["plain", "bias", "weighted", "weighted_bias"]
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
SHAPES = [(37, 129), (1000, 1408)]  # ragged edge tiles; several tiles a row
STORES = (False, True, "scaled")  # fp8_input_store
# bfloat16 with every option; the other dtypes with the defaults.
CASES = [
    *(("bfloat16", v, o, f) for v in VARIANTS for o in ("default", "gpt_oss") for f in STORES),
    *((d, v, "default", f) for d in ("float16", "float32") for v in VARIANTS for f in STORES),
]


@pytest.fixture(autouse=True)
def restore_launch():
    mode = tb.get_launch()
    yield
    tb.set_launch(mode)


@contextlib.contextmanager
def launch(mode: str):
    """Runs the body in ``mode``; in ``"direct"`` the JAX path must not be taken."""
    tb.set_launch(mode)
    if mode == "jax":
        yield
        return

    def refuse(*tensors):
        raise AssertionError("the JAX path was taken in direct mode")

    saved, _ops.to_jax_all = _ops.to_jax_all, refuse
    try:
        yield
    finally:
        _ops.to_jax_all = saved


def inputs(rows, hidden, dtype, variant, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    y = (2 * torch.randn(rows, 2 * hidden, device="cuda", generator=gen)).to(dtype)
    bias = torch.randn(2 * hidden, device="cuda", generator=gen).to(dtype)
    weights = torch.rand(rows, 1, device="cuda", generator=gen)
    g = torch.randn(rows, hidden, device="cuda", generator=gen).to(dtype)
    return (
        y,
        bias if "bias" in variant else None,
        weights if "weighted" in variant else None,
        g,
    )


def step(variant, y, bias, weights, g, **options):
    """Forward and backward through the public functions: output and gradients."""
    leaves = [
        None if x is None else x.detach().clone().requires_grad_() for x in (y, bias, weights)
    ]
    y, bias, weights = leaves
    if variant == "plain":
        out = tb.swiglu(y, **options)
    elif variant == "bias":
        out = tb.bias_swiglu(y, bias, **options)
    else:
        out = tb.weighted_swiglu(y, weights, bias=bias, **options)
    out.backward(g)
    return out.detach(), *(None if x is None else x.grad for x in leaves)


def same_bits(a, b):
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
    )


@contextlib.contextmanager
def jax_path_on_triton():
    """The bridge's JAX path with swiglu_jax's Triton kernels, the ones the direct path
    launches, whatever "auto" would take on this GPU."""
    call = _dispatch.call

    def on_triton(method, opts, *args, **static):
        opts = dataclasses.replace(opts, implementation="pallas:triton")
        return call(method, opts, *args, **static)

    def retrace():
        _ops._jax_forward.cache_clear()
        _ops._jax_backward.cache_clear()

    retrace()
    try:
        with mock.patch.object(_dispatch, "call", on_triton):
            yield
    finally:
        retrace()


def both_paths(variant, tensors, **options):
    with launch("jax"), jax_path_on_triton():
        expected = step(variant, *tensors, **options)
    with launch("direct"):
        got = step(variant, *tensors, **options)
    torch.cuda.synchronize()
    return expected, got


@pytest.mark.parametrize("rows,hidden", SHAPES)
@pytest.mark.parametrize("dtype,variant,options,fp8", CASES)
def test_same_bits_as_the_jax_path(rows, hidden, dtype, variant, options, fp8):
    """Output and input gradient bit for bit; the bias and weights gradients within
    float32 summation error: each compiler orders the kernel's sums over a tile its own
    way (bit for bit in most cases; 11 of 96 differed by an ulp on an H200), and torch
    reduces the weights' partial sums where XLA does on the JAX path."""
    options = dict(GPT_OSS if options == "gpt_oss" else {}, fp8_input_store=fp8)
    tensors = inputs(rows, hidden, DTYPES[dtype], variant)
    expected, got = both_paths(variant, tensors, **options)
    assert same_bits(got[0], expected[0]), "output"
    assert same_bits(got[1], expected[1]), "input gradient"
    for name, e, r in zip(("bias", "weights"), expected[2:], got[2:], strict=True):
        if e is None:
            assert r is None
            continue
        assert r.dtype == e.dtype and r.shape == e.shape, name
        # The same sums in another order: the two differ by float32 rounding in a sum of
        # that many terms (the library's tolerance for it).
        terms = rows if name == "bias" else hidden
        error = testing.relative_error(r.double().cpu().numpy(), e.double().cpu().numpy())
        assert error <= testing.tolerance(dtype, terms=terms), (name, error)


@pytest.mark.parametrize("rows,hidden", [*SHAPES, (300, 5000)])
@pytest.mark.parametrize("store", ["cast", "scaled"])
def test_saved_fp8_store_same_bits(rows, hidden, store):
    """What the forward op saves for the backward (the fp8 copy and, scaled, its float32
    row scales; above 4096 columns the kernel sweeps each row twice), bit for bit."""
    y, bias, weights, _ = inputs(rows, hidden, torch.bfloat16, "weighted_bias")
    args = (y, bias, weights, None, 1.0, 0.0, store)
    with launch("jax"), jax_path_on_triton():
        expected = _ops.forward(*args)
    with launch("direct"):
        got = _ops.forward(*args)
    torch.cuda.synchronize()
    for name, e, r in zip(("out", "y_fp8", "y_scale"), expected, got, strict=True):
        assert same_bits(r, e), name


@pytest.mark.xfail(strict=False, reason="the two compilers and reductions may sum in other orders")
@pytest.mark.parametrize("rows", [37, 1000, 8192])
def test_reduced_gradients_bit_for_bit(rows):
    """Whether the two paths' bias and weights gradients (two hidden blocks here) match
    bit for bit (XPASS says they do at these sizes)."""
    tensors = inputs(rows, 5000, torch.bfloat16, "weighted_bias")
    expected, got = both_paths("weighted_bias", tensors)
    assert same_bits(got[2], expected[2]), "bias gradient"
    assert same_bits(got[3], expected[3]), "weights gradient"


def test_llm_size():
    tensors = inputs(8192, 14336, torch.bfloat16, "plain")
    expected, got = both_paths("plain", tensors)
    assert same_bits(got[0], expected[0]) and same_bits(got[1], expected[1])


def test_inputs_the_kernel_cannot_take_as_they_are():
    """A non-contiguous input and a misaligned one are copied once (as the JAX path
    copies them): the same bits as contiguous, aligned inputs."""
    y, _, _, g = inputs(256, 704, torch.bfloat16, "plain")
    wide = torch.zeros(256, 2 * 704 + 16, device="cuda", dtype=torch.bfloat16)
    wide[:, : 2 * 704] = y
    flat = torch.zeros(256 * 2 * 704 + 1, device="cuda", dtype=torch.bfloat16)
    flat[1:] = y.reshape(-1)
    strided, misaligned = wide[:, : 2 * 704], flat[1:].view(256, 2 * 704)
    assert not strided.is_contiguous() and misaligned.data_ptr() % 32
    with launch("direct"):
        expected = tb.swiglu(y), tb.swiglu_back(g, y)
        for odd in (strided, misaligned):
            got = tb.swiglu(odd), tb.swiglu_back(g, odd)
            assert same_bits(got[0], expected[0]) and same_bits(got[1], expected[1])


def test_declined_inputs_run_through_jax():
    """float64 is not a kernel dtype: the direct mode computes it through JAX (XLA)."""
    y, bias, _, g = inputs(64, 128, torch.float64, "bias")
    with launch("jax"):
        expected = step("bias", y, bias, None, g)
    tb.set_launch("direct")
    got = step("bias", y, bias, None, g)
    for e, r in zip(expected, got, strict=True):
        assert r is None if e is None else same_bits(e, r)


def test_producer_on_a_side_stream():
    """The kernel runs on the current stream: called inside a side stream's context
    right after a slow producer there, it reads the produced input, and the default
    stream stays idle meanwhile."""
    base = (2 * torch.randn(4096, 2 * 2048, device="cuda")).to(torch.bfloat16)
    expected = testing.swiglu_forward(base.double().cpu().numpy())
    side = torch.cuda.Stream()
    tb.set_launch("direct")
    tb.swiglu(base)  # compiled before timing matters
    torch.cuda.synchronize()
    for _ in range(3):
        with torch.cuda.stream(side):
            torch.cuda._sleep(100_000_000)  # tens of milliseconds
            y = base * 1  # produced after the sleep
            out = tb.swiglu(y)
        assert torch.cuda.current_stream().query() and not side.query()
        side.synchronize()
        error = testing.relative_error(out.double().cpu().numpy(), expected)
        assert error <= testing.tolerance("bfloat16")


def test_consumer_waits_on_the_default_stream():
    side = torch.cuda.Stream()
    tb.set_launch("direct")
    for _ in range(3):
        with torch.cuda.stream(side):
            torch.cuda._sleep(50_000_000)
            y = (2 * torch.randn(8192, 4096, device="cuda")).to(torch.bfloat16)
        torch.cuda.current_stream().wait_stream(side)
        y.record_stream(torch.cuda.current_stream())
        out = tb.swiglu(y)
        checksum = out.float().sum()
        torch.cuda.synchronize()
        expected = testing.swiglu_forward(y.double().cpu().numpy())
        assert testing.relative_error(out.double().cpu().numpy(), expected) <= 5e-3
        assert abs(float(checksum) - expected.sum()) <= 1e-2 * abs(expected).sum()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_gpu():
    """Tensors on cuda:1 while cuda:0 is current: kernel loaded and launched there."""
    assert torch.cuda.current_device() == 0
    tensors = inputs(300, 700, torch.bfloat16, "bias")
    tensors = [None if x is None else x.to("cuda:1") for x in tensors]
    expected, got = both_paths("bias", tensors)
    assert got[0].device == torch.device("cuda:1")
    assert same_bits(got[0], expected[0]) and same_bits(got[1], expected[1])
    assert any(k[-1] == torch.device("cuda:1") and v for k, v in _direct._launchers.items())


def test_torch_compile_fullgraph():
    def layer(y, bias, g):
        out = tb.bias_swiglu(y, bias, **GPT_OSS)
        return (out.float() * g.float()).sum()

    y, bias, _, g = inputs(512, 1024, torch.bfloat16, "bias")
    compiled = torch.compile(layer, fullgraph=True)
    with launch("direct"):
        leaves = [x.detach().clone().requires_grad_() for x in (y, bias)]
        layer(*leaves, g).backward()
        eager = [x.grad for x in leaves]
        leaves = [x.detach().clone().requires_grad_() for x in (y, bias)]
        compiled(*leaves, g).backward()
    assert same_bits(leaves[0].grad, eager[0])
    torch.testing.assert_close(leaves[1].grad, eager[1])


def test_memory_stays_flat():
    tensors = inputs(1024, 1408, torch.bfloat16, "weighted_bias")
    tb.set_launch("direct")
    for _ in range(200):
        step("weighted_bias", *tensors, fp8_input_store=True)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(1000):
        step("weighted_bias", *tensors, fp8_input_store=True)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - before < 2**20


def per_call_us(fn) -> float:
    """Host microseconds per call, calls back to back (benchmarks/bridge_overhead.py's
    measure): the least of 5 runs of 200 calls, since a shared host's noise only adds
    (one run of 500 calls in a long pytest process once read 345 us where a fresh process
    read 231)."""
    return min(per_call(fn, calls=200, warmup=50) for _ in range(5))


def host_times() -> dict:
    """Host microseconds per call (``per_call_us``) of the op's forward and backward and
    of the public function, beside torch eager's Megatron formula, on a small input."""
    y, bias, _, g = inputs(64, 256, torch.bfloat16, "bias")
    tb.set_launch("direct")
    yg = y.clone().requires_grad_()

    def torch_swiglu(y):
        a, b = torch.chunk(y, 2, -1)
        return torch.nn.functional.silu(a) * b

    return {
        "op forward": per_call_us(lambda: _ops.forward(y, None, None, None, 1.0, 0.0, "none")),
        "op backward": per_call_us(lambda: _ops.backward(g, y, None, None, None, 1.0, 0.0)),
        "op bias backward": per_call_us(lambda: _ops.backward(g, y, bias, None, None, 1.0, 0.0)),
        "swiglu, no grad": per_call_us(lambda: tb.swiglu(y)),
        "torch, no grad": per_call_us(lambda: torch_swiglu(y)),
        "swiglu forward + backward": per_call_us(lambda: tb.swiglu(yg).backward(g)),
        "torch forward + backward": per_call_us(lambda: torch_swiglu(yg).backward(g)),
    }


@pytest.mark.host_time
def test_host_time_per_call():
    """The issue's target on a small input (the kernel takes a few microseconds, so the
    host sets the pace): at most 50 us of host time per forward and per backward call
    of the op, with a bias too (two launches: the kernel, then the sum of its partial
    sums); the public functions, with validation and autograd, at most 50 us per
    call above torch eager's own Megatron formula (which they replace) on the same
    input. Measured on an H200 host: op 19 / 21 us, swiglu 42 us, forward + backward
    197 us against torch's 125 us.

    Measured in a fresh process, and run first by scripts/gpu_session.sh (``host_time``):
    at the end of the GPU test files (seven minutes, many compiled kernels) the same calls
    read 1.3-1.5 times slower on an H100 host (session 10: bias backward 54 us in the
    test process, 46 in a fresh one; forward + backward 298 against 206) than alone, and
    the target is the library's cost, not the test run's."""
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
    code += "import test_gpu_direct as t; print(json.dumps(t.host_times()))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr[-2000:]
    times = json.loads(found.stdout.splitlines()[-1])
    print({name: round(us, 1) for name, us in times.items()})
    assert times["op forward"] <= 50 and times["op backward"] <= 50, times
    assert times["op bias backward"] <= 50, times
    assert times["swiglu, no grad"] <= times["torch, no grad"] + 50, times
    assert times["swiglu forward + backward"] <= times["torch forward + backward"] + 100, times
