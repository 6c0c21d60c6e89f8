"""torch_bridge's errors: every argument of every public name (``torch_bridge.__all__``)
with each of its bad values gets a ``TypeError``/``ValueError`` (``AssertionError`` for
Megatron's rank contract) that starts with the name called and names the argument, and
random junk never crashes."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import SEED  # noqa: E402
from helpers import error_audit, junk_calls, megatron_functions  # noqa: E402
from hypothesis import given, seed  # noqa: E402

import torch_bridge as tb  # noqa: E402

Y, B, W, G = torch.ones(3, 8), torch.ones(8), torch.ones(3, 1), torch.ones(3, 4)


def keywords(function_class):
    """``function_class.apply`` callable with keywords (``apply`` takes positions only)."""
    params = inspect.signature(function_class.forward).parameters
    params = [p for name, p in params.items() if name not in ("ctx", "_caller")]

    def apply(**kwargs):
        return function_class.apply(*(kwargs.get(p.name, p.default) for p in params))

    apply.__signature__ = inspect.Signature(params)
    return apply


# name -> (callable, good keyword arguments, the arguments it requires).
FUNCTIONS = {
    **megatron_functions(tb, Y, B, W, G),
    "SwiGLUFunction": (keywords(tb.SwiGLUFunction), dict(input=Y), ("input",)),
    "BiasSwiGLUFunction": (
        keywords(tb.BiasSwiGLUFunction),
        dict(input=Y, bias=B),
        ("input", "bias"),
    ),
    "WeightedSwiGLUFunction": (
        keywords(tb.WeightedSwiGLUFunction),
        dict(input=Y, weights=W),
        ("input", "weights"),
    ),
    "SwiGLU": (tb.SwiGLU, dict(bias_features=8), ()),
    # The launch switch: its good value is the mode in force, which the audit keeps.
    "set_launch": (tb.set_launch, dict(mode=tb.get_launch()), ()),
    "get_launch": (tb.get_launch, {}, ()),
}
assert sorted(FUNCTIONS) == sorted(tb.__all__)

NAMES_IT = r"^{fn}: {name} "
TENSOR = {  # for y and input
    "odd last dim": (torch.ones(3, 7), ValueError, NAMES_IT + r"must .*{name}.shape=\(3, 7\)"),
    "integer": (
        torch.ones(3, 8, dtype=torch.int32),
        TypeError,
        NAMES_IT + r"must .*{name}.dtype=torch.int32",
    ),
    "numpy": (np.ones((3, 8)), TypeError, NAMES_IT + "must be a torch.Tensor, got ndarray"),
    "sparse": (torch.ones(3, 8).to_sparse(), TypeError, NAMES_IT + "must be a dense tensor"),
    "meta": (torch.ones(3, 8, device="meta"), ValueError, NAMES_IT + "is on meta"),
}


def side(good: torch.Tensor):
    """Bad values for bias, weights and g, whose good value is ``good``."""
    shape = r"must have shape.*{name}.shape=\(5,\)"
    return {
        "wrong shape": (torch.ones(5), ValueError, NAMES_IT + shape),
        "integer": (good.to(torch.int64), TypeError, NAMES_IT + r".*torch.int64"),
        "numpy": (good.numpy(), TypeError, NAMES_IT + "must be a torch.Tensor"),
        "other device": (good.to("meta"), ValueError, NAMES_IT + "is on meta but"),
    }


FLAG = {"string": ("yes", TypeError, NAMES_IT + "must be a bool, got 'yes'")}
BAD_VALUES = {
    "y": TENSOR,
    "input": TENSOR,
    "bias": side(B),
    "weights": side(W),
    "g": side(G),
    "clamp_value": {
        "zero": (0.0, ValueError, NAMES_IT + r"must be None or a finite number > 0, got 0.0"),
        "nan": (float("nan"), ValueError, NAMES_IT + "must be None or a finite number"),
        "string": ("7", TypeError, NAMES_IT + "must be None or a number, got '7'"),
        "bool": (True, TypeError, NAMES_IT + "must be None or a number, got True"),
        "tensor": (torch.tensor(7.0), TypeError, NAMES_IT + "must be None or a number"),
    },
    "alpha": {
        "nan": (float("nan"), ValueError, NAMES_IT + "must be finite"),
        "string": ("1", TypeError, NAMES_IT + "must be a number"),
    },
    "linear_offset": {"inf": (float("inf"), ValueError, NAMES_IT + "must be finite")},
    "fp8_input_store": {
        "Scaled": (
            "Scaled",
            ValueError,
            NAMES_IT + "must be False, True or 'scaled', got 'Scaled'",
        ),
        "int": (1, TypeError, NAMES_IT + "must be a bool or 'scaled', got 1"),
        "None": (None, TypeError, NAMES_IT + "must be a bool or 'scaled', got None"),
    },
    "cpu_offload_input": FLAG,
    "bias_features": {
        "odd": (3, ValueError, NAMES_IT + "must be even and positive"),
        "negative": (-2, ValueError, NAMES_IT + "must be even and positive"),
        "string": ("8", TypeError, NAMES_IT + "must be None or an int"),
    },
    "mode": {
        "unknown": ("triton", ValueError, NAMES_IT + r"must be one of \('jax', 'direct'\)"),
        "None": (None, TypeError, NAMES_IT + "must be one of"),
    },
}
MISSING = NAMES_IT + "(is required|must be a torch.Tensor), got None(Type)?"


# Megatron's *_impl also assert the rank of input (its Functions take any rank).
IMPLS = {name: FUNCTIONS[name] for name in ("bias_swiglu_impl", "weighted_bias_swiglu_impl")}
RANK = {
    "input": {
        "1-D": (torch.ones(8), AssertionError, r"^{fn}: input must be 2-D .*got 1-D"),
        "4-D": (torch.ones(2, 2, 3, 8), AssertionError, r"^{fn}: input must be 2-D .*got 4-D"),
    }
}
CASES = error_audit(FUNCTIONS, BAD_VALUES, MISSING) + error_audit(IMPLS, RANK, MISSING)


@pytest.mark.parametrize("call,error,message", CASES)
def test_every_argument_of_every_function(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_module_forward_names_the_argument():
    with pytest.raises(ValueError, match=r"^weighted_swiglu: weights must have shape"):
        tb.SwiGLU()(Y, weights=torch.ones(3))
    with pytest.raises(ValueError, match=r"^bias_swiglu: bias must have shape \(6,\)"):
        tb.SwiGLU(8)(torch.ones(3, 6))


def test_nested_tensor():
    nested = torch.nested.nested_tensor([torch.ones(2, 8), torch.ones(3, 8)], layout=torch.jagged)
    with pytest.raises(TypeError, match=r"^swiglu: y must be a dense tensor, got a nested"):
        tb.swiglu(nested)


JUNK = [Y, B, W, G, None, 1.5, True, "x", torch.ones(2, 3, 8), torch.ones(8, dtype=torch.half)]
JUNK += [value for bad in (*BAD_VALUES.values(), *RANK.values()) for value, _, _ in bad.values()]


@seed(SEED)
@given(call=junk_calls(FUNCTIONS, JUNK))
def test_junk_never_crashes(call):
    """Any mix of arguments computes, or raises one of the documented errors naming an
    argument of the name called."""
    name, fn, kwargs = call
    try:
        fn(**kwargs)
    except (TypeError, ValueError, AssertionError) as error:
        names = "|".join(kwargs)
        assert re.search(rf"\b({names})\b", str(error)), f"{name}: {error!r}"
