"""torch_bridge's direct launch on the CPU host: the kernels' Triton IR, its compilation
for sm_90 by the ``triton`` package (no GPU needed), the calling convention, the switch
and the fallback. On a GPU (results, streams, devices, host time): test_gpu_direct.py."""

from __future__ import annotations

import re
import warnings

import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import torch_bridge as tb  # noqa: E402
from swiglu_jax._options import Options  # noqa: E402
from swiglu_jax.kernels import triton as kernels  # noqa: E402
from swiglu_jax.kernels import triton_ir  # noqa: E402
from torch_bridge import _direct  # noqa: E402

GPT_OSS = Options(clamp_value=7.0, alpha=1.702, linear_offset=1.0)
# (bias dtype, weights dtype) of each variant: mixed dtypes, as models have them.
VARIANTS = {
    "plain": (None, None),
    "bias": ("float32", None),
    "weighted": (None, "float32"),
    "weighted_bias": ("bfloat16", "float32"),
}
ROWS, HIDDEN = 37, 129  # ragged: edge tiles in both directions, rows not 16-byte aligned
WIDE = 5000  # above the 4096-column block: the scaled forward sweeps each row twice


def ir_of(direction, rows, hidden, dtype, variant, opts, store):
    """The kernel IR for the ops' fp8 store ``"none"``, ``"cast"`` or ``"scaled"``."""
    bias, weights = VARIANTS[variant]
    if direction == "forward":
        save_fp8 = _direct.SAVE_FP8[store]
        return triton_ir.forward_ir(rows, hidden, dtype, bias, weights, opts, save_fp8)
    y_dtype = dtype if store == "none" else "float8_e4m3fn"
    scale = "float32" if store == "scaled" else None
    return triton_ir.backward_ir(rows, hidden, dtype, y_dtype, bias, weights, opts, scale)


