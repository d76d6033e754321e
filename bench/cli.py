"""``dvn bench``: the benchmarks, each writing JSON and a markdown table."""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLES = """examples:
  dvn bench levels                          # forward time per level vs FLOP ratio
  dvn bench levels --checkpoint runs/mine --out bench/results
  dvn bench serve --task shapes --duration 5    # overhead + throughput through HTTP
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
    lv.set_defaults(handler=_levels)

    sv = which.add_parser("serve", help="HTTP overhead per level and throughput, batching on/off")
    sv.add_argument("--checkpoint", help="checkpoint directory (default: the shipped demo)")
    sv.add_argument("--out", default="bench/results")
    sv.add_argument("--task", help="task to load (default: the first)")
    sv.add_argument("--requests", type=int, default=200, help="sequential requests per level")
    sv.add_argument("--duration", type=float, default=5.0, help="seconds per throughput point")
    sv.set_defaults(handler=_serve)


def _levels(args: argparse.Namespace) -> int:
    from bench.levels import run_levels

    report = run_levels(args.checkpoint, args.out, repeats=args.repeats, device=args.device)
    print(report.read_text())
    return 0


def _serve(args: argparse.Namespace) -> int:
    from bench.serve import run_serve

    report = run_serve(
        args.checkpoint, args.out, task=args.task, requests=args.requests, duration=args.duration
    )
    print(report.read_text())
    return 0
