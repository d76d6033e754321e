"""The HTTP contract of docs/api.md, without I/O: shared by the sync and async clients and
by the load generator, so each request is built and each response parsed in one place.

A :class:`Call` says what to send; ``parse_*`` turn a response into a result or raise the
typed error; :func:`retry_delay` decides whether and how long to wait before a retry.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from clients import _archive
from clients._encoding import Inputs, encode_inputs
from clients.errors import (
    ConnectionFailedError,
    DVNError,
    InvalidResponseError,
    RequestTimeoutError,
    error_for,
)
from clients.results import InferResult, ModelSummary, Plan

OnMiss = Literal["degrade", "reject"]
ProbePath = Literal["/healthz", "/readyz"]
USER_AGENT = "dvn-serve-client/0.1"
REQUEST_ID = "X-Request-ID"
ARCHIVE_SHA256 = "X-DVN-Archive-SHA256"

# Failures where the request certainly or very likely never reached the application: safe
# to repeat for a GET. A read timeout is not among them (the server may still be working).
RETRYABLE_TRANSPORT_ERRORS = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
RETRYABLE_STATUSES = frozenset({429, 503})

_R = TypeVar("_R", bound=BaseModel)


@dataclass(frozen=True)
class Call:
    """One request to send: ``retry=False`` makes it single-shot (health probes)."""

    method: Literal["GET", "POST"]
    path: str
    params: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retry: bool = True

    @property
    def idempotent(self) -> bool:
        return self.method == "GET"

    def request_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client.request`` / ``AsyncClient.request``."""
        return {
            "method": self.method,
            "url": self.path,
            "params": self.params,
            "content": self.content,
            "headers": self.headers,
        }


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_retries`` retries, the n-th (0-based) after ``backoff * 2**n`` s at most."""

    max_retries: int = 3
    backoff: float = 0.1

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries}")
        if not (self.backoff >= 0 and math.isfinite(self.backoff)):
            raise ValueError(f"backoff must be a finite number of seconds >= 0, got {self.backoff}")


def client_headers(api_key: str | None) -> dict[str, str]:
    """Headers every request carries: user agent, and the API key when there is one."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _segment(value: str | int) -> str:
    return quote(str(value), safe="")


def _query(**values: str | int | None) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}


def infer_call(
    task: str,
    inputs: Inputs,
    *,
    budget: str | None = None,
    level: int | None = None,
    on_miss: OnMiss | None = None,
    top_k: int | None = None,
) -> Call:
    """``POST /infer/{task}`` with ``inputs`` encoded (see ``_encoding.encode_inputs``)."""
    body, content_type = encode_inputs(inputs)
    return Call(
        "POST",
        f"/infer/{_segment(task)}",
        _query(budget=budget, level=level, on_miss=on_miss, top_k=top_k),
        body,
        {"Content-Type": content_type},
    )


def npy_infer_call(task: str, body: bytes, params: dict[str, str]) -> Call:
    """``POST /infer/{task}`` with an already encoded ``.npy`` body (the load generator)."""
    headers = {"Content-Type": "application/x-npy"}
    return Call("POST", f"/infer/{_segment(task)}", params, body, headers)


def plan_call(task: str, budget: str | None = None) -> Call:
    return Call("GET", f"/plan/{_segment(task)}", _query(budget=budget))


def models_call() -> Call:
    return Call("GET", "/v1/models")


def export_call(task: str, level: int | None = None, budget: str | None = None) -> Call:
    """The export route for a pinned ``level`` or the largest level within ``budget``.

    Raises:
        ValueError: neither or both of ``level`` and ``budget`` given.
    """
    if (level is None) == (budget is None):
        raise ValueError(
            "export needs exactly one of level= (a level number) or budget= (e.g. '2MiB')"
        )
    headers = {"Accept": "application/x-tar, application/json"}
    base = f"/v1/models/{_segment(task)}"
    if level is not None:
        return Call("GET", f"{base}/levels/{_segment(level)}/export", headers=headers)
    return Call("GET", f"{base}/export", _query(budget=budget), headers=headers)


