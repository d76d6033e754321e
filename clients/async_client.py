"""``AsyncDVNClient``: the asyncio twin of :class:`clients.client.DVNClient`.

    async with AsyncDVNClient("http://127.0.0.1:8000") as dvn:
        result = await dvn.infer("digits", x, budget="15ms")

Same arguments, results, errors and retry rules as the synchronous client; requests are
built and responses parsed by the same code (``clients._protocol``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType

import httpx

from clients import _protocol as protocol
from clients._encoding import Inputs
from clients._protocol import Call, OnMiss, ProbePath, RetryPolicy
from clients.errors import ConnectionFailedError, RequestTimeoutError
from clients.results import InferResult, ModelSummary, Plan

# Looked up at call time so tests can record the waits instead of sleeping.
_sleep = asyncio.sleep


class AsyncDVNClient:
    """An asyncio connection pool to one DVN server; ``async with`` it or ``await aclose()``.

    Arguments as :class:`clients.client.DVNClient`, with ``transport`` an
    ``httpx.AsyncBaseTransport``.

    Raises:
        ValueError: negative ``max_retries`` or ``backoff``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 3,
        backoff: float = 0.1,
    ) -> None:
        self._retry = RetryPolicy(max_retries, backoff)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=protocol.client_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    async def __aenter__(self) -> AsyncDVNClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (the client cannot be used afterwards)."""
        await self._http.aclose()

    async def _send(self, call: Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(**call.request_kwargs())
            except httpx.TransportError as e:
                delay = protocol.retry_delay(call, attempt, self._retry, error=e)
                if delay is None:
                    raise protocol.transport_error(e, call, self._http.base_url) from e
            else:
                delay = protocol.retry_delay(call, attempt, self._retry, response=response)
                if delay is None:
                    return response
                await response.aclose()
            await _sleep(delay)
            attempt += 1

    async def infer(
        self,
        task: str,
        inputs: Inputs,
        budget: str | None = None,
        level: int | None = None,
        on_miss: OnMiss | None = None,
        top_k: int | None = None,
    ) -> InferResult:
        """As :meth:`clients.client.DVNClient.infer`.

        Raises:
            DVNError: the typed error of :mod:`clients.errors` (server's message).
            TypeError, ValueError, FileNotFoundError: ``inputs`` cannot be sent.
        """
        call = protocol.infer_call(
            task, inputs, budget=budget, level=level, on_miss=on_miss, top_k=top_k
        )
        return protocol.parse_infer(await self._send(call))

    async def plan(self, task: str, budget: str | None = None) -> Plan:
        """As :meth:`clients.client.DVNClient.plan`.

        Raises:
            DVNError: e.g. UnknownTaskError, InvalidBudgetError.
        """
        return protocol.parse_plan(await self._send(protocol.plan_call(task, budget)))

    async def models(self) -> ModelSummary:
        """As :meth:`clients.client.DVNClient.models`.

        Raises:
            DVNError: the request failed.
        """
        return protocol.parse_models(await self._send(protocol.models_call()))

    async def export(
        self,
        task: str,
        level: int | None = None,
        budget: str | None = None,
        *,
        out_dir: str | Path,
    ) -> Path:
        """As :meth:`clients.client.DVNClient.export` (the archive is unpacked in a thread).

        Raises:
            ValueError: neither or both of ``level`` and ``budget``.
            ArchiveError: checksum mismatch or unsafe archive. DVNError: request failed.
        """
        response = await self._send(protocol.export_call(task, level, budget))
        return await asyncio.to_thread(protocol.save_export, response, out_dir)

    async def healthy(self) -> bool:
        """As :meth:`clients.client.DVNClient.healthy`."""
        return await self._probe("/healthz")

    async def ready(self) -> bool:
        """As :meth:`clients.client.DVNClient.ready`."""
        return await self._probe("/readyz")

    async def _probe(self, path: ProbePath) -> bool:
        try:
            response = await self._send(protocol.probe_call(path))
        except (ConnectionFailedError, RequestTimeoutError):
            return False
        return protocol.parse_probe(response)
