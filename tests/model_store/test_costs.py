"""Costs of every (task, level), checked against shapes worked out by hand."""

from __future__ import annotations

import itertools

import pytest
import torch

from model_store.arch import DVNConfig, get_architecture
from model_store.costs import (
    LevelCost,
    dtype_size,
    level_costs,
    level_flops,
    level_params,
    trunk_params,
    unit_param_bytes,
)
from model_store.model import DVN
from model_store.tasks import TaskSpec
from tests.model_store.conftest import COLOR, GRAY, SCRAMBLED

K = 4  # resnet-tiny: widths (8, 16), one block a stage, 4 units


def conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def resnet_tiny_macs(spec: TaskSpec, level: int) -> int:
    """Multiply-adds of one example through resnet-tiny at ``level``, from the conv shapes:
    stem 3x3; stage 0: two 3x3 convs; stage 1: two 3x3 convs (first stride 2) and a 1x1
    stride-2 projection; a linear head on the pooled channels."""
    c_in, h, w = spec.input_shape
    c0, c1 = 8 * level // K, 16 * level // K
    stride = 1 if min(h, w) <= 32 else 2
    h0, w0 = conv_out(h, 3, stride), conv_out(w, 3, stride)
    h1, w1 = conv_out(h0, 3, 2), conv_out(w0, 3, 2)
    stem = c0 * c_in * 9 * h0 * w0
    stage0 = 2 * c0 * c0 * 9 * h0 * w0
    stage1 = (c1 * c0 * 9 + c1 * c1 * 9 + c1 * c0) * h1 * w1
    head = c1 * spec.num_classes
    return stem + stage0 + stage1 + head


def resnet_tiny_params(spec: TaskSpec, level: int) -> int:
    c0, c1 = 8 * level // K, 16 * level // K
    trunk = 2 * c0 * c0 * 9 + c1 * c0 * 9 + c1 * c1 * 9 + c1 * c0
    stem = c0 * spec.input_shape[0] * 9
    norms = 4 * (c0 + 2 * c0 + 3 * c1)  # stem norm, block 1's two, block 2's three
    head = c1 * spec.num_classes + spec.num_classes
    return trunk + stem + norms + head


# Literal tables: what `dvn inspect` shows for resnet-tiny on digits-like and shapes-like
# tasks (1x8x8 / 10 classes and 3x16x16 / 8 classes).
EXPECTED = {
    "gray": {"params": [436, 1454, 3064, 5266], "flops": [18768, 70304, 154608, 271680]},
    "color": {"params": [462, 1508, 3146, 5376], "flops": [93248, 317568, 672960, 1159424]},
}


@pytest.fixture(scope="module", params=["paper", "scrambled"])
def model(request: pytest.FixtureRequest) -> DVN:
    orders = None if request.param == "paper" else SCRAMBLED
    cfg = DVNConfig.create(get_architecture("resnet-tiny"), [GRAY, COLOR], orders)
    return DVN(cfg).eval()


@pytest.fixture(scope="module")
def costs(model: DVN) -> list[LevelCost]:
    return level_costs(model)


@pytest.mark.parametrize("spec", [GRAY, COLOR], ids=lambda s: s.name)
def test_costs_equal_the_hand_computation(costs: list[LevelCost], spec: TaskSpec) -> None:
    mine = [c for c in costs if c.task == spec.name]
    assert [c.level for c in mine] == [1, 2, 3, 4]
    assert [c.params for c in mine] == EXPECTED[spec.name]["params"]
    assert [c.params for c in mine] == [resnet_tiny_params(spec, lv) for lv in range(1, 5)]
    assert [c.flops for c in mine] == EXPECTED[spec.name]["flops"]
    assert [c.flops for c in mine] == [2 * resnet_tiny_macs(spec, lv) for lv in range(1, 5)]
    assert [c.param_bytes for c in mine] == [4 * p for p in EXPECTED[spec.name]["params"]]


def test_costs_grow_strictly_with_the_level(costs: list[LevelCost]) -> None:
    assert [(c.task, c.level) for c in costs] == [
        (t, lv) for t in ("gray", "color") for lv in range(1, 5)
    ]
    for task in ("gray", "color"):
        mine = [c for c in costs if c.task == task]
        for small, big in itertools.pairwise(mine):
            assert small.params < big.params
            assert small.param_bytes < big.param_bytes
            assert small.flops < big.flops


UNITS: dict[tuple[tuple[int, ...], ...], list[tuple[int, ...]]] = {
    ((0, 1, 2, 3), (3, 2, 1, 0)): [
        (0,), (0, 1), (0, 1, 2), (0, 1, 2, 3),
        (3,), (3, 2), (3, 2, 1), (3, 2, 1, 0),
    ],
    SCRAMBLED: [
        (0,), (0, 2), (0, 2, 1), (0, 2, 1, 3),
        (3,), (3, 1), (3, 1, 0), (3, 1, 0, 2),
    ],
}  # fmt: skip


def test_units_are_the_order_prefix(model: DVN, costs: list[LevelCost]) -> None:
    assert [c.units for c in costs] == UNITS[model.config.unit_orders]
    assert costs[5].to_dict() == {
        "level": 2,
        "units": list(UNITS[model.config.unit_orders][5]),
        "params": 1508,
        "param_bytes": 6032,
        "flops": 317568,
    }


@pytest.mark.parametrize("task", [0, 1])
@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_trunk_density_is_l_over_k_squared(model: DVN, task: int, level: int) -> None:
    top = trunk_params(model, task, K)
    # Every trunk conv at full width: what the top level must use.
    assert top == sum(conv.weight.numel() for _, b in model.blocks() for conv in b.convs())
    assert top == 4736
    assert trunk_params(model, task, level) * K * K == top * level * level


def test_level_params_equal_what_an_export_stores(model: DVN) -> None:
    from model_store.export import extract_level

    for t in (0, 1):
        for level in range(1, 5):
            sub = extract_level(model, t, level)
            stored = sum(v.numel() for v in sub.state_dict().values())
            assert level_params(model, t, level) == stored


def test_unit_param_bytes(tiny_model: DVN) -> None:
    # trunk 576 + 576 + 1152 + 2304 + 128 = 4736, stems 8*1*9 + 8*3*9 = 288: 5024
    # params, a quarter (1256) to each unit, 4 bytes each.
    assert unit_param_bytes(tiny_model) == {0: 5024, 1: 5024, 2: 5024, 3: 5024}


@pytest.mark.parametrize(("dtype", "size"), [("float32", 4), ("float16", 2), ("bfloat16", 2)])
def test_dtype_size(dtype: str, size: int) -> None:
    assert dtype_size(dtype) == size


def test_counting_flops_leaves_a_training_model_untouched(tiny_model: DVN) -> None:
    tiny_model.train()
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    assert level_flops(tiny_model, 0, 2) == 70304
    assert tiny_model.training
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, before[key]), key
