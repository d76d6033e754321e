"""The ``budget`` query parameter: latency and memory constraints of one request.

Grammar: one or more comma-separated constraints, each a positive finite number followed
by a unit, at most one per kind. Latency units: ``us``, ``ms``, ``s`` (arrival at the server
to response, queueing included). Memory units: ``B``, ``kB``, ``MB``, ``GB`` (powers of
1000), ``KiB``, ``MiB``, ``GiB`` (powers of 1024): parameter bytes of the level.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from server.errors import InvalidBudget

LATENCY_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
MEMORY_UNITS = {
    "B": 1,
    "kB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}
_UNITS = ", ".join([*LATENCY_UNITS, *MEMORY_UNITS])
_CONSTRAINT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]+)\s*$")
# Past these a budget is certainly a mistake (a typo'd exponent), not a wish.
MAX_LATENCY_S = 3600.0
MAX_MEMORY_BYTES = 1024**5


def _constraint_pattern(units: dict[str, float] | dict[str, int]) -> str:
    # A number whose digits are not all zeros (the grammar of _CONSTRAINT, positive), a unit.
    number = r"(?:[0-9]*[1-9][0-9]*(?:\.[0-9]+)?|[0-9]*\.[0-9]*[1-9][0-9]*)(?:[eE][+-]?[0-9]+)?"
    return rf"\s*{number}\s*(?:{'|'.join(sorted(units, key=len, reverse=True))})\s*"


_LATENCY, _MEMORY = _constraint_pattern(LATENCY_UNITS), _constraint_pattern(MEMORY_UNITS)
# The published grammar (OpenAPI ``pattern``, ECMA-262 and Python alike): exactly the specs
# :func:`parse_budget` reads, blank included (no budget), but for the numeric limits below,
# which a regular expression cannot weigh once an exponent is allowed (BUDGET_LIMITS).
BUDGET_PATTERN = rf"^(?:\s*|{_LATENCY}|{_MEMORY}|{_LATENCY},{_MEMORY}|{_MEMORY},{_LATENCY})$"
# A memory budget alone (export): what :meth:`Engine.export_level` takes.
MEMORY_BUDGET_PATTERN = rf"^{_MEMORY}$"
BUDGET_LIMITS = (
    f"A latency is at most {MAX_LATENCY_S:.0f} s, a memory from 1 byte (bytes are whole, "
    "rounded down) to 1 PiB, and a number must stay finite and non-zero as a double; past "
    "these the budget is refused as a typo (422 invalid_budget)."
)


@dataclass(frozen=True)
class Budget:
    """What a request can afford; a kind not given is ``None``."""

    spec: str
    latency_s: float | None = None
    memory_bytes: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {"spec": self.spec, "latency_s": self.latency_s, "memory_bytes": self.memory_bytes}


def parse_budget(spec: str | None) -> Budget | None:
    """Parse a budget string; ``None`` or blank means no budget.

    Raises:
        InvalidBudget: naming the bad constraint and what a valid one looks like.
    """
    if spec is None or not spec.strip():
        return None
    latency: float | None = None
    memory: int | None = None
    for part in spec.split(","):
        match = _CONSTRAINT.match(part)
        if not match:
            raise InvalidBudget(
                f"budget {spec!r}: cannot read {part.strip()!r}; each constraint is a positive "
                f"number and a unit ({_UNITS}), e.g. budget=15ms,2MiB"
            )
        value, unit = float(match.group(1)), match.group(2)
        if not math.isfinite(value) or value <= 0:
            raise InvalidBudget(
                f"budget {spec!r}: {part.strip()!r} must be a positive finite number"
            )
        if unit in LATENCY_UNITS:
            if latency is not None:
                raise InvalidBudget(f"budget {spec!r}: more than one latency constraint; give one")
            latency = value * LATENCY_UNITS[unit]
            if latency > MAX_LATENCY_S:
                raise InvalidBudget(
                    f"budget {spec!r}: latency {part.strip()!r} is over the {MAX_LATENCY_S:.0f} s "
                    "limit; leave the latency budget out to get the best level"
                )
        elif unit in MEMORY_UNITS:
            if memory is not None:
                raise InvalidBudget(f"budget {spec!r}: more than one memory constraint; give one")
            memory = math.floor(value * MEMORY_UNITS[unit])
            if memory > MAX_MEMORY_BYTES:
                raise InvalidBudget(
                    f"budget {spec!r}: memory {part.strip()!r} is over 1 PiB; leave the memory "
                    "budget out to get the best level"
                )
            if memory < 1:
                raise InvalidBudget(f"budget {spec!r}: memory {part.strip()!r} is under one byte")
        else:
            raise InvalidBudget(
                f"budget {spec!r}: unknown unit {unit!r}; use one of {_UNITS} "
                "(units are case-sensitive), e.g. budget=15ms,2MiB"
            )
    return Budget(spec=spec.strip(), latency_s=latency, memory_bytes=memory)
