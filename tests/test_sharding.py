"""The ops on sharded arrays: equal to the unsharded results, with no needless communication.

Needs 8 devices. XLA fixes the number of simulated CPU devices when JAX starts its
backend, so the rest of the suite (one device: what most users run, and the single-device
exports of ``test_dispatch``) cannot share a process with these tests. When the process
has fewer than 8 devices, ``test_on_8_simulated_cpu_devices`` runs this module in a
subprocess with ``--xla_force_host_platform_device_count=8`` (and the run's seed), and
every other test skips; in that subprocess the tests run and the driver skips. On a
machine with 2 CUDA GPUs, ``test_two_gpus`` runs the real kernels across them.

"No needless communication" is read off the compiled program: row (token) sharding
and the stacked layout's hidden sharding need no all-gather, all-to-all or
collective-permute, forward or backward; an all-reduce only where a gradient is a sum
across shards (the bias gradient over tokens, the weights gradient over ``H``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from helpers import GPU_CUSTOM_CALLS, H100, VARIANTS, apply, make_inputs
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import swiglu_jax
from swiglu_jax import testing

DEVICES = 8
MOVES = ("all-gather", "all-to-all", "collective-permute")
needs_8 = pytest.mark.skipif(
    jax.device_count() < DEVICES, reason="run by test_on_8_simulated_cpu_devices"
)


@pytest.mark.skipif(jax.device_count() >= DEVICES, reason="this process has the devices")
def test_on_8_simulated_cpu_devices():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"
    # The same swiglu_jax as this process, wherever the subprocess starts.
    package_root = os.path.dirname(os.path.dirname(swiglu_jax.__file__))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert " passed" in result.stdout, result.stdout[-2000:]


def mesh(axis_type=AxisType.Auto):
    return jax.make_mesh((2, 2, 2), ("data", "seq", "model"), axis_types=(axis_type,) * 3)


def collectives(f, *args) -> set[str]:
    text = jax.jit(f).lower(*args).compile().as_text()
    return {c for c in (*MOVES, "all-reduce") if c in text}


def forward_and_vjp(variant, **options):
    """``f(y, bias, weights, g) -> (out, dy, dbias, dweights)``, absent ones dropped."""

    def f(y, bias, weights, g):
        out, vjp = jax.vjp(lambda *a: apply(variant, *a, **options), y, bias, weights)
        return out, *vjp(g)

    return f


def sharded_inputs(rng, variant, the_mesh, tokens, hidden, *, layout="split", dtype=jnp.float32):
    """Inputs of shape ``(4, 8, ...)``: ``y`` sharded as ``tokens`` and ``hidden`` say, the
    others to match (``bias`` and ``weights`` as a training step would hold them)."""
    y, bias, weights = make_inputs(rng, variant, (4, 8), hidden, dtype, layout=layout)
    hidden_axis = tokens[2] if len(tokens) > 2 else None
    pair = (None,) if layout == "stacked" else ()
    specs = {
        "y": P(*tokens[:2], *pair, hidden_axis),
        "bias": P(*pair, hidden_axis),
        "weights": P(*tokens[:2], None),
        "g": P(*tokens[:2], hidden_axis),
    }
    g = jnp.asarray(rng.standard_normal((4, 8, hidden)), dtype)
    arrays = {"y": y, "bias": bias, "weights": weights, "g": g}
    put = lambda k: (
        None if arrays[k] is None else jax.device_put(arrays[k], NamedSharding(the_mesh, specs[k]))
    )
    return (y, bias, weights, g), tuple(put(k) for k in ("y", "bias", "weights", "g")), specs


def assert_equal_to_unsharded(f, plain_args, sharded_args, the_mesh=None):
    expected = jax.jit(f)(*plain_args)
    with jax.set_mesh(the_mesh) if the_mesh else contextlib.nullcontext():
        actual = jax.jit(f)(*sharded_args)
    for name, a, e in zip(("out", "dy", "dbias", "dweights"), actual, expected, strict=False):
        if a is None:
            continue
        # Sums (the reduced gradients) may be ordered differently across shards.
        assert testing.relative_error(a, e) <= testing.tolerance(a.dtype, terms=1024), name
    return actual


def spec_of(x):
    spec = tuple(x.sharding.spec)
    return spec + (None,) * (x.ndim - len(spec))


ROW_SHARDINGS = [("data",), (None, "seq"), ("data", "seq"), (("data", "seq"),)]


@needs_8
@pytest.mark.parametrize("implementation", ["auto", "interpret", "xla"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("tokens", ROW_SHARDINGS, ids=str)
def test_row_sharding(rng, implementation, variant, tokens):
    """Sharded tokens compute shard-locally; only the bias gradient is all-reduced."""
    the_mesh = mesh()
    plain, sharded, _ = sharded_inputs(rng, variant, the_mesh, tokens, 64)
    f = forward_and_vjp(variant, implementation=implementation)
    out, dy, *_ = assert_equal_to_unsharded(f, plain, sharded)
    assert spec_of(out)[:2] == spec_of(sharded[0])[:2] and spec_of(dy) == spec_of(sharded[0])
    found = collectives(f, *sharded)
    assert not found & set(MOVES), found
    assert ("all-reduce" in found) == (variant in ("bias", "weighted_bias")), found
    forward_only = lambda *a: forward_and_vjp(variant, implementation=implementation)(*a)[0]
    assert not collectives(forward_only, *sharded)


@needs_8
@pytest.mark.parametrize("implementation", ["auto", "interpret", "xla"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("tokens", [(None, None, "model"), ("data", "seq", "model")], ids=str)
def test_tensor_parallel_stacked(rng, implementation, variant, tokens):
    """The stacked layout with H sharded: no data moves; the weights gradient (a sum over
    H) is all-reduced over the model axis, the bias gradient over the token axes."""
    the_mesh = mesh()
    plain, sharded, _ = sharded_inputs(rng, variant, the_mesh, tokens, 128, layout="stacked")
    f = forward_and_vjp(variant, layout="stacked", implementation=implementation)
    out, dy, *_ = assert_equal_to_unsharded(f, plain, sharded)
    assert spec_of(out)[-1] == "model" and spec_of(dy) == spec_of(sharded[0])
    found = collectives(f, *sharded)
    assert not found & set(MOVES), found
    needs_reduce = variant.startswith("weighted") or (variant == "bias" and tokens[0])
    assert ("all-reduce" in found) == bool(needs_reduce), found


@needs_8
@pytest.mark.parametrize("implementation", ["auto", "xla"])
def test_split_layout_with_sharded_hidden_is_correct(rng, implementation):
    """[gate | up] split over devices puts gate and up columns on different shards: XLA
    moves data, the results stay right."""
    the_mesh = mesh()
    plain, sharded, _ = sharded_inputs(rng, "weighted_bias", the_mesh, ("data", None, "model"), 64)
    f = forward_and_vjp("weighted_bias", implementation=implementation)
    assert_equal_to_unsharded(f, plain, sharded)


@needs_8
@pytest.mark.parametrize("implementation", ["auto", "interpret", "xla"])
@pytest.mark.parametrize(
    ("layout", "tokens"), [("split", ("data", "seq")), ("stacked", ("data", None, "model"))]
)
def test_explicit_sharding(rng, implementation, layout, tokens):
    """Meshes with Explicit axes (jax.make_mesh's default): the same, and each gradient
    has its primal's sharding type."""
    the_mesh = mesh(AxisType.Explicit)
    plain, sharded, _ = sharded_inputs(rng, "weighted_bias", the_mesh, tokens, 128, layout=layout)
    f = forward_and_vjp("weighted_bias", layout=layout, implementation=implementation)
    _, dy, dbias, dweights = assert_equal_to_unsharded(f, plain, sharded, the_mesh)
    with jax.set_mesh(the_mesh):
        found = collectives(f, *sharded)
    for grad, primal in zip((dy, dbias, dweights), sharded[:3], strict=True):
        assert jax.typeof(grad).sharding.spec == jax.typeof(primal).sharding.spec
    assert not found & set(MOVES), found


@needs_8
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_fp8_store_and_offload(rng, axis_type):
    the_mesh = mesh(axis_type)
    tokens = ("data", "seq", "model")
    plain, sharded, _ = sharded_inputs(
        rng, "weighted_bias", the_mesh, tokens, 128, layout="stacked"
    )
    options = dict(layout="stacked", fp8_input_store=True, cpu_offload_input=True)
    f = forward_and_vjp("weighted_bias", **options)
    assert_equal_to_unsharded(f, plain, sharded, the_mesh)
    with jax.set_mesh(the_mesh):
        assert not collectives(f, *sharded) & set(MOVES)


@needs_8
@pytest.mark.parametrize("implementation", ["auto", "interpret", "xla"])
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize(
    "tokens", [("data", "seq"), ("data", None, "model"), ("data", "seq", "model")], ids=str
)
def test_scaled_fp8_store(rng, implementation, axis_type, tokens):
    """The scaled store's row maxima span the hidden shards: an all-reduce of one float32
    per token in the forward where ``H`` is sharded, none otherwise, and no data moves;
    the results are the unsharded ones (a per-shard scale would round differently)."""
    the_mesh = mesh(axis_type)
    plain, sharded, _ = sharded_inputs(
        rng, "weighted_bias", the_mesh, tokens, 128, layout="stacked"
    )
    options = dict(layout="stacked", fp8_input_store="scaled", implementation=implementation)
    f = forward_and_vjp("weighted_bias", **options)
    assert_equal_to_unsharded(f, plain, sharded, the_mesh)
    with jax.set_mesh(the_mesh):
        assert not collectives(f, *sharded) & set(MOVES)

        def saved(y, bias, weights, g):  # the forward, with what it saves
            _, vjp = jax.vjp(lambda *a: apply("weighted_bias", *a, **options), y, bias, weights)
            return jax.tree.leaves(vjp)

        reduces = {"all-reduce"} if len(tokens) > 2 else set()
        assert collectives(saved, *sharded) == reduces


@needs_8
@pytest.mark.parametrize("implementation", ["interpret:tpu", "interpret:mosaic_gpu"])
def test_kernels_with_side_effects_stay_correct(rng, implementation):
    """The TPU and Mosaic GPU interpreters call back into Python in order, which
    custom_partitioning cannot hold: they run unpartitioned, and right."""
    the_mesh = mesh()
    plain, sharded, _ = sharded_inputs(
        rng, "bias", the_mesh, ("data", None, "model"), 128, layout="stacked"
    )
    f = forward_and_vjp("bias", layout="stacked", implementation=implementation)
    assert_equal_to_unsharded(f, plain, sharded)


@needs_8
def test_vmap_of_sharded_input(rng):
    the_mesh = mesh()
    plain, sharded, _ = sharded_inputs(rng, "bias", the_mesh, ("data", "seq"), 32)
    f = jax.vmap(forward_and_vjp("bias"), in_axes=(0, None, None, 0))
    assert_equal_to_unsharded(f, plain, sharded)


@needs_8
@pytest.mark.parametrize("platform", ["tpu", "cuda"])
@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_exported_sharded_for_accelerators(platform, axis_type):
    """A sharded program exported for TPU or CUDA from this host, on an abstract mesh,
    gets the platform's kernels inside a shard_map."""
    device = {"abstract_device": H100} if platform == "cuda" else {}
    the_mesh = jax.sharding.AbstractMesh((2, 4), ("data", "model"), (axis_type,) * 2, **device)
    f = forward_and_vjp("weighted_bias", layout="stacked")
    shapes = ((8, 2, 256), (2, 256), (8, 1), (8, 256))
    specs = (P("data", None, "model"), P(None, "model"), P("data"), P("data", "model"))
    with jax.sharding.use_abstract_mesh(the_mesh):
        args = [
            jax.ShapeDtypeStruct(s, jnp.bfloat16, sharding=NamedSharding(the_mesh, p))
            for s, p in zip(shapes, specs, strict=True)
        ]
        checks = [jax.export.DisabledSafetyCheck.custom_call(t) for t in GPU_CUSTOM_CALLS]
        exported = jax.export.export(jax.jit(f), platforms=[platform], disabled_checks=checks)
        text = exported(*args).mlir_module()
    assert ("tpu_custom_call" if platform == "tpu" else "triton") in text
    assert "sdy.manual_computation" in text or "shard_map" in text or "manual" in text


@pytest.mark.skipif(
    len([d for d in jax.devices() if d.platform == "gpu"]) < 2, reason="needs 2 CUDA GPUs"
)
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize(
    ("layout", "tokens"), [("split", ("data",)), ("stacked", (None, None, "model"))]
)
def test_two_gpus(rng, axis_type, layout, tokens):
    """The real kernels across 2 GPUs: rows over one axis, H over the other."""
    the_mesh = jax.make_mesh((2,), (tokens[-1],), axis_types=(axis_type,))
    plain, sharded, _ = sharded_inputs(
        rng, "weighted_bias", the_mesh, tokens, 1024, layout=layout, dtype=jnp.bfloat16
    )
    f = forward_and_vjp("weighted_bias", layout=layout, implementation="pallas")
    assert_equal_to_unsharded(f, plain, sharded, the_mesh)
    with jax.set_mesh(the_mesh):
        assert not collectives(f, *sharded) & set(MOVES)
