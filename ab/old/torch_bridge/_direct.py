"""Direct launch (the default): the Triton kernels on torch's stream, without JAX's dispatch.

The JAX path hands each CUDA call to JAX through DLPack: an import with its stream
handshake, PJRT's dispatch and an export, hundreds of microseconds of host time per call
(benchmarks/PERF_NOTES.md). Here the same Pallas kernels
(:mod:`swiglu_jax.kernels.triton`, with the same block configs) are lowered once per
shape, dtypes and options to their Triton IR (:mod:`swiglu_jax.kernels.triton_ir`),
compiled by the ``triton`` package that torch ships for the tensor's GPU, and launched
by triton's launcher on torch's current stream with the tensors' data pointers. The bias
gradient's float32 partial sums are summed by the JAX path's own kernel for them,
launched the same way; the weights gradient's by torch. Outputs and partial sums are
allocated by torch's caching allocator on that stream, so ordering and memory reuse are
torch's own, as for any torch op.

Switch: ``TORCH_BRIDGE_LAUNCH=direct`` (the default) or ``jax`` in the environment, or
:func:`set_launch` at run time. The direct path takes CUDA tensors of the
kernels' dtypes (float16, bfloat16, float32; the saved float8_e4m3fn input, with its row
scales for the scaled store) on GPUs of compute capability 8.0 and newer (8.9 for
float8); it copies a non-contiguous or misaligned input once, as the JAX path does.
Everything else (float64, 8-bit arrays of 2^31 elements or more, older GPUs, a torch
without triton) goes the JAX path, silently; a failure to lower, compile or load a
kernel also goes the JAX path, with one warning per process.

Lowering initializes JAX's backends on the first call of each shape, as the JAX path
does; JAX itself launches nothing here.
"""

from __future__ import annotations

import functools
import os
import pathlib
import tempfile
import warnings

import torch

from swiglu_jax._options import Options

LAUNCH_ENV = "TORCH_BRIDGE_LAUNCH"
LAUNCH_MODES = ("jax", "direct")
DEFAULT_LAUNCH = "direct"  # measured on H100 and H200: benchmarks/RESULTS.md
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
FP8 = torch.float8_e4m3fn
MIN_CAPABILITY = 80  # Ampere, as swiglu_jax's Triton kernels
MIN_FP8_CAPABILITY = 89  # float8 conversions (Pallas' Triton lowering refuses older GPUs)
# The ops' fp8_store -> the kernels' save_fp8 (also _ops.SAVE_FP8, which _ops takes from
# here: _ops imports this module).
SAVE_FP8 = {"none": False, "cast": True, "scaled": "scaled"}
# Options of triton.compile beyond the kernel's own, so that both paths compute alike:
# libdevice without flush-to-zero, as XLA compiles it by default (xla_gpu_ftz=false), and
# no contraction of a product and a sum into one FMA, which XLA's compilation of Triton
# kernels does not do. Measured on an H200 (benchmarks/experiments/direct_bits.py): with
# triton's default contraction the backward differed from JAX's launch of the same kernel
# by one unit in the last place in about 1 element in 10^5 (16-bit) and in 12% of the
# float32 elements; without it, every element of every case is the same bits.
COMPILE_OPTIONS = {"enable_reflect_ftz": False, "enable_fp_fusion": False}


# ----------------------------------------------------------------------------- the switch


def _launch_from_env() -> str:
    mode = os.environ.get(LAUNCH_ENV, DEFAULT_LAUNCH).strip().lower() or DEFAULT_LAUNCH
    if mode not in LAUNCH_MODES:
        warnings.warn(
            f"torch_bridge: {LAUNCH_ENV}={mode!r} is not one of {LAUNCH_MODES}; "
            f"using {DEFAULT_LAUNCH!r}",
            stacklevel=2,
        )
        return DEFAULT_LAUNCH
    return mode


_launch = _launch_from_env()


