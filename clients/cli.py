"""``dvn infer`` and ``dvn loadtest``: the clients on the command line.

Only argparse is imported here; the client, numpy and httpx load when a command runs, so
``dvn --help`` stays instant. Failures raise ``ValueError`` with the server's message,
which ``dvn`` prints as ``dvn <cmd>: error: <message>`` with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from clients.results import InferResult

API_KEY_ENV = "DVN_API_KEY"

EXAMPLES_INFER = """examples:
  dvn infer http://127.0.0.1:8000 digits digit.npy
  dvn infer http://127.0.0.1:8000 digits digit.png --budget 15ms,2MiB
  dvn infer http://127.0.0.1:8000 shapes a.png b.png --budget 5ms --top-k 3
  dvn infer http://127.0.0.1:8000 digits batch.json --level 1 --json

FILE is a .npy array or a .json file {"inputs": ...} of model-space values, shape (C, H, W)
or (B, C, H, W), or a .png/.jpg/.jpeg image (preprocessed by the server). The API key
comes from --api-key or $DVN_API_KEY.
"""

EXAMPLES_LOADTEST = """examples:
  dvn loadtest http://127.0.0.1:8000 --rate 100 --duration 30
  dvn loadtest http://127.0.0.1:8000 --budget-mix "5ms:0.5,20ms:0.3,1MiB:0.2" --plot lt.png
  dvn loadtest http://127.0.0.1:8000 --mode closed --concurrency 16 --json lt.json
  dvn loadtest http://127.0.0.1:8000 --mode closed --max-requests 20000 --duration 600
  dvn loadtest http://127.0.0.1:8000 --task-mix "digits:0.8,shapes:0.2" --level 1
  dvn loadtest http://127.0.0.1:8000 --mode closed --concurrency 64 --budget-mix 10ms:1 \
      --respect-retry-after

