"""Admission: whether a latency-budgeted request may enter the engine, from what the queues
ahead of it will take (docs/decisions.md, admission). A pure function of the budget and the
engine's :class:`Admission` figures, used by the front ends before a body is read and by the
engine when the request arrives."""

from __future__ import annotations

from dataclasses import dataclass

from server.budget import Budget
from server.errors import BacklogShed


@dataclass(frozen=True)
class Admission:
    """What admission weighs for one task: the earliest a new request could be answered
    now (level 1, behind every queue and the running forward) and on an idle engine."""

    wait_s: float
    floor_s: float


def shed_for(
    budget: Budget | None, admission: Admission, elapsed_s: float = 0.0
) -> BacklogShed | None:
    """The refusal of a request whose latency budget the queues ahead would make it miss
    at every level, though an idle engine would meet it: it would only wait out its
    deadline, and its work would slow the others. A budget even an idle engine misses is
    not shed (it is served at level 1, or refused by ``on_miss=reject``, as docs/api.md
    says). ``elapsed_s``: of the budget, already spent since arrival. None: admit it."""
    if budget is None or budget.latency_s is None:
        return None
    left = budget.latency_s - elapsed_s
    if not (admission.floor_s <= budget.latency_s and left < admission.wait_s):
        return None
    return BacklogShed(
        f"the engine's queues put the earliest answer to this request at "
        f"{admission.wait_s * 1e3:.1f} ms, over its latency budget of "
        f"{budget.latency_s * 1e3:g} ms; retry after Retry-After, raise the budget, or send "
        "to another replica",
        retry_after_s=admission.wait_s,
    )
