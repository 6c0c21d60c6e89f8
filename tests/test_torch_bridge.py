"""torch_bridge on the CPU: Megatron's contract, gradients, zero-copy exchange, training
beside native torch, opcheck and torch.compile (errors: test_torch_bridge_errors.py)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_bridge as tb  # noqa: E402
from swiglu_jax import testing  # noqa: E402
from torch_bridge import _exchange  # noqa: E402

GPT_OSS = {"clamp_value": 7.0, "alpha": 1.702, "linear_offset": 1.0}
TOLERANCE = {torch.float32: 5e-6, torch.bfloat16: 5e-3, torch.float16: 1e-3}


@pytest.fixture
def gen(rng):
    return torch.Generator().manual_seed(int(rng.integers(2**31)))


def numpy(x):
    return None if x is None else x.detach().float().numpy().astype(np.float64)


def make(gen, shape, dtype=torch.float32, bias=False, weights=False):
    y = (2 * torch.randn(shape, generator=gen)).to(dtype).requires_grad_()
    b = torch.randn(shape[-1], generator=gen).to(dtype).requires_grad_() if bias else None
    w = torch.rand((*shape[:-1], 1), generator=gen).requires_grad_() if weights else None
    return y, b, w


def check_against_reference(out, y, b, w, g, grads, options, fp8=False):
    """``out`` and ``grads`` (y, bias, weights) against the float64 NumPy reference."""
    ref_opts = {k: v for k, v in options.items() if k != "fp8_input_store"}
    expected = testing.swiglu_forward(numpy(y), numpy(b), numpy(w), **ref_opts)
    assert out.dtype == y.dtype
    assert testing.relative_error(numpy(out), expected) <= TOLERANCE[y.dtype]
    arrays = numpy(g), numpy(y), numpy(b), numpy(w)
    expected_grads = testing.swiglu_backward(*arrays, fp8_input_store=fp8, **ref_opts)
    scales = testing.swiglu_backward(*arrays, fp8_input_store=fp8, magnitudes=True, **ref_opts)
    for name, grad in grads.items():
        error = testing.relative_error(numpy(grad), expected_grads[name], scales[name])
        terms = testing.gradient_terms(name, tuple(y.shape))
        dtype = torch.float32 if name == "weights" else y.dtype
        assert error <= max(TOLERANCE[dtype], testing.tolerance("float32", terms=terms)), name


VARIANTS = ["plain", "bias", "weighted", "weighted_bias"]


def call(variant, y, b, w, **options):
    if variant == "plain":
        return tb.swiglu(y, **options)
    if variant == "bias":
        return tb.bias_swiglu(y, b, **options)
    return tb.weighted_swiglu(y, w, bias=b, **options)


@pytest.mark.parametrize(
    "options",
    [{}, {"clamp_value": 1.5}, GPT_OSS, {"fp8_input_store": True}, {"fp8_input_store": "scaled"}],
    ids=["default", "clamp", "gpt_oss", "fp8", "scaled_fp8"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
def test_functions_forward_and_backward(gen, variant, dtype, options):
    y, b, w = make(gen, (5, 3, 2 * 24), dtype, "bias" in variant, "weighted" in variant)
    out = call(variant, y, b, w, **options)
    g = torch.randn(out.shape, generator=gen).to(dtype)
    out.backward(g)
    grads = {
        "y": y.grad,
        "bias": None if b is None else b.grad,
        "weights": None if w is None else w.grad,
    }
    grads = {k: v for k, v in grads.items() if v is not None}
    check_against_reference(out, y, b, w, g, grads, options, options.get("fp8_input_store", False))


@pytest.mark.parametrize("options", [{}, GPT_OSS], ids=["default", "gpt_oss"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_float64(gen, variant, options):
    y, b, w = make(gen, (4, 6), torch.float64, "bias" in variant, "weighted" in variant)
    if w is not None:
        w = w.detach().double().requires_grad_()
    args = [x for x in (y, b, w) if x is not None]

    def f(*args):
        it = iter(args)
        y = next(it)
        b = next(it) if "bias" in variant else None
        w = next(it) if "weighted" in variant else None
        return call(variant, y, b, w, **options)

    assert torch.autograd.gradcheck(f, tuple(args))


@pytest.mark.parametrize("shape", [(13, 32), (4, 3, 32)], ids=str)
def test_megatron_impls(gen, shape):
    y, b, w = make(gen, shape, torch.bfloat16, bias=True, weights=True)
    for bias in (None, b):
        out = tb.bias_swiglu_impl(y, bias, False, False)
        assert out.shape == (*shape[:-1], shape[-1] // 2) and out.dtype == torch.bfloat16
        expected = testing.swiglu_forward(numpy(y), numpy(bias))
        assert testing.relative_error(numpy(out), expected) <= TOLERANCE[torch.bfloat16]
    flat_w = w.detach().reshape(-1, 1).requires_grad_()
    out = tb.weighted_bias_swiglu_impl(y, None, flat_w)  # Megatron's (tokens, 1) weights
    out.float().sum().backward()
    assert flat_w.grad.shape == flat_w.shape and y.grad.shape == y.shape
    expected = testing.swiglu_forward(numpy(y), None, numpy(w))
    assert testing.relative_error(numpy(out), expected) <= TOLERANCE[torch.bfloat16]


def test_function_classes_match_megatron_signatures(gen):
    y, b, w = make(gen, (6, 16), torch.float32, bias=True, weights=True)
    assert issubclass(tb.SwiGLUFunction, torch.autograd.Function)
    outs = [
        tb.SwiGLUFunction.apply(y, False, False),
        tb.BiasSwiGLUFunction.apply(y, b, False, False),
        tb.WeightedSwiGLUFunction.apply(y, w, False),
    ]
    expected = [tb.swiglu(y), tb.bias_swiglu(y, b), tb.weighted_swiglu(y, w)]
    for out, exp in zip(outs, expected, strict=True):
        torch.testing.assert_close(out, exp)
    sum(o.sum() for o in outs).backward()
    assert y.grad is not None and b.grad.shape == b.shape and w.grad.shape == w.shape


def test_back_functions_match_autograd(gen):
    y, b, w = make(gen, (7, 20), torch.float32, bias=True, weights=True)
    g = torch.randn(7, 10, generator=gen)
    for fn, args, back in (
        (tb.swiglu, (y,), lambda: tb.swiglu_back(g, y)),
        (tb.bias_swiglu, (y, b), lambda: tb.bias_swiglu_back(g, y, b)),
    ):
        (dy,) = torch.autograd.grad(fn(*args), y, g)
        torch.testing.assert_close(back(), dy)
    dy, dw = torch.autograd.grad(tb.weighted_swiglu(y, w), (y, w), g)
    back_dy, back_dw = tb.weighted_swiglu_back(g, y, w)
    torch.testing.assert_close(back_dy, dy)
    torch.testing.assert_close(back_dw, dw)


def saved_tensors(fn):
    """The tensors autograd saves while ``fn`` runs."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


