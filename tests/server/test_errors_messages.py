"""The message table's request rows, sent again: every error message of the v1 front end,
the protocol's and the budget grammar is pinned in tests/server/messages.py (the one table);
each test here sends the request of one row and compares what it says.

The tests the rows come from assert what a program reads (status, ``error.type``, headers,
counts); the English sentences a person reads, and whose wording says how to fix the request,
are the table's: one row per message, so a reworded message changes one line. The HTTP
requests are those of tests/server/http/test_bad_input.py (by its row id, sent to the same
app), tests/server/http/test_infer_errors.py, oip/test_errors.py and test_models.py; the
budget grammar is ``parse_budget`` called directly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.budget import parse_budget
from server.errors import InvalidBudget
from tests.conftest import AppClient
from tests.server.helpers import error_of
from tests.server.http.oip.helpers import INFER, oip_error
from tests.server.http.oip.test_errors import BAD_REQUESTS
from tests.server.http.test_bad_input import CHUNK, STREAM_CHUNKS, TABLE, client, send
from tests.server.http.test_infer_errors import CLIENT_ERRORS, ROUTING_ERRORS, client_error_body
from tests.server.messages import (
    BUDGET_MESSAGES,
    CLIENT_MESSAGES,
    EXPORT_MESSAGES,
    MESSAGES,
    OIP_MESSAGES,
    ROUTING_MESSAGES,
    STREAMED_BODY_BYTES,
)

__all__ = ["client"]  # test_bad_input's app fixture

ROWS = {case.id: case for case in TABLE}


def test_the_table_knows_the_streamed_body_size() -> None:
    assert CHUNK * STREAM_CHUNKS == STREAMED_BODY_BYTES


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("row", list(MESSAGES))
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
async def test_each_refusal_of_a_request_says_how_to_fix_it(client: AppClient, row: str) -> None:
    r = await send(client, ROWS[row])
    assert error_of(r) == (ROWS[row].status, ROWS[row].type, MESSAGES[row])


@pytest.mark.parametrize(("spec", "message"), BUDGET_MESSAGES)
def test_each_budget_grammar_error_says_how_to_fix_it(spec: str, message: str) -> None:
    with pytest.raises(InvalidBudget) as info:
        parse_budget(spec)
    assert info.value.message == message


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("url", list(EXPORT_MESSAGES))
async def test_each_export_refusal_says_how_to_fix_it(client: AppClient, url: str) -> None:
    assert error_of(await client.get(url))[2] == EXPORT_MESSAGES[url]


OIP_BODIES = {case: body for case, body, _ in BAD_REQUESTS}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", list(OIP_MESSAGES))
async def test_each_protocol_refusal_says_how_to_fix_it(client: AppClient, case: str) -> None:
    # json.dumps: NaN as the literal JSON parsers (Python's included) accept.
    body = json.dumps(OIP_BODIES[case]).encode()
    r = await client.post(INFER.format(task="digits"), content=body)
    assert oip_error(r)[2] == OIP_MESSAGES[case]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("row", "message"), list(zip(CLIENT_ERRORS, CLIENT_MESSAGES, strict=True)))
async def test_each_client_error_says_how_to_fix_it(
    client: AppClient, row: tuple[str, Any, int, str], message: str
) -> None:
    url, body, _, _ = row
    r = await client.post(url, json=client_error_body(body))
    assert error_of(r)[2] == message


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("row", "message"), list(zip(ROUTING_ERRORS, ROUTING_MESSAGES, strict=True))
)
async def test_each_routing_error_says_what_to_do(
    client: AppClient, row: tuple[str, str, int, str], message: str
) -> None:
    method, url, _, _ = row
    assert error_of(await client.request(method, url))[2] == message
