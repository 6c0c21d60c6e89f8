"""The benchmark command runs end to end on this host (XLA only; wall-clock timing)."""

from __future__ import annotations

import json
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from swiglu_jax import bench, testing


def test_minimum_bytes():
    assert bench.minimum_bytes("fwd", 8, 16, 2) == 3 * 8 * 16 * 2
    assert bench.minimum_bytes("bwd", 8, 16, 2) == 5 * 8 * 16 * 2
    assert bench.minimum_bytes("fp8_fwd", 8, 16, 2) == 3 * 8 * 16 * 2 + 2 * 8 * 16
    assert bench.minimum_bytes("scaled_fp8_fwd", 8, 16, 2) == 3 * 8 * 16 * 2 + 2 * 8 * 16 + 4 * 8
    assert bench.minimum_bytes("weighted_bwd", 8, 16, 4) == 5 * 8 * 16 * 4 + 2 * 8 * 4
    assert bench.minimum_bytes("clamp_fwd", 8, 16, 2) == bench.minimum_bytes("fwd", 8, 16, 2)
    assert bench.minimum_bytes("clamp_bwd", 8, 16, 2) == bench.minimum_bytes("bwd", 8, 16, 2)


def test_input_sets_cycle_the_rotation_within_bounds():
    floor = bench.minimum_bytes("fwd", 4096, 2048, 2)
    assert bench.input_sets(floor) * floor >= bench.ROTATION_BYTES
    assert (bench.input_sets(floor) - 1) * floor < bench.ROTATION_BYTES
    assert bench.input_sets(bench.ROTATION_BYTES) == 2
    assert bench.input_sets(1536) == bench.MAX_INPUT_SETS
    sizes = bench.SIZES["full"]
    assert max(bench.input_sets(bench.minimum_bytes("fwd", n, h, 2)) for n, h in sizes) <= 11


def test_parse_sizes():
    assert bench.parse_sizes("4096x4096,8x6") == [(4096, 2048), (8, 3)]
    assert bench.parse_sizes("quick") == bench.SIZES["quick"]
    with pytest.raises(ValueError, match="2H must be even"):
        bench.parse_sizes("8x5")


