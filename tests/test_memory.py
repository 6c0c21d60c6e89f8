"""What the fp8 input store saves in a compiled training step (the GPU figures, and CPU
offload's, come from benchmarks/memory.py on the GPU machine)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

import jax
import jax.numpy as jnp
import memory
import pytest

import swiglu_jax as sj


def test_fp8_store_shrinks_the_compiled_step():
    layers, rows, features, hidden = 3, 512, 128, 384
    temps = {}
    for name in ("plain", "fp8 store", "scaled fp8 store"):
        step, args = memory.jax_step(layers, rows, features, hidden, memory.VARIANTS[name])
        temps[name] = step.lower(*args).compile().memory_analysis().temp_size_in_bytes
    # Each layer saves its (rows, 2 hidden) input in 1 byte instead of 2 (at least); the
    # scaled store adds a float32 scale per row.
    saved = layers * rows * 2 * hidden
    assert temps["plain"] - temps["fp8 store"] >= 0.9 * saved, temps
    assert temps["plain"] - temps["scaled fp8 store"] >= 0.9 * saved - 4 * layers * rows, temps


@pytest.mark.parametrize("layout", ["split", "stacked"])
def test_scaled_fp8_store_saves_its_copy_and_one_float32_per_row(layout):
    """What the backward holds (the VJP's residuals): the float8 copy and a float32
    scale per token, under half the bfloat16 input's bytes plus 4 per row."""
    lead, hidden = (6, 5), 256
    shape = (*lead, 2, hidden) if layout == "stacked" else (*lead, 2 * hidden)
    y = jnp.ones(shape, jnp.bfloat16)
    _, vjp = jax.vjp(lambda y: sj.swiglu(y, fp8_input_store="scaled", layout=layout), y)
    residuals = jax.tree.leaves(vjp)
    assert sorted(x.dtype.name for x in residuals) == ["float32", "float8_e4m3fn"]
    assert [x.shape for x in residuals if x.dtype == jnp.float32] == [(*lead, 1)]
    rows = 6 * 5
    assert sum(x.nbytes for x in residuals) <= y.nbytes / 2 + 4 * rows


def test_variant_figures_on_cpu():
    """benchmarks/memory.py's per-variant figures; on the CPU the runtime reports no
    allocator peak and no buffer is placed in host memory."""
    figures = memory.jax_variant("cpu offload", 1, 64, 32, 64)
    assert figures["peak_above_inputs_MiB"] is None and figures["host_buffers"] == 0
    assert figures["device_temp_MiB"] > 0 and figures["ms_per_step"] > 0
    assert memory.host_buffers("f32[8]{0:S(5)} copy-start(f32[8]{0} %x)") == 1


@pytest.mark.parametrize("store", [True, "scaled"])
def test_xla_keeps_the_fp8_copy_when_forward_and_backward_compile_together(store):
    """XLA on GPU removes a lossy ``y -> float8 -> float32`` round trip as excess
    precision when it sees both ends in one module (measured on an H200), so the XLA
    implementation puts the copy behind an optimization barrier: the compiled step
    still reads the float8 copy (tests/test_gpu.py checks its gradient there)."""
    y = jnp.ones((64, 2 * 128), jnp.bfloat16)

    def step(y):
        out, vjp = jax.vjp(lambda y: sj.swiglu(y, fp8_input_store=store, implementation="xla"), y)
        return vjp(out)[0]

    module = jax.jit(step).lower(y).as_text()
    barriers = [line for line in module.splitlines() if "optimization_barrier" in line]
    assert barriers and all("f8E4M3FN" in line for line in barriers), barriers


def test_offload_reads_the_host_copy_back_behind_a_barrier():
    """With ``cpu_offload_input`` the saved input goes to host memory in the forward
    and comes back in the backward behind an optimization barrier with the cotangent
    (lowered for CUDA; XLA:CPU has no host memory space):
    without it XLA on GPU folds the two copies into the device buffer they started from
    (seen on an H200 with jax 0.11.2), and nothing is offloaded."""
    y = jnp.ones((64, 2 * 128), jnp.bfloat16)

    def step(y):
        swiglu = lambda y: sj.swiglu(y, cpu_offload_input=True, implementation="xla")
        out, vjp = jax.vjp(swiglu, y)
        return vjp(out)[0]

    lowered = jax.jit(step).trace(y).lower(lowering_platforms=("cuda",))  # from this host
    lines = lowered.as_text().splitlines()
    placements = [i for i, line in enumerate(lines) if "annotate_device_placement" in line]
    barriers = [i for i, line in enumerate(lines) if "optimization_barrier" in line]
    assert len(placements) == 2 and len(barriers) == 1, (placements, barriers)
    to_host, to_device = placements
    assert to_host < barriers[0] < to_device
    assert "tensor<64x2x128xbf16>, tensor<64x128xbf16>" in lines[barriers[0]]  # saved y, g