def set_launch(mode: str) -> None:
    """Chooses how CUDA calls run: ``"jax"`` (through DLPack and JAX) or ``"direct"``
    (the Triton kernels launched on torch's stream, falling back to JAX where they
    decline). Overrides ``TORCH_BRIDGE_LAUNCH``; raises ``ValueError`` for another string,
    ``TypeError`` for a non-string."""
    global _launch
    if not isinstance(mode, str) or mode not in LAUNCH_MODES:
        error = ValueError if isinstance(mode, str) else TypeError
        raise error(f"set_launch: mode must be one of {LAUNCH_MODES}, got {mode!r}")
    _launch = mode


def get_launch() -> str:
    """The launch mode in force: ``"jax"`` or ``"direct"``."""
    return _launch


def active() -> bool:
    return _launch == "direct"


# ----------------------------------------------------------------------------- compile


class Declined(Exception):
    """The direct path does not take this call (the JAX path will)."""


def _name(dtype) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def _triton_signature(kernel_ir) -> dict[int, str]:
    """Triton's argument types (as it reads them from the IR) for the kernel's arrays:
    inputs, then outputs."""
    from swiglu_jax.kernels.triton_ir import ELEMENT_TYPES

    names = {dtype: element for element, dtype in ELEMENT_TYPES.items()}
    arrays = (*kernel_ir.operands, *kernel_ir.results)
    return {i: f"*{names[dtype]}" for i, (_, dtype) in enumerate(arrays)}


def compile_kernel(kernel_ir, capability: int):
    """``triton.compile`` of the kernel for a GPU of compute capability ``capability``
    (90 for sm_90); runs on any host (triton carries ptxas). Checks that the compiled
    signature is the calling convention of ``kernel_ir`` (one pointer per array)."""
    import triton
    from triton.backends.compiler import GPUTarget

    options = dict(
        num_warps=kernel_ir.num_warps, num_stages=kernel_ir.num_stages, **COMPILE_OPTIONS
    )
    with tempfile.TemporaryDirectory(prefix="torch_bridge_") as folder:
        path = pathlib.Path(folder) / f"{kernel_ir.name}.ttir"
        path.write_text(kernel_ir.ttir)
        compiled = triton.compile(
            str(path), target=GPUTarget("cuda", capability, 32), options=options
        )
    signature = dict(compiled.src.signature)
    if signature != _triton_signature(kernel_ir):
        raise RuntimeError(
            f"{kernel_ir.name}: compiled signature {signature} is not the calling "
            f"convention {_triton_signature(kernel_ir)}"
        )
    return compiled


# ----------------------------------------------------------------------------- launch

_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _current_stream(index: int) -> int:
    if _raw_stream is not None:
        return _raw_stream(index)
    return torch.cuda.current_stream(index).cuda_stream


class Launcher:
    """One compiled kernel loaded on one GPU: ``launcher(*inputs)`` allocates the outputs
    with torch, launches on the current stream and returns them."""

    def __init__(self, kernel_ir, device: torch.device):
        self.kernel_ir, self.device, self.index = kernel_ir, device, device.index
        with torch.cuda.device(device):
            self.compiled = compile_kernel(kernel_ir, _capability(device))
            self.run = self.compiled[kernel_ir.grid]  # loads the module on this GPU
        self.outputs = tuple((shape, getattr(torch, dtype)) for shape, dtype in kernel_ir.results)
        self.alignment = kernel_ir.alignment
        self.launched = False  # see _run

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        args = []
        for x in inputs:
            x = x.contiguous()
            if x.data_ptr() % self.alignment:
                x = x.clone()  # the caching allocator's blocks are aligned
            args.append(x)
        outs = [
            torch.empty(shape, dtype=dtype, device=self.device) for shape, dtype in self.outputs
        ]
        if torch.cuda.current_device() != self.index:
            with torch.cuda.device(self.index):
                self.run(*args, *outs, stream=_current_stream(self.index))
        else:
            self.run(*args, *outs, stream=_current_stream(self.index))
        return outs


