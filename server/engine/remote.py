"""What the clients of an engine in another process share:
:class:`~server.engine.mp_client.MPClient` (ZMQ) and
:class:`~server.ray.client.RayEngineClient` (Ray Serve).

Each keeps the engine's status as its last poll found it, bounds the inference requests it
has at the engine, counts the requests its front end refused before they reached the engine
and sends those counts in bulk (with a status poll, or before a scrape, so the engine's
``dvn_requests_total`` counts every request while refusing stays cheap under overload), and
builds an answer from the engine's reply. Only the transport differs: how a call, a request
and the counts travel.
"""

from __future__ import annotations

import abc
import time
from collections import Counter
from typing import Any, ClassVar

import numpy as np

from model_store.manifest import Manifest, TaskEntry
from model_store.tasks import TaskSpec
from server.budget import Budget
from server.engine import wire
from server.engine.client import ENGINE_DOWN, EngineClient, EngineStatus
from server.engine.outcome import Answer, missed_kind, outcome_of
from server.errors import BacklogShed, EngineUnavailable, ServeError, ServerBusy

# (task, outcome, missed budget kind, shed by admission, count): a wire.Refused row
RefusedCounts = list[tuple[str, str, str | None, bool, int]]


class RemoteClient(EngineClient):
    """The engine behind a transport. ``max_inflight``: past it, 429 ``server_busy`` at once,
    in the words of :attr:`INFLIGHT_LIMIT` (``inflight`` and ``limit`` filled in)."""

    INFLIGHT_LIMIT: ClassVar[str]

    def __init__(
        self,
        manifest: Manifest,
        specs: dict[str, TaskSpec],
        *,
        max_inflight: int,
        status_interval_s: float,
        down_after_s: float,
        call_timeout_s: float,
    ) -> None:
        self.manifest = manifest
        self.specs = specs
        self.max_inflight = max_inflight
        self.status_interval_s = status_interval_s
        self.down_after_s = down_after_s
        self.call_timeout_s = call_timeout_s
        self.inflight = 0  # inference requests at the engine
        self._status = EngineStatus(up=False)
        self._refused: Counter[tuple[str, str, str | None, bool]] = Counter()
        # Set by close() before it cancels the status poll, which stops on it too: a cancel
        # that lands with a poll's reply may be lost (docs/decisions.md, timed waits).
        self._closing = False

    # -- transport -------------------------------------------------------------------------
    @abc.abstractmethod
    async def _call(self, method: wire.Method, args: dict[str, Any]) -> Any:
        """One :class:`~server.engine.wire.Call` to an engine that is up. Raises ServeError."""

    @abc.abstractmethod
    async def _send_refused(self, counts: RefusedCounts) -> None:
        """Send refusal counts to the engine; a transport failure loses them quietly."""

    # -- status ----------------------------------------------------------------------------
    def status(self) -> EngineStatus:
        return self._status

    # -- calls -----------------------------------------------------------------------------
    async def call(self, method: wire.Method, **args: Any) -> Any:
        if not self._status.up:
            raise EngineUnavailable(ENGINE_DOWN, retry_after_s=1)
        if method == "metrics":
            await self._flush_refused()  # a scrape counts every refusal so far
        return await self._call(method, args)

    # -- inference -------------------------------------------------------------------------
    def _take_slot(self) -> None:
        """Raises ServerBusy when ``max_inflight`` requests are at the engine already."""
        if self.inflight >= self.max_inflight:
            raise ServerBusy(
                self.INFLIGHT_LIMIT.format(inflight=self.inflight, limit=self.max_inflight),
                retry_after_s=1,
            )

    @staticmethod
    def _header(request: wire.Infer, array: np.ndarray) -> wire.Infer:
        """``request``'s header for the float32 ``array`` that goes with it."""
        return wire.stamped(wire.Infer(
            request.id, request.task, request.budget, request.level, request.on_miss,
            request.elapsed_s, request.request_id, tuple(array.shape), "float32",
        ))  # fmt: skip

    def _answer(
        self,
        reply: wire.Reply,
        probs: np.ndarray | None,
        sent: float,
        entry: TaskEntry,
        budget: Budget | None,
    ) -> Answer:
        """The answer of a request sent at ``sent`` (``perf_counter``); raises the error of a
        failed one."""
        if isinstance(reply, wire.Failed):
            raise reply.error()
        assert isinstance(reply, wire.Answered) and probs is not None
        if self.observe_ipc is not None:
            # the round trip's time outside the engine
            self.observe_ipc(max(0.0, time.perf_counter() - sent - reply.engine_s))
        return wire.answer_of(reply, probs, entry, budget)

    # -- refusals --------------------------------------------------------------------------
    def refused(self, task: str, error: ServeError) -> None:
        # Counted here and sent in bulk with the next status poll (or before a scrape):
        # refusing stays cheap under overload.
        shed = isinstance(error, BacklogShed)
        self._refused[(task, outcome_of(error), missed_kind(error), shed)] += 1

    async def _flush_refused(self) -> None:
        if not self._refused or not self._status.up:
            return
        counts = [(t, o, m, shed, n) for (t, o, m, shed), n in self._refused.items()]
        self._refused.clear()
        await self._send_refused(counts)
