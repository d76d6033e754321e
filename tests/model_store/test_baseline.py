"""The paper's comparison: one separately trained network per (task, level), same size."""

from __future__ import annotations

import json
from pathlib import Path

from model_store.baseline import train_baselines
from model_store.checkpoint import read_manifest
from model_store.presets import get_preset


def test_train_baselines_on_the_tiny_checkpoint(trained_checkpoint_copy: Path) -> None:
    manifest = read_manifest(trained_checkpoint_copy)
    config = get_preset("tiny").model_copy(update={"epochs": 1})
    md = train_baselines(trained_checkpoint_copy, config, device="cpu", progress=False)
    assert md == trained_checkpoint_copy / "baseline.md"

    report = json.loads((trained_checkpoint_copy / "baseline.json").read_text())
    rows = report["rows"]
    expected = [(t.name, lv.level, lv.params) for t in manifest.tasks for lv in t.levels]
    assert [(r["task"], r["level"], r["params"]) for r in rows] == expected
    assert len(rows) == 8
    levels = [lv for t in manifest.tasks for lv in t.levels]
    for row, level in zip(rows, levels, strict=True):
        assert level.accuracy is not None
        assert row["dvn_accuracy"] == level.accuracy.value
        assert 0.0 <= row["separate_accuracy"] <= 1.0
    assert report["checkpoint"] == "tiny"
    weights = (trained_checkpoint_copy / "weights.safetensors").stat().st_size
    assert report["dvn_weights_bytes"] == weights
    assert report["separate_networks_bytes"] == 4 * sum(p for _, _, p in expected)
    assert report["memory_ratio"] == round(report["separate_networks_bytes"] / weights, 2)

    text = md.read_text()
    assert text.startswith("# DVN vs separate networks: tiny\n")
    for task, number, params in expected:
        assert f"| {task} | {number} | {params:,} | " in text
    assert "| digits | 4 | 5,266 | " in text
    assert (trained_checkpoint_copy / "baseline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The checkpoint itself is untouched.
    assert read_manifest(trained_checkpoint_copy) == manifest
