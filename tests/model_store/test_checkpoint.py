"""Saving and loading checkpoints: the round trip, the manifest, and every refusal."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from model_store.arch import DVNConfig, get_architecture
from model_store.checkpoint import load, save, sha256_file
from model_store.costs import level_costs
from model_store.manifest import Accuracy, CheckpointError, read_manifest
from model_store.model import DVN
from tests.model_store.conftest import COLOR, GRAY, SCRAMBLED, ModelFactory, warm_norms


@pytest.fixture(scope="module")
def model() -> DVN:
    torch.manual_seed(0)
    return warm_norms(
        DVN(
            DVNConfig.create(
                get_architecture("resnet-tiny"), [GRAY, COLOR], arch_name="resnet-tiny"
            )
        )
    )


@pytest.fixture(scope="module")
def template(model: DVN, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Saved once (saving counts every level's FLOPs, which takes a while)."""
    out = tmp_path_factory.mktemp("template") / "ckpt"
    save(model, out, name="unit-test", version="2.1.0", training={"epochs": 3, "seed": 7})
    return out


@pytest.fixture
def saved(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template for a test to damage."""
    out = tmp_path / "ckpt"
    shutil.copytree(template, out)
    return out


def read_json(path: Path) -> dict[str, Any]:
    data = json.loads((path / "manifest.json").read_text())
    assert isinstance(data, dict)
    return data


def write_json(path: Path, data: Any) -> None:
    (path / "manifest.json").write_text(json.dumps(data))


def refusal(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load(path)
    return str(info.value)


@pytest.mark.parametrize("orders", [None, SCRAMBLED], ids=["paper", "scrambled"])
def test_round_trip_gives_the_same_outputs(
    make_model: ModelFactory,
    warm: Callable[[DVN], DVN],
    random_inputs: Callable[..., torch.Tensor],
    tmp_path: Path,
    orders: Any,
) -> None:
    model = warm(make_model(orders=orders))
    save(model, tmp_path / "ckpt", name="rt")
    loaded = load(tmp_path / "ckpt")
    assert not loaded.model.training
    assert loaded.model.config == model.config
    with torch.no_grad():
        for spec in (GRAY, COLOR):
            for level in range(1, 5):
                x = random_inputs(spec)
                assert torch.equal(loaded.model(x, spec.name, level), model(x, spec.name, level))


def test_files_and_manifest_fields(model: DVN, saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == ["manifest.json", "weights.safetensors"]
    raw = read_json(saved)
    weights = (saved / "weights.safetensors").read_bytes()
    assert raw["format"] == "dvn-checkpoint"
    assert raw["format_version"] == 1
    assert raw["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert raw["name"] == "unit-test"
    assert raw["version"] == "2.1.0"
    assert datetime.fromisoformat(raw["created_at"]).tzinfo is not None
    assert raw["architecture"] == {
        "name": "resnet-tiny",
        "backbone": {"widths": [8, 16], "blocks": [1, 1], "num_units": 4},
        "dtype": "float32",
    }
    assert raw["num_units"] == 4
    assert raw["training"] == {"epochs": 3, "seed": 7}
    assert raw["exported_from"] is None
    assert [t["name"] for t in raw["tasks"]] == ["gray", "color"]
    assert [t["unit_order"] for t in raw["tasks"]] == [[0, 1, 2, 3], [3, 2, 1, 0]]
    gray = raw["tasks"][0]
    assert gray["classes"] == [str(d) for d in range(10)]
    assert gray["input_shape"] == [1, 8, 8]
    assert gray["preprocessing"] == {
        "color_mode": "L",
        "size": [8, 8],
        "mean": [0.5],
        "std": [0.25],
    }
    levels = [(t["name"], lv) for t in raw["tasks"] for lv in t["levels"]]
    assert [{**lv, "task": name} for name, lv in levels] == [
        {**c.to_dict(), "task": c.task, "accuracy": None} for c in level_costs(model)
    ]
    assert levels[3][1] == {
        "level": 4,
        "units": [0, 1, 2, 3],
        "params": 5266,
        "param_bytes": 21064,
        "flops": 271680,
        "accuracy": None,
    }
    assert read_manifest(saved).model_dump(mode="json") == raw


def test_accuracy_is_stored_per_level(model: DVN, tmp_path: Path) -> None:
    acc = Accuracy(value=0.875, examples=200, data="builtin:digits")
    manifest = save(model, tmp_path / "c", name="acc", accuracy={("color", 3): acc})
    assert manifest.task("color").levels[2].accuracy == acc
    assert [lv.accuracy for lv in manifest.task("gray").levels] == [None] * 4
    assert load(tmp_path / "c").manifest.task("color").levels[2].accuracy == acc


def test_saving_again_replaces_the_files(model: DVN, saved: Path) -> None:
    save(model, saved, name="second")
    assert sorted(p.name for p in saved.iterdir()) == ["manifest.json", "weights.safetensors"]
    assert load(saved).manifest.name == "second"


def test_missing_directory(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    assert refusal(root) == (
        f"checkpoint directory {root} does not exist; pass a directory holding manifest.json "
        "and weights.safetensors (e.g. model_store/checkpoints/demo)"
    )


def test_missing_manifest(tmp_path: Path) -> None:
    assert refusal(tmp_path) == (
        f"{tmp_path / 'manifest.json'} is missing: {tmp_path} is not a DVN checkpoint; "
        "create one with `dvn train` or `dvn export`"
    )


def test_missing_weights(saved: Path) -> None:
    (saved / "weights.safetensors").unlink()
    assert refusal(saved) == (
        f"{saved / 'weights.safetensors'} is missing; re-copy the checkpoint directory"
    )


def test_invalid_json(saved: Path) -> None:
    (saved / "manifest.json").write_text('{"format": "dvn-checkpoint",')
    message = refusal(saved)
    assert message.startswith(f"{saved / 'manifest.json'} is not valid JSON (")
    assert message.endswith("); the file is damaged: re-copy the checkpoint")


@pytest.mark.parametrize(
    ("content", "shown"),
    [({"format": "onnx"}, "'onnx'"), ({}, "None"), ([1, 2], "'list'")],
)
def test_wrong_format(saved: Path, content: Any, shown: str) -> None:
    write_json(saved, content)
    assert refusal(saved) == (
        f"{saved / 'manifest.json'} has format {shown}, expected 'dvn-checkpoint': "
        "not a DVN checkpoint"
    )


def test_newer_format_version(saved: Path) -> None:
    write_json(saved, {**read_json(saved), "format_version": 2})
    assert refusal(saved) == (
        f"{saved / 'manifest.json'} has format_version 2, newer than this dvn-serve reads "
        "(up to 1); upgrade dvn-serve to load it"
    )


@pytest.mark.parametrize(("version", "shown"), [("1", "'1'"), (0, "0"), (None, "None")])
def test_invalid_format_version(saved: Path, version: Any, shown: str) -> None:
    write_json(saved, {**read_json(saved), "format_version": version})
    assert refusal(saved) == (
        f"{saved / 'manifest.json'} has no valid format_version (got {shown})"
    )


def test_schema_violation_names_the_field(saved: Path) -> None:
    raw = read_json(saved)
    del raw["name"]
    raw["weights_sha256"] = "not-a-hash"
    write_json(saved, raw)
    message = refusal(saved)
    assert message.startswith(f"{saved / 'manifest.json'} does not match the checkpoint schema: ")
    assert "name: Field required" in message
    assert "weights_sha256: String should match pattern" in message


def test_tampered_weights(saved: Path) -> None:
    weights = saved / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor
    weights.write_bytes(bytes(data))
    expected = read_json(saved)["weights_sha256"]
    got = hashlib.sha256(bytes(data)).hexdigest()
    assert refusal(saved) == (
        f"{weights} has sha256 {got[:12]}…, but the manifest expects {expected[:12]}…: the "
        "file was modified or truncated; re-copy the checkpoint from its source"
    )


def rehash(path: Path) -> None:
    """Make the manifest's hash agree with the weights on disk, whatever they hold."""
    write_json(
        path, {**read_json(path), "weights_sha256": sha256_file(path / "weights.safetensors")}
    )


@pytest.mark.parametrize("keep", [0.5, 0.99, 4 / 10_000])
def test_truncated_weights_with_a_matching_hash(saved: Path, keep: float) -> None:
    weights = saved / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: max(4, int(len(data) * keep))])
    rehash(saved)
    message = refusal(saved)
    assert message.startswith(f"{weights} is not a readable safetensors file (")