Mixes are ITEM:WEIGHT,... (weights need not sum to 1). A budget of two constraints is
written 15ms+2MiB; `none` means no budget. Open loop (default) sends Poisson arrivals at
--rate whatever the responses do and measures latency from each arrival; closed loop runs
--concurrency workers that each wait for their response before the next request (and,
with --respect-retry-after, for a 429/503's Retry-After too). "met" is the goodput: answers
whose budget was met, per second.
"""


def _transport() -> httpx.MockTransport | None:
    """Hook for tests: the transport the commands' clients use (``None``: the network)."""
    return None


def register(sub: Any) -> None:
    """Add ``infer`` and ``loadtest`` to the ``dvn`` subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "infer",
        help="send files to a DVN server and print the predictions",
        description="Run TASK on each FILE at the level the budget allows (one request a file).",
        epilog=EXAMPLES_INFER,
        formatter_class=fmt,
    )
    p.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("task", help="task name (see GET /v1/models)")
    p.add_argument("files", nargs="+", metavar="FILE", help=".npy, .json, .png, .jpg or .jpeg")
    p.add_argument("--budget", help="e.g. 15ms, 2MiB or 15ms,2MiB")
    p.add_argument("--level", type=int, help="pin a level instead of choosing by budget")
    p.add_argument("--on-miss", choices=("degrade", "reject"), help="when no level meets it")
    p.add_argument("--top-k", type=int, help="print the K most probable classes")
    p.add_argument("--json", action="store_true", help="print the responses as JSON")
    p.add_argument("--api-key", help=f"bearer token (default: ${API_KEY_ENV})")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    p.set_defaults(handler=_infer)

    p = sub.add_parser(
        "loadtest",
        help="drive a DVN server with a mix of tasks and budgets and report latency",
        description="Open- or closed-loop load with a task and budget mix; reports rates, "
        "latency percentiles (HDR histogram), level mix, budget attainment and errors.",
        epilog=EXAMPLES_LOADTEST,
        formatter_class=fmt,
    )
    p.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--mode", choices=("open", "closed"), default="open")
    p.add_argument("--rate", type=float, default=50.0, help="open loop: req/s (default 50)")
    p.add_argument("--concurrency", type=int, default=8, help="closed loop: workers (default 8)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (2)")
    p.add_argument("--budget-mix", help='e.g. "5ms:0.5,20ms:0.3,1MiB:0.2" (default: no budget)')
    p.add_argument("--task-mix", help='e.g. "digits:0.5,shapes:0.5" (default: all, equal)')
    p.add_argument("--level", type=int, help="pin every request to this level")
    p.add_argument("--on-miss", choices=("degrade", "reject"))
    p.add_argument("--seed", type=int, default=0, help="arrivals, mixes and inputs (0)")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds (10)")
    p.add_argument(
        "--max-requests",
        type=int,
        metavar="N",
        help="end the measured window once N requests were sent (default: --duration only)",
    )
    p.add_argument(
        "--max-outstanding", type=int, default=256, help="open loop: in-flight cap (256)"
    )
    p.add_argument(
        "--respect-retry-after",
        action="store_true",
        help="closed loop: after a 429/503 with Retry-After, a worker waits that long "
        "(default: sends again at once, as a client that ignores it would)",
    )
    p.add_argument(
        "--http-client",
        choices=("wire", "httpx"),
        default="wire",
        help="HTTP/1.1 client: wire, light, for http:// (default), or httpx's own (https://)",
    )
    p.add_argument("--api-key", help=f"bearer token (default: ${API_KEY_ENV})")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--plot", metavar="FILE", help="also write a figure (PNG)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(handler=_loadtest)


def _api_key(args: argparse.Namespace) -> str | None:
    key: str | None = args.api_key or os.environ.get(API_KEY_ENV)
    return key


def _read_input(file: str) -> Any:
    """What ``DVNClient.infer`` gets for ``file``: the path, or the array of a JSON file."""
    path = Path(file)
    if path.suffix.lower() != ".json":
        return path
    import numpy as np

    try:
        data = json.loads(path.read_text())
        return np.asarray(data["inputs"], dtype=np.float32)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from e
    except (KeyError, TypeError) as e:
        raise ValueError(f'{file} must hold {{"inputs": [...]}}, a nested list of numbers') from e


def _infer(args: argparse.Namespace) -> int:
    from clients.client import DVNClient
    from clients.errors import DVNError

    results: list[tuple[str, InferResult]] = []
    with DVNClient(
        args.url, api_key=_api_key(args), timeout=args.timeout, transport=_transport()
    ) as client:
        for file in args.files:
            inputs = _read_input(file)
            try:
                result = client.infer(
                    args.task,
                    inputs,
                    budget=args.budget,
                    level=args.level,
                    on_miss=args.on_miss,
                    top_k=args.top_k,
                )
            except DVNError as e:
                raise ValueError(
                    e.message if len(args.files) == 1 else f"{file}: {e.message}"
                ) from e
            results.append((file, result))
    if args.json:
        payload = [{"file": f, **r.model_dump(mode="json", exclude_unset=True)} for f, r in results]
        print(json.dumps(payload, indent=2))
    else:
        print(format_results(results))
    return 0


def format_results(results: Sequence[tuple[str, InferResult]]) -> str:
    """One table row per prediction: class, probability, level, units, budget, cost."""
    header = ("file", "#", "class", "prob", "level", "units", "budget", "met", "param_bytes", "ms")
    rows: list[tuple[str, ...]] = []
    for file, r in results:
        met = "-" if r.budget_met is None else ("yes" if r.budget_met else "NO")
        latency = r.cost.measured_latency_ms or r.cost.predicted_latency_ms
        for i, p in enumerate(r.predictions):
            if p.top_k:
                label = ", ".join(f"{c.class_name} {c.probability:.3f}" for c in p.top_k)
            else:
                label = p.class_name
            rows.append(
                (
                    file,
                    str(i),
                    label,
                    f"{p.probability:.4f}",
                    str(r.level),
                    ",".join(map(str, r.units)),
                    r.budget.spec if r.budget else "-",
                    met,
                    f"{r.cost.param_bytes:,}",
                    "-" if latency is None else f"{latency:.2f}",
                )
            )
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _loadtest(args: argparse.Namespace) -> int:
    from clients.errors import DVNError
    from clients.loadtest import LoadTestConfig, run_loadtest

    config = LoadTestConfig(
        url=args.url,
        mode=args.mode,
        rate=args.rate,
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        budget_mix=args.budget_mix,
        task_mix=args.task_mix,
        level=args.level,
        on_miss=args.on_miss,
        seed=args.seed,
        timeout=args.timeout,
        max_outstanding=args.max_outstanding,
        max_requests=args.max_requests,
        respect_retry_after=args.respect_retry_after,
        api_key=_api_key(args),
        progress=not args.quiet,
        http_client=args.http_client,
        transport=_transport(),
    )
    try:
        report = run_loadtest(config)
    except DVNError as e:
        raise ValueError(e.message) from e
    print(report.format_text())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        from clients._plot import plot_report

        print(f"wrote {plot_report(report, args.plot)}")
    return 0