def expected_arrays(direction, rows, hidden, dtype, variant, store):
    """The calling convention of swiglu_jax.kernels.triton: operands, then results."""
    bias, weights = VARIANTS[variant]
    if direction == "forward" and store == "scaled":  # whole rows a program
        config = kernels.sweep_config(rows, hidden, dtype)
    elif direction == "backward":
        config = kernels.backward_config(
            rows, hidden, dtype, bias=bias is not None, weights=weights is not None
        )
    else:
        config = kernels.default_config(rows, hidden, dtype, stores_fp8=store != "none")
    row_blocks = -(-rows // config.block_rows)
    row_groups = -(-rows // (config.block_rows * config.row_steps))  # a backward program's
    hidden_blocks = -(-hidden // config.block_hidden)
    fp8 = store != "none"
    scaled = [((rows, 1), "float32")] if store == "scaled" else []
    y = ((rows, 2 * hidden), "float8_e4m3fn" if fp8 and direction == "backward" else dtype)
    inputs = [((rows, hidden), dtype), y] if direction == "backward" else [y]
    inputs += [((2 * hidden,), bias)] if bias else []
    inputs += [((rows, 1), weights)] if weights else []
    grid = (hidden_blocks, row_blocks, 1)
    if direction == "forward":
        outputs = [((rows, hidden), dtype)]
        outputs += [((rows, 2 * hidden), "float8_e4m3fn")] if fp8 else []
        outputs += scaled
        grid = (1, row_blocks, 1) if scaled else grid  # whole rows per program
    else:
        inputs += scaled
        grid = (hidden_blocks, row_groups, 1)
        outputs = [((rows, 2 * hidden), dtype)]
        outputs += [((row_groups, 2 * hidden), "float32")] if bias else []
        outputs += [((rows, hidden_blocks), "float32")] if weights else []
    return tuple(inputs), tuple(outputs), grid, config.num_warps


def pointer_arguments(ttir: str) -> tuple[set[int], set[int]]:
    """Which kernel arguments the TTIR loads from and which it stores to, following each
    pointer from ``tt.splat %argK`` through ``tt.addptr`` to ``tt.load``/``tt.store``."""
    base = {}
    for name, arg in re.findall(r"(%\w+) = tt\.splat %arg(\d+) ", ttir):
        base[name] = int(arg)
    for name, source in re.findall(r"(%\w+) = tt\.addptr (%\w+),", ttir):
        if source in base:
            base[name] = base[source]
    loads = {base[p] for p in re.findall(r"= tt\.load (%\w+)", ttir) if p in base}
    stores = {base[p] for p in re.findall(r"tt\.store (%\w+),", ttir) if p in base}
    return loads, stores


STORES = ("none", "cast", "scaled")
# (dtype, variant, fp8 store, hidden size)
CASES = [
    *(("bfloat16", variant, store, HIDDEN) for variant in VARIANTS for store in STORES),
    *((dtype, "plain", store, HIDDEN) for dtype in ("float16", "float32") for store in STORES),
    ("bfloat16", "weighted_bias", "scaled", WIDE),
    ("float32", "plain", "scaled", WIDE),
]


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("dtype,variant,store,hidden", CASES)
def test_ir_follows_the_calling_convention(direction, dtype, variant, store, hidden):
    """Launch parameters and arrays as swiglu_jax.kernels.triton defines them, and in the
    IR itself: the kernel stores to the outputs only and loads every input."""
    kernel = ir_of(direction, ROWS, hidden, dtype, variant, GPT_OSS, store)
    inputs, outputs, grid, num_warps = expected_arrays(
        direction, ROWS, hidden, dtype, variant, store
    )
    assert kernel.name == f"swiglu_{direction}_triton"
    assert (kernel.operands, kernel.results) == (inputs, outputs)
    assert kernel.grid == grid and kernel.num_warps == num_warps
    assert kernel.alignment == 32
    loads, stores = pointer_arguments(kernel.ttir)
    assert stores == set(range(len(inputs), len(inputs) + len(outputs)))
    assert loads >= set(range(len(inputs)))


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("dtype,variant,store,hidden", CASES)
def test_compiles_for_sm90(direction, dtype, variant, store, hidden):
    """triton compiles the IR for an H100 on this host; the compiled signature is one
    pointer per array, inputs first (compile_kernel checks it); libdevice without
    flush-to-zero, as XLA compiles it."""
    pytest.importorskip("triton")
    kernel = ir_of(direction, ROWS, hidden, dtype, variant, GPT_OSS, store)
    compiled = _direct.compile_kernel(kernel, 90)
    assert compiled.metadata.name == kernel.name
    assert compiled.metadata.num_warps == kernel.num_warps
    assert len(compiled.asm["cubin"]) > 0
    ptx = compiled.asm["ptx"]
    assert f".entry {kernel.name}(" in ptx and ".target sm_90" in ptx
    assert "ex2.approx.f32" in ptx and "ex2.approx.ftz" not in ptx


@pytest.mark.parametrize(
    "dtype, save_fp8, vector",
    [
        ("float32", False, r"\.v2\.b32"),  # 2 elements a thread: 8 bytes
        ("bfloat16", False, r"\.v2\.b32"),  # 4 elements a thread: 8 bytes
        ("bfloat16", True, r"\.v4\.b32"),  # the fp8 store's 8 a thread: 16 bytes
    ],
)
def test_llm_size_accesses_are_vectorized(dtype, save_fp8, vector):
    """At aligned sizes the compiled kernel moves each thread's elements of a tile in one
    vector (the alignment the IR promises lets triton vectorize, as it does in XLA)."""
    pytest.importorskip("triton")
    kernel = triton_ir.forward_ir(8192, 14336, dtype, None, None, Options(), save_fp8)
    ptx = _direct.compile_kernel(kernel, 90).asm["ptx"]
    assert re.search(r"ld\.global\S*" + vector, ptx)
    assert re.search(r"st\.global\S*" + vector, ptx)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_segments_sweep_uses_no_shared_memory(dtype):
    """The JAX path's sweep in segments, compiled for sm_90, uses no shared memory, so
    XLA launches it without preferring shared memory to L1 (where the second sweep finds
    part of the row). triton 3.6 (the H100 machine's) still converts the maxima through
    64-128 bytes of shared memory; 3.8 and XLA's do not (session 12)."""
    triton = pytest.importorskip("triton")
    if tuple(int(part) for part in triton.__version__.split(".")[:2]) < (3, 8):
        pytest.skip(f"triton {triton.__version__} converts the maxima through shared memory")
    rows, hidden = 64, 14336
    assert kernels.segment_width(hidden, dtype, kernels.sweep_config(rows, hidden, dtype))
    kernel = triton_ir._lower(
        lambda y: kernels.forward(
            y.reshape(rows, 2, hidden), None, None, Options(), save_fp8="scaled"
        ),
        (jax.ShapeDtypeStruct((rows, 2 * hidden), dtype),),
    )
    assert kernel.results[-1][0][-1] == kernels.MAXIMA_SLOTS  # the maxima's scratch
    assert _direct.compile_kernel(kernel, 90).metadata.shared == 0


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_scaled_sweeps_keep_their_cache_policies(dtype):
    """The scaled store's two sweeps of wide rows reach the compiled code with their L2
    policies (SWEEP_EVICT): the first sweep's loads evict_last, the second sweep's loads
    and the stores evict_first; the kernels without sweeps carry none."""
    pytest.importorskip("triton")
    kernel = triton_ir.forward_ir(8192, 14336, dtype, None, None, Options(), "scaled")
    assert "cachePolicy" not in kernel.ttir  # in the triton package's spelling
    ptx = _direct.compile_kernel(kernel, 90).asm["ptx"]
    loads = re.findall(r"ld\.global\S*\.v\d\S*", ptx)  # y's: 16 bytes a thread
    stores = re.findall(r"st\.global\S*", ptx)
    first = [x for x in loads if "L1::evict_last" in x]
    second = [x for x in loads if "L1::evict_first" in x]
    assert first and second and len(first) + len(second) == len(loads)
    assert all("L2::cache_hint" in x for x in loads)
    # every store but the scales' (and the 16-bit segments' maxima, which stay in L2)
    assert sum("evict_first" in x for x in stores) == 3 * (len(first) // 2)
    for save_fp8 in (False, True):
        plain = triton_ir.forward_ir(8192, 14336, dtype, None, None, Options(), save_fp8)
        assert "evict" not in _direct.compile_kernel(plain, 90).asm["ptx"]


def test_the_direct_launch_keeps_two_dimensional_arrays():
    """Where the JAX path sweeps 16-bit rows in segments (3-D views and a scratch
    output), the direct launch's IR keeps the calling convention: out, the fp8 copy and
    the scales, 2-D."""
    config = kernels.sweep_config(ROWS, 9216, "bfloat16")
    assert kernels.segment_width(9216, "bfloat16", config) == 256
    kernel = triton_ir.forward_ir.__wrapped__(
        ROWS, 9216, "bfloat16", None, None, Options(), "scaled"
    )
    wanted = (
        ((ROWS, 9216), "bfloat16"),
        ((ROWS, 2 * 9216), "float8_e4m3fn"),
        ((ROWS, 1), "float32"),
    )
    assert kernel.results == wanted


@pytest.mark.parametrize(
    "modifier, eviction, wanted",
    [
        ("none", "normal", ""),
        ("none", "evict_last", " evictionPolicy = evict_last"),
        ("cg", "normal", " cacheModifier = cg"),
        ("cg", "evict_first", " cacheModifier = cg evictionPolicy = evict_first"),
    ],
)
def test_cache_policy_in_the_triton_spelling(modifier, eviction, wanted):
    policy = f"cache_modifier = {modifier}, eviction_policy = {eviction}"
    line = f"%1 = tt.load %0, %m {{cachePolicy = #tt.cache_policy<{policy}>}} : tensor<8xf32>"
    assert triton_ir._upstream_cache_policy(line) == f"%1 = tt.load %0, %m{wanted} : tensor<8xf32>"


def test_ir_declines_what_the_kernels_decline():
    with pytest.raises(NotImplementedError, match="float64"):
        triton_ir.forward_ir(4, 8, "float64", None, None, Options(), False)
    with pytest.raises(ValueError, match="zero rows"):
        triton_ir.forward_ir(0, 8, "bfloat16", None, None, Options(), False)


def test_forward_ir_declines_xla_ops_beside_the_kernel():
    """The forward is its kernel alone (every store: the calling-convention tests lower
    each, H = 5000 included); a lowering with XLA computing beside it is declined."""

    def scaled_twice(y, bias, weights):
        out, y_fp8, y_scale = kernels.forward(y, bias, weights, Options(), save_fp8="scaled")
        return out, y_fp8, 2 * y_scale

    spec = jax.ShapeDtypeStruct((4, 2, 8), jnp.bfloat16)
    with pytest.raises(NotImplementedError, match=r"stablehlo\.multiply"):
        triton_ir._lower(scaled_twice, (spec, None, None), alone=True)


def test_fp8_stores_are_the_ops_stores():
    assert _direct.SAVE_FP8 == tb._ops.SAVE_FP8


# ----------------------------------------------------------------------------- the switch


@pytest.fixture
def restore_launch():
    mode = _direct.get_launch()
    yield
    _direct.set_launch(mode)


def test_direct_is_the_default(monkeypatch):
    monkeypatch.delenv(_direct.LAUNCH_ENV, raising=False)
    assert _direct.DEFAULT_LAUNCH == "direct" and _direct._launch_from_env() == "direct"


@pytest.mark.parametrize(
    "value,mode", [("jax", "jax"), (" JAX ", "jax"), ("direct", "direct"), ("", "direct")]
)
def test_environment_switch(monkeypatch, value, mode):
    monkeypatch.setenv(_direct.LAUNCH_ENV, value)
    assert _direct._launch_from_env() == mode


def test_unknown_environment_value_warns_and_keeps_the_default(monkeypatch):
    monkeypatch.setenv(_direct.LAUNCH_ENV, "fast")
    with pytest.warns(UserWarning, match="TORCH_BRIDGE_LAUNCH='fast'"):
        assert _direct._launch_from_env() == "direct"


def test_set_launch(restore_launch):
    tb.set_launch("direct")
    assert tb.get_launch() == "direct" and _direct.active()
    tb.set_launch("jax")
    assert tb.get_launch() == "jax" and not _direct.active()
    with pytest.raises(ValueError, match="set_launch: mode must be one of"):
        tb.set_launch("triton")


def test_cpu_tensors_take_the_jax_path(restore_launch, monkeypatch):
    def fail(*args):
        raise AssertionError("the direct path serves CUDA tensors only")

    monkeypatch.setattr(_direct, "forward", fail)
    monkeypatch.setattr(_direct, "backward", fail)
    tb.set_launch("direct")
    y = torch.randn(8, 32, requires_grad=True)
    b = torch.randn(32, requires_grad=True)
    tb.bias_swiglu(y, b).sum().backward()
    assert y.grad.shape == y.shape and b.grad.shape == b.shape


def test_failure_warns_once_and_is_remembered(monkeypatch):
    monkeypatch.setattr(_direct, "_launchers", {})
    monkeypatch.setattr(_direct, "_warned", False)
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("no ptxas")

    device = torch.device("cuda", 0)
    with pytest.warns(RuntimeWarning, match=r"direct launch failed \(RuntimeError: no ptxas\)"):
        assert _direct._launcher(("a",), device, broken) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _direct._launcher(("b",), device, broken) is None  # warned once per process
        assert _direct._launcher(("a",), device, broken) is None  # remembered: not rebuilt
    assert len(calls) == 2


def test_first_launch_failure_falls_back(monkeypatch):
    """triton builds its launcher and loads the module lazily: a failure at the first
    launch also sends the key to the JAX path (warned once), and the next call skips it."""

    class Broken:
        launched = False

        def __init__(self, kernel_ir, device):
            self.calls = 0

        def __call__(self, *inputs):
            self.calls += 1
            raise TypeError("launcher API changed")

    monkeypatch.setattr(_direct, "_launchers", {})
    monkeypatch.setattr(_direct, "_warned", False)
    monkeypatch.setattr(_direct, "_capability", lambda device: 90)
    monkeypatch.setattr(_direct, "Launcher", Broken)
    y = torch.randn(4, 16)
    with pytest.warns(RuntimeWarning, match="TypeError: launcher API changed"):
        assert _direct.forward(y, None, None, None, 1.0, 0.0, "none") is None
    assert list(_direct._launchers.values()) == [None]
    assert _direct.forward(y, None, None, None, 1.0, 0.0, "none") is None


@pytest.mark.parametrize("error", [_direct.Declined("float64"), NotImplementedError("8-bit")])
def test_declines_silently(monkeypatch, error):
    monkeypatch.setattr(_direct, "_launchers", {})

    def declines():
        raise error

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _direct._launcher(("c",), torch.device("cuda", 0), declines) is None


def test_zero_rows():
    """No kernel runs for zero rows: empty results of the kernels' shapes and dtypes, a
    zero bias gradient. (The JAX path fails on zero rows: reshape(0, 2, -1) in _ops.)"""
    y = torch.zeros(0, 16, dtype=torch.bfloat16)
    bias, weights = torch.ones(16, dtype=torch.float16), torch.ones(0, 1)
    g = torch.zeros(0, 8, dtype=torch.float32)
    out, y_fp8, y_scale = _direct.forward(y, bias, weights, None, 1.0, 0.0, "cast")
    assert (out.shape, out.dtype, y_fp8.shape, y_fp8.dtype) == (
        (0, 8), torch.bfloat16, (0, 16), torch.float8_e4m3fn
    )  # fmt: skip
    assert (y_scale.shape, y_scale.dtype) == ((0,), torch.float32)
    _, y_fp8, y_scale = _direct.forward(y, None, None, None, 1.0, 0.0, "scaled")
    assert (y_fp8.shape, y_scale.shape, y_scale.dtype) == ((0, 16), (0, 1), torch.float32)
    assert _direct.forward(y, None, None, None, 1.0, 0.0, "none")[1].shape == (0,)
    dy, dbias, dweights = _direct.backward(g, y, bias, weights, None, 1.0, 0.0, y_scale)
    assert (dy.shape, dy.dtype) == ((0, 16), torch.float32)
    assert dbias.dtype == torch.float16 and torch.equal(dbias, torch.zeros(16, dtype=torch.half))
    assert (dweights.shape, dweights.dtype) == ((0, 1), torch.float32)
    _, dbias, dweights = _direct.backward(g, y, None, None, None, 1.0, 0.0)
    assert dbias.shape == dweights.shape == (0,)


def test_dtype_names_are_shared():
    """torch and JAX name the kernels' dtypes alike (the IR's arrays map to torch dtypes
    by name)."""
    for name in triton_ir.ELEMENT_TYPES.values():
        assert str(getattr(torch, name)) == f"torch.{name}" and jnp.dtype(name).name == name


# ----------------------------------------------------------------------------- end to end


class InterpretLauncher:
    """Stands in for ``_direct.Launcher`` on the CPU: runs the same Pallas kernel in
    interpret mode on the inputs in launch order, checks that they are the kernel's
    operands in that order, and hands back its raw outputs (partial sums included) in
    the arrays the kernel IR declares. ``weighted``: whether the operands after ``y`` (and
    ``bias``) start with the weights (both they and the row scales are ``(N, 1)``)."""

    launched = False

    def __init__(self, kernel_ir, device, opts, weighted):
        self.kernel_ir, self.opts, self.weighted = kernel_ir, opts, weighted

    def __call__(self, *inputs):
        import numpy as np
        from jax.experimental import pallas as pl

        ir = self.kernel_ir
        arrays = [
            jnp.asarray(x.float().numpy()).astype(dtype)
            for x, (_, dtype) in zip(inputs, ir.operands, strict=True)
        ]
        if "sum_rows" in ir.name:  # the bias gradient's partial sums
            ((_, dtype),) = ir.results
            total = kernels.sum_rows(arrays[0], jnp.dtype(dtype), interpret=True)
            return [torch.tensor(np.asarray(total.astype(jnp.float32))).to(getattr(torch, dtype))]
        args = list(arrays)
        rows, two_h = ir.operands[1 if "backward" in ir.name else 0][0]
        g = args.pop(0) if "backward" in ir.name else None
        y = args.pop(0).reshape(rows, 2, two_h // 2)
        bias = args.pop(0).reshape(2, -1) if args and args[0].ndim == 1 else None
        weights = args.pop(0) if self.weighted else None
        y_scale = args.pop(0) if args else None
        captured, real = {}, pl.pallas_call

        def spy(*a, **k):
            call = real(*a, **k)

            def run(*operands):
                captured["operands"], captured["outputs"] = operands, call(*operands)
                return captured["outputs"]

            return run

        pl.pallas_call = spy
        try:
            if g is None:
                save_fp8 = {1: False, 2: True, 3: "scaled"}[len(ir.results)]
                kernels.forward(y, bias, weights, self.opts, save_fp8=save_fp8, interpret=True)
            else:
                config = kernels.backward_config(
                    rows, two_h // 2, g.dtype, bias=bias is not None, weights=weights is not None
                )
                static = dict(dy_dtype=g.dtype, y_scale=y_scale, interpret=True, config=config)
                kernels.backward_partials(g, y, bias, weights, self.opts, **static)
        finally:
            pl.pallas_call = real
        for launched, operand in zip(arrays, captured["operands"], strict=True):
            np.testing.assert_array_equal(np.asarray(launched), np.asarray(operand))
        outs = []
        for out, (shape, dtype) in zip(captured["outputs"], ir.results, strict=True):
            assert out.shape == shape and out.dtype == jnp.dtype(dtype)
            values = torch.tensor(np.asarray(out.astype(jnp.float32)))
            outs.append(values.to(getattr(torch, dtype)))  # exact: float32 holds every value
        return outs


@pytest.mark.parametrize("store", ["cast", "scaled"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_end_to_end_on_the_cpu(monkeypatch, variant, store):
    """``_direct.forward``/``backward`` with the kernel run in interpret mode: operands in
    launch order, outputs reduced and cast as the JAX path does (XLA on the CPU here, so
    within the dtype's tolerance; the fp8 copy and its row scales bit for bit)."""
    from swiglu_jax import testing

    opts = GPT_OSS
    monkeypatch.setattr(_direct, "_launchers", {})
    monkeypatch.setattr(_direct, "_capability", lambda device: 90)
    weighted = VARIANTS[variant][1] is not None
    monkeypatch.setattr(
        _direct, "Launcher", lambda ir, device: InterpretLauncher(ir, device, opts, weighted)
    )
    gen = torch.Generator().manual_seed(0)
    rows, hidden = 100, 160  # two row blocks and two hidden blocks with the bias tiles
    y = (2 * torch.randn(rows, 2 * hidden, generator=gen)).to(torch.bfloat16)
    bias_dtype, weights_dtype = VARIANTS[variant]
    bias = torch.randn(2 * hidden, generator=gen).to(getattr(torch, bias_dtype or "float32"))
    weights = torch.rand(rows, 1, generator=gen)
    bias = bias if bias_dtype else None
    weights = weights if weights_dtype else None
    g = torch.randn(rows, hidden, generator=gen).to(torch.bfloat16)
    options = (opts.clamp_value, opts.alpha, opts.linear_offset)

    out, y_fp8, y_scale = _direct.forward(y, bias, weights, *options, store)
    expected_out, expected_fp8, expected_scale = tb._ops._forward_impl(
        y, bias, weights, *options, store
    )
    assert (out.shape, out.dtype) == (expected_out.shape, expected_out.dtype)
    assert testing.relative_error(out.double().numpy(), expected_out.double().numpy()) <= 1e-2
    assert torch.equal(y_fp8.view(torch.uint8), expected_fp8.view(torch.uint8))
    scaled = store == "scaled"
    assert (y_scale.shape, y_scale.dtype) == ((rows, 1) if scaled else (0,), torch.float32)
    assert torch.equal(y_scale.view(torch.int32), expected_scale.view(torch.int32))
    grads = _direct.backward(g, y_fp8, bias, weights, *options, y_scale if scaled else None)
    expected = tb._ops._backward_impl(
        g, expected_fp8, bias, weights, *options, expected_scale if scaled else None
    )
    for name, got, want in zip(("dy", "dbias", "dweights"), grads, expected, strict=True):
        assert (got.shape, got.dtype) == (want.shape, want.dtype), name
        if want.numel():
            error = testing.relative_error(got.double().numpy(), want.double().numpy())
            assert error <= 1e-2, name


@pytest.mark.parametrize("blocks", [1, 3])
def test_weights_partial_sums_reduce_to_the_gradient(blocks):
    """The weights' float32 partials ``(N, hidden blocks)`` summed over columns into
    ``(N, 1)``, then cast; a single partial is the gradient itself."""
    torch.manual_seed(blocks)
    partials = torch.randn(5, blocks)
    dweights = _direct._sum_weights(partials, torch.bfloat16)
    assert dweights.shape == (5, 1) and dweights.dtype == torch.bfloat16
    assert torch.equal(dweights, partials.sum(dim=1, keepdim=True).to(torch.bfloat16))


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_bias_backward_groups_rows(dtype):
    """The bias backward's kernel covers ``row_steps`` row blocks a program, so its
    float32 partial sums have one row per row group; the last group is ragged."""
    tile = kernels.REDUCING_TILE_16BIT if dtype == "bfloat16" else kernels.REDUCING_TILE
    tall, wide, warps, steps = tile
    ir = triton_ir.backward_ir(1000, 1408, dtype, dtype, dtype, None, Options())
    groups = -(-1000 // (tall * steps))
    assert ir.results[1] == ((groups, 2 * 1408), "float32")
    assert ir.grid == (-(-1408 // wide), groups, 1)
    assert ir.num_warps == warps


@pytest.mark.parametrize("rows, columns", [(1, 10), (64, 4096), (65, 37)])
def test_bias_partial_sums_have_their_own_kernel(rows, columns):
    """The bias gradient's partials ``(row blocks, 2H)`` are summed by one Triton kernel
    (the JAX path's too), one program a strip of columns, alone in its lowering; it
    compiles for sm_90."""
    kernel_ir = triton_ir.sum_rows_ir(rows, columns, "bfloat16")
    assert kernel_ir.name == "swiglu_sum_rows_triton"
    assert kernel_ir.operands == (((rows, columns), "float32"),)
    assert kernel_ir.results == (((columns,), "bfloat16"),)
    assert kernel_ir.grid == (-(-columns // kernels.SUM_COLUMNS), 1, 1)
    _direct.compile_kernel(kernel_ir, 90)
