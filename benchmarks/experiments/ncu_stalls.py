"""Where a kernel's warps wait, by instruction: reads Nsight Compute's source page
(``ncu -i REPORT --page source --csv --print-source sass``) and prints the instructions
with the most stall samples, each with its top stall reasons.

    ncu --set full --import-source yes -k regex:NAME -c 1 -o REPORT python ...
    ncu -i REPORT.ncu-rep --page source --csv --print-source sass > sass.csv
    python benchmarks/experiments/ncu_stalls.py sass.csv [TOP]
"""

from __future__ import annotations

import csv
import sys


def _number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def rows_of(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        lines = [line for line in f if line.count(",") > 2]  # skip ncu's banner lines
    return list(csv.DictReader(lines))


def summary(rows: list[dict[str, str]], top: int = 25) -> list[str]:
    """The ``top`` instructions by all stall samples, each with its share of the kernel's
    samples and its three largest stall reasons."""
    if not rows:
        return ["no rows"]
    columns = list(rows[0])
    total_col = next(
        (c for c in columns if "Sampling" in c and "All" in c and "Not" not in c), None
    )
    if total_col is None:
        return [f"no stall-sampling column among {columns}"]
    reasons = [c for c in columns if "stall" in c.lower() and "Sampling" not in c]
    source = next((c for c in columns if c.lower() == "source"), columns[1])
    address = next((c for c in columns if "Address" in c), columns[0])
    total = sum(_number(r[total_col]) for r in rows) or 1.0
    out = [f"{len(rows)} instructions, {total:.0f} samples ({total_col})"]
    for r in sorted(rows, key=lambda r: -_number(r[total_col]))[:top]:
        share = _number(r[total_col]) / total
        top_reasons = sorted(reasons, key=lambda c: -_number(r[c]))[:3]
        why = ", ".join(f"{c}={_number(r[c]):.0f}" for c in top_reasons if _number(r[c]))
        out.append(f"{share:6.1%} {r[address]:>8} {r[source][:60]:<60} {why}")
    return out


if __name__ == "__main__":
    print("\n".join(summary(rows_of(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25)))
