"""``parse_budget``: every unit to exact seconds or bytes, and every grammar error's message."""

from __future__ import annotations

import pytest

from server.budget import Budget, parse_budget
from server.errors import InvalidBudget

UNITS = "us, ms, s, B, kB, MB, GB, KiB, MiB, GiB"


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


def cannot_read(spec: str, part: str) -> str:
    return (
        f"budget {spec!r}: cannot read {part!r}; each constraint is a positive number and a "
        f"unit ({UNITS}), e.g. budget=15ms,2MiB"
    )


def unknown_unit(spec: str, unit: str) -> str:
    return (
        f"budget {spec!r}: unknown unit {unit!r}; use one of {UNITS} (units are "
        "case-sensitive), e.g. budget=15ms,2MiB"
    )


def not_positive(spec: str, part: str) -> str:
    return f"budget {spec!r}: {part!r} must be a positive finite number"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("5xs", unknown_unit("5xs", "xs")),
        ("5MS", unknown_unit("5MS", "MS")),
        ("5kib", unknown_unit("5kib", "kib")),
        ("5KB", unknown_unit("5KB", "KB")),
        ("2h", unknown_unit("2h", "h")),
        ("-5ms", cannot_read("-5ms", "-5ms")),
        ("0ms", not_positive("0ms", "0ms")),
        ("0.0MiB", not_positive("0.0MiB", "0.0MiB")),
        ("0e5s", not_positive("0e5s", "0e5s")),
        ("NaNms", cannot_read("NaNms", "NaNms")),
        ("nanms", cannot_read("nanms", "nanms")),
        ("infms", cannot_read("infms", "infms")),
        ("1e999ms", not_positive("1e999ms", "1e999ms")),
        ("1e999B", not_positive("1e999B", "1e999B")),
        (
            "3601s",
            "budget '3601s': latency '3601s' is over the 3600 s limit; leave the latency "
            "budget out to get the best level",
        ),
        (
            "1e300ms",
            "budget '1e300ms': latency '1e300ms' is over the 3600 s limit; leave the latency "
            "budget out to get the best level",
        ),
        (
            "2000000GiB",
            "budget '2000000GiB': memory '2000000GiB' is over 1 PiB; leave the memory budget "
            "out to get the best level",
        ),
        ("0.5B", "budget '0.5B': memory '0.5B' is under one byte"),
        ("5ms,10ms", "budget '5ms,10ms': more than one latency constraint; give one"),
        ("5ms,1s", "budget '5ms,1s': more than one latency constraint; give one"),
        ("1MiB,2kB", "budget '1MiB,2kB': more than one memory constraint; give one"),
        ("5ms,", cannot_read("5ms,", "")),
        (",5ms", cannot_read(",5ms", "")),
        ("5ms,,2MiB", cannot_read("5ms,,2MiB", "")),
        ("ms", cannot_read("ms", "ms")),
        ("15", cannot_read("15", "15")),
        ("fast", cannot_read("fast", "fast")),
        ("15ms;2MiB", cannot_read("15ms;2MiB", "15ms;2MiB")),
        ("1 5ms", cannot_read("1 5ms", "1 5ms")),
        ("0x10B", cannot_read("0x10B", "0x10B")),
        ("1e5e5ms", cannot_read("1e5e5ms", "1e5e5ms")),
    ],
)
def test_errors(spec: str, message: str) -> None:
    with pytest.raises(InvalidBudget) as info:
        parse_budget(spec)
    assert info.value.message == message
    assert info.value.status == 422
    assert info.value.body() == {"error": {"type": "invalid_budget", "message": message}}
    assert info.value.headers() == {}
