"""The PTX that XLA's bundled Triton makes of a Pallas Triton kernel, beside the PTX that
the ``triton`` package makes of the same IR (torch_bridge's direct launch), with counts
of what tells them apart: loads and stores by width and cache policy, barriers, local
memory (spills). (Registers: ``ptxas -v`` of the written files, RESULTS.md, session 11.)

    python benchmarks/experiments/xla_ptx.py --out DIR [--cases scaled:8192x28672:float32,...]

Needs a CUDA GPU for XLA's side (XLA compiles for the GPU it finds); the triton side runs
anywhere. Writes ``DIR/<case>-xla.ptx`` and ``DIR/<case>-triton.ptx`` and prints one table.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import sys
import tempfile

CASES = "scaled:8192x28672:float32,scaled:8192x22016:float32,scaled:8192x28672:bfloat16"
PATTERNS = {
    "ld.global": r"ld\.global",
    "ld v4": r"ld\.global\S*\.v4",
    "ld v2": r"ld\.global\S*\.v2",
    "ld evict_last": r"ld\.global\S*evict_last",
    "ld evict_first": r"ld\.global\S*evict_first",
    "L2 hint": r"L2::cache_hint",
    "st.global": r"st\.global",
    "st evict_first": r"st\.global\S*evict_first",
    "bar.sync": r"bar\.sync",
    "local (spills)": r"\.local",
    "shfl": r"shfl\.sync",
}


def counts(ptx: str) -> dict[str, int]:
    return {name: len(re.findall(p, ptx)) for name, p in PATTERNS.items()}


def kernel_only(ptx: str, name: str) -> str:
    """The ``.entry`` of ``name`` (XLA's module holds every kernel of the program)."""
    start = ptx.find(f".entry {name}(")
    if start < 0:
        return ""
    end = ptx.find(".entry", start + 1)
    return ptx[start : end if end > 0 else len(ptx)]


def parse(case: str):
    op, size, dtype = case.split(":")
    rows, two_h = (int(v) for v in size.split("x"))
    return op, rows, two_h // 2, dtype


def xla_ptx(op, rows, hidden, dtype, folder: pathlib.Path) -> str:
    """Compiles the op with XLA, dumping to ``folder``; the Triton kernel's PTX."""
    import jax
    import jax.numpy as jnp

    from swiglu_jax._options import Options
    from swiglu_jax.kernels import triton as kernels

    if op != "scaled":
        raise ValueError(f"unknown op {op}")
    y = jax.ShapeDtypeStruct((rows, 2, hidden), jnp.dtype(dtype))
    forward = lambda y: kernels.forward(y, None, None, Options(), save_fp8="scaled")
    shutil.rmtree(folder)  # this case's files only
    folder.mkdir()
    jax.jit(forward).lower(y).compile()
    entries = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and ".entry" in (text := path.read_text(errors="replace")):
            for name in re.findall(r"\.entry\s+(\w+)", text):
                entries[f"{path.name}:{name}"] = kernel_only(text, name)
    print(f"{rows}x{2 * hidden} {dtype}: XLA's entries {list(entries)}", file=sys.stderr)
    if not entries:
        for path in sorted(folder.rglob("*")):
            print(f"  dumped: {path.relative_to(folder)}", file=sys.stderr)
        return ""
    return max(entries.values(), key=lambda text: len(re.findall(r"ld\.global", text)))


def triton_ptx(op, rows, hidden, dtype) -> str:
    from swiglu_jax._options import Options
    from swiglu_jax.kernels import triton_ir
    from torch_bridge import _direct

    ir = triton_ir.forward_ir(rows, hidden, dtype, None, None, Options(), "scaled")
    return kernel_only(_direct.compile_kernel(ir, 90).asm["ptx"], ir.name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", default=CASES)
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dump = pathlib.Path(tempfile.mkdtemp(prefix="xla_dump_"))
    # XLA writes a Triton kernel's PTX only with an emitter filter (jaxlib 0.11.2).
    flags = f"--xla_dump_to={dump} --xla_dump_emitter_re=.*"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}"
    rows_out = []
    for case in args.cases.split(","):
        op, rows, hidden, dtype = parse(case)
        tag = case.replace(":", "-")
        for side in ("xla", "triton"):
            try:
                if side == "xla":
                    ptx = xla_ptx(op, rows, hidden, dtype, dump)
                else:
                    ptx = triton_ptx(op, rows, hidden, dtype)
            except Exception as error:  # report and go on
                print(f"{case} {side}: {type(error).__name__}: {error}", file=sys.stderr)
                continue
            (out / f"{tag}-{side}.ptx").write_text(ptx)
            rows_out.append((case, side, counts(ptx) if ptx else {}))
    names = list(PATTERNS)
    print("| case | side | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for case, side, found in rows_out:
        print(f"| {case} | {side} | " + " | ".join(str(found.get(n, "-")) for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