def test_architecture_that_does_not_match_the_weights(saved: Path) -> None:
    raw = read_json(saved)
    raw["architecture"]["backbone"]["widths"] = [12, 24]
    write_json(saved, raw)  # the weights, and so their hash, are untouched
    message = refusal(saved)
    assert message.startswith(
        f"{saved / 'weights.safetensors'} does not match the manifest's architecture: "
    )
    assert "shape mismatches (first: " in message
    assert message.endswith(
        "the manifest and weights come from different models: re-export the checkpoint"
    )


def test_architecture_with_more_blocks_than_the_weights(saved: Path) -> None:
    raw = read_json(saved)
    raw["architecture"]["backbone"]["blocks"] = [1, 2]
    write_json(saved, raw)
    # The second block of stage 1: two convs, and 2 norms x 8 (task, level)s x 4 tensors.
    assert refusal(saved) == (
        f"{saved / 'weights.safetensors'} does not match the manifest's architecture: "
        "66 tensors missing (first: stages.1.1.conv1.weight); the manifest and weights "
        "come from different models: re-export the checkpoint"
    )


def test_extra_task_in_the_manifest(saved: Path) -> None:
    raw = read_json(saved)
    third = {**raw["tasks"][0], "name": "third"}
    raw["tasks"].append(third)
    write_json(saved, raw)
    message = refusal(saved)
    assert "does not match the manifest's architecture" in message
    assert "tensors missing (first: " in message


