"""The two torch custom ops that carry every bridge function: ``swiglu_jax::forward`` and
``swiglu_jax::backward``, each with a fake (meta) implementation so that
``torch.compile`` traces through them without a graph break, and the forward with its
autograd formula registered (for users of ``torch.ops.swiglu_jax`` directly; the bridge's
own functions are autograd Functions over :func:`forward` and :func:`backward`).

Shapes are the bridge's canonical ones: ``y`` is ``(N, 2H)`` (``[gate | up]``), ``bias``
``(2H,)``, ``weights`` and the scaled fp8 store's row scales ``y_scale`` ``(N, 1)``, ``g``
``(N, H)``. Absent optional outputs are empty tensors (custom ops return tensors, not
``None``). The fp8 store is a string, ``fp8_store`` (a schema has no bool-or-string type):
``"none"``, ``"cast"`` (``fp8_input_store=True``) or ``"scaled"``.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import torch

from swiglu_jax import _dispatch
from swiglu_jax._options import Options
from torch_bridge import _direct
from torch_bridge._exchange import to_jax_all, to_torch

FP8 = torch.float8_e4m3fn
# The ops' fp8_store -> what swiglu_jax's kernels take (one table, defined in _direct,
# which this module imports), and fp8_input_store -> the ops' fp8_store.
SAVE_FP8 = _direct.SAVE_FP8
FP8_STORES = {option: store for store, option in SAVE_FP8.items()}

# JAX launches its kernels on its own stream, which a torch CUDA graph cannot capture:
# the tag makes inductor's CUDA-graph partitioning (torch._inductor.config.graph_partition)
# run the ops outside captured graphs instead of refusing to graph the whole model.
_TAGS = (torch.Tag.cudagraph_unsafe,) if hasattr(torch.Tag, "cudagraph_unsafe") else ()


@functools.cache
def _jax_forward(clamp_value, alpha, linear_offset, fp8_store):
    save_fp8 = SAVE_FP8[fp8_store]
    opts = Options(clamp_value, alpha, linear_offset, save_fp8)

    @jax.jit
    def forward(y, bias, weights):
        rows = y.shape[0]
        y3 = y.reshape(rows, 2, y.shape[1] // 2)  # not -1: rows may be 0
        bias = None if bias is None else bias.reshape(2, -1)
        out, y_fp8, y_scale = _dispatch.call("forward", opts, y3, bias, weights, save_fp8=save_fp8)
        return out, (None if y_fp8 is None else y_fp8.reshape(y.shape)), y_scale

    return forward


@functools.cache
def _jax_backward(clamp_value, alpha, linear_offset):
    opts = Options(clamp_value, alpha, linear_offset)

    @jax.jit
    def backward(g, y, bias, weights, y_scale):
        rows = y.shape[0]
        bias2 = None if bias is None else bias.reshape(2, -1)
        dy, dbias, dweights = _dispatch.call(
            "backward",
            opts,
            g,
            y.reshape(rows, 2, y.shape[1] // 2),
            bias2,
            weights,
            dy_dtype=g.dtype,
            y_scale=y_scale,
        )
        return dy.reshape(y.shape), (None if dbias is None else dbias.reshape(-1)), dweights

    return backward


def _precision(*tensors):
    """JAX computes float64 only with 64-bit types enabled (off by default): enabled for
    calls that carry float64 tensors, so they are not silently computed in float32."""
    wide = any(t is not None and t.dtype == torch.float64 for t in tensors)
    return jax.enable_x64(True) if wide else contextlib.nullcontext()


def _empty(like: torch.Tensor, dtype=None) -> torch.Tensor:
    return like.new_empty((0,), dtype=dtype or like.dtype)


def _forward_impl(
    y: torch.Tensor,
    bias: torch.Tensor | None,
    weights: torch.Tensor | None,
    clamp_value: float | None,
    alpha: float,
    linear_offset: float,
    fp8_store: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns ``(out, y_fp8, y_scale)``; ``y_fp8`` is empty for ``fp8_store="none"``,
    ``y_scale`` (float32) unless ``"scaled"``."""
    if y.is_cuda and _direct.active():  # on torch's stream
        direct = _direct.forward(y, bias, weights, clamp_value, alpha, linear_offset, fp8_store)
        if direct is not None:
            return direct
    fn = _jax_forward(clamp_value, alpha, linear_offset, fp8_store)
    with _precision(y, bias, weights):
        out, y_fp8, y_scale = fn(*to_jax_all(y, bias, weights))
    return (
        to_torch(out),
        _empty(y, FP8) if y_fp8 is None else to_torch(y_fp8),
        _empty(y, torch.float32) if y_scale is None else to_torch(y_scale),
    )


