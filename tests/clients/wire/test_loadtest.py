"""The load generator's use of the light transport: the default for HTTP, the option,
and a run against a real server."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest
import uvicorn

from clients._wire import WireTransport


def test_loadtest_uses_the_light_transport_for_http_by_default() -> None:
    from clients.loadtest import LoadTestConfig

    open_loop = LoadTestConfig("http://127.0.0.1:8000", max_outstanding=40).make_transport()
    assert isinstance(open_loop, WireTransport) and open_loop.max_connections == 40
    closed = LoadTestConfig("http://h:1", mode="closed", concurrency=7).make_transport()
    assert isinstance(closed, WireTransport) and closed.max_connections == 7
    assert LoadTestConfig("http://h:1", http_client="httpx").make_transport() is None
    assert LoadTestConfig("https://h:1").make_transport() is None  # httpx speaks TLS
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    assert LoadTestConfig("http://h:1", transport=mock).make_transport() is mock
    with pytest.raises(ValueError, match="http_client must be wire or httpx, got 'h2'"):
        LoadTestConfig("http://h:1", http_client="h2")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "expected"), [([], "wire"), (["--http-client", "httpx"], "httpx")]
)
def test_dvn_loadtest_http_client_option(
    argv: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    import clients.cli
    import clients.loadtest

    seen: list[Any] = []

    def fake_run(config: Any) -> Any:
        seen.append(config)
        raise ValueError("stop here")

    monkeypatch.setattr(clients.loadtest, "run_loadtest", fake_run)
    parser = argparse.ArgumentParser(prog="dvn")
    clients.cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["loadtest", "http://127.0.0.1:8000", "--quiet", *argv])
    with pytest.raises(ValueError, match="stop here"):
        args.handler(args)
    assert seen[0].http_client == expected


async def test_loadtest_through_the_light_transport_against_a_real_server(
    serve: Any,
) -> None:
    """The load generator's default path (the light transport, requests sent past the
    client) against the real app on uvicorn: every request answered and accounted for."""
    from clients.loadtest import LoadTestConfig, arun_loadtest

    http = await serve()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(http.app, log_level="warning", lifespan="off"))
    running = asyncio.create_task(srv.serve(sockets=[sock]))
    try:
        while not srv.started:
            await asyncio.sleep(0.01)
        config = LoadTestConfig(
            f"http://127.0.0.1:{port}",
            mode="closed",
            concurrency=4,
            duration=1.0,
            warmup=0.2,
            budget_mix="none:1,1MiB:1",
            seed=2,
        )
        assert isinstance(config.make_transport(), WireTransport)
        report = await arun_loadtest(config)
    finally:
        srv.should_exit = True
        await running
        sock.close()
    assert report.sent > 20 and report.ok == report.sent
    assert report.errors == report.timeouts == 0
    assert set(report.levels) == {"digits", "shapes"}
    assert report.budget_attainment["1MiB"].ok == report.budget_attainment["1MiB"].sent
