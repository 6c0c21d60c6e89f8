"""benchmarks/ab_compare.py: the side-by-side table of the ``ab`` stage's runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import ab_compare


def record(pct, op="fwd", implementation="swiglu_jax:triton"):
    return {"op": op, "rows": 4096, "two_h": 4096, "dtype": "bfloat16",
            "implementation": implementation, "pct_copy": pct}  # fmt: skip


def write(directory: Path, run: str, records):
    (directory / run).mkdir()
    (directory / run / "bench.json").write_text(json.dumps({"results": records}))


def test_medians_per_copy_and_changes_against_the_first(tmp_path):
    write(tmp_path, "ab-1-old", [record(90.0), record(80.0, "bias_bwd")])
    write(tmp_path, "ab-2-old", [record(92.0), record(81.0, "bias_bwd")])
    write(tmp_path, "ab-1-new", [record(95.0), {"op": "bias_bwd", "error": "x"}])
    write(tmp_path, "ab-2-new", [record(96.0)])
    found = ab_compare.load(tmp_path)
    assert found["old"][("fwd", "4096x4096", "bfloat16", "swiglu_jax:triton")] == [90.0, 92.0]
    lines = ab_compare.table(found).splitlines()
    assert lines[0].startswith("| op | N x 2H | dtype | implementation | new | old | old - new")
    rows = {line.split(" | ")[0]: line for line in lines[2:]}
    assert rows["| bias_bwd"].endswith("| - | 80.5 | - |")  # errors and gaps: no number
    assert rows["| fwd"].endswith("| 95.5 | 91.0 | -4.5 |")


def test_an_empty_directory_says_so(tmp_path):
    assert "no ab-" in ab_compare.table(ab_compare.load(tmp_path))