def test_invalid_architecture(saved: Path) -> None:
    raw = read_json(saved)
    raw["architecture"]["backbone"]["widths"] = [10, 16]
    write_json(saved, raw)
    assert refusal(saved) == (
        "manifest describes an invalid architecture: stage width 10 must be a positive "
        "multiple of num_units=4 so that every unit gets the same number of channels"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "params",
            1455,
            "manifest says task 'gray' level 2 has 1455 params but the weights give 1454; "
            "the manifest was edited: re-export",
        ),
        (
            "param_bytes",
            1000,
            "manifest says task 'gray' level 2 has 1000 param_bytes but the weights give "
            "5816; the manifest was edited: re-export",
        ),
        (
            "units",
            [0, 2],
            "manifest says task 'gray' level 2 holds units [0, 2] but its unit order gives "
            "[0, 1]; the manifest was edited: re-export",
        ),
        (
            "level",
            5,
            "manifest lists levels [1, 5, 3, 4] for task 'gray' but the architecture has "
            "levels 1..4; the manifest was edited: re-export",
        ),
    ],
)
def test_edited_level_table(saved: Path, field: str, value: Any, message: str) -> None:
    raw = read_json(saved)
    raw["tasks"][0]["levels"][1][field] = value
    write_json(saved, raw)
    assert refusal(saved) == message


def test_missing_level(saved: Path) -> None:
    raw = read_json(saved)
    del raw["tasks"][1]["levels"][3]
    write_json(saved, raw)
    assert refusal(saved) == (
        "manifest lists levels [1, 2, 3] for task 'color' but the architecture has levels "
        "1..4; the manifest was edited: re-export"
    )


def test_edited_unit_count(saved: Path) -> None:
    write_json(saved, {**read_json(saved), "num_units": 2})
    assert refusal(saved) == (
        "manifest says num_units 2 but its backbone has 4; the manifest was edited: re-export"
    )


def test_loading_never_unpickles(
    saved: Path, monkeypatch: pytest.MonkeyPatch, random_inputs: Callable[..., torch.Tensor]
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    ckpt = load(saved)
    assert ckpt.manifest.name == "unit-test"
    with torch.no_grad():
        assert ckpt.model(random_inputs(GRAY), "gray", 1).shape == (5, 10)
