"""The benchmark command runs end to end on this host (XLA only; wall-clock timing)."""

from __future__ import annotations

import json

import pytest

from swiglu_jax import bench


def test_minimum_bytes():
    assert bench.minimum_bytes("fwd", 8, 16, 2) == 3 * 8 * 16 * 2
    assert bench.minimum_bytes("bwd", 8, 16, 2) == 5 * 8 * 16 * 2
    assert bench.minimum_bytes("fp8_fwd", 8, 16, 2) == 3 * 8 * 16 * 2 + 2 * 8 * 16
    assert bench.minimum_bytes("scaled_fp8_fwd", 8, 16, 2) == 3 * 8 * 16 * 2 + 2 * 8 * 16 + 4 * 8
    assert bench.minimum_bytes("weighted_bwd", 8, 16, 4) == 5 * 8 * 16 * 4 + 2 * 8 * 4


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
    pytest.importorskip("matplotlib")
    assert (tmp_path / "bench.png").stat().st_size > 0


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
    import jax.numpy as jnp
    import numpy as np

    from swiglu_jax import testing

    y = 3 * jax.random.normal(jax.random.key(0), (16, 64), jnp.bfloat16)
    expected_q, expected_scale = testing.fp8_scaled_cast(np.asarray(y))
    q, scale = bench._jnp_scaled_fp8(y)
    np.testing.assert_array_equal(np.asarray(scale), expected_scale)
    np.testing.assert_array_equal(np.asarray(q).view(np.uint8), expected_q.view(np.uint8))
    torch = pytest.importorskip("torch")
    q, scale = bench._torch_scaled_fp8(torch, torch.from_numpy(np.asarray(y, np.float32)))
    np.testing.assert_array_equal(scale.numpy(), expected_scale)
    np.testing.assert_array_equal(q.view(torch.uint8).numpy(), expected_q.view(np.uint8))
