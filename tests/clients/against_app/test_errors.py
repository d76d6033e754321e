"""Every error reaches the caller typed and with the server's message; API keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from clients import errors
from model_store.checkpoint import Checkpoint
from tests.clients.against_app.helpers import (
    Served,
    check_result,
    connect,
    digits_unsatisfiable,
    rng_array,
)
from tests.conftest import ServeFactory


async def test_every_error_arrives_typed_with_the_servers_message(
    served: Served, tmp_path: Path
) -> None:
    dvn = served.dvn
    x = rng_array(7, 1, 8, 8)
    cases: list[tuple[Callable[[], Awaitable[object]], type[errors.DVNError], int, str, str]] = [
        (
            lambda: dvn.infer("nope", x),
            errors.UnknownTaskError,
            404,
            "unknown_task",
            "unknown task 'nope'; this server serves: digits, shapes",
        ),
        (
            lambda: dvn.plan("nope"),
            errors.UnknownTaskError,
            404,
            "unknown_task",
            "unknown task 'nope'; this server serves: digits, shapes",
        ),
        (
            lambda: dvn.infer("digits", x, budget="5xs"),
            errors.InvalidBudgetError,
            422,
            "invalid_budget",
            "budget '5xs': unknown unit 'xs'; use one of us, ms, s, B, kB, MB, GB, KiB, MiB, "
            "GiB (units are case-sensitive), e.g. budget=15ms,2MiB",
        ),
        (
            lambda: dvn.infer("digits", x, budget="5ms,6ms"),
            errors.InvalidBudgetError,
            422,
            "invalid_budget",
            "budget '5ms,6ms': more than one latency constraint; give one",
        ),
        (
            lambda: dvn.plan("digits", budget="-1ms"),
            errors.InvalidBudgetError,
            422,
            "invalid_budget",
            "budget '-1ms': cannot read '-1ms'; each constraint is a positive number and a "
            "unit (us, ms, s, B, kB, MB, GB, KiB, MiB, GiB), e.g. budget=15ms,2MiB",
        ),
        (
            lambda: dvn.infer("digits", x, budget="1.5KiB"),
            errors.BudgetUnsatisfiableError,
            422,
            "budget_unsatisfiable",
            digits_unsatisfiable(1536, "1.5 KiB"),
        ),
        (
            lambda: dvn.infer("digits", x, budget="20ms,1743B"),
            errors.BudgetUnsatisfiableError,
            422,
            "budget_unsatisfiable",
            digits_unsatisfiable(1743, "1.7 KiB"),
        ),
        (
            lambda: dvn.export("digits", budget="1.5KiB", out_dir=tmp_path / "never"),
            errors.BudgetUnsatisfiableError,
            422,
            "budget_unsatisfiable",
            digits_unsatisfiable(1536, "1.5 KiB"),
        ),
        (
            lambda: dvn.infer("digits", x, level=5),
            errors.InvalidParameterError,
            422,
            "invalid_parameter",
            "level 5 is out of range for task 'digits': use 1..4",
        ),
        (
            lambda: dvn.infer("digits", x, level=0),
            errors.InvalidParameterError,
            422,
            "invalid_parameter",
            "level 0 is out of range for task 'digits': use 1..4",
        ),
        (
            lambda: dvn.export("shapes", level=9, out_dir=tmp_path / "never"),
            errors.InvalidParameterError,
            422,
            "invalid_parameter",
            "level 9 is out of range for task 'shapes': use 1..4",
        ),
        (
            lambda: dvn.infer("digits", x, top_k=0),
            errors.InvalidParameterError,
            422,
            "invalid_parameter",
            "top_k must be at least 1, got 0",
        ),
        (
            lambda: dvn.export("digits", budget="5ms", out_dir=tmp_path / "never"),
            errors.InvalidParameterError,
            422,
            "invalid_parameter",
            "export takes a memory budget only, e.g. ?budget=2MiB (or use "
            "/v1/models/digits/levels/{level}/export)",
        ),
        (
            lambda: dvn.infer("digits", rng_array(8, 1, 7, 7)),
            errors.InvalidInputError,
            400,
            "invalid_input",
            "task 'digits' takes one example of shape (1, 8, 8) or a batch (B, 1, 8, 8); "
            "got shape (1, 7, 7)",
        ),
        (
            lambda: dvn.infer("shapes", rng_array(9, 2, 1, 16, 16)),
            errors.InvalidInputError,
            400,
            "invalid_input",
            "task 'shapes' takes one example of shape (3, 16, 16) or a batch (B, 3, 16, 16); "
            "got shape (2, 1, 16, 16)",
        ),
        (
            lambda: dvn.infer("digits", np.full((1, 8, 8), np.nan, dtype=np.float32)),
            errors.InvalidInputError,
            400,
            "invalid_input",
            "inputs contain NaN or Inf (first at index (0, 0, 0, 0), after float32 "
            "conversion); send finite values",
        ),
    ]
    for call, cls, status, type_, message in cases:
        with pytest.raises(errors.DVNError) as info:
            await call()
        e = info.value
        assert type(e) is cls, (type_, e)
        assert (e.status, e.type, e.message, str(e)) == (status, type_, message, message)
        assert e.request_id is not None and len(e.request_id) == 32
        assert e.retry_after is None
    assert not (tmp_path / "never").exists()


async def test_api_keys(serve: ServeFactory, reference: Checkpoint) -> None:
    x = rng_array(10, 1, 8, 8)
    no_key = (
        "this server needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    )
    for api_key, cls, status, type_, message in [
        (None, errors.UnauthorizedError, 401, "unauthorized", no_key),
        ("wrong", errors.ForbiddenError, 403, "forbidden", "the API key is not valid for this server"),
    ]:  # fmt: skip
        s = await connect(serve, api_key=api_key, api_keys=["k"])
        async with s.dvn as dvn:
            for call in (dvn.infer("digits", x), dvn.models(), dvn.plan("digits")):
                with pytest.raises(cls) as info:
                    await call
                assert (info.value.status, info.value.type) == (status, type_)
                assert info.value.message == message
            # health probes are open unless protect_health is set
            assert await dvn.healthy() is True
            assert await dvn.ready() is True
    s = await connect(serve, api_key="k", api_keys=["k"])
    async with s.dvn as dvn:
        r = await dvn.infer("digits", x, level=2)
        assert r.level == 2
        check_result(reference, r, x[None], await dvn.models())
