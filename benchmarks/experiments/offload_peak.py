"""Experiment: torch memory the forward of 4 SwiGLU MLP layers leaves held for the
backward, and the backward's peak, in each launch mode, plain, fp8 store and offload
(tests/test_gpu_torch_bridge.py's _layers_step). torch's counters see only torch's
allocator: on the JAX path, JAX's outputs (dy) live in JAX's pool.

    PYTHONPATH=. python3 benchmarks/experiments/offload_peak.py      (needs a GPU)
"""

import sys

sys.path.insert(0, "tests")
from test_gpu_torch_bridge import _layers_step

import torch_bridge as tb

shape = {"layers": 4, "rows": 8192, "features": 1024, "hidden": 4096}
for mode in ("jax", "direct"):
    tb.set_launch(mode)
    for opts in ({}, {"fp8_input_store": True}, {"cpu_offload_input": True}):
        held, peak, _ = _layers_step(**shape, **opts)
        print(
            f"{mode:7} {opts!s:32} held {held / 2**20:8.1f} MiB  "
            f"backward peak {peak / 2**20:8.1f} MiB",
            flush=True,
        )
