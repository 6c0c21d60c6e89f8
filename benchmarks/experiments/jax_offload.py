"""Experiment: does XLA on GPU keep a residual in host memory, and by which route?

    PYTHONPATH=. python3 benchmarks/experiments/jax_offload.py      (needs a GPU)
        [--variants NAME,NAME] [--xla-flags "xla_...=... ..."]... [--dump DIR]
        [--dump-variants NAME,NAME]
        [--layers 4] [--rows 8192] [--features 2048] [--hidden 5632]

benchmarks/memory.py found no host buffer in the compiled step with
``cpu_offload_input=True`` (our ``jax.device_put`` to ``Space.Host`` inside the custom
VJP's forward, back to ``Space.Device`` in its backward) and the same device
temporaries as without it. Compared here, for 4 layers of the same MLP, compiled memory
analysis, host buffers (``S(5)``) and ms per step:

- ``plain``: the op without offload;
- ``ours``: ``cpu_offload_input=True``;
- ``remat jnp``: a jnp SwiGLU under ``jax.checkpoint`` with JAX's offload policy for the
  named input (``save_and_offload_only_these_names``), the documented route;
- ``remat ours``: our op (no offload flag) under the same policy;
- ``vjp Space``: a custom VJP written here around ``swiglu``/``swiglu_back`` that puts the
  2-D input itself in ``Space.Host`` (no nested jit, no reshape, no tuple around the
  ``device_put``): tells whether the structure of ``swiglu_jax.ops`` is what loses it;
- ``vjp sharding``: the same with ``SingleDeviceSharding(memory_kind="pinned_host")`` /
  ``"device"`` as the targets and ``may_alias=False`` (an always-copy ``device_put``, as
  ``jax.checkpoint``'s offload uses);
- ``vjp bwd barrier``: ``vjp Space`` with the host residual and the cotangent through one
  ``lax.optimization_barrier`` before the copy back, so that the copy back cannot be
  scheduled before the backward reaches the layer;
- ``vjp barriers``: also the forward's output and the host copy through one barrier, so
  that the copy to host has finished (and the device buffer can be freed) before the next
  layer runs;
- ``ours bwd barrier`` / ``ours barriers``: ``cpu_offload_input=True`` with
  ``swiglu_jax.ops``' own custom VJP patched here (:func:`patched_core`) to add the same
  barriers: the change proposed for ops.py, tried on its real structure.

Why ``ours`` keeps nothing on the host: on GPU, XLA's HostOffloader turns ``MoveToHost``
-> ``MoveToDevice`` with nothing in between into ``copy`` (to ``S(5)``) -> ``copy`` (back
to ``S(0)``), and the algebraic simplifier right after it folds ``copy(copy(x))`` whose
shape (memory space included) is ``x``'s into ``x`` (``--dump``: ``S(5)`` 4 after
``host-offloader``, 0 after the next ``algsimp``). ``jax.checkpoint`` escapes it only
because its backward puts the residuals through an ``optimization_barrier``
(``prevent_cse``); so do the barrier variants here.

Measured (H200, jax 0.11.2, 4 layers, 704 MiB of saved inputs): ``plain``/``ours``/``vjp
Space``/``vjp sharding`` 1232 MiB device, no host buffer, 9.3 ms; ``vjp``/``ours bwd
barrier`` 1384 MiB device + 352 MiB host, 26.5 ms; ``vjp``/``ours barriers`` 1272 + 704,
33.9 ms (``remat jnp`` 1296 + 352, 27 ms). No device saving by default: with memory to
spare, the latency-hiding scheduler defers the weight-gradient matmuls to the end of the
backward and keeps every layer's ``dy`` alive instead. Under memory pressure
(``--xla-flags xla_gpu_memory_limit_slop_factor=1``: the scheduler's limit is 1% of the
device's memory) ``ours bwd barrier``, ``ours barriers`` and ``remat jnp`` fall to 920 MiB
device + 704 MiB host (-312 MiB) at 36 ms/step; ``plain`` and ``ours`` stay at 1232 MiB.
``xla_gpu_enable_host_memory_offloading=true`` changes nothing here (it only lets
rematerialization offload when over the limit).

``--xla-flags FLAGS`` (repeatable) re-runs the chosen variants in a child process with
``FLAGS`` appended to ``XLA_FLAGS`` (XLA reads it once, when the backend starts); give the
flags without their leading dashes (``--xla-flags "xla_a=1 xla_b=2"``), or as
``--xla-flags="--xla_a=1"``.
``--dump DIR`` compiles each of ``--dump-variants`` in a child process with XLA's per-pass HLO
dumps under ``DIR/<variant>`` and prints, pass by pass, where the counts of
``annotate_device_placement``, ``MoveToHost``/``MoveToDevice`` custom calls and ``S(5)``
buffers change: the pass that drops the offload.

Suggested GPU run (about a minute on an H200)::

    PYTHONPATH=. python3 benchmarks/experiments/jax_offload.py \
      --xla-flags xla_gpu_memory_limit_slop_factor=1 \
      --xla-flags xla_gpu_enable_host_memory_offloading=true \
      --dump /tmp/jax_offload_dump
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

import swiglu_jax as sj

sys.path.insert(0, str(Path(__file__).parent.parent))
import memory

SHAPE = (4, 8192, 2048, 5632)  # layers, rows, features, hidden
SMOKE_SHAPE = (2, 64, 32, 48)  # on CPU
POLICY = jax.checkpoint_policies.save_and_offload_only_these_names(
    names_which_can_be_saved=(),
    names_which_can_be_offloaded=("swiglu_input",),
    offload_src="device",
    offload_dst="pinned_host",
)


def jnp_swiglu(y):
    a, b = jnp.split(y.astype(jnp.float32), 2, axis=-1)
    return (jax.nn.silu(a) * b).astype(y.dtype)


def _targets(kind: str):
    """Where the residual goes in the forward, and where it comes back in the backward."""
    if kind == "space":
        return jax.memory.Space.Host, jax.memory.Space.Device
    device = jax.devices()[0]
    return (
        jax.sharding.SingleDeviceSharding(device, memory_kind="pinned_host"),
        jax.sharding.SingleDeviceSharding(device, memory_kind="device"),
    )


def offloaded_swiglu(target="space", may_alias=None, fwd_barrier=False, bwd_barrier=False):
    """``swiglu`` with its input saved in host memory by a custom VJP written here, the
    ``device_put`` directly on the saved value (``swiglu_jax.ops`` puts the ``(*L, 2, H)``
    view, in a tuple, inside a nested jit)."""
    host, device = _targets(target)

    @jax.custom_vjp
    def op(y):
        return sj.swiglu(y)

    def fwd(y):
        out = sj.swiglu(y)
        y_host = jax.device_put(y, host, may_alias=may_alias)
        if fwd_barrier:  # the next layer waits for the copy to host
            out, y_host = jax.lax.optimization_barrier((out, y_host))
        return out, y_host

    def bwd(y_host, g):
        if bwd_barrier:  # no copy back before the cotangent exists
            y_host, g = jax.lax.optimization_barrier((y_host, g))
        y = jax.device_put(y_host, device, may_alias=may_alias)
        return (sj.swiglu_back(g, y),)

    op.defvjp(fwd, bwd)
    return op


def _remat(op):
    @functools.partial(jax.checkpoint, policy=POLICY)
    def layer(x, up, down):
        return op(checkpoint_name(x @ up, "swiglu_input")) @ down

    return layer


def _plain(op):
    return lambda x, up, down: op(x @ up) @ down


VARIANTS = {
    "plain": lambda: _plain(sj.swiglu),
    "ours": lambda: _plain(functools.partial(sj.swiglu, cpu_offload_input=True)),
    "remat jnp": lambda: _remat(jnp_swiglu),
    "remat ours": lambda: _remat(sj.swiglu),
    "vjp Space": lambda: _plain(offloaded_swiglu("space")),
    "vjp sharding": lambda: _plain(offloaded_swiglu("sharding", may_alias=False)),
    "vjp bwd barrier": lambda: _plain(offloaded_swiglu("space", bwd_barrier=True)),
    "vjp barriers": lambda: _plain(offloaded_swiglu("space", fwd_barrier=True, bwd_barrier=True)),
    "ours bwd barrier": lambda: _plain(functools.partial(sj.swiglu, cpu_offload_input=True)),
    "ours barriers": lambda: _plain(functools.partial(sj.swiglu, cpu_offload_input=True)),
}
# Variants that run swiglu_jax.ops' own custom VJP with barriers added around it (the
# change proposed for ops.py): (forward barrier, backward barrier).
PATCHED = {"ours bwd barrier": (False, True), "ours barriers": (True, True)}


@contextlib.contextmanager
def patched_core(fwd_barrier: bool, bwd_barrier: bool):
    """``swiglu_jax.ops._swiglu_core`` with its residual (host memory under
    ``cpu_offload_input``) put through ``lax.optimization_barrier``: in the forward with the
    output, in the backward with the cotangent, before ``_swiglu_core_bwd``'s copy back.
    The custom VJP reads ``fwd``/``bwd`` when it is called, so the caches (the nested
    ``jax.jit`` in ops.py) are cleared on the way in and out."""
    core = sj.ops._swiglu_core
    original_fwd, original_bwd = core.fwd, core.bwd

    def fwd(y, bias, weights, opts):
        out, (saved, bias_, weights_) = original_fwd(y, bias, weights, opts)
        if fwd_barrier:
            out, saved = jax.lax.optimization_barrier((out, saved))
        return out, (saved, bias_, weights_)

    def bwd(opts, residuals, g):
        saved, bias, weights = residuals
        if bwd_barrier:
            saved, g = jax.lax.optimization_barrier((saved, g))
        return original_bwd(opts, (saved, bias, weights), g)

    jax.clear_caches()
    core.fwd, core.bwd = fwd, bwd
    try:
        yield
    finally:
        core.fwd, core.bwd = original_fwd, original_bwd
        jax.clear_caches()


def step(variant):
    layer = VARIANTS[variant]()

    def loss(weights, x):
        for up, down in weights:
            x = layer(x, up, down)
        return jnp.sum(jnp.square(x.astype(jnp.float32)))

    return jax.jit(jax.grad(loss))


def measure(variant, weights, x, timed=True):
    patch = patched_core(*PATCHED[variant]) if variant in PATCHED else contextlib.nullcontext()
    try:
        with patch:
            lowered = step(variant).lower(weights, x)
            compiled = lowered.compile()
    except Exception as error:
        print(f"{variant:16} failed: {type(error).__name__}: {str(error)[:300]}", flush=True)
        return
    analysis = compiled.memory_analysis()
    text = compiled.as_text()
    ms = float("nan")
    if timed:
        jax.block_until_ready(compiled(weights, x))
        start = time.perf_counter()
        for _ in range(5):
            out = compiled(weights, x)
        jax.block_until_ready(out)
        ms = (time.perf_counter() - start) / 5 * 1e3
    hlo = lowered.as_text()
    print(
        f"{variant:16} device temp {analysis.temp_size_in_bytes / 2**20:8.1f} MiB  "
        f"host temp {getattr(analysis, 'host_temp_size_in_bytes', 0) / 2**20:8.1f} MiB  "
        f"S(5) {text.count('S(5)'):3}  MoveToHost {text.count('MoveToHost'):2}  "
        f"{ms:6.1f} ms/step  (lowered: annotate_device_placement "
        f"{hlo.count('annotate_device_placement')}, pinned_host {hlo.count('pinned_host')})",
        flush=True,
    )


def _child(args, variants, extra_flags="", extra=()):
    """This script again, in a fresh process with ``extra_flags`` appended to XLA_FLAGS."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {extra_flags}".strip()
    # This process holds the default 75% of the GPU's memory: the child takes a slice.
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.15")
    command = [sys.executable, __file__, "--child", "--variants", ",".join(variants)]
    command += ["--layers", str(args.layers), "--rows", str(args.rows)]
    command += ["--features", str(args.features), "--hidden", str(args.hidden), *extra]
    sys.stdout.flush()
    done = subprocess.run(command, env=env, check=False)
    if done.returncode:
        print(f"  (child exited with {done.returncode})", flush=True)


