"""Every GPU check and a first timing in one run, for the lent GPU machine.

    PYTHONPATH=. python3 benchmarks/gpu_check.py [--out DIR] [--quick]

1. Runs tests/test_gpu.py (every implementation, variant, option, dtype and ragged shape
   against the float64 reference; one input above 2^31 elements) and
   tests/test_gpu_torch_bridge.py (zero-copy, stream safety), and keeps the log.
2. Measures the copy bandwidth, then times forward and backward of each implementation
   at a few sizes (wall-clock over back-to-back jitted calls on rotating inputs, so only
   sizes whose kernels outlast the dispatch are meaningful; device-time benchmarking is
   ``swiglu_jax.bench``'s job).
3. Writes everything to DIR (default $OUT) and prints a short table last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import swiglu_jax as sj
from swiglu_jax import _dispatch

ROTATE = 4  # input sets, so that no input stays in L2 from one call to the next
SIZES = [(4096, 4096), (8192, 22016), (8192, 28672), (32768, 8192)]


def environment() -> dict:
    device = jax.devices()[0]
    return {
        "date": time.strftime("%Y-%m-%d"),
        "device": device.device_kind,
        "compute_capability": getattr(device, "compute_capability", None),
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "python": platform.python_version(),
        "swiglu_jax": sj.__version__,
    }


def run_tests(out_dir: str, quick: bool) -> dict:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/test_gpu.py",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={out_dir}/gpu-tests.xml",
    ]
    if quick:
        command += ["-m", "not large"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    with open(os.path.join(out_dir, "gpu-tests.log"), "w") as log:
        log.write(result.stdout + result.stderr)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return {
        "returncode": result.returncode,
        "summary": lines[-1] if lines else "",
        "failures": [line for line in lines if line.startswith("FAILED")][:20],
        "seconds": round(time.perf_counter() - start, 1),
    }


def seconds_per_call(fn, inputs, iters: int = 50) -> float:
    """Median over 5 rounds of back-to-back calls cycling through ``inputs``."""
    jax.block_until_ready([fn(*args) for args in inputs])
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        results = [fn(*inputs[i % len(inputs)]) for i in range(iters)]
        jax.block_until_ready(results)
        rounds.append((time.perf_counter() - start) / iters)
    return float(np.median(rounds))


def copy_bandwidth() -> float:
    """Bytes read + written per second by an elementwise pass over 1 GiB."""
    n = 2**29
    inputs = [(jax.random.normal(jax.random.key(i), (n,), jnp.bfloat16),) for i in range(2)]
    seconds = seconds_per_call(jax.jit(lambda x: x + 1), inputs, iters=20)
    return 2 * n * 2 / seconds


def time_implementations(bandwidth: float, implementations) -> list[dict]:
    rows = []
    for n, two_h in SIZES:
        h = two_h // 2
        keys = jax.random.split(jax.random.key(n + h), 2 * ROTATE)
        ys = [jax.random.normal(k, (n, two_h), jnp.bfloat16) for k in keys[:ROTATE]]
        gs = [jax.random.normal(k, (n, h), jnp.bfloat16) for k in keys[ROTATE:]]
        for impl in implementations:
            for direction, elements in (("forward", 3 * n * h), ("backward", 5 * n * h)):
                record = {"shape": f"{n} x {two_h}", "implementation": impl, "direction": direction}
                try:
                    if direction == "forward":
                        fn = jax.jit(lambda y, impl=impl: sj.swiglu(y, implementation=impl))
                        inputs = [(y,) for y in ys]
                    else:
                        fn = jax.jit(
                            lambda g, y, impl=impl: sj.swiglu_back(g, y, implementation=impl)
                        )
                        inputs = list(zip(gs, ys, strict=True))
                    seconds = seconds_per_call(fn, inputs)
                    record["us"] = seconds * 1e6
                    record["percent_of_copy"] = 100 * elements * 2 / seconds / bandwidth
                except Exception as error:  # keep going: report what failed
                    record["error"] = f"{type(error).__name__}: {str(error)[:300]}"
                rows.append(record)
                print(json.dumps(record), flush=True)
        del ys, gs
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-results"))
    parser.add_argument("--quick", action="store_true", help="skip the >2^31-element test")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    env = environment()
    print(json.dumps(env), flush=True)
    tests = run_tests(args.out, args.quick)
    print(json.dumps(tests), flush=True)

    implementations = ["xla", "pallas:triton"]
    capability = _dispatch._local_cuda_capability()
    if capability and capability >= _dispatch.MIN_MOSAIC_GPU_CAPABILITY:
        implementations.append("pallas:mosaic_gpu")
    bandwidth = copy_bandwidth()
    timings = time_implementations(bandwidth, implementations)
    with open(os.path.join(args.out, "gpu-check.json"), "w") as f:
        json.dump(
            {"environment": env, "tests": tests, "copy_GBps": bandwidth / 1e9, "timings": timings},
            f,
            indent=2,
        )

    print(
        f"\n{env['device']}, jax {env['jax']}, {env['date']}; "
        f"copy bandwidth {bandwidth / 1e9:.0f} GB/s"
    )
    print(f"tests/test_gpu.py: {tests['summary']} ({tests['seconds']} s)")
    for failure in tests["failures"]:
        print("  " + failure)
    print(f"\n{'shape':<14} {'implementation':<18} {'direction':<9} {'us':>9} {'% copy':>7}")
    for r in timings:
        if "error" in r:
            print(
                f"{r['shape']:<14} {r['implementation']:<18} {r['direction']:<9} {r['error'][:60]}"
            )
        else:
            print(
                f"{r['shape']:<14} {r['implementation']:<18} {r['direction']:<9} "
                f"{r['us']:9.1f} {r['percent_of_copy']:7.1f}"
            )
    return tests["returncode"]


if __name__ == "__main__":
    sys.exit(main())