def test_fp8_input_store_saves_float8(gen):
    y, b, _ = make(gen, (8, 32), torch.bfloat16, bias=True)
    for fn in (
        lambda: tb.bias_swiglu(y, b, fp8_input_store=True),
        lambda: tb.bias_swiglu_impl(y, b, True, False),
    ):
        out, saved = saved_tensors(fn)
        big = [t for t in saved if t.numel() == y.numel()]
        assert [t.dtype for t in big] == [torch.float8_e4m3fn]
        out.float().sum().backward()


# torch's eager cast to float8_e4m3fn saturates from 2.12 on (pytorch/pytorch#178817);
# before, values beyond 464 became NaN.
SATURATING_FP8_CAST = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 12)
needs_saturating_cast = pytest.mark.skipif(
    not SATURATING_FP8_CAST, reason="torch < 2.12 casts to float8 without saturating"
)


def every_16_bit_value(dtype):
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


@needs_saturating_cast
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_fp8_reference_is_torchs_cast(dtype):
    """``testing.fp8_cast``, which every implementation's fp8 store is tested against,
    is Megatron's ``y.to(torch.float8_e4m3fn)``: bit for bit over every 16-bit value."""
    y = every_16_bit_value(dtype)
    expected = y.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    actual = testing.fp8_cast(y.float().numpy()).view(np.uint8)
    nan = np.isnan(y.float().numpy())
    np.testing.assert_array_equal(actual[~nan], expected[~nan])
    assert np.isnan(testing.fp8_round(y.float().numpy()[nan])).all()


def test_scaled_fp8_store_saves_the_copy_and_its_row_scales(gen):
    """The Functions and Megatron's entry point save the scaled float8 copy and one
    float32 scale per row, the reference's bits; offloading keeps the scales on the
    device."""
    y, b, w = make(gen, (6, 4, 32), torch.bfloat16, bias=True, weights=True)
    expected_q, expected_scale = testing.fp8_scaled_cast(numpy(y).reshape(-1, 32))
    for fn in (
        lambda: tb.weighted_swiglu(y, w, bias=b, fp8_input_store="scaled"),
        lambda: tb.bias_swiglu_impl(y, b, "scaled", False),
        lambda: tb.SwiGLU(32, fp8_input_store="scaled")(y, weights=w),
    ):
        out, saved = saved_tensors(fn)
        (q,) = [t for t in saved if t is not None and t.dtype == torch.float8_e4m3fn]
        (scale,) = [t for t in saved if t is not None and t.shape == (24, 1)]
        np.testing.assert_array_equal(q.view(torch.uint8).numpy(), expected_q.view(np.uint8))
        np.testing.assert_array_equal(scale.numpy(), expected_scale)
        assert not [
            t
            for t in saved
            if t is not None and t.dtype == torch.bfloat16 and t.numel() == y.numel()
        ]
        out.float().sum().backward()