_COUNTED = ("annotate_device_placement", "MoveToHost", "MoveToDevice", "S(5)")


def summarize_dump(directory: Path):
    """Pass by pass, the counts of ``_COUNTED`` in the dumps of the training step's module
    (``jit_loss``), printed where they change."""
    files = [f for f in directory.glob("module_*.jit_loss.*.txt") if ".after_" in f.name]
    files += directory.glob("module_*.jit_loss.before_optimizations.txt")
    # Module by module; in each, the module as lowered first, then the passes in order.
    files.sort(key=lambda f: (f.name.split(".")[0], "before_optimizations" not in f.name, f.name))
    last = None
    for f in files:
        text = f.read_text(errors="replace")
        counts = tuple(text.count(c) for c in _COUNTED)
        if counts != last:
            name = re.sub(r"^module_\d+\.jit_loss\.", "", f.name)
            cells = "  ".join(f"{c} {n:3}" for c, n in zip(_COUNTED, counts, strict=True))
            print(f"    {cells}  {name}", flush=True)
            last = counts
    if not files:
        print(f"    no jit_loss dumps under {directory}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    on_cpu = jax.default_backend() == "cpu"  # a smoke run
    layers, rows, features, hidden = SMOKE_SHAPE if on_cpu else SHAPE
    parser.add_argument("--layers", type=int, default=layers)
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--features", type=int, default=features)
    parser.add_argument("--hidden", type=int, default=hidden)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument(
        "--xla-flags",
        action="append",
        default=[],
        help="re-run the variants in a child process with these appended to XLA_FLAGS",
    )
    parser.add_argument("--dump", help="per-pass HLO dumps under DIR (see --dump-variants)")
    parser.add_argument("--dump-variants", default="ours,ours bwd barrier", help="for --dump")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    dumped = [v.strip() for v in args.dump_variants.split(",") if v.strip()]
    unknown = [v for v in variants + dumped if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")

    _, (weights, x) = memory.jax_step(args.layers, args.rows, args.features, args.hidden, {})
    if not args.child:
        saved = args.layers * args.rows * 2 * args.hidden * 2 / 2**20
        print(
            f"{jax.devices()[0].device_kind}, jax {jax.__version__}, "
            f"{args.layers}x({args.rows}, {args.features}->{2 * args.hidden}) "
            f"saved inputs: {saved:.0f} MiB",
            flush=True,
        )
    if os.environ.get("XLA_FLAGS") and args.child:
        print(f"XLA_FLAGS={os.environ['XLA_FLAGS']}", flush=True)
    for variant in variants:
        measure(variant, weights, x, timed=not args.compile_only)
    if args.child:
        return
    for flags in args.xla_flags:
        # "xla_a=1 xla_b" or "--xla_a=1 --xla_b" (the latter needs --xla-flags="...").
        flags = " ".join(f if f.startswith("-") else f"--{f}" for f in flags.split())
        print(f"--- with XLA_FLAGS += {flags}", flush=True)
        _child(args, variants, flags)
    if args.dump:
        for variant in dumped:
            directory = Path(args.dump) / re.sub(r"\W+", "_", variant)
            directory.mkdir(parents=True, exist_ok=True)
            print(f"--- per-pass counts for {variant} (dumps in {directory})", flush=True)
            flags = f"--xla_dump_to={directory} --xla_dump_hlo_pass_re=.*"
            _child(args, [variant], flags, ("--compile-only",))
            summarize_dump(directory)


if __name__ == "__main__":
    main()