forward_op = torch.library.custom_op(
    "swiglu_jax::forward", _forward_impl, mutates_args=(), tags=_TAGS
)


@forward_op.register_fake
def _(y, bias, weights, clamp_value, alpha, linear_offset, fp8_store):
    rows, two_h = y.shape
    saves = fp8_store != "none"
    y_fp8 = y.new_empty((rows, two_h), dtype=FP8) if saves else _empty(y, FP8)
    scaled = fp8_store == "scaled"
    y_scale = y.new_empty((rows, 1), dtype=torch.float32) if scaled else _empty(y, torch.float32)
    return y.new_empty((rows, two_h // 2)), y_fp8, y_scale


def _backward_impl(
    g: torch.Tensor,
    y: torch.Tensor,
    bias: torch.Tensor | None,
    weights: torch.Tensor | None,
    clamp_value: float | None,
    alpha: float,
    linear_offset: float,
    y_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns ``(dy, dbias, dweights)`` in the dtypes of ``g``, ``bias`` and
    ``weights``; the last two are empty when absent. ``y`` may be the fp8 copy, scaled
    by the float32 ``(N, 1)`` ``y_scale`` where given."""
    if y.is_cuda and _direct.active():
        direct = _direct.backward(g, y, bias, weights, clamp_value, alpha, linear_offset, y_scale)
        if direct is not None:
            return direct
    fn = _jax_backward(clamp_value, alpha, linear_offset)
    with _precision(g, y, bias, weights):
        dy, dbias, dweights = fn(*to_jax_all(g, y, bias, weights, y_scale))
    return (
        to_torch(dy),
        _empty(g) if bias is None else to_torch(dbias),
        _empty(g) if weights is None else to_torch(dweights),
    )


backward_op = torch.library.custom_op(
    "swiglu_jax::backward", _backward_impl, mutates_args=(), tags=_TAGS
)


@backward_op.register_fake
def _(g, y, bias, weights, clamp_value, alpha, linear_offset, y_scale=None):
    return (
        g.new_empty(y.shape),
        _empty(g) if bias is None else torch.empty_like(bias),
        _empty(g) if weights is None else torch.empty_like(weights),
    )


def _setup_context(ctx, inputs, output):
    y, bias, weights, clamp_value, alpha, linear_offset, fp8_store = inputs
    _, y_fp8, y_scale = output
    saved = y if fp8_store == "none" else y_fp8
    ctx.save_for_backward(saved, y_scale if fp8_store == "scaled" else None, bias, weights)
    ctx.options = (clamp_value, alpha, linear_offset)


def _backward(ctx, grad_out, grad_fp8, grad_scale):
    saved, y_scale, bias, weights = ctx.saved_tensors
    g = grad_out.contiguous()
    dy, dbias, dweights = backward_op(g, saved, bias, weights, *ctx.options, y_scale)
    return (
        dy,
        None if bias is None else dbias,
        None if weights is None else dweights,
        None,
        None,
        None,
        None,
    )


forward_op.register_autograd(_backward, setup_context=_setup_context)


def forward(*args):
    """``swiglu_jax::forward`` for the bridge's autograd Functions: the custom op while
    torch.compile traces (opaque to it, with its fake), the implementation itself in
    eager mode, which skips the dispatcher's Python layers (about 100 us a call on a
    CPU). No autograd here: the Functions own it."""
    if torch.compiler.is_compiling():
        return forward_op(*args)
    return _forward_impl(*args)


def backward(*args):
    """``swiglu_jax::backward``, dispatched as :func:`forward` is."""
    if torch.compiler.is_compiling():
        return backward_op(*args)
    return _backward_impl(*args)
