"""The README's main job runs end to end and reports every part as passed."""

from __future__ import annotations

import importlib.util

from swiglu_jax import demo


def test_demo_runs_and_passes(capsys):
    assert demo.main(["--rows", "33", "--hidden", "40", "--seed", "0", "--quick"]) == 0
    output = capsys.readouterr().out
    assert "All checks passed." in output and "FAILED" not in output
    if importlib.util.find_spec("flax") is not None:
        assert "Flax NNX" in output
    if importlib.util.find_spec("torch") is not None:
        assert "through torch_bridge and natively" in output
