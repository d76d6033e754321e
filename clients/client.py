"""``DVNClient``: the synchronous Python client of a DVN server (docs/clients.md).

    with DVNClient("http://127.0.0.1:8000") as dvn:
        result = dvn.infer("digits", x, budget="15ms,2MiB")
        print(result.level, result.predictions[0].class_name, result.budget_met)

Errors are the typed exceptions of :mod:`clients.errors`.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

import httpx

from clients import _protocol as protocol
from clients._encoding import Inputs
from clients._protocol import Call, OnMiss, ProbePath, RetryPolicy
from clients.errors import ConnectionFailedError, RequestTimeoutError
from clients.results import InferResult, ModelSummary, Plan

# Looked up at call time so tests can record the waits instead of sleeping.
_sleep = time.sleep


class DVNClient:
    """A connection pool to one DVN server; use it as a context manager or call ``close()``.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000`` (a path prefix is kept).
        api_key: sent as ``Authorization: Bearer <key>``.
        timeout: seconds for each of connect, read, write and pool acquisition.
        transport: an ``httpx.BaseTransport`` to use instead of the network (tests use
            ``httpx.MockTransport``).
        max_retries: retries of a 429/503 with ``Retry-After`` and of a connection failure
            on a GET; nothing else is ever retried.
        backoff: the n-th retry waits at most ``backoff * 2**n`` seconds.

    Raises:
        ValueError: negative ``max_retries`` or ``backoff``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        max_retries: int = 3,
        backoff: float = 0.1,
    ) -> None:
        self._retry = RetryPolicy(max_retries, backoff)
        self._http = httpx.Client(
            base_url=base_url,
            headers=protocol.client_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    def __enter__(self) -> DVNClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (the client cannot be used afterwards)."""
        self._http.close()

    def _send(self, call: Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(**call.request_kwargs())
            except httpx.TransportError as e:
                delay = protocol.retry_delay(call, attempt, self._retry, error=e)
                if delay is None:
                    raise protocol.transport_error(e, call, self._http.base_url) from e
            else:
                delay = protocol.retry_delay(call, attempt, self._retry, response=response)
                if delay is None:
                    return response
                response.close()
            _sleep(delay)
            attempt += 1

    def infer(
        self,
        task: str,
        inputs: Inputs,
        budget: str | None = None,
        level: int | None = None,
        on_miss: OnMiss | None = None,
        top_k: int | None = None,
    ) -> InferResult:
        """Run ``task`` on ``inputs`` at the level ``budget`` (e.g. ``"15ms,2MiB"``) allows.

        ``inputs``: a numpy array / torch tensor / nested list of shape ``(C, H, W)`` or
        ``(B, C, H, W)`` in model space (sent as ``.npy``), a ``.png``/``.jpg``/``.jpeg``/
        ``.npy`` path, or the raw bytes of a PNG, JPEG or ``.npy`` file. ``level`` pins a
        level; ``on_miss`` is ``"degrade"`` (default) or ``"reject"``; ``top_k`` returns
        the k most probable classes instead of every probability.

        Raises:
            DVNError: the typed error of :mod:`clients.errors` (server's message).
            TypeError, ValueError, FileNotFoundError: ``inputs`` cannot be sent.
        """
        call = protocol.infer_call(
            task, inputs, budget=budget, level=level, on_miss=on_miss, top_k=top_k
        )
        return protocol.parse_infer(self._send(call))

    def plan(self, task: str, budget: str | None = None) -> Plan:
        """The level a request with ``budget`` would get now, and every level's cost.

        Raises:
            DVNError: e.g. UnknownTaskError, InvalidBudgetError.
        """
        return protocol.parse_plan(self._send(protocol.plan_call(task, budget)))

    def models(self) -> ModelSummary:
        """The loaded checkpoint: tasks, levels, costs, accuracy, profiled latency.

        Raises:
            DVNError: the request failed.
        """
        return protocol.parse_models(self._send(protocol.models_call()))

    def export(
        self,
        task: str,
        level: int | None = None,
        budget: str | None = None,
        *,
        out_dir: str | Path,
    ) -> Path:
        """Download ``task`` at ``level`` (or the largest level within the memory
        ``budget``) as a standalone checkpoint, verify its sha256 and unpack it safely.

        Returns:
            The checkpoint directory (load it with ``LocalDVN.load``).

        Raises:
            ValueError: neither or both of ``level`` and ``budget``.
            ArchiveError: checksum mismatch or unsafe archive. DVNError: request failed.
        """
        response = self._send(protocol.export_call(task, level, budget))
        return protocol.save_export(response, out_dir)

    def healthy(self) -> bool:
        """Whether the server process is alive (``GET /healthz``); False when unreachable.

        Raises:
            DVNError: a 4xx (wrong URL or credentials).
        """
        return self._probe("/healthz")

    def ready(self) -> bool:
        """Whether the server is ready to serve (``GET /readyz``); False while warming up,
        draining or unreachable.

        Raises:
            DVNError: a 4xx (wrong URL or credentials).
        """
        return self._probe("/readyz")

    def _probe(self, path: ProbePath) -> bool:
        try:
            response = self._send(protocol.probe_call(path))
        except (ConnectionFailedError, RequestTimeoutError):
            return False
        return protocol.parse_probe(response)
