"""Experiment: does XLA on GPU keep a residual in host memory, and by which route?

    PYTHONPATH=. python3 benchmarks/experiments/jax_offload.py      (needs a GPU)

benchmarks/memory.py found no host buffer in the compiled step with
``cpu_offload_input=True`` (our ``jax.device_put`` to ``Space.Host`` inside the custom
VJP's forward, back to ``Space.Device`` in its backward) and the same device
temporaries as without it. Compared here, for 4 layers of the same MLP, compiled memory
analysis, host buffers (``S(5)``) and ms per step:

- ``plain``: the op without offload;
- ``ours``: ``cpu_offload_input=True``;
- ``remat jnp``: a jnp SwiGLU under ``jax.checkpoint`` with JAX's offload policy for the
  named input (``save_and_offload_only_these_names``), the documented route;
- ``remat ours``: our op (no offload flag) under the same policy.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

import swiglu_jax as sj

sys.path.insert(0, str(Path(__file__).parent.parent))
import memory

LAYERS, ROWS, FEATURES, HIDDEN = 4, 8192, 2048, 5632
if jax.default_backend() == "cpu":  # a smoke run
    LAYERS, ROWS, FEATURES, HIDDEN = 2, 64, 32, 48
POLICY = jax.checkpoint_policies.save_and_offload_only_these_names(
    names_which_can_be_saved=(),
    names_which_can_be_offloaded=("swiglu_input",),
    offload_src="device",
    offload_dst="pinned_host",
)


def jnp_swiglu(y):
    a, b = jnp.split(y.astype(jnp.float32), 2, axis=-1)
    return (jax.nn.silu(a) * b).astype(y.dtype)


def layer_fn(variant):
    if variant == "plain":
        return lambda x, up, down: sj.swiglu(x @ up) @ down
    if variant == "ours":
        return lambda x, up, down: sj.swiglu(x @ up, cpu_offload_input=True) @ down
    op = jnp_swiglu if variant == "remat jnp" else sj.swiglu

    @functools.partial(jax.checkpoint, policy=POLICY)
    def layer(x, up, down):
        return op(checkpoint_name(x @ up, "swiglu_input")) @ down

    return layer


def step(variant):
    layer = layer_fn(variant)

    def loss(weights, x):
        for up, down in weights:
            x = layer(x, up, down)
        return jnp.sum(jnp.square(x.astype(jnp.float32)))

    return jax.jit(jax.grad(loss))


def main():
    _, (weights, x) = memory.jax_step(LAYERS, ROWS, FEATURES, HIDDEN, {})  # its inputs
    print(f"saved inputs: {LAYERS * ROWS * 2 * HIDDEN * 2 / 2**20:.0f} MiB", flush=True)
    for variant in ("plain", "ours", "remat jnp", "remat ours"):
        try:
            compiled = step(variant).lower(weights, x).compile()
        except Exception as error:
            print(f"{variant:12} failed: {type(error).__name__}: {str(error)[:300]}")
            continue
        analysis = compiled.memory_analysis()
        text = compiled.as_text()
        jax.block_until_ready(compiled(weights, x))
        start = time.perf_counter()
        for _ in range(5):
            out = compiled(weights, x)
        jax.block_until_ready(out)
        print(
            f"{variant:12} device temp {analysis.temp_size_in_bytes / 2**20:8.1f} MiB  "
            f"host temp {getattr(analysis, 'host_temp_size_in_bytes', 0) / 2**20:8.1f} MiB  "
            f"S(5) {text.count('S(5)'):3}  MoveToHost {text.count('MoveToHost'):2}  "
            f"{(time.perf_counter() - start) / 5 * 1e3:6.1f} ms/step",
            flush=True,
        )
        if variant == "ours":
            hlo = step(variant).lower(weights, x).as_text()
            print(
                "  lowered: annotate_device_placement",
                hlo.count("annotate_device_placement"),
                " pinned_host",
                hlo.count("pinned_host"),
            )


if __name__ == "__main__":
    main()
