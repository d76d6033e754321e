"""Fixtures of the clients' tests: recorded sleeps instead of real ones."""

from __future__ import annotations

import pytest

import clients.client


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between retries, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(clients.client, "_sleep", waits.append)
    return waits
