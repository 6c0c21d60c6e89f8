"""Experiment: where the direct launch's host time goes, beside native torch's own.

    PYTHONPATH=. python3 benchmarks/experiments/direct_host_time.py      (needs a GPU)

Small input (64 x 512 bf16, the kernel takes a few microseconds), host µs per call,
calls back to back, one sync at the end. Pieces: triton's launcher alone (tensors, then
raw pointers), the op forward and backward (with a bias: two launches), the public
function without grad, forward +
backward through autograd (with and without grad accumulation), and torch eager's
Megatron formula with autograd for scale. Then a cProfile of the bridge's forward +
backward, the top entries by own time.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
from pathlib import Path

import torch

import torch_bridge as tb
from torch_bridge import _direct, _ops

sys.path.insert(0, str(Path(__file__).parent.parent))
from bridge_overhead import per_call as _per_call


def per_call(fn) -> float:
    return _per_call(fn, calls=2000, warmup=200)


def main():
    tb.set_launch("direct")
    y = torch.randn(64, 512, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    _ops.forward(y, None, None, None, 1.0, 0.0, "none")
    launcher = next(v for k, v in _direct._launchers.items() if k[0] == "forward")
    bias = torch.randn(512, device="cuda", dtype=torch.bfloat16)
    _ops.backward(g, y, bias, None, None, 1.0, 0.0)
    summing = next(v for k, v in _direct._launchers.items() if k[0] == "sum_rows")
    partials = torch.randn(2, 512, device="cuda")
    out = torch.empty(64, 256, device="cuda", dtype=torch.bfloat16)
    stream = torch.cuda.current_stream().cuda_stream
    yg = y.clone().requires_grad_()

    def fresh_grad():
        yg.grad = None
        tb.swiglu(yg).backward(g)

    def torch_train():
        a, b = torch.chunk(yg, 2, -1)
        (torch.nn.functional.silu(a) * b).backward(g)

    def torch_fresh():
        yg.grad = None
        torch_train()

    times = {
        "triton launcher, tensors": lambda: launcher.run(y, out, stream=stream),
        "triton launcher, pointers": lambda: launcher.run(
            y.data_ptr(), out.data_ptr(), stream=stream
        ),
        "Launcher.__call__": lambda: launcher(y),
        "op forward": lambda: _ops.forward(y, None, None, None, 1.0, 0.0, "none"),
        "op backward": lambda: _ops.backward(g, y, None, None, None, 1.0, 0.0),
        "sum_rows Launcher.__call__": lambda: summing(partials),
        "_direct.backward with bias": lambda: _direct.backward(g, y, bias, None, None, 1.0, 0.0),
        "op bias backward": lambda: _ops.backward(g, y, bias, None, None, 1.0, 0.0),
        "swiglu, no grad": lambda: tb.swiglu(y),
        "swiglu forward + backward": lambda: tb.swiglu(yg).backward(g),
        "swiglu forward + backward, grad=None": fresh_grad,
        "torch eager forward + backward": torch_train,
        "torch eager forward + backward, grad=None": torch_fresh,
    }
    for name, fn in times.items():
        print(f"{name:45} {per_call(fn):8.1f} us", flush=True)
    for name, fn in (
        ("swiglu forward + backward, grad=None", fresh_grad),
        ("op bias backward", lambda: _ops.backward(g, y, bias, None, None, 1.0, 0.0)),
    ):
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(2000):
            fn()
        torch.cuda.synchronize()
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(20)
        print(f"== cProfile: {name}\n{text.getvalue()}")


if __name__ == "__main__":
    main()
