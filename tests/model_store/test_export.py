"""Exporting one (task, level): same outputs, exactly the level's parameters, one-level
manifest that says where it came from."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from model_store.arch import DVNConfig, get_architecture
from model_store.checkpoint import Checkpoint, load, save
from model_store.costs import level_costs, level_params
from model_store.export import export_level, extract_level
from model_store.manifest import Accuracy
from model_store.model import DVN
from tests.model_store.conftest import COLOR, GRAY, SCRAMBLED, warm_norms

ORDERS = {"paper": None, "scrambled": SCRAMBLED}
PAIRS = [(t, level) for t in (0, 1) for level in (1, 2, 3, 4)]


@pytest.fixture(scope="module", params=list(ORDERS))
def model(request: pytest.FixtureRequest) -> DVN:
    torch.manual_seed(0)
    cfg = DVNConfig.create(
        get_architecture("resnet-tiny"), [GRAY, COLOR], ORDERS[request.param], "resnet-tiny"
    )
    return warm_norms(DVN(cfg))


@pytest.mark.parametrize(("task", "level"), PAIRS)
def test_extracted_level_computes_what_the_level_computes(
    model: DVN, task: int, level: int, random_inputs: Callable[..., torch.Tensor]
) -> None:
    spec = model.config.tasks[task]
    sub = extract_level(model, task, level)
    assert not sub.training
    assert sub.config.num_units == 1
    assert sub.config.tasks == (spec,)
    assert sub.config.backbone.widths == (2 * level, 4 * level)
    x = 3.0 * random_inputs(spec, 16) - 0.5
    with torch.no_grad():
        diff = (sub(x, 0, 1) - model(x, task, level)).abs().max().item()
    assert diff <= 1e-5
    stored = sum(v.numel() for v in sub.state_dict().values())
    assert stored == level_params(model, task, level) == level_params(sub, 0, 1)


@pytest.mark.parametrize(("task", "level"), [("nope", 1), (0, 0), (0, 5)])
def test_extract_refuses_unknown_pairs(model: DVN, task: str | int, level: int) -> None:
    with pytest.raises((KeyError, ValueError)) as info:
        extract_level(model, task, level)
    if task == "nope":
        assert info.value.args[0] == "unknown task 'nope'; this model serves: gray, color"
    else:
        assert str(info.value) == f"level {level} is outside 1..4"


@pytest.fixture(scope="module")
def source(model: DVN, tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    out = tmp_path_factory.mktemp("source") / "ckpt"
    accuracy = {("color", 2): Accuracy(value=0.625, examples=40, data="hand-made")}
    save(model, out, name="src", version="3.0.0", accuracy=accuracy, training={"seed": 1})
    return load(out)


def header_length(path: Path) -> int:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return int(n)


@pytest.mark.parametrize(("task", "level"), [("gray", 1), ("color", 2), ("color", 3), ("gray", 4)])
def test_export_level_writes_a_one_level_checkpoint(
    source: Checkpoint,
    tmp_path: Path,
    task: str,
    level: int,
    random_inputs: Callable[..., torch.Tensor],
) -> None:
    out = tmp_path / "exported"
    manifest = export_level(source, task, level, out)
    entry = source.manifest.task(task).levels[level - 1]

    weights = out / "weights.safetensors"
    assert weights.stat().st_size == entry.param_bytes + 8 + header_length(weights)

    assert manifest.name == f"src-{task}-level{level}"
    assert manifest.version == "3.0.0"
    assert manifest.architecture.name == f"resnet-tiny/level{level}"
    assert manifest.architecture.backbone == {
        "widths": [2 * level, 4 * level],
        "blocks": [1, 1],
        "num_units": 1,
    }
    assert manifest.num_units == 1
    assert [t.name for t in manifest.tasks] == [task]
    [only] = manifest.tasks[0].levels
    assert manifest.tasks[0].unit_order == [0]
    assert (only.level, only.units) == (1, [0])
    assert (only.params, only.param_bytes, only.flops) == (
        entry.params,
        entry.param_bytes,
        entry.flops,
    )
    assert only.accuracy == entry.accuracy
    assert manifest.training == {"seed": 1}
    assert manifest.exported_from is not None
    assert manifest.exported_from.model_dump() == {
        "name": "src",
        "version": "3.0.0",
        "weights_sha256": source.manifest.weights_sha256,
        "task": task,
        "level": level,
        "units": entry.units,
    }
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["exported_from"]["units"] == entry.units
    assert on_disk["exported_from"]["weights_sha256"] == source.manifest.weights_sha256

    exported = load(out)
    spec = source.model.config.tasks[source.model.config.task_index(task)]
    x = random_inputs(spec, 8)
    with torch.no_grad():
        diff = (exported.model(x, task, 1) - source.model(x, task, level)).abs().max().item()
    assert diff <= 1e-5


def test_export_of_a_scrambled_level_records_its_units(source: Checkpoint, tmp_path: Path) -> None:
    manifest = export_level(source, "color", 3, tmp_path / "c3")
    assert manifest.exported_from is not None
    expected = list(source.model.config.unit_orders[1][:3])
    assert manifest.exported_from.units == expected
    assert expected in ([3, 2, 1], [3, 1, 0])  # paper order / SCRAMBLED


def test_exported_costs_equal_the_source_levels(source: Checkpoint) -> None:
    costs = {(c.task, c.level): c for c in level_costs(source.model)}
    for task in ("gray", "color"):
        for level in (1, 4):
            sub = extract_level(source.model, task, level)
            [cost] = level_costs(sub)
            want = costs[(task, level)]
            assert (cost.params, cost.param_bytes, cost.flops) == (
                want.params,
                want.param_bytes,
                want.flops,
            )
