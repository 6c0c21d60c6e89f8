"""Side-by-side benchmark runs of several copies of the code (``scripts/ab_prepare.sh``,
``gpu_session.sh``'s ``ab`` stage): % of copy bandwidth per op, size, dtype and
implementation, one column per copy (the median of its rounds; copies in the order of
their names), and each copy's change against the first.

    python3 benchmarks/ab_compare.py DIR       (DIR holds ab-ROUND-NAME/bench.json)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def load(directory: Path) -> dict[str, dict[tuple, list[float]]]:
    """``{copy: {(op, N x 2H, dtype, implementation): [% of copy, one per round]}}``."""
    found: dict[str, dict[tuple, list[float]]] = {}
    for path in sorted(directory.glob("ab-*-*/bench.json")):
        name = path.parent.name.split("-", 2)[2]
        for r in json.loads(path.read_text())["results"]:
            if "pct_copy" in r:
                key = (r["op"], f"{r['rows']}x{r['two_h']}", r["dtype"], r["implementation"])
                found.setdefault(name, {}).setdefault(key, []).append(r["pct_copy"])
    return found


def table(found: dict[str, dict[tuple, list[float]]]) -> str:
    names = list(found)
    if not names:
        return "no ab-*-*/bench.json found"
    keys = sorted({k for runs in found.values() for k in runs})
    head = "| op | N x 2H | dtype | implementation | " + " | ".join(names)
    head += "".join(f" | {n} - {names[0]}" for n in names[1:]) + " |"
    lines = [head, "|" + "---|" * (4 + 2 * len(names) - 1)]
    for key in keys:
        medians = [statistics.median(found[n][key]) if key in found[n] else None for n in names]
        cells = [f"{m:.1f}" if m is not None else "-" for m in medians]
        first = medians[0]
        cells += [
            f"{m - first:+.1f}" if m is not None and first is not None else "-" for m in medians[1:]
        ]
        lines.append("| " + " | ".join([*key, *cells]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(load(Path(sys.argv[1] if len(sys.argv) > 1 else "."))))
