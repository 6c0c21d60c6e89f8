"""Bitwise reproducibility: the same inputs give the same outputs and gradients (the bias
and weights reductions included), call after call and after recompiling, for XLA and
every kernel backend in interpret mode. tests/test_gpu.py repeats this on a GPU."""

from __future__ import annotations

import jax.numpy as jnp
import pytest
from helpers import GPT_OSS_FP8, INTERPRETED, check_repeatable


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("variant", ["bias", "weighted_bias"])
def test_xla_is_bitwise_repeatable(rng, variant, dtype):
    """Large enough that XLA's CPU reductions span several threads' worth of rows."""
    check_repeatable(rng, variant, (4, 512), 384, dtype, **GPT_OSS_FP8)


@pytest.mark.parametrize("implementation", INTERPRETED)
def test_kernels_are_bitwise_repeatable(rng, implementation):
    options = {"implementation": implementation, **GPT_OSS_FP8}
    check_repeatable(rng, "weighted_bias", (37,), 72, jnp.bfloat16, recompile=False, **options)
