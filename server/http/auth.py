"""Optional API keys (``DVN_API_KEYS``): ``Authorization: Bearer <key>`` or ``X-API-Key``,
compared in constant time; 401 without a key, 403 with a wrong one. Keys are never logged."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

from server.errors import Forbidden, Unauthorized


def presented_key(conn: HTTPConnection) -> str | None:
    auth = conn.headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return conn.headers.get("x-api-key")


def check_key(conn: HTTPConnection, keys: list[str]) -> None:
    """Raises Unauthorized or Forbidden unless ``keys`` is empty or the request holds one."""
    if not keys:
        return
    given = presented_key(conn)
    if given is None:
        raise Unauthorized(
            "this server needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
    # Compare against every key, without stopping early, so timing says nothing.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given.encode(), key.encode())
    if not matched:
        raise Forbidden("the API key is not valid for this server")
