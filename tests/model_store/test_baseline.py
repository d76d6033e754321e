"""The paper's comparison: one separately trained network per (task, level), same size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_store.baseline import train_baselines, train_separate, write_comparison
from model_store.manifest import read_manifest
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


def test_write_comparison_joins_separate_rows_with_the_checkpoint(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(trained_checkpoint)
    separate = [
        {"task": t.name, "level": lv.level, "params": lv.params, "separate_accuracy": 0.5}
        for t in manifest.tasks
        for lv in t.levels
    ]
    md = write_comparison(trained_checkpoint, separate, tmp_path / "docs")
    assert md == tmp_path / "docs" / "baseline.md"
    rows = json.loads((tmp_path / "docs" / "baseline.json").read_text())["rows"]
    assert [r["separate_accuracy"] for r in rows] == [0.5] * 8
    digits = manifest.tasks[0].levels[0]
    assert digits.accuracy is not None
    assert rows[0]["dvn_accuracy"] == digits.accuracy.value


def test_write_comparison_refuses_networks_of_another_size(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(trained_checkpoint)
    separate = [
        {"task": t.name, "level": lv.level, "params": lv.params + 1, "separate_accuracy": 0.5}
        for t in manifest.tasks
        for lv in t.levels
    ]
    first = manifest.tasks[0].levels[0]
    with pytest.raises(ValueError) as info:
        write_comparison(trained_checkpoint, separate, tmp_path)
    assert str(info.value) == (
        f"separate network for digits level 1 has {first.params + 1:,} params, the "
        f"checkpoint's level {first.params:,}: trained for another architecture; train the "
        "baseline from the checkpoint's own config"
    )


def test_train_separate_of_some_tasks_reports_each_row() -> None:
    config = get_preset("tiny").model_copy(update={"epochs": 1})
    seen: list[dict[str, object]] = []
    rows = train_separate(config, device="cpu", progress=False, only=["shapes"], on_row=seen.append)
    assert seen == rows
    assert [(r["task"], r["level"]) for r in rows] == [("shapes", level) for level in (1, 2, 3, 4)]
    assert all(0.0 <= float(str(r["separate_accuracy"])) <= 1.0 for r in rows)


def test_write_comparison_reports_levels_without_a_separate_network(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(trained_checkpoint)
    first = manifest.tasks[0].levels[0]
    separate = [{"task": "digits", "level": 1, "params": first.params, "separate_accuracy": 0.5}]
    md = write_comparison(trained_checkpoint, separate, tmp_path)
    rows = json.loads((tmp_path / "baseline.json").read_text())["rows"]
    assert [r["separate_accuracy"] for r in rows] == [0.5] + [None] * 7
    assert f"| shapes | 4 | {manifest.tasks[1].levels[3].params:,} | " in md.read_text()
    assert md.read_text().count("| not measured |  |") == 7
