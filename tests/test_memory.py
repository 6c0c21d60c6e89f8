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
