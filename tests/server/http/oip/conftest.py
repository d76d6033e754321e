"""The OIP v2 tests' client: the test app with the protocol's routes."""

from __future__ import annotations

import pytest

from tests.conftest import AppClient, ServeFactory
from tests.server.http.oip.helpers import with_oip


@pytest.fixture
async def client(serve: ServeFactory) -> AppClient:
    return with_oip(await serve())
