"""What a synthetic workload sends: weighted mixes of budgets and tasks, and pools of
random model-space inputs. Shared by ``dvn loadtest`` and the locust file."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clients._encoding import npy_bytes

NO_BUDGET = "none"


@dataclass(frozen=True)
class Mix:
    """Items with positive weights; :meth:`choose` draws one in proportion to its weight."""

    items: tuple[str, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.items or len(self.items) != len(self.weights):
            raise ValueError("a mix needs at least one item, each with a weight")
        if len(set(self.items)) != len(self.items):
            raise ValueError(f"a mix names an item twice: {', '.join(self.items)}")

    @classmethod
    def uniform(cls, items: Sequence[str]) -> Mix:
        return cls(tuple(items), tuple(1.0 for _ in items))

    def choose(self, rng: random.Random) -> str:
        return rng.choices(self.items, weights=self.weights)[0]

    def fractions(self) -> dict[str, float]:
        total = sum(self.weights)
        return {item: w / total for item, w in zip(self.items, self.weights, strict=True)}

    def __str__(self) -> str:
        return ",".join(f"{item}:{w:g}" for item, w in zip(self.items, self.weights, strict=True))


def parse_mix(text: str, *, what: str = "mix") -> Mix:
    """Parse ``"5ms:0.5,20ms:0.3,1MiB:0.2"`` (weights need not sum to 1).

    A budget of several constraints joins them with ``+`` (``"15ms+2MiB:0.5"``), or lists
    them with commas and weighs only the last (``"15ms,2MiB:0.5"``): an item without a
    weight belongs to the item after it. A last item without a weight weighs 1. ``none``
    stands for "no budget".

    Raises:
        ValueError: an empty item, a weight that is not a positive number, a repeated item.
    """
    items: list[str] = []
    weights: list[float] = []
    pending: list[str] = []
    tokens = text.split(",")
    for i, raw in enumerate(tokens):
        token = raw.strip()
        name, sep, weight_text = token.rpartition(":")
        if not sep:
            name, weight_text = token, ""
        name = name.strip().replace("+", ",")
        if not name:
            raise ValueError(f"{what} {text!r}: empty item; write e.g. '5ms:0.5,20ms:0.5'")
        if not weight_text and i < len(tokens) - 1:
            pending.append(name)
            continue
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise ValueError(
                f"{what} {text!r}: weight {weight_text!r} of {name!r} is not a number"
            ) from None
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"{what} {text!r}: weight of {name!r} must be positive, got {weight}")
        items.append(",".join([*pending, name]))
        weights.append(weight)
        pending = []
    return Mix(tuple(items), tuple(weights))


def budget_param(item: str) -> str | None:
    """The ``budget`` query value of a budget-mix item (``None`` for ``none``)."""
    return None if item.lower() == NO_BUDGET else item


def input_pool(shape: Sequence[int], size: int, rng: np.random.Generator) -> list[bytes]:
    """``size`` ``.npy`` bodies, each one random model-space example ``(1, *shape)``
    (standard normal float32, what normalised inputs look like)."""
    return [npy_bytes(rng.standard_normal((1, *shape), dtype=np.float32)) for _ in range(size)]
