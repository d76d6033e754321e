"""``dvn bench``: the benchmarks, each writing JSON and a markdown table."""

from __future__ import annotations

import argparse
from typing import Any

from bench import commands

EXAMPLES = """examples:
  dvn bench levels                          # forward time per level vs FLOP ratio
  dvn bench levels --checkpoint runs/mine --out bench/results
  dvn bench serve --task shapes --duration 5    # overhead + throughput through HTTP
  dvn bench peers --duration 5                  # vs LitServe and plain FastAPI, 1/16/64 clients
  dvn bench memory                              # RSS of dvn serve vs bare torch and web stack
  dvn bench budgets --points 6 --duration 5     # budget attainment vs load, three policies
  dvn bench all --out bench/results             # everything, then docs/benchmarks.md
  dvn bench all --duration 0.5 --clients 1 --points 2   # a quick smoke run
  dvn bench transport                           # load generator CPU/request by HTTP transport
  dvn bench soak                                # 100,000 requests: none lost, memory flat
  dvn bench overload                            # goodput past capacity, closed and open loop
  dvn bench refusal                             # CPU of a refusal vs an answer, per process
  dvn bench scale                               # Ray Serve: overhead, 1 vs 2 replicas, routers
  dvn bench scale --duration 3 --clients 4 --slow-ms 50
  dvn bench pairs                               # the fast paths kept, vs what they replace
  dvn bench pairs --parts inline --rounds 6
  dvn bench overload --budget 20ms --duration 2 --server-args "--workers 2"
  dvn bench soak --requests 20000 --concurrency 8 --budget-mix "none:1,5ms:1"

Figures are only comparable from a quiet machine: nothing else running.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="run the benchmarks (JSON + markdown under --out)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    lv = which.add_parser("levels", help="forward latency of every level at batch 1 and 32")
    lv.add_argument("--checkpoint", help="checkpoint directory (default: the shipped demo)")
    lv.add_argument("--out", default="bench/results", help="where to write levels.json/.md")
    lv.add_argument("--repeats", type=int, default=30, help="timed forwards per measurement")
    lv.add_argument("--device", default="auto")
    lv.add_argument(
        "--threads", type=int, help="torch threads while timing (default: the engine's own)"
    )
    lv.set_defaults(handler=commands.cmd_levels)

    sv = which.add_parser("serve", help="HTTP overhead per level and throughput, batching on/off")
    sv.add_argument("--checkpoint", help="checkpoint directory (default: the shipped demo)")
    sv.add_argument("--out", default="bench/results")
    sv.add_argument("--task", help="task to load (default: the first)")
    sv.add_argument("--requests", type=int, default=200, help="sequential requests per level")
    sv.add_argument("--duration", type=float, default=5.0, help="seconds per throughput point")
    sv.add_argument(
        "--server-args", default="", help='passed to dvn serve as they are, e.g. "--workers 2"'
    )
    sv.set_defaults(handler=commands.cmd_serve)

    sk = which.add_parser(
        "soak", help="many requests against a real server: nothing lost, no 5xx, memory flat"
    )
    sk.add_argument("--checkpoint", help="checkpoint directory (default: the shipped demo)")
    sk.add_argument("--out", default="bench/results", help="where to write soak.json/.md")
    sk.add_argument("--requests", type=int, default=100_000, help="requests to send (100000)")
    sk.add_argument("--concurrency", type=int, default=32, help="closed-loop workers (32)")
    sk.add_argument("--budget-mix", help="load generator budget mix (default: mixed kinds)")
    sk.add_argument("--task-mix", help="load generator task mix (default: every task)")
    sk.add_argument(
        "--max-duration", type=float, default=3600.0, help="stop after this many seconds (3600)"
    )
    sk.add_argument("--quiet", action="store_true", help="no progress line")
    sk.set_defaults(handler=commands.cmd_soak)

    pe = which.add_parser("peers", help="dvn-serve vs LitServe vs plain FastAPI, same model")
    _common_args(pe)
    pe.add_argument("--task", default="shapes", help="task to serve (default: shapes)")
    pe.add_argument("--levels", default="top,1", help="levels to compare (default: top,1)")
    pe.add_argument("--clients", default="1,16,64", help="closed-loop clients per point")
    pe.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per point")
    pe.set_defaults(handler=commands.cmd_peers)

    me = which.add_parser("memory", help="server RSS vs bare torch, web stack and weights")
    _common_args(me, duration_help="seconds of load before the second RSS reading")
    me.add_argument("--clients", type=int, default=16, help="closed-loop clients of the load")
    me.set_defaults(handler=commands.cmd_memory)

    bu = which.add_parser("budgets", help="budget attainment and accuracy vs load, 3 policies")
    _common_args(bu)
    _budget_args(bu)
    bu.add_argument("--min-load", type=float, default=0.1, help="lowest load (x top capacity)")
    bu.add_argument("--max-load", type=float, default=1.5, help="highest load (x top capacity)")
    bu.set_defaults(handler=commands.cmd_budgets)

    tr = which.add_parser(
        "transport",
        help="the load generator's CPU per request: httpx, httptools, the old hand-written client",
    )
    tr.add_argument("--out", default="bench/results", help="where to write transport.json/.md")
    tr.add_argument("--clients", default="1,16,64", help="closed-loop clients per point")
    tr.add_argument("--duration", type=float, default=3.0, help="seconds measured per point")
    tr.add_argument("--rounds", type=int, default=2, help="sweeps, transports in turn (2)")
    tr.add_argument(
        "--baseline-rev",
        help="git commit of the hand-written client to compare with (default: the last one "
        "that had it); 'none' leaves it out",
    )
    tr.set_defaults(handler=commands.cmd_transport)

    ov = which.add_parser(
        "overload", help="goodput, refusals and p99 from below to far past level-1 capacity"
    )
    ov.add_argument("--checkpoint", help="checkpoint directory (default: the shipped demo)")
    ov.add_argument("--out", default="bench/results", help="where to write overload.json/.md/.png")
    ov.add_argument("--task", default="digits", help="task to load (default: digits)")
    ov.add_argument("--budget", default="10ms", help="every request's budget (default: 10ms)")
    ov.add_argument("--duration", type=float, default=3.0, help="seconds measured per point (3)")
    ov.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per point (0.5)")
    ov.add_argument(
        "--capacity-clients",
        type=int,
        default=16,
        help="closed-loop clients of the capacity run, the 1x of the closed sweep (16)",
    )
    ov.add_argument("--factors", default="1,2,4,8,16", help="closed loop: x capacity clients")
    ov.add_argument(
        "--loads", default="0.5,0.9,1,1.5,2,4", help="open loop: x level-1 capacity (req/s)"
    )
    ov.add_argument(
        "--server-args",
        default="",
        metavar="ARGS",
        help='passed to dvn serve as they are, e.g. "--workers 2" (default: none)',
    )
    ov.add_argument(
        "--profile-iters",
        type=int,
        default=5,
        help="server's start-up profile: forwards per batch size (default 5)",
    )
    ov.add_argument(
        "--client-nice",
        type=int,
        default=0,
        help="added to the load generator's niceness once the server is up (default 0)",
    )
    ov.add_argument("--quiet", action="store_true", help="no progress lines")
    ov.set_defaults(handler=commands.cmd_overload)

    rf = which.add_parser(
        "refusal", help="CPU of a refused request against an answered one, per process"
    )
    rf.add_argument("--checkpoint", help="checkpoint directory (default: the shipped demo)")
    rf.add_argument("--out", default="bench/results", help="where to write refusal.json/.md")
    rf.add_argument("--requests", type=int, default=2000, help="requests per kind and round")
    rf.add_argument("--clients", type=int, default=4, help="closed-loop clients (4)")
    rf.set_defaults(handler=commands.cmd_refusal)

    sc = which.add_parser(
        "scale",
        help="Ray Serve: the Ray path's overhead, 1 vs 2 replicas, BudgetRouter vs power of two",
    )
    sc.add_argument("--checkpoint", help="checkpoint directory (default: the shipped demo)")
    sc.add_argument("--out", default="bench/results", help="where to write scale.json/.md/.png")
    sc.add_argument("--duration", type=float, default=10.0, help="seconds measured per run (10)")
    sc.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per run (2)")
    sc.add_argument("--clients", type=int, default=8, help="closed-loop clients, replicas (8)")
    sc.add_argument("--replicas", default="1,2", help="replica counts to compare (1,2)")
    sc.add_argument("--task", default="digits", help="the overhead's task (default: digits)")
    sc.add_argument("--level", type=int, help="the overhead's pinned level (default: the top)")
    sc.add_argument("--task-mix", help="tasks of the load (default: every task)")
    sc.add_argument(
        "--budget-mix",
        default="10ms:1,25ms:1,50ms:1,100ms:1",
        help="budgets of the load (default: 10ms:1,25ms:1,50ms:1,100ms:1)",
    )
    sc.add_argument("--latency-rounds", type=int, default=2, help="overhead: turns per server (2)")
    sc.add_argument(
        "--slow-ms",
        type=float,
        default=20.0,
        help="skew: the slow replica's sleep per forward (20)",
    )
    sc.add_argument(
        "--skew-load",
        type=float,
        default=0.5,
        help="routers: open-loop rate, x the answers/s of the most replicas (0.5)",
    )
    sc.add_argument("--skew-rate", type=float, help="routers: open-loop rate in req/s instead")
    sc.add_argument(
        "--profile-iters",
        type=int,
        default=3,
        help="servers' start-up profile: forwards per batch size (default 3)",
    )
    sc.add_argument("--quiet", action="store_true", help="no progress lines")
    sc.set_defaults(handler=commands.cmd_scale)

    pa = which.add_parser(
        "pairs",
        help="the single-process fast paths the split kept, side by side with what they replace",
    )
    pa.add_argument("--checkpoint", help="checkpoint directory (default: the shipped demo)")
    pa.add_argument("--out", default="bench/results", help="where to write pairs.json/.md")
    pa.add_argument(
        "--parts", default="frontend,inline,threads", help="which pairs (default: all three)"
    )
    pa.add_argument("--rounds", type=int, default=4, help="interleaved rounds (4)")
    pa.add_argument(
        "--requests", type=int, default=1500, help="requests per variant and round (1500)"
    )
    pa.add_argument("--clients", type=int, default=64, help="closed-loop clients (64)")
    pa.set_defaults(handler=commands.cmd_pairs)

    al = which.add_parser("all", help="every benchmark, then docs/benchmarks.md")
    _common_args(al)
    _budget_args(al)
    al.add_argument("--docs", default="docs/benchmarks.md", help="the page to write")
    al.add_argument("--clients", default="1,16,64", help="closed-loop clients per point")
    al.add_argument("--peer-levels", default="top,1", help="levels the peers are compared at")
    al.add_argument("--repeats", type=int, default=30, help="timed forwards (levels)")
    al.add_argument("--requests", type=int, default=200, help="sequential requests (serve)")
    al.set_defaults(handler=commands.cmd_all)


def _common_args(p: Any, duration_help: str = "seconds measured per point") -> None:
    p.add_argument("--checkpoint", help="checkpoint directory (default: the shipped demo)")
    p.add_argument("--out", default="bench/results", help="where to write JSON, .md and .png")
    p.add_argument("--duration", type=float, default=5.0, help=duration_help)


def _budget_args(p: Any) -> None:
    p.add_argument("--task", default="shapes", help="task to load (default: shapes)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per point")
    p.add_argument("--points", type=int, default=6, help="load points (default 6)")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="budgets: the sweep repeated, policies in turn, figures summed (default 2)",
    )
    p.add_argument("--budget-mix", help="e.g. 5ms:0.4,10ms:0.3,25ms:0.3 (default: derived)")
    p.add_argument(
        "--profile-iters",
        type=int,
        default=5,
        help="server's start-up profile: forwards per batch size (default 5)",
    )
