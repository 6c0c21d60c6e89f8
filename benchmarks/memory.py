"""Device memory and time of a multi-layer training step with the fp8 input store and
CPU offload, in JAX and through torch_bridge (issue 6's figures).

    PYTHONPATH=. python3 benchmarks/memory.py [--layers 8] [--rows 8192] [--features 2048]
                                              [--hidden 5632] [--out DIR]

JAX: for ``jax.jit(jax.grad(loss))`` over ``layers`` SwiGLU MLP layers, the compiled
memory analysis (device temporaries, and host temporaries where the runtime reports
them), how many buffers the compiled module keeps in host memory, the allocator's peak
above the inputs while a step runs (each variant in a fresh process), and the time per
step. torch (on a CUDA GPU): the peak of ``torch.cuda.memory_allocated``
during one forward + backward through ``torch_bridge.bias_swiglu_impl``, the memory the
forward leaves held for the backward, and the time per step.
Variants: plain, ``fp8_input_store`` (``True`` and ``"scaled"``), ``cpu_offload_input``,
fp8 and offload.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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


def host_buffers(hlo_text: str) -> int:
    """Buffers the compiled module places in host memory (memory space 5, ``S(5)`` in
    HLO layouts): nonzero only where XLA kept the ``pinned_host`` placement."""
    return hlo_text.count("S(5)")


def jax_variant(name, layers, rows, features, hidden) -> dict:
    """One variant's figures: the compiled memory analysis, the host buffers of the
    compiled module, the allocator's peak while running it (a fresh process per variant
    keeps the peak its own), and the time per step."""
    step, args = jax_step(layers, rows, features, hidden, VARIANTS[name])
    compiled = step.lower(*args).compile()
    memory = compiled.memory_analysis()
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    base = stats.get("bytes_in_use", 0)  # the weights and inputs
    jax.block_until_ready(compiled(*args))
    peak = (device.memory_stats() or {}).get("peak_bytes_in_use")
    start = time.perf_counter()
    for _ in range(5):
        out = compiled(*args)
    jax.block_until_ready(out)
    return {
        "device_temp_MiB": memory.temp_size_in_bytes / 2**20,
        "host_temp_MiB": getattr(memory, "host_temp_size_in_bytes", 0) / 2**20,
        "host_buffers": host_buffers(compiled.as_text()),
        "peak_above_inputs_MiB": None if peak is None else (peak - base) / 2**20,
        "ms_per_step": (time.perf_counter() - start) / 5 * 1e3,
    }


def jax_figures(layers, rows, features, hidden) -> dict:
    """Every variant's :func:`jax_variant`, each in its own process."""
    figures = {}
    for name in VARIANTS:
        command = [sys.executable, __file__, "--jax-variant", name, "--layers", str(layers)]
        command += ["--rows", str(rows), "--features", str(features), "--hidden", str(hidden)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        figures[name] = json.loads(done.stdout.splitlines()[-1])
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


def _cell(value) -> str:
    return "        -" if value is None else f"{value:9.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=5632)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--jax-variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = (args.layers, args.rows, args.features, args.hidden)
    if args.jax_variant:  # the child process of jax_figures
        print(json.dumps(jax_variant(args.jax_variant, *shape)))
        return
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
            cells = "  ".join(f"{k} {_cell(v)}" for k, v in figures.items())
            print(f"{side:6}{name:15}{cells}")


if __name__ == "__main__":
    main()