_MISSING = object()
_launchers: dict[tuple, Launcher | None] = {}
_warned = False


def _capability(device: torch.device) -> int:
    return _capabilities(device.index)


@functools.cache
def _capabilities(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor


def _launcher(key: tuple, device: torch.device, make_ir) -> Launcher | None:
    """The cached launcher of ``key``, built by ``make_ir`` on first use; ``None`` where the
    direct path declines (warned once if it failed rather than declined)."""
    launcher = _launchers.get(key, _MISSING)
    if launcher is not _MISSING:
        return launcher
    try:
        launcher = Launcher(make_ir(), device)
    except (Declined, NotImplementedError):
        launcher = None
    except Exception as error:
        launcher = None
        _warn_once(error)
    _launchers[key] = launcher
    return launcher


def _warn_once(error: Exception):
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"torch_bridge: the direct launch failed ({type(error).__name__}: {error}); "
            f"this call and others like it run through JAX",
            RuntimeWarning,
            stacklevel=4,
        )


def _run(key: tuple, launcher: Launcher, *inputs) -> list[torch.Tensor] | None:
    """``launcher(*inputs)``; its first launch may still fail (triton's launcher is built
    and the module loaded lazily): then the key goes the JAX path, warned once."""
    if launcher.launched:
        return launcher(*inputs)
    try:
        outs = launcher(*inputs)
    except Exception as error:
        _launchers[key] = None
        _warn_once(error)
        return None
    launcher.launched = True
    return outs


@functools.cache
def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _check_dtypes(device: torch.device, tensors, fp8: bool):
    if not _has_triton():
        raise Declined("no triton")
    for x in tensors:
        if x is not None and x.dtype not in KERNEL_DTYPES and x.dtype != FP8:
            raise Declined(f"{x.dtype}")
    capability = _capability(device)
    if capability < MIN_CAPABILITY or (fp8 and capability < MIN_FP8_CAPABILITY):
        raise Declined(f"compute capability {capability}")


# ----------------------------------------------------------------------------- the ops


def forward(y, bias, weights, clamp_value, alpha, linear_offset, fp8_store):
    """``_ops._forward_impl`` on the direct path: ``(out, y_fp8, y_scale)``, or ``None``
    where it declines. ``y`` is ``(N, 2H)``, ``bias`` ``(2H,)``, ``weights`` ``(N, 1)``;
    ``fp8_store`` is the ops' ``"none"``, ``"cast"`` or ``"scaled"``. ``y_fp8`` is empty
    without a store, the float32 ``(N, 1)`` ``y_scale`` unless ``"scaled"``."""
    save_fp8 = SAVE_FP8[fp8_store]
    rows, hidden = y.shape[0], y.shape[1] // 2
    if rows == 0:
        return (
            y.new_empty((0, hidden)),
            y.new_empty((0, 2 * hidden) if save_fp8 else (0,), dtype=FP8),
            y.new_empty((0, 1) if save_fp8 == "scaled" else (0,), dtype=torch.float32),
        )
    bias_dtype = None if bias is None else bias.dtype
    weights_dtype = None if weights is None else weights.dtype
    key = (
        "forward", rows, hidden, y.dtype, bias_dtype, weights_dtype,
        clamp_value, alpha, linear_offset, fp8_store, y.device,
    )  # fmt: skip

    def make_ir():
        from swiglu_jax.kernels import triton_ir

        _check_dtypes(y.device, (y, bias, weights), fp8=bool(save_fp8))
        opts = Options(clamp_value, alpha, linear_offset)
        names = (_name(y.dtype), _name(bias_dtype), _name(weights_dtype))
        return triton_ir.forward_ir(rows, hidden, *names, opts, save_fp8)

    launcher = _launcher(key, y.device, make_ir)
    if launcher is None:
        return None
    outs = _run(key, launcher, *(x for x in (y, bias, weights) if x is not None))
    if outs is None:
        return None
    out = outs.pop(0)
    # One tensor per absent output: a custom op's outputs must not alias.
    y_fp8 = outs.pop(0) if save_fp8 else y.new_empty((0,), dtype=FP8)
    y_scale = outs.pop(0) if save_fp8 == "scaled" else y.new_empty((0,), dtype=torch.float32)
    return out, y_fp8, y_scale


