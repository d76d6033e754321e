"""``RayEngineClient``: the engine client API (:class:`~server.engine.client.EngineClient`)
over a Ray Serve handle to the ``DVNEngine`` replicas.

The front end (``create_app``) is the one of ``dvn serve``; only the engine is elsewhere.
Each inference request goes to the replica the request router
(:class:`~server.ray.router.BudgetRouter`) picks; its engine admits, selects the level,
batches and answers exactly as a single engine does. Ray's failures become the same typed
errors as the ZMQ client's:

- ``BackPressureError`` (the deployment's ``max_queued_requests``): 429 ``server_busy``;
- a replica that died with the request (``RayActorError``), or no replica at all
  (``DeploymentUnavailableError``): 503 ``engine_unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

import msgspec
import numpy as np
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    RayServeException,
    RequestCancelledError,
)
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from model_store.manifest import Manifest, TaskEntry
from model_store.tasks import TaskSpec
from server.budget import Budget
from server.engine import wire
from server.engine.client import ENGINE_DOWN, EngineStatus
from server.engine.outcome import Answer, ClientDisconnected
from server.engine.remote import RefusedCounts, RemoteClient
from server.errors import EngineUnavailable, ServeError, ServerBusy
from server.logs import SERVER
from server.ray.metrics import merge_pages

RETRY_AFTER_S = 0.05  # before sending a request a replica refused uncomputed elsewhere
REPLICA_LOST = (
    "the engine replica handling this request stopped before answering; retry (the other "
    "replicas answer)"
)


def ray_error(error: BaseException) -> ServeError:
    """The typed error a Ray failure of a replica call is answered with."""
    if isinstance(error, BackPressureError):
        return ServerBusy(
            "every engine replica's queue is full (the deployment's max_queued_requests); "
            "retry after Retry-After",
            retry_after_s=1,
        )
    if isinstance(error, RayActorError):
        return EngineUnavailable(REPLICA_LOST, retry_after_s=1)
    if isinstance(error, DeploymentUnavailableError):
        return EngineUnavailable(ENGINE_DOWN, retry_after_s=1)
    return EngineUnavailable(
        f"the engine replica could not be reached ({type(error).__name__}); retry shortly",
        retry_after_s=1,
    )


class RayEngineClient(RemoteClient):
    """The ingress's connection to the ``DVNEngine`` deployment through ``handle``.

    ``max_inflight`` bounds the inference requests this ingress replica has at the engines
    (past it, 429 at once). Every ``status_interval_s`` it asks one replica its status
    (readiness, draining) and sends the counts of requests refused before they reached a
    replica; when none has come for ``down_after_s`` the engine is down until one does.
    It is ready while any replica seen lately is.
    """

    INFLIGHT_LIMIT = (
        "this ingress already has {inflight} inference requests at the engine replicas, its "
        "limit (DVN_MAX_INFLIGHT={limit}); retry after Retry-After"
    )

    def __init__(
        self,
        handle: DeploymentHandle[Any],
        manifest: Manifest,
        specs: dict[str, TaskSpec],
        *,
        max_inflight: int,
        status_interval_s: float = 0.1,
        down_after_s: float = 2.0,
        call_timeout_s: float = 30.0,
        metrics_timeout_s: float = 2.0,
        forget_after_s: float = 10.0,
        retries: int = 2,
    ) -> None:
        super().__init__(
            manifest,
            specs,
            max_inflight=max_inflight,
            status_interval_s=status_interval_s,
            down_after_s=down_after_s,
            call_timeout_s=call_timeout_s,
        )
        self.retries = retries
        self.handle = handle
        self.metrics_timeout_s = metrics_timeout_s
        self._responses: dict[int, DeploymentResponse[Any]] = {}
        self._abandoned: set[int] = set()
        self._poll: asyncio.Task[None] | None = None
        # Replicas by when a status last came from one (the router spreads the polls):
        # those seen within forget_after_s are scraped by name for /metrics.
        self._seen: dict[str, float] = {}
        self._statuses: dict[str, EngineStatus] = {}
        self._answered = 0.0  # when a status last came
        self.forget_after_s = forget_after_s

    async def start(self) -> None:
        """Start polling, and wait (at most ``call_timeout_s``) for the first status: an
        ingress replica that Ray starts beside running engines (a redeploy) must not answer
        503 for want of it."""
        self._poll = asyncio.create_task(self._poll_status(), name="dvn-ray-status")
        deadline = time.monotonic() + self.call_timeout_s
        while not self._answered and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self._closing = True
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
        await self._flush_refused()

    async def _poll_status(self) -> None:
        while not self._closing:
            try:
                await self._flush_refused()
                async with asyncio.timeout(self.down_after_s):  # see MPClient._call_within
                    value = await self.handle.status.remote()
            except BackPressureError:
                pass  # up, and full: the last status stands (inference gets the 429s)
            except (TimeoutError, RayServeException, RayActorError, RayTaskError) as e:
                # One failed poll may have met a replica that is stopping (scale-down,
                # redeploy): down only when none has answered for down_after_s.
                if time.monotonic() - self._answered > self.down_after_s:
                    if self._status.up:
                        SERVER.warning("engine replicas down", extra={"fields": {"why": repr(e)}})
                    self._status = EngineStatus(up=False)
            except Exception:  # a bug of ours must not stop the status from being kept
                SERVER.exception("engine status poll failed")
            else:
                self._answered = self._seen[value["replica"]] = time.monotonic()
                self._statuses[value["replica"]] = EngineStatus.reported(value)
                self._status = self._overall()
            await asyncio.sleep(self.status_interval_s)

    def _overall(self) -> EngineStatus:
        """The engine as the front end sees it: ready while any replica seen lately is (a
        replica draining on scale-down leaves the others serving)."""
        now = time.monotonic()
        recent = [
            st for name, st in self._statuses.items()
            if now - self._seen.get(name, 0.0) < self.forget_after_s
        ]  # fmt: skip
        ready = [st for st in recent if st.ready]
        if ready:
            return ready[0]
        return recent[-1] if recent else EngineStatus(up=False)

    async def infer(
        self, request: wire.Infer, inputs: np.ndarray, entry: TaskEntry, budget: Budget | None
    ) -> Answer:
        self._take_slot()
        array = np.ascontiguousarray(inputs, dtype=np.float32)
        header = self._header(request, array)
        self.inflight += 1
        sent = time.perf_counter()
        try:
            for attempt in range(1 + self.retries):
                if attempt:  # the budget counts from arrival, retries included
                    header = msgspec.structs.replace(
                        header, elapsed_s=request.elapsed_s + time.perf_counter() - sent
                    )
                reply, probs = await self._send(request, header, array)
                # A replica that refused it uncomputed (draining, not warmed up): another
                # replica may take it.
                if not (isinstance(reply, wire.Failed) and reply.error_type == "not_ready"):
                    break
                if attempt < self.retries:
                    await asyncio.sleep(RETRY_AFTER_S)
        finally:
            self.inflight -= 1
        return self._answer(reply, probs, sent, entry, budget)

    async def _send(
        self, request: wire.Infer, header: wire.Infer, array: np.ndarray
    ) -> tuple[wire.Reply, np.ndarray | None]:
        try:
            response = cast(
                DeploymentResponse[Any],
                self.handle.infer.remote(request.task, wire.encode(header), array),
            )
            self._responses[request.id] = response
            encoded, probs = await response
        except (asyncio.CancelledError, RequestCancelledError):
            if request.id in self._abandoned:
                raise ClientDisconnected("client disconnected") from None
            raise
        except (RayServeException, RayActorError, RayTaskError) as e:
            raise ray_error(e) from None
        finally:
            self._abandoned.discard(request.id)
            self._responses.pop(request.id, None)
        return wire.decode_reply(encoded), probs

    def cancel(self, request_id: int) -> None:
        response = self._responses.get(request_id)
        if response is None:
            return
        self._abandoned.add(request_id)
        response.cancel()  # type: ignore[no-untyped-call]  # the replica drops it uncomputed if it still waits

    async def _call(self, method: wire.Method, args: dict[str, Any]) -> Any:
        if method == "metrics":
            return await self._metrics()
        try:
            encoded = await asyncio.wait_for(
                self.handle.call.remote(method, args), self.call_timeout_s
            )  # fmt: skip
        except TimeoutError:
            raise EngineUnavailable(
                f"no engine replica answered {method!r} within {self.call_timeout_s:g} s; "
                "retry shortly",
                retry_after_s=1,
            ) from None
        except (RayServeException, RayActorError, RayTaskError) as e:
            raise ray_error(e) from None
        reply = wire.decode_reply(encoded)
        if isinstance(reply, wire.Failed):
            raise reply.error()
        assert isinstance(reply, wire.Result)
        return reply.value

    async def _metrics(self) -> bytes:
        """Every replica's registry, merged, each series labelled with its replica (replicas
        that do not answer within ``metrics_timeout_s`` are left out)."""
        now = time.monotonic()
        names = sorted(n for n, seen in self._seen.items() if now - seen < self.forget_after_s)
        if not names:  # no request routed yet: whichever replica the router picks
            name, text = await self._replica_metrics(None)
            return merge_pages({name: text.decode()}).encode()
        results = await asyncio.gather(
            *(self._replica_metrics(n) for n in names), return_exceptions=True
        )
        pages = {}
        for result in results:
            if isinstance(result, BaseException):
                SERVER.warning("replica metrics missing", extra={"fields": {"why": repr(result)}})
                continue
            name, text = result
            pages[name] = text.decode()
        if not pages:
            raise EngineUnavailable(ENGINE_DOWN, retry_after_s=1)
        return merge_pages(pages).encode()

    async def _replica_metrics(self, name: str | None) -> tuple[str, bytes]:
        response = self.handle.metrics.remote(replica=name)
        try:
            value: tuple[str, bytes] = await asyncio.wait_for(response, self.metrics_timeout_s)
        except TimeoutError:
            response.cancel()  # type: ignore[no-untyped-call]
            raise
        return value

    def admit(self, task: str, budget: Budget | None, elapsed_s: float = 0.0) -> None:
        # No early refusal here: one replica's backlog says nothing of the others'. The
        # router sends the request to the replica predicted to answer it first, and that
        # replica's engine refuses it (429, the same error) if even it would miss.
        return None

    async def _send_refused(self, counts: RefusedCounts) -> None:
        with contextlib.suppress(RayServeException, RayActorError, RayTaskError):
            await self.handle.count_refused.remote(counts)