def probe_call(path: ProbePath) -> Call:
    return Call("GET", path, retry=False)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` when
    absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        when = email.utils.parsedate_tz(value)
        if when is None:
            return None
        seconds = email.utils.mktime_tz(when) - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def error_from_response(response: httpx.Response) -> DVNError:
    """The typed error for a non-2xx response; the message is the server's own."""
    request_id = response.headers.get(REQUEST_ID)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    try:
        error = response.json()["error"]
        kind, message = error["type"], error["message"]
        if not isinstance(kind, str) or not isinstance(message, str):
            raise TypeError(kind)
    except (ValueError, KeyError, TypeError):
        snippet = response.text[:200].strip() or "(empty body)"
        return DVNError(
            f"HTTP {response.status_code} {response.reason_phrase}: {snippet}",
            response.status_code,
            None,
            request_id,
            retry_after=retry_after,
        )
    return error_for(kind, message, response.status_code, request_id, retry_after=retry_after)


def raise_for_error(response: httpx.Response) -> None:
    """Raise the typed :class:`DVNError` when ``response`` is not a success."""
    if not response.is_success:
        raise error_from_response(response)


def _parse(
    response: httpx.Response,
    model: type[_R],
    fill: Callable[[dict[str, Any]], None] | None = None,
) -> _R:
    raise_for_error(response)
    try:
        data = response.json()
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        if fill is not None:
            fill(data)
        return model.model_validate(data)
    except (ValueError, ValidationError) as e:
        raise InvalidResponseError(
            f"{response.request.method} {response.request.url} answered {response.status_code} "
            f"with a body that does not match docs/api.md: {e}",
            response.status_code,
            "invalid_response",
            response.headers.get(REQUEST_ID),
        ) from e


def parse_infer(response: httpx.Response) -> InferResult:
    """The :class:`InferResult` of an infer response.

    Raises:
        DVNError: the typed error of a failed request, or InvalidResponseError.
    """

    def fill(data: dict[str, Any]) -> None:
        data.setdefault("request_id", response.headers.get(REQUEST_ID))

    return _parse(response, InferResult, fill)


def parse_plan(response: httpx.Response) -> Plan:
    return _parse(response, Plan)


def parse_models(response: httpx.Response) -> ModelSummary:
    return _parse(response, ModelSummary)


def parse_probe(response: httpx.Response) -> bool:
    """True for 200; False for 5xx (not ready, draining, broken); 4xx raise (wrong URL, auth)."""
    if response.is_success:
        return True
    if response.status_code >= 500:
        return False
    raise error_from_response(response)


def save_export(response: httpx.Response, out_dir: str | Path) -> Path:
    """Verify an export response's archive against its sha256 header and unpack it.

    Raises:
        DVNError: the typed error of a failed request. ArchiveError: checksum mismatch or
        missing, unsafe member, not a checkpoint.
    """
    raise_for_error(response)
    data = response.content
    _archive.verify_sha256(data, response.headers.get(ARCHIVE_SHA256))
    return _archive.extract_checkpoint(data, out_dir)


def retry_delay(
    call: Call,
    attempt: int,
    policy: RetryPolicy,
    *,
    response: httpx.Response | None = None,
    error: Exception | None = None,
) -> float | None:
    """Seconds to wait before retrying after attempt ``attempt`` (0-based), or ``None``.

    Retried: a 429/503 that carries ``Retry-After`` (wait ``min(Retry-After, backoff*2**n)``)
    and a connection failure on a GET (wait ``backoff*2**n``). Nothing else, and never
    more than ``policy.max_retries`` times.
    """
    if not call.retry or attempt >= policy.max_retries:
        return None
    cap = policy.backoff * 2.0**attempt
    if response is not None:
        if response.status_code not in RETRYABLE_STATUSES:
            return None
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return None if retry_after is None else min(retry_after, cap)
    if error is not None and call.idempotent and isinstance(error, RETRYABLE_TRANSPORT_ERRORS):
        return cap
    return None


def transport_error(error: httpx.TransportError, call: Call, base_url: httpx.URL) -> DVNError:
    """The :class:`DVNError` for a request that got no response."""
    where = f"{call.method} {str(base_url).rstrip('/')}{call.path}"
    detail = str(error) or type(error).__name__
    if isinstance(error, httpx.TimeoutException):
        return RequestTimeoutError(f"{where}: no response in time ({detail})", None, "timeout")
    return ConnectionFailedError(
        f"{where}: cannot reach the DVN server ({detail}); is `dvn serve` running there?",
        None,
        "connection",
    )
