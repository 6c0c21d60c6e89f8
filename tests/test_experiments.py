"""The GPU experiments build on any host: every part of ``benchmarks/experiments/gaps.py``
names its candidates without a GPU, so a typo costs no device time."""

import pathlib
import re
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

EXPERIMENTS = pathlib.Path(__file__).parent.parent / "benchmarks" / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import gaps  # noqa: E402


@pytest.mark.parametrize("part", sorted(gaps.parts(".")))
def test_every_part_names_its_candidates(tmp_path, part):
    op, sizes, candidates = gaps.parts(str(tmp_path))[part]
    assert op in gaps.bench.OPS and sizes
    for dtype in gaps.DTYPES:
        found = candidates(*sizes[0], dtype)
        assert found and all(callable(make) for make in found.values())


def test_gpu_session_runs_parts_that_exist():
    script = (EXPERIMENTS.parent.parent / "scripts" / "gpu_session.sh").read_text()
    (default,) = re.findall(r"GAPS_PARTS:-([\w,]+)", script)
    assert set(default.split(",")) <= set(gaps.parts("."))


def test_a_config_in_effect_reaches_both_compilers_and_is_restored():
    """What a candidate builds inside ``_config_in_effect`` gets the config: the rule
    gives it, and the IR cache is emptied on the way in and out."""
    from swiglu_jax.kernels import triton_ir

    config = gaps.BlockConfig(1, 256, num_warps=4)
    rule = gaps.kernels.sweep_config
    ir = triton_ir.forward_ir(8, 512, "bfloat16", None, None, gaps.Options(), "scaled")
    with gaps._config_in_effect("sweep_config", config, "forward_ir"):
        assert gaps.kernels.sweep_config(8, 512, "bfloat16") is config
        assert triton_ir.forward_ir.cache_info().currsize == 0
        inside = triton_ir.forward_ir(8, 512, "bfloat16", None, None, gaps.Options(), "scaled")
        assert (ir.grid[1], inside.grid[1]) == (2, 8)  # 4 x 512 tiles; 1 row a program
    assert gaps.kernels.sweep_config is rule
    assert triton_ir.forward_ir.cache_info().currsize == 0
