"""Device memory and time of a multi-layer training step with the fp8 input store and
CPU offload, in JAX and through torch_bridge (issue 6's figures).

    PYTHONPATH=. python3 benchmarks/memory.py [--layers 8] [--rows 8192] [--features 2048]
                                              [--hidden 5632] [--out DIR]

JAX: the compiled memory analysis (device temporaries, and host temporaries where the
runtime reports them) of ``jax.jit(jax.grad(loss))`` over ``layers`` SwiGLU MLP layers,
and its time per step. torch (on a CUDA GPU): the peak of ``torch.cuda.memory_allocated``
during one forward + backward through ``torch_bridge.bias_swiglu_impl``, the memory the
forward leaves held for the backward, and the time per step.
Variants: plain, ``fp8_input_store`` (``True`` and ``"scaled"``), ``cpu_offload_input``,
fp8 and offload.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp

import swiglu_jax as sj

VARIANTS = {
    "plain": {},
    "fp8 store": {"fp8_input_store": True},
    "scaled fp8 store": {"fp8_input_store": "scaled"},
    "cpu offload": {"cpu_offload_input": True},
    "fp8 + offload": {"fp8_input_store": True, "cpu_offload_input": True},
}


def jax_step(layers, rows, features, hidden, options):
    def loss(weights, x):
        for up, down in weights:
            x = sj.swiglu(x @ up, **options) @ down
        return jnp.sum(jnp.square(x.astype(jnp.float32)))

    key = jax.random.key(0)
    weights = [
        (
            jax.random.normal(key, (features, 2 * hidden), jnp.bfloat16) / 64,
            jax.random.normal(key, (hidden, features), jnp.bfloat16) / 64,
        )
        for _ in range(layers)
    ]
    x = jax.random.normal(key, (rows, features), jnp.bfloat16)
    return jax.jit(jax.grad(loss)), (weights, x)


def jax_figures(layers, rows, features, hidden) -> dict:
    figures = {}
    for name, options in VARIANTS.items():
        step, args = jax_step(layers, rows, features, hidden, options)
        compiled = step.lower(*args).compile()
        memory = compiled.memory_analysis()
        jax.block_until_ready(compiled(*args))
        start = time.perf_counter()
        for _ in range(5):
            out = compiled(*args)
        jax.block_until_ready(out)
        figures[name] = {
            "device_temp_MiB": memory.temp_size_in_bytes / 2**20,
            "host_temp_MiB": getattr(memory, "host_temp_size_in_bytes", 0) / 2**20,
            "ms_per_step": (time.perf_counter() - start) / 5 * 1e3,
        }
    return figures


def torch_figures(layers, rows, features, hidden) -> dict | None:
    try:
        import torch

        import torch_bridge as tb
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    ups = [
        torch.randn(features, 2 * hidden, device="cuda", dtype=torch.bfloat16) / 64
        for _ in range(layers)
    ]
    downs = [
        torch.randn(hidden, features, device="cuda", dtype=torch.bfloat16) / 64
        for _ in range(layers)
    ]
    x = torch.randn(rows, features, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    def forward(options):
        h = x
        for up, down in zip(ups, downs, strict=True):
            h = tb.bias_swiglu_impl(h @ up, None, **options) @ down
        return h.float().square().sum()

    figures = {}
    for name, options in VARIANTS.items():
        forward(options).backward()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss = forward(options)
        torch.cuda.synchronize()
        torch.empty(1, device="cuda")  # frees blocks whose offload copy has landed
        held = torch.cuda.memory_allocated() - base
        loss.backward()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        start = time.perf_counter()
        for _ in range(5):
            forward(options).backward()
        torch.cuda.synchronize()
        figures[name] = {
            "held_after_forward_MiB": held / 2**20,
            "peak_MiB": peak / 2**20,
            "ms_per_step": (time.perf_counter() - start) / 5 * 1e3,
        }
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=5632)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args(argv)
    shape = (args.layers, args.rows, args.features, args.hidden)
    saved = args.layers * args.rows * 2 * args.hidden * 2 / 2**20
    result = {
        "device": jax.devices()[0].device_kind,
        "jax_version": jax.__version__,
        "shape": dict(zip(("layers", "rows", "features", "hidden"), shape, strict=True)),
        "bf16 inputs saved by the ops, MiB": saved,
        "jax": jax_figures(*shape),
        "torch": torch_figures(*shape),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "memory.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"{result['device']}, {shape=}, the ops' saved bf16 inputs: {saved:.0f} MiB")
    for side in ("jax", "torch"):
        for name, figures in (result[side] or {}).items():
            cells = "  ".join(f"{k} {v:9.1f}" for k, v in figures.items())
            print(f"{side:6}{name:15}{cells}")


if __name__ == "__main__":
    main()