def test_runs_and_writes_results(tmp_path, capsys):
    args = [
        "--sizes",
        "64x256",
        "--dtypes",
        "float32",
        "--impls",
        "xla",
        "--iters",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    records = result["results"]
    assert {r["op"] for r in records} == set(bench.OPS)
    assert all(r["us"] > 0 and r["implementation"] == "xla" for r in records)
    assert all(r["vs_best_peer"] == pytest.approx(1.0) for r in records)
    output = capsys.readouterr().out
    assert "% of copy" in output and "vs best peer" in output
    assert (tmp_path / "bench-summary.md").read_text() == bench.summary(result)
    pytest.importorskip("matplotlib")
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_jax_leaves_the_gpu_memory_to_the_peers(tmp_path, monkeypatch):
    """Unless the caller says otherwise: JAX would preallocate 75% of it."""
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    args = ["--sizes", "8x32", "--dtypes", "float32", "--ops", "fwd", "--impls", "xla"]
    assert bench.main([*args, "--iters", "2", "--out", str(tmp_path)]) == 0
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")
    assert bench.main([*args, "--iters", "2", "--out", str(tmp_path)]) == 0
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"


def test_summary_quotes_ours_against_the_best_peer():
    def record(implementation, ours, rows, us, pct):
        return {"op": "fwd", "dtype": "bfloat16", "rows": rows, "two_h": 256, "us": us,
                "implementation": implementation, "ours": ours, "pct_copy": pct}  # fmt: skip

    result = {
        "copy_GBps": 3000.0,
        "results": [
            record("swiglu_jax:triton", True, 64, 10.0, 90.0),
            record("torch_bridge", True, 64, 11.0, 81.8),
            record("xla", False, 64, 12.0, 75.0),
            record("liger", False, 64, 20.0, 45.0),
            record("swiglu_jax:triton", True, 128, 16.0, 95.0),
            record("xla", False, 128, 15.0, 101.3),
            {**record(bench.SAME_COPY, False, 128, 14.0, 108.6), "floor": True},
            {
                "op": "fwd",
                "dtype": "bfloat16",
                "rows": 128,
                "two_h": 256,
                "ours": False,
                "implementation": "liger",
                "error": "OutOfMemoryError",
            },
        ],
    }
    bench._add_ratios(result["results"])
    lines = bench.summary(result).splitlines()
    # The same-size copy is no peer: the best peer at 128 rows is still XLA.
    assert "| fwd | bfloat16 | 64x256 | 90.0 | 81.8 | 1.20 | xla (75.0) | - |" in lines
    assert "| fwd | bfloat16 | 128x256 | 95.0 | - | 0.94 | xla (101.3) | 108.6 |" in lines
    assert lines[-1] == "| fwd | bfloat16 | 90.0-95.0 | 0.94-1.20 | 87.5-87.5 |"


def test_same_size_copy_moves_the_op_bytes_and_is_no_peer(monkeypatch):
    """The copy reads and writes the op's minimum bytes from rotated sets of random data;
    our rows get their % of it, and no row's ratio to the best peer counts it."""
    torch = pytest.importorskip("torch")
    fn, inputs, sync = bench._same_copy_candidate()("bwd", 8, 16, "float32", 3)
    assert len(inputs) == 3
    monkeypatch.setattr(bench, "ROTATION_BYTES", 4096)  # one set of 10 KB suffices:
    assert len(bench._same_copy_candidate()("bwd", 32, 16, "float32", 2)[1]) == 1
    monkeypatch.undo()
    for src, _ in inputs:
        assert 2 * src.numel() * src.element_size() == bench.minimum_bytes("bwd", 8, 16, 4)
        assert torch.count_nonzero(src) == src.numel()
    src, dst = inputs[1]
    sync(fn(src, dst))
    assert torch.equal(dst, src)

    result = bench.run([(8, 16)], ["float32"], ["bwd"], ["xla", bench.SAME_COPY], 2, print)
    xla, copy = result["results"]
    assert copy["floor"] and copy["vs_best_peer"] is None and xla["vs_best_peer"] == 1.0
    assert "pct_same_copy" not in xla  # XLA is a peer; ours would carry it:
    ours = {**xla, "implementation": "swiglu_jax:xla", "ours": True, "floor": False}
    records = [ours, copy]
    bench._add_ratios(records)
    assert records[0]["pct_same_copy"] == pytest.approx(100 * copy["us"] / xla["us"])


def test_torch_cache_is_released_after_every_candidate(monkeypatch):
    """Even after a failure: the next candidate's tensors need the memory."""
    import types

    released = []
    cuda = types.SimpleNamespace(is_available=lambda: True, empty_cache=lambda: released.append(1))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(bench, "_profiler", lambda: None)  # the fake has no profiler

    def fails(*_):
        raise MemoryError("out of memory")

    broken, original = bench.Candidate("broken", False, fails), bench.candidates
    monkeypatch.setattr(bench, "candidates", lambda: [broken, *original()])
    result = bench.run([(8, 16)], ["float32"], ["fwd", "bwd"], ["broken", "xla"], 2, print)
    assert [("error" in r) for r in result["results"]] == [True, False, True, False]
    assert len(released) == 4


def test_missing_peers_are_reported_not_fatal(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "transformer_engine_torch" else real(name, *a),
    )
    result = bench.run([(8, 16)], ["float32"], ["fwd"], ["xla", "transformer engine"], 2, print)
    assert result["skipped"] == {"transformer engine": "transformer_engine_torch is not installed"}
    assert [r["implementation"] for r in result["results"]] == ["xla"]


def test_peers_scaled_fp8_copy_is_ours():
    """The peers' scaled fp8 copy (XLA and torch formulas) is the same computation as
    ``fp8_input_store="scaled"`` on ordinary inputs, bit for bit."""
    import jax

    y = 3 * jax.random.normal(jax.random.key(0), (16, 64), jnp.bfloat16)
    expected_q, expected_scale = testing.fp8_scaled_cast(np.asarray(y))
    q, scale = bench._jnp_scaled_fp8(y)
    np.testing.assert_array_equal(np.asarray(scale), expected_scale)
    np.testing.assert_array_equal(np.asarray(q).view(np.uint8), expected_q.view(np.uint8))
    torch = pytest.importorskip("torch")
    q, scale = bench._torch_scaled_fp8(torch, torch.from_numpy(np.asarray(y, np.float32)))
    np.testing.assert_array_equal(scale.numpy(), expected_scale)
    np.testing.assert_array_equal(q.view(torch.uint8).numpy(), expected_q.view(np.uint8))


# The ops whose every output the float64 reference gives, and how: (reference options,
# the outputs' names in the op's order).
CHECKED_OPS = {
    "fwd": ({}, ("out",)),
    "bwd": ({}, ("y",)),
    "bias_bwd": ({}, ("y", "bias")),
    "weighted_bwd": ({}, ("y", "weights")),
    "clamp_fwd": (bench.GPT_OSS, ("out",)),
    "clamp_bwd": (bench.GPT_OSS, ("y",)),
}


def _op_inputs(rng, op, rows=24, hidden=40):
    """float32 inputs of ``op`` as NumPy arrays, ``y`` wide enough that GPT-OSS's clamp
    of 7 cuts some of it."""
    y = 4 * rng.standard_normal((rows, 2 * hidden))
    g = rng.standard_normal((rows, hidden))
    extra = {
        "bias_bwd": (rng.standard_normal(2 * hidden),),
        "weighted_bwd": (rng.random((rows, 1)),),
    }
    arrays = (y,) if op in bench.FORWARD_OPS else (g, y, *extra.get(op, ()))
    return [a.astype("float32") for a in arrays]


def _expected(op, arrays):
    options, names = CHECKED_OPS[op]
    if op in bench.FORWARD_OPS:
        return {"out": (testing.swiglu_forward(arrays[0], **options), None)}, names
    g, y, *rest = arrays
    bias = rest[0] if op == "bias_bwd" else None
    weights = rest[0] if op == "weighted_bwd" else None
    grads = testing.swiglu_backward(g, y, bias, weights, **options)
    scales = testing.swiglu_backward(g, y, bias, weights, magnitudes=True, **options)
    return {k: (v, scales[k]) for k, v in grads.items()}, names


def _check_outputs(op, outputs, expected, names):
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    assert len(outputs) == len(names), op
    for name, actual in zip(names, outputs, strict=True):
        value, scale = expected[name]
        actual = np.asarray(actual, np.float64).reshape(value.shape)
        error = testing.relative_error(actual, value, scale)
        assert error <= 5e-6, (op, name, error)


@pytest.mark.parametrize("op", CHECKED_OPS)
def test_candidates_compute_the_op(rng, op):
    """What the benchmark times is the op: ours (the XLA implementation on this host),
    XLA's jnp specification and the torch formulas (Megatron's, GPT-OSS's for the clamp)
    against the float64 reference."""
    arrays = _op_inputs(rng, op)
    expected, names = _expected(op, arrays)
    jax_args = [jnp.asarray(a) for a in arrays]
    _check_outputs(op, bench._ours("xla", op)(*jax_args), expected, names)
    _check_outputs(op, bench._xla(op)(*jax_args), expected, names)
    torch = pytest.importorskip("torch")
    formulas = bench._megatron_formulas(torch)
    outputs = formulas[op](*(torch.from_numpy(a) for a in arrays))
    outputs = [o.detach() for o in (outputs if isinstance(outputs, tuple) else (outputs,))]
    _check_outputs(op, tuple(o.numpy() for o in outputs), expected, names)


def test_peers_without_a_kernel_say_so():
    """Liger has no clamp: its clamp rows carry that error, not a crash or a wrong op."""
    torch = pytest.importorskip("torch")
    ops = bench._composed(torch, lambda y: y, lambda g, y: y)
    assert "clamp_fwd" not in ops and "clamp_bwd" not in ops
    with_clamp = bench._composed(torch, None, None, clamped=("f", "b"))
    assert with_clamp["clamp_fwd"] == "f" and with_clamp["clamp_bwd"] == "b"
