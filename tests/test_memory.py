"""What the fp8 input store saves in a compiled training step (the GPU figures, and CPU
offload's, come from benchmarks/memory.py on the GPU machine)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

import memory


def test_fp8_store_shrinks_the_compiled_step():
    layers, rows, features, hidden = 3, 512, 128, 384
    temps = {}
    for name in ("plain", "fp8 store"):
        step, args = memory.jax_step(layers, rows, features, hidden, memory.VARIANTS[name])
        temps[name] = step.lower(*args).compile().memory_analysis().temp_size_in_bytes
    # Each layer saves its (rows, 2 hidden) input in 1 byte instead of 2 (at least).
    assert temps["plain"] - temps["fp8 store"] >= 0.9 * layers * rows * 2 * hidden, temps


def test_variant_figures_on_cpu():
    """benchmarks/memory.py's per-variant figures; on the CPU the runtime reports no
    allocator peak and no buffer is placed in host memory."""
    figures = memory.jax_variant("cpu offload", 1, 64, 32, 64)
    assert figures["peak_above_inputs_MiB"] is None and figures["host_buffers"] == 0
    assert figures["device_temp_MiB"] > 0 and figures["ms_per_step"] > 0
    assert memory.host_buffers("f32[8]{0:S(5)} copy-start(f32[8]{0} %x)") == 1
