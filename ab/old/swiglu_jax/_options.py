"""The static options of every SwiGLU op, validated once and hashable.

``Options`` travels through ``jax.custom_vjp`` as a non-differentiable argument, so it
must be hashable and hold only static Python values: tracers are refused with a
``TypeError`` that names the option.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from typing import Literal

Layout = Literal["split", "stacked"]
ImplementationName = Literal[
    "auto",
    "xla",
    "pallas",
    "pallas:triton",
    "pallas:mosaic_gpu",
    "pallas:tpu",
    "interpret",
    "interpret:triton",
    "interpret:mosaic_gpu",
    "interpret:tpu",
]

# The fp8 input store: off, Megatron's plain cast, or with a per-row scale.
Fp8Store = bool | Literal["scaled"]

LAYOUTS: tuple[str, ...] = ("split", "stacked")
IMPLEMENTATIONS: tuple[str, ...] = typing.get_args(ImplementationName)


def _static_real(name: str, value: object) -> float:
    """``value`` as a Python float, or a ``TypeError`` naming the option."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a static Python real number, got {value!r} "
            f"of type {type(value).__name__}"
        )
    return float(value)


def _fp8_store(value: object) -> Fp8Store:
    """``False``, ``True`` or ``"scaled"``, else an error naming ``fp8_input_store``."""
    if isinstance(value, str):
        if value != "scaled":
            raise ValueError(f"fp8_input_store must be False, True or 'scaled', got {value!r}")
        return value
    if not isinstance(value, bool):
        raise TypeError(
            f"fp8_input_store must be a Python bool or 'scaled', got {value!r} "
            f"of type {type(value).__name__}"
        )
    return value


def _static_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(
            f"{name} must be a Python bool, got {value!r} of type {type(value).__name__}"
        )
    return value


@dataclasses.dataclass(frozen=True)
class Options:
    """What is computed, how it is saved for the backward and which code computes it.

    Attributes:
      clamp_value: ``None``, or a finite ``L > 0``: the gate is clamped to ``(-inf, L]``
        and the linear half to ``[-L, L]``; gradients are zero where a clamp was active.
      alpha: slope inside the gate's sigmoid, ``act(a) = a * sigmoid(alpha * a)``.
      linear_offset: added to the linear half, ``out = act(a) * (b + linear_offset)``.
      fp8_input_store: save the input for the backward as ``float8_e4m3fn``: ``True``
        casts it as Megatron does (saturating at +-448), ``"scaled"`` divides each row
        by a float32 scale first (its largest finite magnitude over 448, saved beside it).
      cpu_offload_input: keep the saved input in host memory between forward and backward.
      layout: ``"split"`` (``[gate | up]`` on the last axis) or ``"stacked"`` (``(..., 2, H)``).
      implementation: ``"auto"``, ``"xla"``, ``"pallas"``, ``"interpret"``, or a kernel
        backend by name (``"pallas:triton"``, ``"interpret:tpu"``...): see ``_dispatch``.
    """

    clamp_value: float | None = None
    alpha: float = 1.0
    linear_offset: float = 0.0
    fp8_input_store: Fp8Store = False
    cpu_offload_input: bool = False
    layout: Layout = "split"
    implementation: ImplementationName = "auto"

    def __post_init__(self):
        # Normalize in place (frozen dataclass): numbers to float, None to "auto".
        set_ = lambda name, value: object.__setattr__(self, name, value)
        if self.clamp_value is not None:
            clamp = _static_real("clamp_value", self.clamp_value)
            if not (math.isfinite(clamp) and clamp > 0):
                raise ValueError(
                    f"clamp_value must be None or a finite number > 0, got {self.clamp_value!r}"
                )
            set_("clamp_value", clamp)
        for name in ("alpha", "linear_offset"):
            value = _static_real(name, getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            set_(name, value)
        _fp8_store(self.fp8_input_store)
        _static_bool("cpu_offload_input", self.cpu_offload_input)
        if not isinstance(self.layout, str) or self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        implementation = "auto" if self.implementation is None else self.implementation
        if not isinstance(implementation, str) or implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be None or one of {IMPLEMENTATIONS}, "
                f"got {self.implementation!r}"
            )
        set_("implementation", implementation)
