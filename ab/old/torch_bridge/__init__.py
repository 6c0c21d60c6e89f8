"""torch_bridge: swiglu_jax's ops on torch autograd, a drop-in for Megatron-Core's
``megatron.core.fusions.fused_bias_swiglu``.

Replace ``from megatron.core.fusions.fused_bias_swiglu import ...`` with
``from torch_bridge import ...``: the same names and signatures, computed by the
swiglu_jax kernels (Pallas on CUDA GPUs, XLA on CPU) with tensors exchanged through
DLPack without copies (see ``torch_bridge._exchange`` for the cases that copy once).

Beyond Megatron: weights together with bias, the ``clamp_value``/``alpha``/
``linear_offset`` keywords (GPT-OSS), any number of leading dimensions in the plain
functions, and the ``SwiGLU`` module. Every function runs through two torch custom ops
(``torch.ops.swiglu_jax.forward`` / ``backward``) with fake implementations and
registered autograd, so models using the bridge compile with ``torch.compile``.
"""

from __future__ import annotations

import math
import numbers

import torch

from swiglu_jax.megatron import check_rank
from torch_bridge import _offload, _ops
from torch_bridge._direct import get_launch, set_launch

__all__ = [
    "BiasSwiGLUFunction",
    "SwiGLU",
    "SwiGLUFunction",
    "WeightedSwiGLUFunction",
    "bias_swiglu",
    "bias_swiglu_back",
    "bias_swiglu_impl",
    "get_launch",
    "set_launch",
    "swiglu",
    "swiglu_back",
    "weighted_bias_swiglu_impl",
    "weighted_swiglu",
    "weighted_swiglu_back",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ----------------------------------------------------------------------------- validation
#
# Errors start with the name of the public function called and name the argument (``y``
# in the functions, ``input`` in Megatron's Functions and ``*_impl``): ``TypeError`` for
# a wrong type or dtype, ``ValueError`` for a wrong shape, value or device.


def _check_tensor(fn: str, name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_nested or x.layout != torch.strided:
        kind = "a nested tensor" if x.is_nested else f"layout={x.layout}"
        raise TypeError(f"{fn}: {name} must be a dense tensor, got {kind}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{fn}: {name} must be float16, bfloat16, float32 or float64, "
            f"got {name}.dtype={x.dtype} with {name}.shape={tuple(x.shape)}"
        )
    return x


def _check_number(fn: str, name: str, value) -> float:
    if type(value) is float and math.isfinite(value):  # the common case, fast
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{fn}: {name} must be finite, got {value!r}")
    return float(value)


def _check_options(fn: str, clamp_value, alpha, linear_offset) -> tuple:
    if clamp_value is not None:
        if isinstance(clamp_value, bool) or not isinstance(clamp_value, numbers.Real):
            raise TypeError(f"{fn}: clamp_value must be None or a number, got {clamp_value!r}")
        if not (math.isfinite(clamp_value) and clamp_value > 0):
            raise ValueError(
                f"{fn}: clamp_value must be None or a finite number > 0, got {clamp_value!r}"
            )
        clamp_value = float(clamp_value)
    return (
        clamp_value,
        _check_number(fn, "alpha", alpha),
        _check_number(fn, "linear_offset", linear_offset),
    )


def _check_flag(fn: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be a bool, got {value!r}")
    return value


def _check_fp8_store(fn: str, value) -> bool | str:
    """``fp8_input_store``: ``False``, ``True`` or ``"scaled"``."""
    if isinstance(value, str):
        if value != "scaled":
            raise ValueError(
                f"{fn}: fp8_input_store must be False, True or 'scaled', got {value!r}"
            )
        return value
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: fp8_input_store must be a bool or 'scaled', got {value!r}")
    return value


def _required(fn: str, name: str, x):
    if x is None:
        raise TypeError(f"{fn}: {name} is required, got None")
    return x


def _check(fn: str, y, bias=None, weights=None, g=None, *, y_name="y") -> tuple[int, ...]:
    """Validates the tensors of one call; returns the token shape ``y.shape[:-1]``."""
    _check_tensor(fn, y_name, y)
    shape = y.shape
    if not shape or shape[-1] == 0 or shape[-1] % 2:
        raise ValueError(
            f"{fn}: {y_name} must have an even, nonzero last dimension holding [gate | up], "
            f"got {y_name}.shape={tuple(shape)}"
        )
    if not (y.is_cuda or y.is_cpu):
        raise ValueError(f"{fn}: {y_name} is on {y.device}; JAX reads CPU and CUDA tensors")
    lead = tuple(shape[:-1])
    if bias is None and weights is None and g is None:
        return lead
    hidden = shape[-1] // 2
    expected = {"bias": (2 * hidden,), "weights": (*lead, 1), "g": (*lead, hidden)}
    for name, x in (("bias", bias), ("weights", weights), ("g", g)):
        if x is None:
            continue
        _check_tensor(fn, name, x)
        if tuple(x.shape) != expected[name]:
            raise ValueError(
                f"{fn}: {name} must have shape {expected[name]} for "
                f"{y_name}.shape={tuple(shape)}, got {name}.shape={tuple(x.shape)}"
            )
        if x.device != y.device:
            raise ValueError(f"{fn}: {name} is on {x.device} but {y_name} is on {y.device}")
    return lead


def _rows(y: torch.Tensor) -> torch.Tensor:
    return y.reshape(-1, y.shape[-1])


def _flat(x):
    return None if x is None else x.reshape(-1, x.shape[-1])


# ----------------------------------------------------------------------------- functions


def swiglu(y, *, clamp_value=None, alpha=1.0, linear_offset=0.0, fp8_input_store=False):
    """``silu(y1) * y2`` for ``y = [y1 | y2]`` on the last dimension, differentiable.

    With swiglu_jax's options: ``act(a) = a * sigmoid(alpha * a)``, ``b + linear_offset``,
    ``clamp_value`` as in :func:`swiglu_jax.swiglu`; ``fp8_input_store`` saves the input for
    the backward as float8_e4m3fn: ``True`` with Megatron's cast, ``"scaled"`` with a
    float32 scale per row saved beside it (:func:`swiglu_jax.swiglu`).
    """
    options = (clamp_value, alpha, linear_offset)
    return SwiGLUFunction.apply(y, fp8_input_store, False, *options, ("swiglu", "y"))


def bias_swiglu(y, bias, *, clamp_value=None, alpha=1.0, linear_offset=0.0, fp8_input_store=False):
    """``swiglu(y + bias)`` with ``bias`` of shape ``(2H,)``; the bias gradient comes back
    reduced to that shape."""
    options = (clamp_value, alpha, linear_offset)
    return BiasSwiGLUFunction.apply(y, bias, fp8_input_store, False, *options, ("bias_swiglu", "y"))


def weighted_swiglu(
    y, weights, *, bias=None, clamp_value=None, alpha=1.0, linear_offset=0.0, fp8_input_store=False
):
    """``swiglu(y [+ bias]) * weights`` with ``weights`` of shape ``y.shape[:-1] + (1,)``
    (router probabilities, often float32); the output has ``y``'s dtype."""
    options = (clamp_value, alpha, linear_offset)
    caller = ("weighted_swiglu", "y")
    return WeightedSwiGLUFunction.apply(y, weights, fp8_input_store, bias, *options, caller)


def _back(fn, g, y, bias, weights, clamp_value, alpha, linear_offset):
    _check(fn, y, bias, weights, _required(fn, "g", g))
    options = _check_options(fn, clamp_value, alpha, linear_offset)
    dy, _, dweights = _ops.backward(_rows(g).to(y.dtype), _rows(y), bias, _flat(weights), *options)
    dy = dy.reshape(y.shape)
    return dy if weights is None else (dy, dweights.reshape(weights.shape))


def swiglu_back(g, y, *, clamp_value=None, alpha=1.0, linear_offset=0.0):
    """The gradient of :func:`swiglu` with respect to ``y`` for the output gradient ``g``."""
    return _back("swiglu_back", g, y, None, None, clamp_value, alpha, linear_offset)


def bias_swiglu_back(g, y, bias, *, clamp_value=None, alpha=1.0, linear_offset=0.0):
    """The gradient of :func:`bias_swiglu` with respect to ``y + bias`` (unreduced)."""
    bias = _required("bias_swiglu_back", "bias", bias)
    return _back("bias_swiglu_back", g, y, bias, None, clamp_value, alpha, linear_offset)


def weighted_swiglu_back(
    g, y, weights, *, bias=None, clamp_value=None, alpha=1.0, linear_offset=0.0
):
    """``(dy, dweights)`` of :func:`weighted_swiglu`, in the dtypes of ``y`` and
    ``weights``."""
    fn = "weighted_swiglu_back"
    weights = _required(fn, "weights", weights)
    return _back(fn, g, y, bias, weights, clamp_value, alpha, linear_offset)


# ----------------------------------------------------------------------------- Functions
#
# Each Function takes Megatron's arguments, then swiglu_jax's options, then ``_caller``:
# ``(public function, name of its input argument)`` for error messages, given by the
# functions above (default: the Function's own name and ``input``).


class _SwiGLUFunctionBase(torch.autograd.Function):
    """Shared forward and backward of Megatron's three ``Function`` classes."""

    @staticmethod
    def _forward(ctx, caller, input, bias, weights, fp8_input_store, cpu_offload_input, options):
        fn, input_name = caller
        lead = _check(fn, input, bias, weights, y_name=input_name)
        options = _check_options(fn, *options)
        fp8_input_store = _check_fp8_store(fn, fp8_input_store)
        cpu_offload_input = _check_flag(fn, "cpu_offload_input", cpu_offload_input)
        fp8_store = _ops.FP8_STORES[fp8_input_store]
        out, y_fp8, y_scale = _ops.forward(_rows(input), bias, _flat(weights), *options, fp8_store)
        # The tensors themselves, not views made here (in no-grad mode, which would make
        # a later in-place change of the input fail at once rather than at backward).
        saved = y_fp8 if fp8_input_store else input
        # The scaled copy's row scales (4 bytes a row) stay on the device when offloading.
        y_scale = y_scale if fp8_input_store == "scaled" else None
        ctx.offloaded = None
        if cpu_offload_input:
            for tensor in (saved, bias):  # Megatron's marks, kept for its tools
                if tensor is not None:
                    tensor.activation_offloading = True
            if saved.is_cuda:  # (a tensor in host memory stays where it is)
                ctx.offloaded, saved = _offload.Offloaded(saved), None
        ctx.save_for_backward(saved, y_scale, bias, weights)
        ctx.options, ctx.input_shape = options, input.shape
        ctx.weights_shape = None if weights is None else weights.shape
        return out.reshape(*lead, out.shape[-1])

    @staticmethod
    def _backward(ctx, grad_output):
        saved, y_scale, bias, weights = ctx.saved_tensors
        if ctx.offloaded is not None:
            saved = ctx.offloaded.restore()
        g = _rows(grad_output).contiguous()
        dy, dbias, dweights = _ops.backward(
            g, _rows(saved), bias, _flat(weights), *ctx.options, y_scale
        )
        return (
            dy.reshape(ctx.input_shape),
            None if bias is None else dbias,
            None if weights is None else dweights.reshape(ctx.weights_shape),
        )


class SwiGLUFunction(_SwiGLUFunctionBase):
    """Megatron's ``SwiGLUFunction``: ``apply(input, fp8_input_store, cpu_offload_input)``,
    plus optional ``clamp_value, alpha, linear_offset``."""

    @staticmethod
    def forward(
        ctx,
        input,
        fp8_input_store=False,
        cpu_offload_input=False,
        clamp_value=None,
        alpha=1.0,
        linear_offset=0.0,
        _caller=("SwiGLUFunction", "input"),
    ):
        return _SwiGLUFunctionBase._forward(
            ctx,
            _caller,
            input,
            None,
            None,
            fp8_input_store,
            cpu_offload_input,
            (clamp_value, alpha, linear_offset),
        )

    @staticmethod
    def backward(ctx, grad_output):
        dy, _, _ = _SwiGLUFunctionBase._backward(ctx, grad_output)
        return dy, None, None, None, None, None, None


class BiasSwiGLUFunction(_SwiGLUFunctionBase):
    """Megatron's ``BiasSwiGLUFunction``: ``apply(input, bias, fp8_input_store,
    cpu_offload_input)``, plus optional ``clamp_value, alpha, linear_offset``. The bias
    gradient comes back reduced to the bias's shape."""

    @staticmethod
    def forward(
        ctx,
        input,
        bias,
        fp8_input_store=False,
        cpu_offload_input=False,
        clamp_value=None,
        alpha=1.0,
        linear_offset=0.0,
        _caller=("BiasSwiGLUFunction", "input"),
    ):
        return _SwiGLUFunctionBase._forward(
            ctx,
            _caller,
            input,
            _required(_caller[0], "bias", bias),
            None,
            fp8_input_store,
            cpu_offload_input,
            (clamp_value, alpha, linear_offset),
        )

    @staticmethod
    def backward(ctx, grad_output):
        dy, dbias, _ = _SwiGLUFunctionBase._backward(ctx, grad_output)
        return dy, dbias, None, None, None, None, None, None


class WeightedSwiGLUFunction(_SwiGLUFunctionBase):
    """Megatron's ``WeightedSwiGLUFunction``: ``apply(input, weights, fp8_input_store)``,
    plus optional ``bias, clamp_value, alpha, linear_offset`` (weights with bias: beyond
    Megatron)."""

    @staticmethod
    def forward(
        ctx,
        input,
        weights,
        fp8_input_store=False,
        bias=None,
        clamp_value=None,
        alpha=1.0,
        linear_offset=0.0,
        _caller=("WeightedSwiGLUFunction", "input"),
    ):
        return _SwiGLUFunctionBase._forward(
            ctx,
            _caller,
            input,
            bias,
            _required(_caller[0], "weights", weights),
            fp8_input_store,
            False,
            (clamp_value, alpha, linear_offset),
        )

    @staticmethod
    def backward(ctx, grad_output):
        dy, dbias, dweights = _SwiGLUFunctionBase._backward(ctx, grad_output)
        return dy, dweights, None, dbias, None, None, None, None


# ----------------------------------------------------------------------------- Megatron impl


def _check_input(fn: str, input) -> tuple[int, ...]:
    """Megatron's contract for ``input``: a tensor, 2-D or 3-D (else ``AssertionError``)."""
    return check_rank(fn, _check_tensor(fn, "input", input))


def bias_swiglu_impl(
    input,
    bias,
    fp8_input_store=False,
    cpu_offload_input=False,
    clamp_value=None,
    *,
    alpha=1.0,
    linear_offset=0.0,
):
    """Megatron's ``bias_swiglu_impl``: 2-D or 3-D ``input`` (else ``AssertionError``),
    ``bias`` ``(2H,)`` or ``None``."""
    fn = "bias_swiglu_impl"
    _check_input(fn, input)
    options = (clamp_value, alpha, linear_offset, (fn, "input"))
    if bias is None:
        return SwiGLUFunction.apply(input, fp8_input_store, cpu_offload_input, *options)
    return BiasSwiGLUFunction.apply(input, bias, fp8_input_store, cpu_offload_input, *options)


def weighted_bias_swiglu_impl(
    input, bias, weights, fp8_input_store=False, clamp_value=None, *, alpha=1.0, linear_offset=0.0
):
    """Megatron's ``weighted_bias_swiglu_impl``: 2-D or 3-D ``input``; ``weights`` of
    shape ``input.shape[:-1] + (1,)`` or ``(tokens, 1)``; ``bias`` may be given too."""
    fn = "weighted_bias_swiglu_impl"
    shape = _check_input(fn, input)
    token_shape, tokens = (*shape[:-1], 1), math.prod(shape[:-1])
    if isinstance(weights, torch.Tensor) and tuple(weights.shape) == (tokens, 1):
        weights = weights.reshape(token_shape)
    options = (clamp_value, alpha, linear_offset, (fn, "input"))
    return WeightedSwiGLUFunction.apply(input, weights, fp8_input_store, bias, *options)


class SwiGLU(torch.nn.Module):
    """``SwiGLU()(y)``, ``SwiGLU(bias_features=2H)(y)`` with a learned bias, or
    ``module(y, weights=router_probs)``: the bridge's op as a module."""

    def __init__(
        self,
        bias_features: int | None = None,
        *,
        clamp_value=None,
        alpha=1.0,
        linear_offset=0.0,
        fp8_input_store=False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.options = dict(
            clamp_value=clamp_value,
            alpha=alpha,
            linear_offset=linear_offset,
            fp8_input_store=fp8_input_store,
        )
        _check_options("SwiGLU", clamp_value, alpha, linear_offset)
        _check_fp8_store("SwiGLU", fp8_input_store)
        self.bias = None
        if bias_features is not None:
            if isinstance(bias_features, bool) or not isinstance(bias_features, int):
                raise TypeError(
                    f"SwiGLU: bias_features must be None or an int, got {bias_features!r}"
                )
            if bias_features <= 0 or bias_features % 2:
                raise ValueError(
                    f"SwiGLU: bias_features must be even and positive (2H), got {bias_features}"
                )
            self.bias = torch.nn.Parameter(torch.zeros(bias_features, device=device, dtype=dtype))

    def forward(self, y, weights=None):
        if weights is not None:
            return weighted_swiglu(y, weights, bias=self.bias, **self.options)
        if self.bias is not None:
            return bias_swiglu(y, self.bias, **self.options)
        return swiglu(y, **self.options)
