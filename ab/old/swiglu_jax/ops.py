"""The public SwiGLU ops: validation (``_validation``), the canonical shapes, and the
custom VJP.

Every op reduces to one differentiable core on canonical shapes (``y`` as ``(*L, 2, H)``
with its token axes ``L``, ``bias`` as ``(2, H)``, ``weights`` as ``(*L, 1)``): both layouts
reshape to it for free, so the implementations (XLA, Pallas kernels) never see a layout.
The token axes stay apart so that ``_partition`` can keep any sharding of them.
"""

from __future__ import annotations

import functools

import jax

from swiglu_jax import _partition, _validation
from swiglu_jax._options import Fp8Store, ImplementationName, Layout, Options
from swiglu_jax._validation import required

# ----------------------------------------------------------------------------- the core


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _swiglu_core(y, bias, weights, opts: Options):
    out, _, _ = _partition.call("forward", opts, y, bias, weights, save_fp8=False)
    return out


def _swiglu_core_fwd(y, bias, weights, opts: Options):
    store = opts.fp8_input_store
    out, y_fp8, y_scale = _partition.call("forward", opts, y, bias, weights, save_fp8=store)
    # y itself, its fp8 copy, or the scaled copy and its (*L, 1) float32 row scales.
    saved = (y_fp8 if store else y), y_scale
    if opts.cpu_offload_input:
        # Host memory where the backend has it (GPU, TPU); XLA:CPU drops the annotation.
        saved = jax.device_put(saved, jax.memory.Space.Host)
    return out, (saved, bias, weights)


def _swiglu_core_bwd(opts: Options, residuals, g):
    saved, bias, weights = residuals
    if opts.cpu_offload_input:
        # Tied to the cotangent, the host copy is read back only when the backward needs
        # it. Without the barrier XLA's simplifier folds the round trip (a copy to host
        # memory, a copy back) into the device buffer it started from, and nothing is
        # offloaded (seen on GPU with jax 0.11.2; benchmarks/PERF_NOTES.md).
        saved, g = jax.lax.optimization_barrier((saved, g))
        saved = jax.device_put(saved, jax.memory.Space.Device)
    y, y_scale = saved
    # The cotangent has the output's dtype, which is y's: the fp8 copy has lost it.
    return _partition.call("backward", opts, g, y, bias, weights, y_scale, dy_dtype=g.dtype)


_swiglu_core.defvjp(_swiglu_core_fwd, _swiglu_core_bwd)


# ----------------------------------------------------------------------------- calls


def _canonical(y, bias, weights, hidden: int):
    """Free reshapes to ``(*L, 2, H)`` and ``(2, H)``: both layouts store a row's gate
    before its linear half, so one view serves both. ``weights`` is ``(*L, 1)`` already."""
    return _partition.pairs(y, hidden), _partition.pairs(bias, hidden), weights


def _lead_shape(y, opts: Options) -> tuple[tuple[int, ...], int]:
    if opts.layout == "stacked":
        return y.shape[:-2], y.shape[-1]
    return y.shape[:-1], y.shape[-1] // 2


# Jitted with the reshapes inside, so that an eager call costs one dispatch of a cached
# executable; inlined under an outer jit.
@functools.partial(jax.jit, static_argnums=3)
def _forward_jit(y, bias, weights, opts: Options):
    _, hidden = _lead_shape(y, opts)
    return _swiglu_core(*_canonical(y, bias, weights, hidden), opts)


@functools.partial(jax.jit, static_argnums=4)
def _backward_jit(g, y, bias, weights, opts: Options):
    _, hidden = _lead_shape(y, opts)
    y3, bias2, weights2 = _canonical(y, bias, weights, hidden)
    dy, _, dweights = _partition.call(
        "backward", opts, g, y3, bias2, weights2, None, dy_dtype=y.dtype
    )
    return dy.reshape(y.shape), dweights


def forward(fn: str, y, bias, weights, opts: Options, *, y_name: str = "y") -> jax.Array:
    """The forward of every op, validated in the name of ``fn`` (whose argument ``y`` is
    called ``y_name``)."""
    y, bias, weights, _ = _validation.validated(fn, opts.layout, y, bias, weights, y_name=y_name)
    return _forward_jit(y, bias, weights, opts)


def _backward(fn: str, g, y, bias, weights, opts: Options):
    g = required(fn, "g", g)
    y, bias, weights, g = _validation.validated(fn, opts.layout, y, bias, weights, g)
    dy, dweights = _backward_jit(g, y, bias, weights, opts)
    return dy if weights is None else (dy, dweights)


# ----------------------------------------------------------------------------- public ops


