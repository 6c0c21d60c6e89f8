"""Shared fixtures: fresh random inputs each run, reproducible from the printed seed.

Set ``SWIGLU_TEST_SEED`` to replay a run (the property tests' examples included), and
``SWIGLU_HYPOTHESIS_PROFILE=sweep`` for the long property sweep instead of CI's bounded one.
"""

from __future__ import annotations

import os
import secrets
import zlib

import hypothesis
import jax.numpy as jnp
import numpy as np
import pytest

SEED = int(os.environ.get("SWIGLU_TEST_SEED", secrets.randbits(32)))
# pytest-xdist workers inherit the environment: the whole run shares the printed seed.
os.environ["SWIGLU_TEST_SEED"] = str(SEED)

# Examples per property test. Compiling dominates (each new shape compiles), so no
# deadline; a failure prints the falsifying example and a blob to replay it.
HYPOTHESIS_PROFILES = {"ci": 25, "sweep": 1000}
for _name, _examples in HYPOTHESIS_PROFILES.items():
    hypothesis.settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        print_blob=True,
        suppress_health_check=[hypothesis.HealthCheck.too_slow],
    )
HYPOTHESIS_PROFILE = os.environ.get("SWIGLU_HYPOTHESIS_PROFILE", "ci")
hypothesis.settings.load_profile(HYPOTHESIS_PROFILE)


def examples(share: float) -> hypothesis.settings:
    """Settings running ``share`` of the profile's examples (at least one): for property
    tests whose examples are slow, like kernels in interpret mode (seconds each). Property
    tests also take ``@hypothesis.seed(SEED)``: their examples change from run to run and
    ``SWIGLU_TEST_SEED`` replays them."""
    count = max(1, round(share * HYPOTHESIS_PROFILES[HYPOTHESIS_PROFILE]))
    return hypothesis.settings(max_examples=count)


def pytest_report_header(config):
    return (
        f"swiglu-jax test seed: SWIGLU_TEST_SEED={SEED}; "
        f"SWIGLU_HYPOTHESIS_PROFILE={HYPOTHESIS_PROFILE}"
    )


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded by the run's seed and the test's id."""
    return np.random.default_rng([SEED, zlib.crc32(request.node.nodeid.encode())])


DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
