"""Shared fixtures: fresh random inputs each run, reproducible from the printed seed.

Set ``SWIGLU_TEST_SEED`` to replay a run.
"""

from __future__ import annotations

import os
import secrets
import zlib

import jax.numpy as jnp
import numpy as np
import pytest

SEED = int(os.environ.get("SWIGLU_TEST_SEED", secrets.randbits(32)))
# pytest-xdist workers inherit the environment: the whole run shares the printed seed.
os.environ["SWIGLU_TEST_SEED"] = str(SEED)


def pytest_report_header(config):
    return f"swiglu-jax test seed: SWIGLU_TEST_SEED={SEED}"


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded by the run's seed and the test's id."""
    return np.random.default_rng([SEED, zlib.crc32(request.node.nodeid.encode())])


DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