def swiglu(
    y,
    *,
    clamp_value: float | None = None,
    alpha: float = 1.0,
    linear_offset: float = 0.0,
    fp8_input_store: Fp8Store = False,
    cpu_offload_input: bool = False,
    layout: Layout = "split",
    implementation: ImplementationName | None = None,
) -> jax.Array:
    """SwiGLU: ``act(a) * (b + linear_offset)`` with ``act(a) = a * sigmoid(alpha * a)``.

    Args:
      y: ``(..., 2H)`` holding ``[gate | up]`` (``layout="split"``, Megatron's) or
        ``(..., 2, H)`` with the gate at index 0 (``layout="stacked"``); float16,
        bfloat16, float32 or float64.
      clamp_value: ``None`` or a finite ``L > 0``: ``a <- min(a, L)``, ``b <- clip(b, -L, L)``,
        with zero gradient where a clamp was active (``L=7, alpha=1.702,
        linear_offset=1`` is GPT-OSS's activation).
      alpha, linear_offset: see the formula above.
      fp8_input_store: save ``y`` for the backward as ``float8_e4m3fn``; the backward then
        uses the rounded input. ``True``: Megatron's cast (saturating at +-448, infinities
        included, NaN kept). ``"scaled"``: each row (token) divided by a float32 scale,
        its largest finite magnitude over 448, saved beside it (4 bytes a row): no finite
        value saturates, small ones keep e4m3's relative precision, infinities saturate to
        the row's largest finite magnitude, NaN is kept.
      cpu_offload_input: keep the saved input in host memory between forward and backward
        on backends that have host memory kinds (GPU, TPU); no effect on CPU.
      implementation: ``None``/``"auto"`` (the best for the platform the computation is
        lowered for), ``"pallas"``, ``"interpret"`` or ``"xla"``.

    Returns:
      ``(..., H)`` in ``y``'s dtype, computed in float32 with one rounding at the end.

    Raises:
      TypeError: non-floating ``y``, or options of the wrong type.
      ValueError: an odd or empty last axis (split) or a second-to-last axis other than 2
        (stacked), ``clamp_value`` not finite and > 0, an unknown layout or implementation,
        a string ``fp8_input_store`` other than ``"scaled"``.
      NotImplementedError: ``implementation`` names kernels this version does not have.
    """
    opts = Options(
        clamp_value,
        alpha,
        linear_offset,
        fp8_input_store,
        cpu_offload_input,
        layout,
        implementation,
    )
    return forward("swiglu", y, None, None, opts)


def bias_swiglu(
    y,
    bias,
    *,
    clamp_value: float | None = None,
    alpha: float = 1.0,
    linear_offset: float = 0.0,
    fp8_input_store: Fp8Store = False,
    cpu_offload_input: bool = False,
    layout: Layout = "split",
    implementation: ImplementationName | None = None,
) -> jax.Array:
    """``swiglu(y + bias)``; ``bias`` has the shape of one row of ``y``: ``(2H,)`` for the
    split layout, ``(2, H)`` for the stacked one. Its gradient comes back reduced to that
    shape, in its dtype. Options, return value and errors as in :func:`swiglu`."""
    opts = Options(
        clamp_value,
        alpha,
        linear_offset,
        fp8_input_store,
        cpu_offload_input,
        layout,
        implementation,
    )
    return forward("bias_swiglu", y, required("bias_swiglu", "bias", bias), None, opts)


def weighted_swiglu(
    y,
    weights,
    *,
    bias=None,
    clamp_value: float | None = None,
    alpha: float = 1.0,
    linear_offset: float = 0.0,
    fp8_input_store: Fp8Store = False,
    cpu_offload_input: bool = False,
    layout: Layout = "split",
    implementation: ImplementationName | None = None,
) -> jax.Array:
    """``swiglu(y [+ bias]) * weights`` with one weight per token (MoE router
    probabilities): ``weights`` has the output's shape with a last axis of 1, any float
    dtype (often float32 beside bfloat16 ``y``). The output is in ``y``'s dtype; the
    weights' gradient, ``sum(swiglu(y) * g, axis=-1, keepdims=True)``, in the weights'
    dtype. Unlike Megatron, ``bias`` may be combined with ``weights``. Options, return
    value and errors as in :func:`swiglu`."""
    opts = Options(
        clamp_value,
        alpha,
        linear_offset,
        fp8_input_store,
        cpu_offload_input,
        layout,
        implementation,
    )
    weights = required("weighted_swiglu", "weights", weights)
    return forward("weighted_swiglu", y, bias, weights, opts)


def swiglu_back(
    g,
    y,
    *,
    clamp_value: float | None = None,
    alpha: float = 1.0,
    linear_offset: float = 0.0,
    layout: Layout = "split",
    implementation: ImplementationName | None = None,
) -> jax.Array:
    """The gradient of :func:`swiglu` with respect to ``y`` for the output cotangent
    ``g`` (Megatron's ``swiglu_back``): same shape and dtype as ``y``."""
    opts = Options(clamp_value, alpha, linear_offset, layout=layout, implementation=implementation)
    return _backward("swiglu_back", g, y, None, None, opts)


def bias_swiglu_back(
    g,
    y,
    bias,
    *,
    clamp_value: float | None = None,
    alpha: float = 1.0,
    linear_offset: float = 0.0,
    layout: Layout = "split",
    implementation: ImplementationName | None = None,
) -> jax.Array:
    """The gradient of :func:`bias_swiglu` with respect to ``y + bias`` (Megatron's
    ``bias_swiglu_back``): same shape and dtype as ``y``; summing it over the leading
    axes gives the bias gradient."""
    opts = Options(clamp_value, alpha, linear_offset, layout=layout, implementation=implementation)
    bias = required("bias_swiglu_back", "bias", bias)
    return _backward("bias_swiglu_back", g, y, bias, None, opts)


def weighted_swiglu_back(
    g,
    y,
    weights,
    *,
    bias=None,
    clamp_value: float | None = None,
    alpha: float = 1.0,
    linear_offset: float = 0.0,
    layout: Layout = "split",
    implementation: ImplementationName | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The gradients of :func:`weighted_swiglu` (Megatron's ``weighted_swiglu_back``):
    ``(dy, dweights)``, ``dy`` in ``y``'s shape and dtype (also the unreduced bias
    gradient), ``dweights`` in the weights' shape and dtype."""
    opts = Options(clamp_value, alpha, linear_offset, layout=layout, implementation=implementation)
    weights = required("weighted_swiglu_back", "weights", weights)
    return _backward("weighted_swiglu_back", g, y, bias, weights, opts)
