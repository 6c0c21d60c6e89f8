"""Every bad input gets a clear error that names the argument and its shape or value:
every argument of every public function (``swiglu_jax.__all__``) with each of its bad
values, the special cases below, random junk (nothing crashes), and devices that differ.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SEED
from helpers import error_audit, junk_calls, megatron_functions
from hypothesis import given, seed

import swiglu_jax as sj

Y = jnp.ones((3, 8), jnp.float32)
STACKED = jnp.ones((3, 2, 4), jnp.float32)
G = jnp.ones((3, 4), jnp.float32)
W = jnp.ones((3, 1), jnp.float32)
B = jnp.ones((8,), jnp.float32)

# name -> (function, good keyword arguments, the arguments it requires).
FUNCTIONS = {
    **megatron_functions(sj, Y, B, W, G),
    "swiglu_reference": (sj.swiglu_reference, dict(y=Y, bias=B, weights=W), ("y",)),
}
assert sorted(FUNCTIONS) == sorted(sj.__all__)

NAMES_IT = r"^{fn}: {name} must"
ARRAY = {  # for y and input
    "odd last axis": (jnp.ones((3, 7)), ValueError, NAMES_IT + r".*{name}.shape=\(3, 7\)"),
    "empty last axis": (jnp.ones((3, 0)), ValueError, NAMES_IT + r".*{name}.shape=\(3, 0\)"),
    "integer": (jnp.ones((3, 8), jnp.int32), TypeError, NAMES_IT + r".*{name}.dtype=int32"),
    "not an array": (object(), TypeError, NAMES_IT + " be a floating-point array"),
    "string": ("abc", TypeError, NAMES_IT + " be a floating-point array"),
}
SIDE = {  # for bias, weights and g: shapes that fit no argument of Y
    "wrong shape": (jnp.ones((5,)), ValueError, NAMES_IT + r" have shape.*{name}.shape=\(5,\)"),
    "integer": (jnp.ones((3, 1), jnp.int32), TypeError, NAMES_IT + r".*{name}.dtype=int32"),
    "not an array": ("abc", TypeError, NAMES_IT + " be a floating-point array"),
}
BAD_VALUES = {
    "y": ARRAY,
    "input": {
        **ARRAY,
        "1-D": (jnp.ones((8,)), AssertionError, r"^{fn}: input must be 2-D .*got 1-D"),
        "4-D": (jnp.ones((2, 2, 3, 8)), AssertionError, r"^{fn}: input must be 2-D .*got 4-D"),
    },
    "bias": SIDE,
    "weights": SIDE,
    "g": SIDE,
    "clamp_value": {
        "zero": (0, ValueError, r"clamp_value must be None or a finite number > 0, got 0"),
        "negative": (-1.0, ValueError, r"clamp_value .*got -1.0"),
        "nan": (float("nan"), ValueError, r"clamp_value .*got nan"),
        "string": ("7", TypeError, r"clamp_value must be a static Python real number.*'7'"),
        "bool": (True, TypeError, r"clamp_value .*True"),
    },
    "alpha": {
        "nan": (float("nan"), ValueError, r"alpha must be finite, got nan"),
        "None": (None, TypeError, r"alpha must be a static Python real number, got None"),
    },
    "linear_offset": {"inf": (float("inf"), ValueError, r"linear_offset must be finite")},
    "fp8_input_store": {
        "int": (1, TypeError, r"fp8_input_store must be a Python bool or 'scaled', got 1"),
        "None": (None, TypeError, r"fp8_input_store must be a Python bool or 'scaled'"),
        "Scaled": ("Scaled", ValueError, r"fp8_input_store must be False, True or 'scaled', got"),
    },
    "cpu_offload_input": {"str": ("yes", TypeError, r"cpu_offload_input must be a Python bool")},
    "layout": {"unknown": ("x", ValueError, r"layout must be one of .*got 'x'")},
    "implementation": {
        "unknown": ("cuda", ValueError, r"implementation must be None or one of .*got 'cuda'"),
        # Kernels for another platform than this host's: refused when lowered.
        "tpu here": ("pallas:tpu", NotImplementedError, r"implementation='pallas:tpu' runs on"),
    },
}
MISSING = r"^{fn}: {name} (is required|must be a floating-point array), got None"


@pytest.mark.parametrize("call,error,message", error_audit(FUNCTIONS, BAD_VALUES, MISSING))
def test_every_argument_of_every_function(call, error, message):
    with pytest.raises(error, match=message):
        call()


CASES = {
    # y
    "scalar y": (lambda: sj.swiglu(jnp.float32(1)), ValueError, r"y.shape=\(\)"),
    "stacked axis not 2": (
        lambda: sj.swiglu(jnp.ones((3, 3, 4)), layout="stacked"),
        ValueError,
        r"\(\.\.\., 2, H\).*y.shape=\(3, 3, 4\)",
    ),
    "stacked 1-D": (
        lambda: sj.swiglu(jnp.ones((4,)), layout="stacked"),
        ValueError,
        r"y.shape=\(4,\)",
    ),
    "bool y": (lambda: sj.swiglu(np.ones((3, 8), bool)), TypeError, r"y.dtype=bool"),
    "complex y": (
        lambda: sj.swiglu(np.ones((3, 8), np.complex64)),
        TypeError,
        r"y.dtype=complex64",
    ),
    "fp8 y": (
        lambda: sj.swiglu(jnp.ones((3, 8), jnp.float8_e4m3fn)),
        TypeError,
        r"y.dtype=float8_e4m3fn",
    ),
    # bias
    "bias per token": (
        lambda: sj.bias_swiglu(Y, jnp.ones((3, 8))),
        ValueError,
        r"bias.shape=\(3, 8\)",
    ),
    "bias split-shaped for stacked": (
        lambda: sj.bias_swiglu(STACKED, jnp.ones((8,)), layout="stacked"),
        ValueError,
        r"bias must have shape \(2, 4\).*bias.shape=\(8,\)",
    ),
    # weights
    "weights per feature": (
        lambda: sj.weighted_swiglu(Y, jnp.ones((3, 4))),
        ValueError,
        r"weights.shape=\(3, 4\)",
    ),
    # g in the raw gradient functions
    "weighted_back wrong weights": (
        lambda: sj.weighted_swiglu_back(G, Y, jnp.ones((1, 3))),
        ValueError,
        r"weights.shape=\(1, 3\)",
    ),
    # options
    "clamp inf": (
        lambda: sj.swiglu(Y, clamp_value=float("inf")),
        ValueError,
        r"clamp_value.*got inf",
    ),
    "clamp array": (
        lambda: sj.swiglu(Y, clamp_value=jnp.ones(())),
        TypeError,
        r"clamp_value must be a static Python real number",
    ),
    "clamp tracer": (
        lambda: jax.jit(lambda c: sj.swiglu(Y, clamp_value=c))(1.0),
        TypeError,
        r"clamp_value must be a static Python real number",
    ),
    "layout not a string": (lambda: sj.swiglu(Y, layout=2), ValueError, r"layout.*got 2"),
    # Megatron's entry points
    "impl 1-D input": (
        lambda: sj.bias_swiglu_impl(jnp.ones((8,)), None),
        AssertionError,
        r"input must be 2-D .* or 3-D .*got 1-D input of shape \(8,\)",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input(case):
    call, error, message = case
    with pytest.raises(error, match=message):
        call()


def test_errors_name_the_function():
    with pytest.raises(ValueError, match=r"^weighted_swiglu_back: "):
        sj.weighted_swiglu_back(G, Y, jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"^bias_swiglu: "):
        sj.bias_swiglu(Y, jnp.ones((3,)))


def test_arrays_on_different_devices():
    """Committed arrays on two devices: JAX's ``ValueError`` names both arguments. (In a
    subprocess: this host gets a second CPU device only before JAX starts.)"""
    code = """if True:
        import jax, jax.numpy as jnp, swiglu_jax as sj
        first, second = jax.devices()[:2]
        y = jax.device_put(jnp.ones((3, 8)), first)
        bias = jax.device_put(jnp.ones(8), second)
        try:
            sj.bias_swiglu(y, bias)
        except ValueError as error:
            print(error)
    """
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"incompatible devices.*argument y .*argument bias ", result.stdout)


# Every good and bad value above, and other arguments' good ones: junk for any argument.
JUNK = [Y, B, W, G, STACKED, None, 1.5, "split", "stacked", np.ones((3, 8), np.float16)]
JUNK += [value for bad in BAD_VALUES.values() for value, _, _ in bad.values()]


@seed(SEED)
@given(call=junk_calls(FUNCTIONS, JUNK))
def test_junk_never_crashes(call):
    """Any mix of arguments computes, or raises one of the documented errors naming an
    argument of the function called."""
    name, fn, kwargs = call
    try:
        jax.block_until_ready(fn(**kwargs))
    except (TypeError, ValueError, AssertionError, NotImplementedError) as error:
        names = "|".join(kwargs)
        assert re.search(rf"\b({names})\b", str(error)), f"{name}: {error!r}"
