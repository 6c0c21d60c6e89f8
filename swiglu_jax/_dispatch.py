"""Which code computes an op: the implementations and the choice among them.

An implementation is a pair of functions on the canonical shapes (see ``_xla``):
``forward(y, bias, weights, opts, *, save_fp8) -> (out, y_fp8 | None)`` and
``backward(g, y, bias, weights, opts, *, dy_dtype) -> (dy, dbias, dweights)``.

``implementation="auto"`` is resolved when the computation is lowered, not when it is
traced, through ``lax.platform_dependent``: a function exported for TPU from a CPU host
takes the TPU branch. Platforms without an entry in ``KERNELS`` use XLA.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

from jax import lax

from swiglu_jax import _xla
from swiglu_jax._options import Options


class Implementation(NamedTuple):
    name: str
    forward: Callable
    backward: Callable


XLA = Implementation("xla", _xla.forward, _xla.backward)

# Pallas kernels by lowering platform ("cuda", "rocm", "tpu"). Empty until the kernel
# backends land; "auto" then falls back to XLA everywhere.
KERNELS: dict[str, Implementation] = {}


def _explicit(choice: str) -> Implementation:
    if choice == "xla":
        return XLA
    raise NotImplementedError(
        f"implementation={choice!r} is not available: this version of swiglu_jax has no "
        "Pallas kernels yet. Use implementation='xla', or 'auto' (XLA on every platform "
        "for now)."
    )


def call(method: str, opts: Options, *args, **static):
    """Runs ``method`` ("forward" or "backward") of the implementation ``opts`` selects."""
    if opts.implementation != "auto":
        return getattr(_explicit(opts.implementation), method)(*args, opts, **static)

    def branch(impl: Implementation):
        return functools.partial(getattr(impl, method), opts=opts, **static)

    if not KERNELS:
        return branch(XLA)(*args)
    per_platform = {platform: branch(impl) for platform, impl in KERNELS.items()}
    return lax.platform_dependent(*args, default=branch(XLA), **per_platform)
