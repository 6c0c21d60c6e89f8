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
