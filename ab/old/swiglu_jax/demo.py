"""The main job: every op run on this machine and checked against the float64 reference,
then a Flax MLP trained through the ops, the PyTorch bridge beside native torch, and the
speed.

    python -m swiglu_jax.demo [--rows N] [--hidden H] [--seed S] [--quick]

Prints what it runs on, a table of forward and gradient errors (relative norm error
against the NumPy float64 reference, next to the dtype's tolerance), a short Flax NNX
training run (when Flax is installed), a torch MLP trained through ``torch_bridge`` and
with native torch from the same weights (when torch is installed), and the time of
jitted calls: on a GPU the benchmark's table against the peers, on a CPU the wall-clock.
Exits with status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import swiglu_jax as sj
from swiglu_jax import testing

GPT_OSS = {"clamp_value": 7.0, "alpha": 1.702, "linear_offset": 1.0}

# name -> (uses bias, uses weights, options)
CASES: dict[str, tuple[bool, bool, dict]] = {
    "swiglu": (False, False, {}),
    "bias_swiglu": (True, False, {}),
    "weighted_swiglu": (False, True, {}),
    "weighted_swiglu + bias": (True, True, {}),
    "swiglu, clamp_value=1": (False, False, {"clamp_value": 1.0}),
    "swiglu, GPT-OSS": (False, False, GPT_OSS),
    "swiglu, fp8 input store": (False, False, {"fp8_input_store": True}),
    "swiglu, scaled fp8 store": (False, False, {"fp8_input_store": "scaled"}),
    "bias_swiglu, stacked layout": (True, False, {"layout": "stacked"}),
}


def _inputs(rng, rows, hidden, dtype, with_bias, with_weights, layout):
    row = (2, hidden) if layout == "stacked" else (2 * hidden,)
    args = {"y": jnp.asarray(2 * rng.standard_normal((rows, *row)), dtype)}
    if with_bias:
        args["bias"] = jnp.asarray(rng.standard_normal(row), dtype)
    if with_weights:
        args["weights"] = jnp.asarray(rng.uniform(size=(rows, 1)), jnp.float32)
    return args


def _op(args, options):
    if "weights" in args:
        return sj.weighted_swiglu(args["y"], args["weights"], bias=args.get("bias"), **options)
    if "bias" in args:
        return sj.bias_swiglu(args["y"], args["bias"], **options)
    return sj.swiglu(args["y"], **options)


def check(name, rng, rows, hidden, dtype) -> tuple[float, float, bool]:
    """Forward and gradient errors of one case, and whether both are within tolerance."""
    with_bias, with_weights, options = CASES[name]
    args = _inputs(rng, rows, hidden, dtype, with_bias, with_weights, options.get("layout"))
    out, vjp = jax.jit(lambda a: jax.vjp(lambda a: _op(a, options), a))(args)
    g = jnp.asarray(rng.standard_normal(out.shape), out.dtype)
    grads = jax.jit(lambda v, g: v(g)[0])(vjp, g)
    ref = {k: v for k, v in options.items() if k != "fp8_input_store"}
    expected = testing.swiglu_forward(args["y"], args.get("bias"), args.get("weights"), **ref)
    errors = testing.gradient_errors(
        grads,
        g,
        args["y"],
        args.get("bias"),
        args.get("weights"),
        fp8_input_store=options.get("fp8_input_store", False),
        **ref,
    )
    fwd_error = testing.relative_error(out, expected)
    ok = fwd_error <= testing.tolerance(dtype)
    grad_error = 0.0
    for error, tolerance in errors.values():
        grad_error = max(grad_error, error)
        ok &= error <= tolerance
    return fwd_error, grad_error, ok


def _wall_time(fn: Callable, *args, repeats: int = 20) -> float:
    """Median seconds per call of a jitted ``fn``, after a warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def speed(rng, rows, hidden, dtype) -> list[tuple[str, str, float, float]]:
    """(implementation, direction, microseconds, GB/s of the minimum bytes) for jitted
    forward and backward calls: "auto" (the kernels on GPU and TPU), and "xla" beside
    it where "auto" means kernels."""
    y = jnp.asarray(rng.standard_normal((rows, 2 * hidden)), dtype)
    g = jnp.asarray(rng.standard_normal((rows, hidden)), dtype)
    element = jnp.dtype(dtype).itemsize
    implementations = ["auto"] if jax.default_backend() == "cpu" else ["auto", "xla"]
    results = []
    for impl in implementations:
        forward = jax.jit(lambda y, impl=impl: sj.swiglu(y, implementation=impl))
        backward = jax.jit(lambda g, y, impl=impl: sj.swiglu_back(g, y, implementation=impl))
        for direction, fn, args, elements in (
            ("forward", forward, (y,), 3 * rows * hidden),
            ("backward", backward, (g, y), 5 * rows * hidden),
        ):
            seconds = _wall_time(fn, *args)
            results.append((impl, direction, seconds * 1e6, elements * element / seconds / 1e9))
    return results


