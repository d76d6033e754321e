"""``dvn bench refusal``: what a refusal costs, and who pays it. Against a real ``dvn serve``
(one front end, one engine), sends the same number of requests of each kind, one kind
after another, and reads each process's CPU time (user + system, from ``/proc`` through
psutil) before and after: CPU per request is robust to a busy machine in a way wall time is
not.

Kinds: ``answered`` (level 1, no budget: the full path, engine included), ``refused``
(a budget in the wrong grammar: 422 from the front end, the path of every refusal made
before the body is read, the admission's 429 included), ``refused_body`` (a body of the
wrong shape: 400 from the front end after reading and decoding it).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench._common import machine_line, write_report
from bench._process import dvn_serve
from clients._wire import WireTransport
from server.settings import demo_checkpoint

KINDS = {
    "answered": ("?level=1", 200),
    "refused": ("?budget=10parsecs", 422),
    "refused_body": ("?level=1", 400),
}


def _pids(supervisor: int) -> dict[str, int]:
    """The engine's and the (one) front end's pids, from the supervisor's children."""
    found = {}
    for child in psutil.Process(supervisor).children(recursive=True):
        command = " ".join(child.cmdline())
        for role, module in (
            ("engine", "server.engine.process"),
            ("frontend", "server.http.worker"),
        ):
            if module in command:
                found[role] = child.pid
    if set(found) != {"engine", "frontend"}:
        raise RuntimeError(f"expected one engine and one front end, found {found}")
    return found


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def _send(url: str, query: str, body: bytes, n: int, clients: int, status: int) -> None:
    transport = WireTransport(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as http:
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                r = await http.post(
                    f"/infer/digits{query}",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                if r.status_code != status:
                    raise RuntimeError(f"expected {status}, got {r.status_code}: {r.text}")

        await asyncio.gather(*(worker() for _ in range(clients)))


def run(
    out: str | Path,
    *,
    checkpoint: str | None = None,
    requests: int = 2000,
    clients: int = 4,
    rounds: int = 2,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    ckpt = Path(checkpoint) if checkpoint else demo_checkpoint()
    good = json.dumps({"inputs": [[[0.0] * 8] * 8]}).encode()
    bad = json.dumps({"inputs": [[[0.0] * 3] * 3]}).encode()
    bodies = {"answered": good, "refused": good, "refused_body": bad}
    log = (log_dir or Path(out)) / "refusal-serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    totals: dict[str, dict[str, float]] = {k: {"frontend": 0.0, "engine": 0.0} for k in KINDS}
    with dvn_serve(ckpt, log, env={"DVN_LOG_LEVEL": "warning"}) as server:
        pids = _pids(server.process.pid)
        for _ in range(rounds):  # interleaved: a busy spell hits every kind alike
            for kind, (query, status) in KINDS.items():
                before = {role: _cpu(pid) for role, pid in pids.items()}
                asyncio.run(_send(server.url, query, bodies[kind], requests, clients, status))
                time.sleep(0.2)  # the engine's last status polls and relayed counts
                for role, pid in pids.items():
                    totals[kind][role] += _cpu(pid) - before[role]
    per = {
        kind: {role: round(cpu / (requests * rounds) * 1e6, 1) for role, cpu in cost.items()}
        for kind, cost in totals.items()
    }
    data = {"requests_per_kind": requests * rounds, "clients": clients, "cpu_us_per_request": per}
    rows = "\n".join(
        f"| {kind} | {KINDS[kind][1]} | {c['frontend']:.0f} | {c['engine']:.0f} |"
        for kind, c in per.items()
    )
    markdown = (
        "## What a refusal costs\n\n"
        f"{machine_line()} A real `dvn serve` (one front end, one engine), {requests * rounds} "
        f"requests of each kind from {clients} closed-loop clients, kinds interleaved over "
        f"{rounds} rounds; CPU time (user + system) of each process per request, in µs. The "
        "engine's column includes its status polls (every 50 ms) over the run.\n\n"
        "| kind | status | front end µs | engine µs |\n|---|---:|---:|---:|\n" + rows + "\n"
    )
    write_report(out, "refusal", data, markdown)
    return data