def test_scaled_fp8_store_matches_the_jax_op(gen):
    """The bridge's gradients are the JAX op's (the same kernels through DLPack)."""
    import jax
    import jax.numpy as jnp

    import swiglu_jax as sj

    y, b, w = make(gen, (16, 64), torch.float32, bias=True, weights=True)
    out = tb.weighted_swiglu(y, w, bias=b, fp8_input_store="scaled", **GPT_OSS)
    g = torch.randn(out.shape, generator=gen)
    out.backward(g)
    args = [jnp.asarray(numpy(x), jnp.float32) for x in (y, w, b)]
    f = lambda y, w, b: sj.weighted_swiglu(y, w, bias=b, fp8_input_store="scaled", **GPT_OSS)
    expected_out, vjp = jax.vjp(f, *args)
    expected = vjp(jnp.asarray(g.numpy()))
    assert testing.relative_error(numpy(out), expected_out) <= 1e-6
    for grad, want in zip((y.grad, w.grad, b.grad), expected, strict=True):
        assert testing.relative_error(numpy(grad), want) <= 1e-6


def test_scaled_fp8_store_compiles_like_eager(gen):
    y = (2 * torch.randn(8, 32, generator=gen)).requires_grad_()
    f = lambda y: tb.swiglu(y, fp8_input_store="scaled")
    results = []
    for fn in (f, torch.compile(f, fullgraph=True)):
        out = fn(y)
        (grad,) = torch.autograd.grad(out.sum(), y)
        results.append((out.detach(), grad))
    for eager, compiled in zip(*results, strict=True):
        assert torch.equal(eager, compiled)


@needs_saturating_cast
def test_fp8_input_store_saves_torchs_cast():
    """Values beyond the e4m3 range, infinities and NaN: the saved copy is what
    Megatron's cast would have saved."""
    y = every_16_bit_value(torch.bfloat16).reshape(-1, 2 * 64).clone().requires_grad_()
    out, saved = saved_tensors(lambda: tb.swiglu(y, fp8_input_store=True))
    (fp8,) = [t for t in saved if t.dtype == torch.float8_e4m3fn]
    expected = y.detach().reshape(fp8.shape).to(torch.float8_e4m3fn)
    assert torch.equal(fp8.float().isnan(), expected.float().isnan())
    finite = ~expected.float().isnan()
    assert torch.equal(fp8.view(torch.uint8)[finite], expected.view(torch.uint8)[finite])
    out.float().nan_to_num().sum().backward()


