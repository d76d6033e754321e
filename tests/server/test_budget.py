"""``parse_budget``: every unit to exact seconds or bytes, and every grammar error's message."""

from __future__ import annotations

import pytest

from server.budget import Budget, parse_budget
from server.errors import InvalidBudget


@pytest.mark.parametrize(
    ("spec", "latency_s", "memory_bytes"),
    [
        ("250us", 250e-6, None),
        ("1.5us", 1.5e-6, None),
        ("15ms", 0.015, None),
        ("0.5ms", 0.0005, None),
        ("2s", 2.0, None),
        ("3600s", 3600.0, None),
        ("1e-3s", 0.001, None),
        ("512B", None, 512),
        ("1.9B", None, 1),  # floor: whole bytes
        ("2kB", None, 2000),
        ("1.5MB", None, 1_500_000),
        ("3GB", None, 3_000_000_000),
        ("1KiB", None, 1024),
        ("2MiB", None, 2_097_152),
        ("0.5MiB", None, 524_288),
        ("1GiB", None, 1_073_741_824),
        ("1e3B", None, 1000),
        ("15ms,2MiB", 0.015, 2_097_152),
        ("2MiB,15ms", 0.015, 2_097_152),
        (" 15 ms , 2 MiB ", 0.015, 2_097_152),
        ("\t1s", 1.0, None),
    ],
)
def test_units_to_exact_seconds_and_bytes(
    spec: str, latency_s: float | None, memory_bytes: int | None
) -> None:
    budget = parse_budget(spec)
    assert budget is not None
    assert budget.latency_s == (None if latency_s is None else pytest.approx(latency_s, rel=1e-12))
    assert budget.memory_bytes == memory_bytes
    assert budget.memory_bytes is None or type(budget.memory_bytes) is int
    assert budget.spec == spec.strip()


@pytest.mark.parametrize("spec", [None, "", "   "])
def test_no_budget(spec: str | None) -> None:
    assert parse_budget(spec) is None


def test_to_dict() -> None:
    assert Budget("15ms,2MiB", 0.015, 2_097_152).to_dict() == {
        "spec": "15ms,2MiB",
        "latency_s": 0.015,
        "memory_bytes": 2_097_152,
    }


# Each a grammar error (a unit, a number, a repeated kind, a limit); their messages are pinned
# in tests/server/messages.py (BUDGET_MESSAGES).
REFUSED = [
    "5xs",
    "5MS",
    "5kib",
    "5KB",
    "2h",
    "-5ms",
    "0ms",
    "0.0MiB",
    "0e5s",
    "NaNms",
    "nanms",
    "infms",
    "1e999ms",
    "1e999B",
    "3601s",
    "1e300ms",
    "2000000GiB",
    "0.5B",
    "5ms,10ms",
    "5ms,1s",
    "1MiB,2kB",
    "5ms,",
    ",5ms",
    "5ms,,2MiB",
    "ms",
    "15",
    "fast",
    "15ms;2MiB",
    "1 5ms",
    "0x10B",
    "1e5e5ms",
]


@pytest.mark.parametrize("spec", REFUSED)
def test_errors(spec: str) -> None:
    with pytest.raises(InvalidBudget) as info:
        parse_budget(spec)
    assert (info.value.status, info.value.type) == (422, "invalid_budget")
    assert set(info.value.body()["error"]) == {"type", "message"}
    assert info.value.headers() == {}