def backward(g, y, bias, weights, clamp_value, alpha, linear_offset, y_scale=None):
    """``_ops._backward_impl`` on the direct path: ``(dy, dbias, dweights)`` (the last
    two empty when absent), or ``None`` where it declines. ``g`` is ``(N, H)``, ``y``
    ``(N, 2H)`` (possibly the float8_e4m3fn copy, scaled by the ``(N, 1)`` ``y_scale``
    where given)."""
    rows, hidden = y.shape[0], y.shape[1] // 2

    def absent():  # one tensor per output: a custom op's outputs must not alias
        return g.new_empty((0,))

    if rows == 0:
        return (
            g.new_empty((0, 2 * hidden)),
            absent() if bias is None else torch.zeros_like(bias),
            absent() if weights is None else torch.empty_like(weights),
        )
    bias_dtype = None if bias is None else bias.dtype
    weights_dtype = None if weights is None else weights.dtype
    scale_dtype = None if y_scale is None else y_scale.dtype
    key = (
        "backward", rows, hidden, g.dtype, y.dtype, bias_dtype, weights_dtype, scale_dtype,
        clamp_value, alpha, linear_offset, y.device,
    )  # fmt: skip

    def make_ir():
        from swiglu_jax.kernels import triton_ir

        _check_dtypes(y.device, (g, y, bias, weights, y_scale), fp8=y.dtype == FP8)
        opts = Options(clamp_value, alpha, linear_offset)
        names = (_name(g.dtype), _name(y.dtype), _name(bias_dtype), _name(weights_dtype))
        return triton_ir.backward_ir(rows, hidden, *names, opts, _name(scale_dtype))

    launcher = _launcher(key, y.device, make_ir)
    if launcher is None:
        return None
    summing = None
    if bias is not None:  # its partial sums have as many rows as the kernel's row groups
        partial_rows = launcher.kernel_ir.results[1][0][0]
        summing = _sum_rows_launcher(partial_rows, 2 * hidden, bias.dtype, y.device)
        if summing is None:
            return None
    inputs = (g, y, bias, weights, y_scale)
    outs = _run(key, launcher, *(x for x in inputs if x is not None))
    if outs is None:
        return None
    dy = outs.pop(0)
    if bias is None:
        dbias = absent()
    else:
        summed = _run(*summing, outs.pop(0))
        if summed is None:
            return None
        dbias = summed[0]
    dweights = absent() if weights is None else _sum_weights(outs.pop(0), weights.dtype)
    return dy, dbias, dweights


def _sum_rows_launcher(rows: int, columns: int, dtype, device) -> tuple | None:
    """``(key, launcher)`` of the kernel that sums the bias gradient's float32 partial
    sums ``(rows, columns)`` into ``columns`` values of ``dtype``, the one the JAX path
    runs; ``None`` where the direct path declines it."""
    key = ("sum_rows", rows, columns, dtype, device)

    def make_ir():
        from swiglu_jax.kernels import triton_ir

        return triton_ir.sum_rows_ir(rows, columns, _name(dtype))

    launcher = _launcher(key, device, make_ir)
    return None if launcher is None else (key, launcher)


def _sum_weights(partials: torch.Tensor, dtype) -> torch.Tensor:
    """The weights gradient ``(N, 1)`` from its float32 partial sums ``(N, hidden
    blocks)``, summed and cast as swiglu_jax.kernels.triton does; a single block (``H``
    within one tile) is taken as it is, one launch less."""
    total = partials if partials.shape[1] == 1 else partials.sum(dim=1, keepdim=True)
    return total.to(dtype)
