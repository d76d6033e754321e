"""The query parameters of ``POST /infer/{task}``, read by hand, and their OpenAPI
description.

By hand because it is the hot path: FastAPI's per-parameter validation (type adapters,
annotation inspection, a dependency solver) was a quarter of a request's handling on the
CPU at level 1. Errors name the parameter and what to send instead, as
:class:`~server.errors.InvalidParameter` (422); the budget's grammar is
:func:`server.budget.parse_budget`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.budget import BUDGET_LIMITS, BUDGET_PATTERN
from server.engine.selection import OnMiss
from server.errors import InvalidParameter

MAX_BUDGET_CHARS = 200
ON_MISS: tuple[OnMiss, ...] = ("degrade", "reject")
BUDGET_DOC = (
    "Comma-separated constraints, at most one latency (us, ms, s) and one memory (B, kB, MB, "
    "GB, KiB, MiB, GiB), each a positive number and its unit, e.g. `15ms,2MiB`. None or "
    f"blank: the best level. {BUDGET_LIMITS}"
)
LEVEL_DOC = (
    "Pin a level (1-based): at most the task's number of levels, which GET /v1/models lists "
    "(a 422 names the range)."
)
# The budget's OpenAPI schema: its grammar is checked by parse_budget, with messages that
# say how to fix it, so the pattern documents rather than validates.
BUDGET_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": MAX_BUDGET_CHARS,
    "pattern": BUDGET_PATTERN,
}
LEVEL_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1}
ON_MISS_DOC = "When no level meets the latency budget: serve the smallest (degrade) or 503."


@dataclass(frozen=True)
class InferQuery:
    budget: str | None = None
    level: int | None = None
    on_miss: OnMiss = "degrade"
    top_k: int | None = None


def _whole_number(name: str, value: str, hint: str) -> int:
    digits = value.strip()
    if not digits.lstrip("+-").isdigit() or digits.count("-") + digits.count("+") > 1:
        raise InvalidParameter(f"{name} must be a whole number ({hint}), got {value!r}")
    return int(digits)


def parse_level(raw: str) -> int:
    """A level given in a path: digits only, as an integer is written (1-based; the range is
    the task's, checked by the caller).

    Raises:
        InvalidParameter: anything else (a sign, a fraction, spaces, a word).
    """
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidParameter(f"level must be a whole number (1-based), got {raw!r}")
    return int(raw)


def parse_infer_query(query: Mapping[str, str]) -> InferQuery:
    """The parameters of one ``/infer`` request (the last value of a repeated one counts).

    Raises:
        InvalidParameter: a level or top_k that is not a whole number, top_k under 1, an
            on_miss other than degrade or reject, a budget over 200 characters.
    """
    budget = query.get("budget")
    if budget is not None and len(budget) > MAX_BUDGET_CHARS:
        raise InvalidParameter(
            f"budget is {len(budget)} characters long, over the {MAX_BUDGET_CHARS} allowed; a "
            "budget is at most one latency and one memory constraint, e.g. budget=15ms,2MiB"
        )
    raw_level = query.get("level")
    level = None if raw_level is None else _whole_number("level", raw_level, "1-based")
    raw_on_miss = query.get("on_miss", "degrade")
    if raw_on_miss not in ON_MISS:
        raise InvalidParameter(f"on_miss must be degrade or reject, got {raw_on_miss!r}")
    on_miss: OnMiss = "reject" if raw_on_miss == "reject" else "degrade"
    raw_top_k = query.get("top_k")
    top_k = None if raw_top_k is None else _whole_number("top_k", raw_top_k, "at least 1")
    if top_k is not None and top_k < 1:
        raise InvalidParameter(f"top_k must be at least 1, got {top_k}")
    return InferQuery(budget=budget, level=level, on_miss=on_miss, top_k=top_k)


def param_doc(
    name: str,
    schema: dict[str, Any],
    description: str,
    *,
    where: str = "query",
    required: bool = False,
) -> dict[str, Any]:
    """One parameter's OpenAPI entry, for a parameter read by hand."""
    return {
        "name": name,
        "in": where,
        "required": required,
        "schema": {**schema, "description": description},
        "description": description,
    }


# What FastAPI would have generated for these parameters, for openapi_extra.
INFER_QUERY_DOC: list[dict[str, Any]] = [
    param_doc("budget", BUDGET_SCHEMA, BUDGET_DOC),
    param_doc("level", LEVEL_SCHEMA, LEVEL_DOC),
    param_doc(
        "on_miss", {"type": "string", "enum": list(ON_MISS), "default": "degrade"}, ON_MISS_DOC
    ),
    param_doc("top_k", {"type": "integer", "minimum": 1}, "Return the k most probable classes."),
]
