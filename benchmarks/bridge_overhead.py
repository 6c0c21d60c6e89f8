"""Host overhead of torch_bridge on the GPU, split into its parts.

    PYTHONPATH=. python3 benchmarks/bridge_overhead.py [--out DIR]

Host time per call, calls issued back to back with one synchronisation at the end, on a
small input (the kernel takes a few microseconds, so the host sets the pace):

- the jitted JAX call alone on JAX arrays (JAX's own dispatch);
- ``to_jax`` (DLPack import, with its stream handshake) and ``to_torch`` (export);
- the bridge's forward without grad, and forward + backward through autograd;
- torch eager's Megatron formula, for scale.

Then the bridge's two launch paths side by side (``torch_bridge.set_launch``): ``jax``
(DLPack and JAX's dispatch) and ``direct`` (the Triton kernels launched on torch's
stream): host time per call as above and device time per call (torch.profiler's CUDA
activity, which records the kernels JAX launches too), for the op's forward and backward
and the public function with and without autograd; and both in the LLM-size step.

Then whether the exchange blocks the host: ``to_torch`` of the output of a long kernel
(if it returns before the kernel ends, it does not wait on the host).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import torch

import torch_bridge as tb
from torch_bridge import _exchange, _ops


def per_call(fn, calls=300, warmup=20) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def host_parts(rows: int, two_h: int) -> dict:
    y = torch.randn(rows, two_h, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(rows, two_h // 2, device="cuda", dtype=torch.bfloat16)
    yj = _exchange.to_jax(y)
    fwd = _ops._jax_forward(None, 1.0, 0.0, "none")
    outj = fwd(yj, None, None)[0]
    yg = y.clone().requires_grad_()

    def bridge_train():
        tb.swiglu(yg).backward(g)

    def torch_eager():
        a, b = torch.chunk(y, 2, -1)
        return torch.nn.functional.silu(a) * b

    return {
        "jax jitted call": lambda: fwd(yj, None, None),
        "to_jax (DLPack import)": lambda: _exchange.to_jax(y),
        "to_torch (DLPack export)": lambda: _exchange.to_torch(outj),
        "bridge forward, no grad": lambda: tb.swiglu(y),
        "bridge forward + backward": bridge_train,
        "torch eager forward": torch_eager,
    }


def device_us(fn, calls=100, warmup=10) -> float:
    """GPU time per call: every kernel and copy the profiler records, over ``calls``."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    total = sum(
        getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        for e in events
    )
    return total / calls


def launch_paths(rows: int, two_h: int) -> dict:
    """Host and device time per call of the bridge in each launch mode."""
    y = torch.randn(rows, two_h, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(two_h, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(rows, two_h // 2, device="cuda", dtype=torch.bfloat16)
    yg = y.clone().requires_grad_()
    calls = {
        "op forward": lambda: _ops.forward(y, None, None, None, 1.0, 0.0, "none"),
        "op backward": lambda: _ops.backward(g, y, None, None, None, 1.0, 0.0),
        "op bias backward": lambda: _ops.backward(g, y, bias, None, None, 1.0, 0.0),
        "swiglu, no grad": lambda: tb.swiglu(y),
        "swiglu forward + backward": lambda: tb.swiglu(yg).backward(g),
    }
    results = {}
    for mode in ("jax", "direct"):
        tb.set_launch(mode)
        for name, fn in calls.items():
            results[f"{name} [{mode}] host"] = per_call(fn)
            results[f"{name} [{mode}] device"] = device_us(fn)
    tb.set_launch("jax")
    return results


def llm_steps(rows=8192, hidden=14336, steps=10) -> dict:
    """Forward + backward at an LLM size, issued back to back as a training loop does:
    the bridge through torch autograd against the same kernels called from JAX."""
    y = torch.randn(rows, 2 * hidden, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(rows, hidden, device="cuda", dtype=torch.bfloat16)
    yt = y.clone().requires_grad_()
    yj, gj = _exchange.to_jax_all(y, g)
    import swiglu_jax as sj

    def forward_backward(y, g):  # returns both, so that neither is dead code
        out, vjp = jax.vjp(sj.swiglu, y)
        return out, vjp(g)[0]

    step = jax.jit(forward_backward)

    def timed(fn):
        out = fn()
        jax.block_until_ready(out) if isinstance(out, tuple) else torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            out = fn()
        jax.block_until_ready(out) if isinstance(out, tuple) else torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps * 1e6

    def bridge_step():
        yt.grad = None
        tb.swiglu(yt).backward(g)

    results = {"jax (jit of forward + vjp)": timed(lambda: step(yj, gj))}
    for mode in ("jax", "direct"):
        tb.set_launch(mode)
        results[f"torch_bridge [{mode}] (autograd)"] = timed(bridge_step)
    tb.set_launch("jax")
    return results


def profile_train_step(out_dir):
    """cProfile of forward + backward through the bridge (the default, direct launch)
    on a small input."""
    import cProfile
    import io
    import pstats

    tb.set_launch("direct")

    y = torch.randn(64, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    for _ in range(20):
        tb.swiglu(y).backward(g)
    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(200):
        tb.swiglu(y).backward(g)
    torch.cuda.synchronize()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(22)
    with open(os.path.join(out_dir, "bridge_profile.txt"), "w") as f:
        f.write(text.getvalue())
    return text.getvalue()


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    results = {}
    tb.set_launch("jax")  # the JAX path's pieces; the launch paths side by side follow
    for rows, two_h in ((64, 512), (1024, 4096)):
        results[f"{rows}x{two_h}"] = {
            name: per_call(fn) for name, fn in host_parts(rows, two_h).items()
        }

    # Does the exchange wait on the host for JAX's kernel? A long forward, then export.
    big = torch.randn(32768, 28672, device="cuda", dtype=torch.bfloat16)
    fwd = _ops._jax_forward(None, 1.0, 0.0, "none")
    bigj = _exchange.to_jax(big)
    jax.block_until_ready(fwd(bigj, None, None))
    start = time.perf_counter()
    out = fwd(bigj, None, None)[0]
    launched = time.perf_counter()
    tensor = _exchange.to_torch(out)
    exported = time.perf_counter()
    torch.cuda.synchronize()
    done = time.perf_counter()
    del tensor
    results["export of a long kernel's output (us)"] = {
        "launch": (launched - start) * 1e6,
        "to_torch": (exported - launched) * 1e6,
        "until done": (done - exported) * 1e6,
    }
    for rows, two_h in ((64, 512), (1024, 4096), (8192, 28672)):
        results[f"launch paths {rows}x{two_h} (us per call)"] = launch_paths(rows, two_h)
    results["LLM size 8192x28672, 10 fwd+bwd back to back (us per step)"] = llm_steps()
    results["environment"] = {
        "device": torch.cuda.get_device_name(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "triton": _triton_version(),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bridge_overhead.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(profile_train_step(args.out)[-4000:])
    for size, parts in results.items():
        print(size)
        for name, value in parts.items():
            print(f"  {name:<44}{value if isinstance(value, str) else f'{value:9.1f}'}")


if __name__ == "__main__":
    main()
