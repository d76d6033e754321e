"""The backbone registry, backbone validation and :class:`DVNConfig`."""

from __future__ import annotations

from typing import Any

import pytest

from model_store.arch import ARCHITECTURES, Backbone, DVNConfig, get_architecture
from model_store.tasks import TaskSpec
from tests.model_store.conftest import COLOR, GRAY


def test_registry_names() -> None:
    assert sorted(ARCHITECTURES) == [
        "resnet-42",
        "resnet-demo",
        "resnet-tiny",
        "wrn-32-4",
        "wrn-standard",
        "wrn-standard-tiny",
    ]
    assert get_architecture("resnet-tiny") == Backbone(widths=(8, 16), blocks=(1, 1), num_units=4)
    # The paper's CIFAR setting: WRN-32-4, 2 units.
    assert get_architecture("wrn-32-4") == Backbone((64, 128, 256), (5, 5, 5), 2)


def test_unknown_architecture_lists_the_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        get_architecture("resnet-9000")
    assert str(info.value) == (
        "unknown architecture 'resnet-9000'; valid names: "
        "resnet-42, resnet-demo, resnet-tiny, wrn-32-4, wrn-standard, wrn-standard-tiny"
    )


@pytest.mark.parametrize(
    ("widths", "blocks", "k", "message"),
    [
        ((8,), (1,), 0, "num_units must be at least 1, got 0"),
        ((), (), 2, "widths () and blocks () must be non-empty and of equal length"),
        (
            (8, 16),
            (1,),
            2,
            "widths (8, 16) and blocks (1,) must be non-empty and of equal length",
        ),
        (
            (8, 10),
            (1, 1),
            4,
            "stage width 10 must be a positive multiple of num_units=4 so that every unit "
            "gets the same number of channels",
        ),
        (
            (2,),
            (1,),
            4,
            "stage width 2 must be a positive multiple of num_units=4 so that every unit "
            "gets the same number of channels",
        ),
        ((8, 16), (1, 0), 4, "every stage needs at least one block, got (1, 0)"),
    ],
)
def test_backbone_validation(
    widths: tuple[int, ...], blocks: tuple[int, ...], k: int, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        Backbone(widths=widths, blocks=blocks, num_units=k)
    assert str(info.value) == message


def test_backbone_scaled_and_dict_round_trip() -> None:
    demo = get_architecture("resnet-demo")
    assert demo.scaled(1) == Backbone((6, 12, 24), (1, 1, 1), 1)
    assert demo.scaled(3) == Backbone((18, 36, 72), (1, 1, 1), 1)
    assert demo.scaled(4) == Backbone((24, 48, 96), (1, 1, 1), 1)
    d = demo.to_dict()
    assert d == {"widths": [24, 48, 96], "blocks": [1, 1, 1], "num_units": 4}
    assert Backbone.from_dict(d) == demo


def test_create_uses_the_paper_orders() -> None:
    cfg = DVNConfig.create(get_architecture("resnet-tiny"), [GRAY, COLOR])
    assert cfg.unit_orders == ((0, 1, 2, 3), (3, 2, 1, 0))
    assert cfg.num_units == 4
    assert cfg.num_levels == 4
    assert cfg.to_dict() == {
        "name": "custom",
        "backbone": {"widths": [8, 16], "blocks": [1, 1], "num_units": 4},
        "dtype": "float32",
    }


def test_create_keeps_a_given_order() -> None:
    cfg = DVNConfig.create(
        get_architecture("resnet-tiny"), [GRAY, COLOR], [[0, 2, 1, 3], [3, 1, 0, 2]]
    )
    assert cfg.unit_orders == ((0, 2, 1, 3), (3, 1, 0, 2))
    assert cfg.unit_set("gray", 2).units == (0, 2)
    assert not cfg.unit_set("gray", 2).contiguous
    assert cfg.unit_set("color", 3).units == (0, 1, 3)
    assert cfg.unit_set(1, 4).units == (0, 1, 2, 3)


def renamed(spec: TaskSpec, name: str) -> TaskSpec:
    return TaskSpec(name, spec.classes, spec.input_shape, spec.preprocessing)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": ()}, "a DVN needs at least one task"),
        (
            {"tasks": (GRAY, renamed(COLOR, "gray"))},
            "task names must be unique, got ['gray', 'gray']",
        ),
        (
            {"unit_orders": ((0, 1, 2, 3),)},
            "1 unit orders for 2 tasks; give one per task",
        ),
        (
            {"unit_orders": ((0, 1, 2, 3), (0, 1, 2, 2))},
            "unit order [0, 1, 2, 2] of task 'color' is not a permutation of the 4 units "
            "0..3; give every unit exactly once, e.g. [0, 1, 2, 3]",
        ),
        ({"dtype": "float64"}, "dtype must be float32, float16 or bfloat16, got 'float64'"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "backbone": get_architecture("resnet-tiny"),
        "tasks": (GRAY, COLOR),
        "unit_orders": ((0, 1, 2, 3), (3, 2, 1, 0)),
    }
    with pytest.raises(ValueError) as info:
        DVNConfig(**{**fields, **kwargs})
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("orders", "message"),
    [
        ([[0, 1, 2, 3]], "1 unit orders for 2 tasks; give one per task"),
        ([[0, 1, 2, 3]] * 3, "3 unit orders for 2 tasks; give one per task"),
        (
            [[0, 1, 2, 3], [0, 1, 2]],
            "unit order [0, 1, 2] of task 'color' is not a permutation of the 4 units 0..3; "
            "give every unit exactly once, e.g. [0, 1, 2, 3]",
        ),
    ],
)
def test_create_refuses_bad_orders(orders: list[list[int]], message: str) -> None:
    with pytest.raises(ValueError) as info:
        DVNConfig.create(get_architecture("resnet-tiny"), [GRAY, COLOR], orders)
    assert str(info.value) == message


def test_create_refuses_duplicate_task_names() -> None:
    with pytest.raises(ValueError) as info:
        DVNConfig.create(get_architecture("resnet-tiny"), [GRAY, GRAY])
    assert str(info.value) == "task names must be unique, got ['gray', 'gray']"


def test_task_index() -> None:
    cfg = DVNConfig.create(get_architecture("resnet-tiny"), [GRAY, COLOR])
    assert cfg.task_index("gray") == 0
    assert cfg.task_index("color") == 1
    assert cfg.task_index(1) == 1


@pytest.mark.parametrize("task", ["nope", 2, -1, "GRAY"])
def test_unknown_task_names_the_valid_ones(task: str | int) -> None:
    cfg = DVNConfig.create(get_architecture("resnet-tiny"), [GRAY, COLOR])
    with pytest.raises(KeyError) as info:
        cfg.task_index(task)
    assert info.value.args[0] == f"unknown task {task!r}; this model serves: gray, color"


@pytest.mark.parametrize("level", [0, 5, -1])
def test_unit_set_refuses_a_level_outside(level: int) -> None:
    cfg = DVNConfig.create(get_architecture("resnet-tiny"), [GRAY, COLOR])
    with pytest.raises(ValueError) as info:
        cfg.unit_set("gray", level)
    assert str(info.value) == f"level {level} is outside 1..4"