def test_cpu_offload_marks_saved_tensors(gen):
    y, b, _ = make(gen, (8, 32), torch.bfloat16, bias=True)
    _, saved = saved_tensors(lambda: tb.bias_swiglu_impl(y, b, False, True))
    assert saved and all(
        getattr(t, "activation_offloading", False)
        for t in saved
        if t is not None and t.numel() in (y.numel(), b.numel())
    )


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", [(0, 16), (2, 0, 16), (0, 3, 16)])
def test_zero_rows(variant, shape):
    """No tokens (an MoE expert that got none): empty outputs and gradients, zeros for
    the bias gradient, and no error."""
    y, b, w = make(torch.Generator().manual_seed(0), shape, bias=True, weights=True)
    b = b if "bias" in variant else None
    out = call(variant, y, b, w, fp8_input_store=True)
    assert out.shape == (*shape[:-1], shape[-1] // 2)
    out.sum().backward()
    assert y.grad.shape == y.shape
    if b is not None:
        assert torch.equal(b.grad, torch.zeros_like(b))
    assert tb.swiglu_back(out.detach(), y.detach()).shape == y.shape


def test_zero_copy_exchange(gen):
    t = torch.randn(64, 128, generator=gen).to(torch.bfloat16)
    assert _exchange.to_jax(t).unsafe_buffer_pointer() == t.data_ptr()
    array = _exchange.to_jax(torch.randn(32, 32, generator=gen))
    assert _exchange.to_torch(array).data_ptr() == array.unsafe_buffer_pointer()
    grad_tensor = torch.randn(8, 8, generator=gen, requires_grad=True)
    assert _exchange.to_jax(grad_tensor).unsafe_buffer_pointer() == grad_tensor.data_ptr()


def test_exchange_of_one_calls_tensors(gen):
    t = torch.randn(16, 8, generator=gen)
    strided = torch.randn(8, 16, generator=gen).t()
    a, none, b = _exchange.to_jax_all(t, None, strided)
    assert none is None and a.unsafe_buffer_pointer() == t.data_ptr()
    assert np.array_equal(np.asarray(a), t.numpy())
    assert np.array_equal(np.asarray(b), strided.numpy())


def test_non_contiguous_input_is_copied_and_correct(gen):
    y = torch.randn(32, 10, generator=gen).t()  # (10, 32), not contiguous
    expected = testing.swiglu_forward(y.numpy())
    assert testing.relative_error(tb.swiglu(y).numpy(), expected) <= 5e-6


def test_inputs_are_not_modified(gen):
    y, b, w = make(gen, (6, 16), torch.float32, bias=True, weights=True)
    copies = [x.detach().clone() for x in (y, b, w)]
    out = tb.weighted_swiglu(y, w, bias=b, fp8_input_store=True)
    out.sum().backward()
    tb.weighted_swiglu_back(torch.ones_like(out), y.detach(), w.detach(), bias=b.detach())
    for x, copy in zip((y, b, w), copies, strict=True):
        assert torch.equal(x.detach(), copy)


class MLP(torch.nn.Module):
    def __init__(self, bridge: bool, d: int = 16, h: int = 24):
        super().__init__()
        self.up, self.down = torch.nn.Linear(d, 2 * h), torch.nn.Linear(h, d)
        self.act = tb.SwiGLU(2 * h)
        self.bridge = bridge

    def forward(self, x):
        y = self.up(x)
        if self.bridge:
            return self.down(self.act(y))
        gate, up = torch.chunk(y + self.act.bias, 2, -1)
        return self.down(torch.nn.functional.silu(gate) * up)


def train(model, steps=30, compile_=False):
    gen = torch.Generator().manual_seed(0)
    x, target = torch.randn(128, 16, generator=gen), torch.randn(128, 16, generator=gen)
    run = torch.compile(model, fullgraph=True) if compile_ else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(run(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_mlp_trains_like_native_torch():
    torch.manual_seed(0)
    bridged = MLP(bridge=True)
    native = MLP(bridge=False)
    native.load_state_dict(bridged.state_dict())
    bridged_losses, native_losses = train(bridged), train(native)
    assert bridged_losses[-1] < 0.9 * bridged_losses[0]
    np.testing.assert_allclose(bridged_losses, native_losses, rtol=1e-4)


def test_opcheck():
    gen = torch.Generator().manual_seed(0)
    y, b = torch.randn(5, 8, generator=gen), torch.randn(8, generator=gen)
    w, g = torch.rand(5, 1, generator=gen), torch.randn(5, 4, generator=gen)
    forward, backward = torch.ops.swiglu_jax.forward.default, torch.ops.swiglu_jax.backward.default
    for args in (
        (y, b, w, None, 1.0, 0.0, "cast"),
        (y, None, None, 1.5, 1.702, 1.0, "none"),
        (y, b, w, None, 1.0, 0.0, "scaled"),
    ):
        torch.library.opcheck(forward, args)
    torch.library.opcheck(backward, (g, y, b, w, 1.5, 1.0, 0.0))
    torch.library.opcheck(backward, (g, y, None, None, None, 1.0, 0.0))
    # The scaled copy and its scales; test_schema perturbs inputs with arithmetic that
    # torch has no float8 kernels for.
    _, q, scale = forward(y, b, w, None, 1.0, 0.0, "scaled")
    checks = ("test_faketensor", "test_autograd_registration", "test_aot_dispatch_dynamic")
    torch.library.opcheck(backward, (g, q, b, w, None, 1.0, 0.0, scale), test_utils=checks)


def test_torch_compile_fullgraph_trains_like_eager():
    torch.manual_seed(0)
    compiled, eager = MLP(bridge=True), MLP(bridge=True)
    eager.load_state_dict(compiled.state_dict())
    np.testing.assert_allclose(
        train(compiled, steps=5, compile_=True), train(eager, steps=5), rtol=1e-5
    )


def test_ops_are_tagged_for_cuda_graph_partitioning():
    if not hasattr(torch.Tag, "cudagraph_unsafe"):
        pytest.skip("this torch has no cudagraph_unsafe tag")
    for op in (torch.ops.swiglu_jax.forward.default, torch.ops.swiglu_jax.backward.default):
        assert torch.Tag.cudagraph_unsafe in op.tags
