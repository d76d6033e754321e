"""Unit orders (docs/method.md's adjacency rule), their validation, and unit sets."""

from __future__ import annotations

import pytest

from model_store.units import (
    UnitSet,
    adjacency_order,
    anchor_units,
    paper_orders,
    validate_order,
)


def one_based(order: tuple[int, ...]) -> list[set[int]]:
    """The unit sets of every level of ``order``, in docs/method.md's 1-based numbering."""
    return [{u + 1 for u in order[:level]} for level in range(1, len(order) + 1)]


def test_k3_orders_are_the_papers() -> None:
    # docs/method.md: task 1 grows {1}, {1,2}, {1,2,3}; task 2 {2}, {2,1}, {2,1,3};
    # task 3 {3}, {3,2}, {3,2,1}.
    orders = paper_orders(3, 3)
    assert orders == ((0, 1, 2), (1, 0, 2), (2, 1, 0))
    assert [one_based(o) for o in orders] == [
        [{1}, {1, 2}, {1, 2, 3}],
        [{2}, {2, 1}, {2, 1, 3}],
        [{3}, {3, 2}, {3, 2, 1}],
    ]


@pytest.mark.parametrize(
    ("k", "tasks", "expected"),
    [
        (4, 4, ((0, 1, 2, 3), (1, 0, 2, 3), (2, 1, 0, 3), (3, 2, 1, 0))),
        (2, 2, ((0, 1), (1, 0))),
        (1, 1, ((0,),)),
        # T < k: anchors spread to both ends, the middle tie (1.5) rounded up.
        (4, 2, ((0, 1, 2, 3), (3, 2, 1, 0))),
        (4, 3, ((0, 1, 2, 3), (2, 1, 0, 3), (3, 2, 1, 0))),
        (4, 1, ((0, 1, 2, 3),)),
        # T > k: tasks share anchors.
        (2, 3, ((0, 1), (1, 0), (1, 0))),
        (2, 4, ((0, 1), (0, 1), (1, 0), (1, 0))),
        (3, 5, ((0, 1, 2), (1, 0, 2), (1, 0, 2), (2, 1, 0), (2, 1, 0))),
        (1, 3, ((0,), (0,), (0,))),
    ],
)
def test_paper_orders(k: int, tasks: int, expected: tuple[tuple[int, ...], ...]) -> None:
    assert paper_orders(k, tasks) == expected


@pytest.mark.parametrize(
    ("k", "tasks", "anchors"),
    [(4, 4, (0, 1, 2, 3)), (4, 3, (0, 2, 3)), (4, 2, (0, 3)), (2, 3, (0, 1, 1)), (5, 1, (0,))],
)
def test_anchor_units(k: int, tasks: int, anchors: tuple[int, ...]) -> None:
    assert anchor_units(k, tasks) == anchors


@pytest.mark.parametrize("k", range(1, 7))
@pytest.mark.parametrize("tasks", range(1, 8))
def test_every_default_order_is_a_permutation_with_contiguous_levels(k: int, tasks: int) -> None:
    orders = paper_orders(k, tasks)
    assert len(orders) == tasks
    for order in orders:
        assert sorted(order) == list(range(k))
        for level in range(1, k + 1):
            held = sorted(order[:level])
            assert held == list(range(held[0], held[0] + level)), (order, level)
            assert UnitSet.of(order[:level], k).contiguous


@pytest.mark.parametrize(
    ("k", "tasks", "message"),
    [
        (0, 2, "need at least one unit and one task, got k=0, T=2"),
        (3, 0, "need at least one unit and one task, got k=3, T=0"),
    ],
)
def test_anchor_units_refuses_empty(k: int, tasks: int, message: str) -> None:
    with pytest.raises(ValueError) as info:
        anchor_units(k, tasks)
    assert str(info.value) == message


@pytest.mark.parametrize("anchor", [-1, 3])
def test_adjacency_order_refuses_an_anchor_outside(anchor: int) -> None:
    with pytest.raises(ValueError) as info:
        adjacency_order(3, anchor)
    assert str(info.value) == f"anchor unit {anchor} is outside 0..2"


@pytest.mark.parametrize(
    ("order", "shown"),
    [
        ([0, 0, 1, 2], "[0, 0, 1, 2]"),  # duplicate
        ([0, 1, 2], "[0, 1, 2]"),  # missing unit 3
        ([0, 1, 2, 4], "[0, 1, 2, 4]"),  # out of range
        ([-1, 0, 1, 2], "[-1, 0, 1, 2]"),
        ([0, 1, 2, 3, 3], "[0, 1, 2, 3, 3]"),  # too long
        ([], "[]"),
    ],
)
def test_validate_order_refuses_non_permutations(order: list[int], shown: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_order(order, 4, "digits")
    assert str(info.value) == (
        f"unit order {shown} of task 'digits' is not a permutation of the 4 units 0..3; "
        "give every unit exactly once, e.g. [0, 1, 2, 3]"
    )


def test_validate_order_returns_a_tuple_of_ints() -> None:
    assert validate_order([3, 1, 0, 2], 4, "t") == (3, 1, 0, 2)
    assert validate_order(range(2), 2, "t") == (0, 1)


@pytest.mark.parametrize(
    ("units", "sorted_units", "contiguous", "indices"),
    [
        ([0], (0,), True, [0, 1]),
        ([2, 1], (1, 2), True, [2, 3, 4, 5]),
        ([3, 1, 0, 2], (0, 1, 2, 3), True, [0, 1, 2, 3, 4, 5, 6, 7]),
        ([2, 0], (0, 2), False, [0, 1, 4, 5]),
        ([3, 0, 1], (0, 1, 3), False, [0, 1, 2, 3, 6, 7]),
    ],
)
def test_unit_set(
    units: list[int], sorted_units: tuple[int, ...], contiguous: bool, indices: list[int]
) -> None:
    s = UnitSet.of(units, 4)
    assert s.units == sorted_units
    assert len(s) == len(units)
    assert s.contiguous is contiguous
    assert s.channel_indices(8) == indices  # 8 channels: 2 a unit
    if contiguous:
        sl = s.channel_slice(8)
        assert list(range(8))[sl] == indices
    else:
        with pytest.raises(ValueError) as info:
            s.channel_slice(8)
        assert str(info.value) == f"units {sorted_units} are not contiguous"


def test_unit_set_channels_scale_with_the_layer_width() -> None:
    s = UnitSet.of([1, 2], 4)
    assert s.channel_slice(16) == slice(4, 12)
    assert s.channel_slice(96) == slice(24, 72)
    assert s.channel_indices(4) == [1, 2]
