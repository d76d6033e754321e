"""PlanCache: per-level weight copies within a byte cap, for the hottest levels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from model_store.checkpoint import Checkpoint
from model_store.inference import LevelPlan
from server.engine.plans import PlanCache


@dataclass
class FakePlan:
    key: tuple[int, int]
    nbytes: int

    def __call__(self, x: torch.Tensor) -> str:
        return f"plan {self.key}"


class FakeModel:
    def __call__(self, x: Any, task: int, level: int) -> str:
        return f"model {(task, level)}"


def cache(capacity: int, sizes: dict[tuple[int, int], int]) -> tuple[PlanCache, list[Any]]:
    built: list[Any] = []

    def build(model: Any, task: int, level: int) -> Any:
        built.append((task, level))
        return FakePlan((task, level), sizes[(task, level)])

    return PlanCache(FakeModel(), capacity, build=build), built  # type: ignore[arg-type]


def run(c: PlanCache, key: tuple[int, int], times: int = 1) -> object:
    out: object = None
    for _ in range(times):
        out = c.forward(*key)(torch.zeros(1))
    return out


def test_levels_get_plans_until_the_cap() -> None:
    c, built = cache(100, {(0, 1): 40, (0, 2): 50, (0, 3): 30})
    assert run(c, (0, 1), 5) == "plan (0, 1)"
    assert run(c, (0, 2), 5) == "plan (0, 2)"
    assert run(c, (0, 3)) == "model (0, 3)"  # 120 bytes would pass the cap of 100
    assert run(c, (0, 3)) == "model (0, 3)"
    assert built == [(0, 1), (0, 2), (0, 3)]  # its size is known: not built again
    assert c.used_bytes == 90


def test_a_level_twice_as_hot_evicts_the_coldest_plan() -> None:
    c, _ = cache(100, {(0, 1): 40, (0, 2): 50, (0, 3): 30})
    run(c, (0, 1), 10)
    run(c, (0, 2), 2)
    assert run(c, (0, 3), 3) == "model (0, 3)"  # 3 forwards: not twice level 2's 2
    assert run(c, (0, 3)) == "plan (0, 3)"  # 4 forwards: twice as hot; level 2 evicted
    assert set(c.plans) == {(0, 1), (0, 3)}
    assert run(c, (0, 2)) == "model (0, 2)"


def test_a_level_larger_than_the_cap_never_gets_a_plan() -> None:
    c, built = cache(10, {(1, 4): 11})
    assert [run(c, (1, 4)) for _ in range(3)] == ["model (1, 4)"] * 3
    assert built == [(1, 4)]
    assert c.plans == {}


@pytest.mark.parametrize("capacity", [0, 10**9])
def test_plans_answer_as_the_model_does(reference: Checkpoint, capacity: int) -> None:
    model = reference.model
    c = PlanCache(model, capacity) if capacity else None
    x = torch.randn(3, *model.config.tasks[0].input_shape)
    with torch.inference_mode():
        want = model(x, 0, 2)
        got = c.forward(0, 2)(x) if c is not None else model(x, 0, 2)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    if c is not None:
        assert isinstance(c.plans[(0, 2)], LevelPlan)
