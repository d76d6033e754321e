"""``BudgetRouter``: Ray Serve's request router for the ``DVNEngine`` replicas, sending each
inference request to the replica predicted to answer it first.

Each replica reports (``DVNEngine.record_routing_stats``, every
``request_routing_stats_period_s``) per task the earliest a new request could be answered
there, behind its queues and running forward (``wait_s``), and on an idle replica
(``floor_s``). The router adds, for the requests it has sent a replica since that report,
``floor_s`` each (the report does not know of them yet), scales it by the replica's pace
(how fast its forwards run now against its start-up profile, in every level), and ranks the
replicas by that prediction: the first that accepts the request gets it.

When a replica's report is missing or older than ``stale_after_s``, or the call is not an
inference (status, exports), the router falls back to Ray's power of two choices:
two random replicas, of which Ray gives the request to the one with the shorter queue.

A call with a ``replica`` keyword (the ingress scraping each replica's metrics) goes to that
replica, or waits for it.

The choice itself, :func:`rank_replicas`, is a pure function of the reports, the sends
since and the clock: tested with tables, no Ray needed.

``PowerOfTwoRouter`` is Ray's default router (power of two choices on queue length, for
every request) that also honours the ``replica`` keyword, so that ``/metrics`` still reaches
every replica: ``RayOptions(router="pow2")``, the baseline ``dvn bench scale`` compares
``BudgetRouter`` with.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
from ray.serve.request_router import (
    FIFOMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

STALE_AFTER_S = 1.0


@dataclass(frozen=True)
class ReplicaView:
    """What the router knows of one replica: its last report (``stats``, possibly empty)
    and the times it sent the replica requests that are not yet answered."""

    name: str
    stats: Mapping[str, Any]
    sent: Sequence[float]


def predicted_s(view: ReplicaView, task: str) -> float | None:
    """When a request of ``task`` sent now would be answered at this replica: its reported
    ``wait_s``, plus ``floor_s`` for each request sent since the report, times its ``pace``
    (its forwards' time now against its start-up profile, in every level: the level-1
    figures alone do not show a replica slowed while it ran other levels). None: no report
    for the task."""
    admission = view.stats.get("admissions", {}).get(task)
    if admission is None:
        return None
    wait_s, floor_s = admission
    at = float(view.stats.get("at", 0.0))
    since = sum(1 for t in view.sent if t > at)
    return (float(wait_s) + since * float(floor_s)) * float(view.stats.get("pace", 1.0))


def rank_replicas(
    views: Sequence[ReplicaView],
    task: str | None,
    now: float,
    stale_after_s: float,
    tie_s: float = 0.002,
    rng: random.Random | None = None,
    tie_ratio: float = 0.5,
) -> list[str] | None:
    """Replica names, soonest predicted answer first. A prediction within ``tie_s``, or
    ``tie_ratio`` of the best, of the best is a tie (identical replicas' profiles differ by
    their measuring noise), broken by fewer requests outstanding, then at random (an idle
    cluster spreads its requests). Not-ready replicas go last. None when the prediction cannot be
    trusted (a report missing or older than ``stale_after_s``, or no task): fall back to
    power of two choices."""
    if task is None or not views:
        return None
    rng = rng or random.Random()
    scored = []
    for view in views:
        at = view.stats.get("at")
        if at is None or now - float(at) > stale_after_s:
            return None
        predicted = predicted_s(view, task)
        if predicted is None:
            return None
        ready = bool(view.stats.get("ready", False))
        scored.append((not ready, predicted, len(view.sent), rng.random(), view.name))
    scored.sort()
    # ties: predictions within tie_s of the best of their readiness group
    ranked: list[tuple[bool, int, int, float, str]] = []
    for not_ready, predicted, outstanding, draw, name in scored:
        best = min(p for nr, p, *_ in scored if nr == not_ready)
        tie = max(tie_s, tie_ratio * best)
        bucket = 0 if predicted - best <= tie else 1 + int((predicted - best) / tie)
        ranked.append((not_ready, bucket, outstanding, draw, name))
    ranked.sort()
    return [name for *_, name in ranked]


EARLY_KEPT = 1024  # completions seen before their routing, kept until this many


class BudgetRouter(FIFOMixin, RequestRouter):
    """Ray Serve ``RequestRouter`` (set with ``RequestRouterConfig(request_router_class=
    "server.ray.router:BudgetRouter")``); ``request_router_kwargs``: ``stale_after_s``."""

    def initialize_state(self, **kwargs: Any) -> None:
        self.stale_after_s = float(kwargs.get("stale_after_s", STALE_AFTER_S))
        self._sent: dict[ReplicaID, deque[float]] = {}
        self._outstanding: dict[tuple[ReplicaID, str], float] = {}
        # Ray may report a request completed before it reports it routed (its completion
        # callback is registered before the replica accepts): those are not outstanding.
        self._completed_early: dict[tuple[ReplicaID, str], float] = {}
        self.fallbacks = 0  # requests routed by power of two choices

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        by_name = {r.replica_id.unique_id: r for r in candidate_replicas}
        target = None if pending_request is None else pending_request.kwargs.get("replica")
        if target is not None:  # a call for one replica (metrics): that one or none
            return [[by_name[target]]] if target in by_name else []
        task = _task_of(pending_request)
        views = [
            ReplicaView(
                name,
                r.routing_stats or {},
                list(self._sent.get(r.replica_id, ())),
            )
            for name, r in by_name.items()
        ]
        ranked = rank_replicas(views, task, time.time(), getattr(self, "stale_after_s", 1.0))
        if ranked is None:
            if task is not None:
                self.fallbacks = getattr(self, "fallbacks", 0) + 1
            pair = random.sample(candidate_replicas, min(2, len(candidate_replicas)))
            return [pair]  # Ray routes to the one of the two with the shorter queue
        return [[by_name[name]] for name in ranked]

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any
    ) -> None:
        key = (replica_id, pending_request.metadata.internal_request_id)
        if self._completed_early.pop(key, None) is not None:
            return  # already answered: never outstanding
        now = time.time()
        self._sent.setdefault(replica_id, deque()).append(now)
        self._outstanding[key] = now

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        key = (replica_id, internal_request_id)
        at = self._outstanding.pop(key, None)
        if at is None:
            now = time.time()
            self._completed_early[key] = now
            if len(self._completed_early) > EARLY_KEPT:  # completions never routed: forget
                cutoff = now - 60.0
                self._completed_early = {
                    k: t for k, t in self._completed_early.items() if t > cutoff
                }
            return
        sent = self._sent.get(replica_id)
        if sent is not None:
            with contextlib.suppress(ValueError):  # gone with its replica
                sent.remove(at)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._sent.pop(replica_id, None)


class PowerOfTwoRouter(PowerOfTwoChoicesRequestRouter):
    """Ray's default router (``PowerOfTwoChoicesRequestRouter``), unchanged for every call
    but one for a named replica (the ingress's metrics scrape), which goes to that replica
    as with :class:`BudgetRouter`."""

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        target = None if pending_request is None else pending_request.kwargs.get("replica")
        if target is None:
            chosen: list[list[RunningReplica]] = await super().choose_replicas(
                candidate_replicas, pending_request
            )
            return chosen
        by_name = {r.replica_id.unique_id: r for r in candidate_replicas}
        return [[by_name[target]]] if target in by_name else []


def _task_of(request: PendingRequest | None) -> str | None:
    """The task of an ``infer`` call (its first argument), else None."""
    if request is None or request.metadata.call_method != "infer":
        return None
    task = request.args[0] if request.args else request.kwargs.get("task")
    return task if isinstance(task, str) else None
