"""The published budget grammar (``BUDGET_PATTERN``, the OpenAPI ``pattern`` of every
budget) matches exactly the specs ``parse_budget`` reads, but for the numeric limits it
documents (``BUDGET_LIMITS``): both directions, by property-based generation."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.budget import (
    BUDGET_PATTERN,
    LATENCY_UNITS,
    MAX_LATENCY_S,
    MAX_MEMORY_BYTES,
    MEMORY_BUDGET_PATTERN,
    MEMORY_UNITS,
    parse_budget,
)
from server.errors import InvalidBudget

BOUNDED = settings(max_examples=300, derandomize=True, database=None, deadline=None)
_PART = re.compile(r"^\s*([0-9.eE+-]+)\s*([A-Za-z]+)\s*$")


def past_documented_limits(spec: str) -> bool:
    """Whether a constraint of ``spec`` (which matches the pattern) is past the limits the
    document states: not finite or zero as a double, a latency over 3600 s, memory under
    one whole byte or over 1 PiB."""
    for part in spec.split(","):
        match = _PART.match(part)
        assert match is not None, part
        value, unit = float(match[1]), match[2]
        if not math.isfinite(value) or value == 0:
            return True
        if unit in LATENCY_UNITS and value * LATENCY_UNITS[unit] > MAX_LATENCY_S:
            return True
        if unit in MEMORY_UNITS:
            product = value * MEMORY_UNITS[unit]
            if not math.isfinite(product) or not 1 <= math.floor(product) <= MAX_MEMORY_BYTES:
                return True
    return False


def reads(spec: str) -> bool:
    try:
        parse_budget(spec)
    except InvalidBudget:
        return False
    return True


@BOUNDED
@given(st.from_regex(BUDGET_PATTERN, fullmatch=True))
def test_a_spec_the_pattern_allows_is_read_unless_past_a_documented_limit(spec: str) -> None:
    assert reads(spec) or past_documented_limits(spec), spec


UNIT_TEXT = "".join(sorted(set("".join([*LATENCY_UNITS, *MEMORY_UNITS]))))
budget_like = st.text(alphabet="0123456789.eE+-, \t" + UNIT_TEXT + "xZ", max_size=16)


@BOUNDED
@given(st.one_of(budget_like, st.text(max_size=12)))
def test_a_spec_the_pattern_forbids_is_refused(spec: str) -> None:
    if re.search(BUDGET_PATTERN, spec) is None:
        assert not reads(spec), spec
    else:
        assert reads(spec) or past_documented_limits(spec), spec


@pytest.mark.parametrize(
    ("spec", "allowed"),
    [
        ("", True), ("5ms", True), ("5ms,100KiB", True), ("100KiB, 5ms", True),
        (" 15 ms , 2 MiB ", True), (".5s", True), ("1e-3s", True),
        ("0" * 200, False), ("0ms", False), ("0e5s", False), ("5.s", False), ("5S", False),
        ("5ms,6ms", False), ("1MiB,2MiB", False), ("5ms,", False), ("5ms,,1MiB", False),
    ],
)  # fmt: skip
def test_the_pattern_on_examples(spec: str, allowed: bool) -> None:
    assert (re.search(BUDGET_PATTERN, spec) is not None) is allowed
    assert reads(spec) is allowed


@pytest.mark.parametrize(
    ("spec", "allowed"),
    [("2MiB", True), (" 1.5 kB ", True), ("", False), ("5ms", False), ("5ms,2MiB", False)],
)
def test_the_export_pattern_is_a_memory_budget_alone(spec: str, allowed: bool) -> None:
    assert (re.search(MEMORY_BUDGET_PATTERN, spec) is not None) is allowed
