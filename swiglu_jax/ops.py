"""The public SwiGLU ops: validation, the canonical shapes, and the custom VJP.

Every op reduces to one differentiable core on canonical shapes (``y`` as ``(*L, 2, H)``
with its token axes ``L``, ``bias`` as ``(2, H)``, ``weights`` as ``(*L, 1)``): both layouts
reshape to it for free, so the implementations (XLA, Pallas kernels) never see a layout.
The token axes stay apart so that ``_partition`` can keep any sharding of them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from swiglu_jax import _partition
from swiglu_jax._options import ImplementationName, Layout, Options

SUPPORTED_DTYPES = tuple(np.dtype(d) for d in (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64))


# ----------------------------------------------------------------------------- the core


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _swiglu_core(y, bias, weights, opts: Options):
    out, _ = _partition.call("forward", opts, y, bias, weights, save_fp8=False)
    return out


def _swiglu_core_fwd(y, bias, weights, opts: Options):
    out, y_fp8 = _partition.call("forward", opts, y, bias, weights, save_fp8=opts.fp8_input_store)
    saved = y_fp8 if opts.fp8_input_store else y
    if opts.cpu_offload_input:
        # Host memory where the backend has it (GPU, TPU); XLA:CPU drops the annotation.
        saved = jax.device_put(saved, jax.memory.Space.Host)
    return out, (saved, bias, weights)


def _swiglu_core_bwd(opts: Options, residuals, g):
    saved, bias, weights = residuals
    if opts.cpu_offload_input:
        saved = jax.device_put(saved, jax.memory.Space.Device)
    # The cotangent has the output's dtype, which is y's: the fp8 copy has lost it.
    return _partition.call("backward", opts, g, saved, bias, weights, dy_dtype=g.dtype)


_swiglu_core.defvjp(_swiglu_core_fwd, _swiglu_core_bwd)


# ----------------------------------------------------------------------------- validation


def _float_array(fn: str, name: str, x) -> jax.Array:
    """``x`` as a JAX array of a supported floating dtype, or a ``TypeError``."""
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{fn}: {name} must be a floating-point array, got {x!r}")
    x = jnp.asarray(x)
    if x.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(d.name for d in SUPPORTED_DTYPES)
        raise TypeError(
            f"{fn}: {name} must have a floating dtype ({names}), "
            f"got {name}.dtype={x.dtype} with {name}.shape={x.shape}"
        )
    return x


def _lead_and_hidden(fn: str, y: jax.Array, layout: str) -> tuple[tuple[int, ...], int]:
    """The token (leading) shape of ``y`` and the hidden size ``H`` of its output."""
    if layout == "stacked":
        if y.ndim < 2 or y.shape[-2] != 2 or y.shape[-1] == 0:
            raise ValueError(
                f"{fn}: y must have shape (..., 2, H) with H > 0 for layout='stacked' "
                f"(gate at index 0 of the second-to-last axis), got y.shape={y.shape}"
            )
        return y.shape[:-2], y.shape[-1]
    if y.ndim < 1 or y.shape[-1] == 0 or y.shape[-1] % 2:
        raise ValueError(
            f"{fn}: y must have an even, nonzero last axis holding [gate | up] for "
            f"layout='split', got y.shape={y.shape}"
        )
    return y.shape[:-1], y.shape[-1] // 2


def _check_shape(fn: str, name: str, x: jax.Array, expected: tuple[int, ...], y_shape, why: str):
    if x.shape != expected:
        raise ValueError(
            f"{fn}: {name} must have shape {expected} ({why}) for y.shape={y_shape}, "
            f"got {name}.shape={x.shape}"
        )


def _validated(fn: str, opts: Options, y, bias=None, weights=None, g=None):
    """``(y, bias, weights, g)`` as JAX arrays, checked against each other's shapes."""
    y = _float_array(fn, "y", y)
    lead, hidden = _lead_and_hidden(fn, y, opts.layout)
    if bias is not None:
        bias = _float_array(fn, "bias", bias)
        row_shape = (2, hidden) if opts.layout == "stacked" else (2 * hidden,)
        _check_shape(fn, "bias", bias, row_shape, y.shape, "one row of y")
    if weights is not None:
        weights = _float_array(fn, "weights", weights)
        _check_shape(fn, "weights", weights, (*lead, 1), y.shape, "one weight per token")
    if g is not None:
        g = _float_array(fn, "g", g)
        _check_shape(fn, "g", g, (*lead, hidden), y.shape, "the output's shape")
    return y, bias, weights, g


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
    dy, _, dweights = _partition.call("backward", opts, g, y3, bias2, weights2, dy_dtype=y.dtype)
    return dy.reshape(y.shape), dweights


def _forward(fn: str, y, bias, weights, opts: Options) -> jax.Array:
    y, bias, weights, _ = _validated(fn, opts, y, bias, weights)
    return _forward_jit(y, bias, weights, opts)


def _backward(fn: str, g, y, bias, weights, opts: Options):
    y, bias, weights, g = _validated(fn, opts, y, bias, weights, g)
    dy, dweights = _backward_jit(g, y, bias, weights, opts)
    return dy if weights is None else (dy, dweights)


# ----------------------------------------------------------------------------- public ops


def swiglu(
    y,
    *,
    clamp_value: float | None = None,
    alpha: float = 1.0,
    linear_offset: float = 0.0,
    fp8_input_store: bool = False,
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
      fp8_input_store: save ``y`` for the backward as ``float8_e4m3fn`` (a plain cast, as
        Megatron does; values beyond +-448 do not survive it); the backward then uses the
        rounded input.
      cpu_offload_input: keep the saved input in host memory between forward and backward
        on backends that have host memory kinds (GPU, TPU); no effect on CPU.
      implementation: ``None``/``"auto"`` (the best for the platform the computation is
        lowered for), ``"pallas"``, ``"interpret"`` or ``"xla"``.

    Returns:
      ``(..., H)`` in ``y``'s dtype, computed in float32 with one rounding at the end.

    Raises:
      TypeError: non-floating ``y``, or options of the wrong type.
      ValueError: an odd or empty last axis (split) or a second-to-last axis other than 2
        (stacked), ``clamp_value`` not finite and > 0, an unknown layout or implementation.
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
    return _forward("swiglu", y, None, None, opts)


def bias_swiglu(
    y,
    bias,
    *,
    clamp_value: float | None = None,
    alpha: float = 1.0,
    linear_offset: float = 0.0,
    fp8_input_store: bool = False,
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
    return _forward("bias_swiglu", y, _required("bias_swiglu", "bias", bias), None, opts)


def weighted_swiglu(
    y,
    weights,
    *,
    bias=None,
    clamp_value: float | None = None,
    alpha: float = 1.0,
    linear_offset: float = 0.0,
    fp8_input_store: bool = False,
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
    weights = _required("weighted_swiglu", "weights", weights)
    return _forward("weighted_swiglu", y, bias, weights, opts)


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
    bias = _required("bias_swiglu_back", "bias", bias)
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
    weights = _required("weighted_swiglu_back", "weights", weights)
    return _backward("weighted_swiglu_back", g, y, bias, weights, opts)


def _required(fn: str, name: str, x):
    if x is None:
        raise TypeError(f"{fn}: {name} is required, got None")
    return x
