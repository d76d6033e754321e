"""Units and the order in which each task's hierarchy takes them.

A DVN's every shared layer has its output channels split into ``k`` equal groups; unit
``u`` is group ``u`` of every layer. Level ``l`` of a task holds the first ``l`` units of
that task's order. Units are 0-based here; levels are 1-based (level 1 is the smallest),
as in the paper and the HTTP API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def anchor_units(num_units: int, num_tasks: int) -> tuple[int, ...]:
    """Level-1 unit of each task: task ``j`` of ``T`` is anchored at unit ``j`` when
    ``T == k``, otherwise anchors are spread evenly over the units (first and last task at
    the two ends, ties rounded up)."""
    if num_units < 1 or num_tasks < 1:
        raise ValueError(f"need at least one unit and one task, got k={num_units}, T={num_tasks}")
    if num_tasks == 1:
        return (0,)
    return tuple(int(j * (num_units - 1) / (num_tasks - 1) + 0.5) for j in range(num_tasks))


def adjacency_order(num_units: int, anchor: int) -> tuple[int, ...]:
    """The paper's order: start at ``anchor``; each next unit is adjacent to those held
    (one below the lowest or one above the highest), the lower index winning a tie."""
    if not 0 <= anchor < num_units:
        raise ValueError(f"anchor unit {anchor} is outside 0..{num_units - 1}")
    order = [anchor]
    lo = hi = anchor
    while len(order) < num_units:
        if lo > 0:
            lo -= 1
            order.append(lo)
        else:
            hi += 1
            order.append(hi)
    return tuple(order)


def paper_orders(num_units: int, num_tasks: int) -> tuple[tuple[int, ...], ...]:
    """Default unit order of every task (docs/method.md, generalised to ``T != k``)."""
    return tuple(adjacency_order(num_units, a) for a in anchor_units(num_units, num_tasks))


def validate_order(order: Sequence[int], num_units: int, task: str) -> tuple[int, ...]:
    """Return ``order`` as a tuple if it is a permutation of ``0..k-1``.

    Raises:
        ValueError: naming the task, the order given and what a valid order looks like.
    """
    got = tuple(int(u) for u in order)
    if sorted(got) != list(range(num_units)):
        raise ValueError(
            f"unit order {list(got)} of task {task!r} is not a permutation of the "
            f"{num_units} units 0..{num_units - 1}; give every unit exactly once, "
            f"e.g. {list(adjacency_order(num_units, 0))}"
        )
    return got


@dataclass(frozen=True)
class UnitSet:
    """The units one level holds, kept sorted: channels are laid out in unit-index order."""

    units: tuple[int, ...]
    num_units: int

    @classmethod
    def of(cls, units: Sequence[int], num_units: int) -> UnitSet:
        return cls(tuple(sorted(int(u) for u in units)), num_units)

    @property
    def contiguous(self) -> bool:
        return self.units == tuple(range(self.units[0], self.units[-1] + 1))

    def channel_indices(self, width: int) -> list[int]:
        """Channel indices of these units in a layer of ``width`` channels."""
        group = width // self.num_units
        return [u * group + c for u in self.units for c in range(group)]

    def channel_slice(self, width: int) -> slice:
        """The same channels as one slice; only valid when :attr:`contiguous`."""
        if not self.contiguous:
            raise ValueError(f"units {self.units} are not contiguous")
        group = width // self.num_units
        return slice(self.units[0] * group, (self.units[-1] + 1) * group)

    def __len__(self) -> int:
        return len(self.units)
