"""Which code computes an op: the implementations and the choice among them.

An implementation is a pair of functions on the canonical shapes (see ``_xla`` and
``kernels/__init__.py``): ``forward(y, bias, weights, opts, *, save_fp8, y_scale=None)``
and ``backward(g, y, bias, weights, opts, *, dy_dtype, y_scale=None)``.

``implementation`` names:

- ``"xla"``: plain ``jax.numpy``, fused by XLA, on every platform.
- ``"pallas:triton"``, ``"pallas:mosaic_gpu"``, ``"pallas:tpu"``: one kernel backend;
  lowering for another platform than its own raises ``NotImplementedError``.
- ``"pallas"``: the kernels of the platform the computation is lowered for: Mosaic TPU on
  TPU; on CUDA the backends of ``cuda_kernel_backends`` in order (Triton and, on
  Hopper and newer, Mosaic GPU, the faster for the dtype and op first). Lowering for a platform
  without kernels (CPU) raises ``NotImplementedError``.
- ``"interpret:<backend>"``: that backend's kernels in Pallas interpret mode, on any
  platform (TPU semantics for ``"interpret:tpu"``); ``"interpret"`` is
  ``"interpret:triton"``.
- ``"auto"``: ``"pallas"`` where kernels exist for the platform and accept the input (TPU;
  CUDA GPUs of compute capability 8.0 and newer), XLA otherwise.

The platform is the one the computation is *lowered* for, chosen through
``lax.platform_dependent``: a function exported for TPU from a CPU host takes the TPU
branch. Only the order of the CUDA backends looks at the local device, since
both lower for the same platform.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import NamedTuple

import jax
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import mlir

from swiglu_jax import _xla
from swiglu_jax._options import Options

MIN_TRITON_CAPABILITY = 8.0  # Ampere
MIN_MOSAIC_GPU_CAPABILITY = 9.0  # Hopper
# The platform each kernel backend lowers for.
BACKEND_PLATFORMS = {"triton": "cuda", "mosaic_gpu": "cuda", "tpu": "tpu"}


class Implementation(NamedTuple):
    name: str
    forward: Callable
    backward: Callable


XLA = Implementation("xla", _xla.forward, _xla.backward)


@functools.cache
def kernel(backend: str, interpret: bool = False) -> Implementation:
    """The Pallas kernels of ``backend`` (imported on first use), natively or interpreted."""
    module = importlib.import_module(f"swiglu_jax.kernels.{backend}")
    name = f"{'interpret' if interpret else 'pallas'}:{backend}"
    return Implementation(
        name,
        functools.partial(module.forward, interpret=interpret),
        functools.partial(module.backward, interpret=interpret),
    )


def _local_cuda_capability() -> float | None:
    """Compute capability of the first local CUDA GPU, ``None`` without one."""
    try:
        devices = jax.devices("cuda")
    except RuntimeError:
        return None
    capability = getattr(devices[0], "compute_capability", None) if devices else None
    return float(capability) if capability else None


def cuda_kernel_backends(dtype) -> tuple[str, ...]:
    """The kernel backends for CUDA, in order of preference, for the local GPU and the
    dtype computed (the output's).

    By measurement on an H100 (benchmarks/RESULTS.md, session 15): Triton first, at
    85-103% of the copy bandwidth for every op, dtype and size from 4096 x 4096 up,
    ahead of Mosaic GPU's streamed kernels everywhere: by 2.6-12 points (5.4 at the
    median), by 29-39 in the scaled fp8 store, whose row maxima take XLA a second pass.
    The second backend takes what the first declines (Triton: 8-bit arrays of 2^31
    elements or more). Without a local GPU (lowering for CUDA from a CPU host), the
    portable Triton kernels.
    """
    del dtype  # Triton leads for every dtype (it did not before the 32 x 128 bias tiles)
    capability = _local_cuda_capability()
    if capability is None:
        return ("triton",)
    backends = []
    if capability >= MIN_TRITON_CAPABILITY:
        backends.append("triton")
    if capability >= MIN_MOSAIC_GPU_CAPABILITY:
        backends.append("mosaic_gpu")
    return tuple(backends)


# Lowering for a platform that has no kernels under implementation="pallas" must fail
# when lowered, not when traced (every platform_dependent branch is traced): this
# primitive carries the message to its lowering rule.
_no_kernels_p = Primitive("swiglu_no_kernels")
_no_kernels_p.multiple_results = True
_no_kernels_p.def_abstract_eval(lambda *args, out_avals, message: out_avals)


def _no_kernels_lowering(ctx, *args, out_avals, message):
    raise NotImplementedError(message)


mlir.register_lowering(_no_kernels_p, _no_kernels_lowering)


def _fails_when_lowered(reference_fn: Callable, message: str) -> Callable:
    def branch(*args):
        out_shape = jax.eval_shape(reference_fn, *args)
        leaves, tree = jax.tree.flatten(out_shape)
        avals = tuple(jax.core.ShapedArray(x.shape, x.dtype) for x in leaves)
        outs = _no_kernels_p.bind(*jax.tree.leaves(args), out_avals=avals, message=message)
        return jax.tree.unflatten(tree, outs)

    return branch


def _first_that_accepts(backends, method: str, params: dict, fallback: Callable) -> Callable:
    """A branch running the first of ``backends`` whose kernels accept the input: a
    backend declines with ``NotImplementedError`` (an input it cannot compute) or
    ``ImportError`` (this JAX lacks what it needs). ``fallback`` runs if all decline."""

    def branch(*args):
        for backend in backends:
            try:
                implementation = kernel(backend)
                return functools.partial(getattr(implementation, method), **params)(*args)
            except (ImportError, NotImplementedError):
                continue
        return fallback(*args)

    return branch


def call(method: str, opts: Options, *args, **static):
    """Runs ``method`` ("forward" or "backward") of the implementation ``opts`` selects on
    the arrays ``args``, with the keyword arguments ``static`` (``save_fp8`` or
    ``dy_dtype``, and the array or ``None`` ``y_scale``)."""
    choice = opts.implementation
    params = dict(opts=opts, **static)

    def fn(impl: Implementation) -> Callable:
        return functools.partial(getattr(impl, method), **params)

    if choice == "xla":
        return fn(XLA)(*args)
    if choice == "interpret":
        choice = "interpret:triton"
    if choice.startswith("interpret:"):
        return fn(kernel(choice.split(":")[1], interpret=True))(*args)
    if ":" in choice:  # "pallas:<backend>": its platform, else an error when lowered
        backend = choice.split(":")[1]
        platform = BACKEND_PLATFORMS[backend]
        message = (
            f"implementation={choice!r} runs on {platform} only; lowering for "
            f"{{platform}} needs implementation='xla', 'auto' or 'interpret:{backend}'."
        )
        branches = {platform: fn(kernel(backend))}
        for other in ("cpu", "cuda", "tpu"):
            if other != platform:
                branches[other] = _fails_when_lowered(fn(XLA), message.format(platform=other))
        default = _fails_when_lowered(fn(XLA), message.format(platform="this platform"))
        return lax.platform_dependent(*args, default=default, **branches)

    # The dtype computed: the backward's dy_dtype, else the forward input's.
    cuda_backends = cuda_kernel_backends(static.get("dy_dtype", args[0].dtype))
    if choice == "pallas":
        message = (
            "implementation='pallas': swiglu_jax has Pallas kernels for CUDA GPUs and TPUs "
            "only; lowering for {platform} needs implementation='xla', 'auto' or "
            "'interpret'."
        )

        def declined(*args):
            raise NotImplementedError(
                f"implementation='pallas': no kernel backend {cuda_backends} computes "
                f"these inputs; use implementation='auto' to fall back to XLA."
            )

        branches = {
            "cuda": _first_that_accepts(cuda_backends, method, params, declined),
            "tpu": fn(kernel("tpu")),
            "cpu": _fails_when_lowered(fn(XLA), message.format(platform="cpu")),
        }
        default = _fails_when_lowered(fn(XLA), message.format(platform="this platform"))
        return lax.platform_dependent(*args, default=default, **branches)

    # "auto"
    branches = {
        "tpu": _first_that_accepts(("tpu",), method, params, fn(XLA)),
        "cuda": _first_that_accepts(cuda_backends, method, params, fn(XLA)),
    }
    return lax.platform_dependent(*args, default=fn(XLA), **branches)
