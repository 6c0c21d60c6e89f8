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


def test_xla_ptx_reads_the_triton_side_on_any_host():
    """``xla_ptx.py``'s triton side and its counts run without a GPU: the scaled store's
    sweeps (rows wider than one 8192 tile) carry their cache policies."""
    import xla_ptx

    ptx = xla_ptx.triton_ptx("scaled", 4, 8200, "float32")
    assert ptx.startswith(".entry swiglu_forward_triton(")
    found = xla_ptx.counts(ptx)
    assert found["ld evict_last"] == found["ld evict_first"] > 0
    assert found["ld.global"] == found["ld evict_last"] + found["ld evict_first"]
    assert found["local (spills)"] == 0
    assert xla_ptx.kernel_only(ptx, "another_kernel") == ""
    assert xla_ptx.parse("scaled:8192x28672:float32") == ("scaled", 8192, 14336, "float32")


def test_ncu_stalls_ranks_instructions_by_samples(tmp_path):
    """``ncu_stalls.py`` skips Nsight Compute's banner, ranks the instructions by all
    stall samples and names each one's largest reasons, not the sampling totals."""
    import ncu_stalls

    path = tmp_path / "sass.csv"
    path.write_text(
        "==PROF== Disconnected\n"
        '"Address","Source","Warp Stall Sampling (All Samples)",'
        '"Warp Stall Sampling (Not-issued Samples)","stall_long_sb","stall_barrier"\n'
        '"0x20","FADD R1, R2, R3","10","5","0","9"\n'
        '"0x10","LDG.E.128 R4, [R2.64]","1,190","90","1,100","5"\n'
    )
    lines = ncu_stalls.summary(ncu_stalls.rows_of(str(path)))
    assert lines[0].startswith("2 instructions, 1200 samples")
    assert "LDG.E.128" in lines[1] and "99.2%" in lines[1]
    assert "stall_long_sb=1100, stall_barrier=5" in lines[1] and "Sampling" not in lines[1]
    assert lines[2].split()[1:3] == ["0x20", "FADD"]
    assert ncu_stalls.summary([]) == ["no rows"]


def test_bridge_repeat_tabulates_every_run(tmp_path, capsys):
    """On any host the rows come back, errors (no GPU) as "-": one column a repeat and
    one with the bridge first."""
    import bridge_repeat

    bridge_repeat.main(["--repeats", "2", "--size", "8x32", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| op | implementation | run 1 | run 2 | bridge first |"
    assert len(lines) == 2 + len(bridge_repeat.OPS) * len(bridge_repeat.IMPLS)
    assert len((tmp_path / "bridge-repeat.json").read_text()) > 2