def flax_training(seed: int, steps: int = 200) -> bool | None:
    """Trains a two-block SwiGLU MLP (Flax NNX, optax) on a made-up regression task;
    ``None`` without Flax, else whether the loss fell at least fourfold."""
    try:
        import optax
        from flax import nnx

        from swiglu_jax.nn import SwiGLUMLP
    except ImportError:
        print("\n(Flax is not installed: `bash scripts/setup.sh flax` adds the Flax run.)")
        return None
    rng = np.random.default_rng(seed)
    features = 16
    x = jnp.asarray(rng.standard_normal((1024, features)), jnp.float32)
    teacher = jnp.asarray(rng.standard_normal((features, features)) / 4, jnp.float32)
    target = jnp.sin(x @ teacher)
    model = SwiGLUMLP(features, 64, use_bias=True, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, target):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - target) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    print(f"\nFlax NNX: swiglu_jax.nn.SwiGLUMLP({features}, 64) trained with Adam, MSE:")
    losses = []
    for i in range(steps):
        batch = rng.choice(len(x), 128, replace=False)
        losses.append(float(step(model, optimizer, x[batch], target[batch])))
        if i % 40 == 0 or i == steps - 1:
            print(f"  step {i:4d}  loss {losses[-1]:.4f}")
    ok = losses[-1] < losses[0] / 4
    print(f"  {'ok' if ok else 'FAILED'}: {losses[0]:.3f} -> {losses[-1]:.4f}")
    return ok


def torch_bridge_training(seed: int, steps: int = 60) -> bool | None:
    """A torch MLP trained twice from the same weights, through ``torch_bridge`` and with
    native torch; ``None`` without torch, else whether the loss curves agree."""
    try:
        import torch

        import torch_bridge as tb
    except ImportError:
        print("\n(torch is not installed: `bash scripts/setup.sh torch` adds the bridge run.)")
        return None
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(1024, 16, device=device)
    target = torch.sin(x @ torch.randn(16, 16, device=device) / 4)
    up = torch.randn(16, 128, device=device) / 4
    down = torch.randn(64, 16, device=device) / 8

    def train(activation):
        params = [up.clone().requires_grad_(), down.clone().requires_grad_()]
        optimizer = torch.optim.Adam(params, lr=3e-3)
        losses = []
        for _ in range(steps):
            loss = torch.mean((activation(x @ params[0]) @ params[1] - target) ** 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    def native(y):
        a, b = torch.chunk(y, 2, dim=-1)
        return torch.nn.functional.silu(a) * b

    bridged, reference = train(tb.swiglu), train(native)
    gap = max(abs(a - b) / b for a, b in zip(bridged, reference, strict=True))
    ok = gap < 1e-3
    print(f"\nPyTorch ({device}): the same MLP trained through torch_bridge and natively:")
    print(f"  loss {reference[0]:.4f} -> bridge {bridged[-1]:.4f}, native {reference[-1]:.4f}")
    print(f"  {'ok' if ok else 'FAILED'}: largest relative gap between the curves {gap:.1e}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=257, help="tokens per check (default 257)")
    parser.add_argument("--hidden", type=int, default=344, help="H of the checks (default 344)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes for the timing (a smoke test)"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)

    device = jax.devices()[0]
    print(
        f"swiglu-jax {sj.__version__} on jax {jax.__version__}, backend "
        f"{jax.default_backend()} ({device.device_kind}), seed {seed}"
    )
    print(
        f"\nChecks against the float64 NumPy reference, y of shape "
        f"({args.rows}, 2*{args.hidden}); relative norm errors, forward and worst gradient:\n"
    )
    header = f"{'op':<30} {'dtype':<9} {'forward':>9} {'gradient':>9} {'tolerance':>9}  result"
    print(header)
    print("-" * len(header))
    failures = 0
    for name in CASES:
        for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
            fwd, grad, ok = check(name, rng, args.rows, args.hidden, dtype)
            failures += not ok
            dtype_name = jnp.dtype(dtype).name
            print(
                f"{name:<30} {dtype_name:<9} {fwd:9.2e} {grad:9.2e} "
                f"{testing.tolerance(dtype):9.0e}  {'ok' if ok else 'FAILED'}"
            )

    failures += flax_training(seed) is False
    failures += torch_bridge_training(seed) is False

    if jax.default_backend() == "gpu" and not args.quick:
        from swiglu_jax import bench

        print("\nThe benchmark against the peers (python -m swiglu_jax.bench):")
        bench.main(["--sizes", "quick", "--dtypes", "bfloat16", "--out", "bench-results"])
    rows, hidden = (4096, 2048) if jax.default_backend() == "cpu" else (8192, 14336)
    if args.quick:
        rows, hidden = 256, 256
    print(
        f"\nWall-clock per jitted call on {device.device_kind}, y of shape ({rows}, 2*{hidden}),"
        f" bfloat16 (GB/s of the minimum bytes moved):\n"
    )
    for impl, direction, micros, gbps in speed(rng, rows, hidden, jnp.bfloat16):
        print(f"  {impl:<5} {direction:<9} {micros:10.1f} us {gbps:8.1f} GB/s")

    print(f"\n{'All checks passed.' if not failures else f'{failures} checks FAILED.'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
