"""What each ``dvn bench`` command runs (its parser is :mod:`bench.cli`): the arguments
turned into the part's options, the part run, its markdown printed."""

from __future__ import annotations

import argparse
import json


def ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"expected comma-separated whole numbers, e.g. 1,16,64; got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise ValueError(f"expected numbers >= 1, e.g. 1,16,64; got {text!r}")
    return values


def floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, e.g. 0.5,1,2; got {text!r}") from None
    if not values or min(values) <= 0:
        raise ValueError(f"expected numbers > 0, e.g. 0.5,1,2; got {text!r}")
    return values


def words(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def cmd_levels(args: argparse.Namespace) -> int:
    from bench.levels import run_levels

    report = run_levels(
        args.checkpoint, args.out, repeats=args.repeats, device=args.device, threads=args.threads
    )
    print(report.read_text())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import shlex

    from bench.serve import run_serve

    report = run_serve(
        args.checkpoint,
        args.out,
        task=args.task,
        requests=args.requests,
        duration=args.duration,
        server_args=tuple(shlex.split(args.server_args)),
    )
    print(report.read_text())
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    from bench.peers import run_peers

    report = run_peers(
        args.checkpoint,
        args.out,
        task=args.task,
        levels=words(args.levels),
        concurrencies=ints(args.clients),
        duration=args.duration,
        warmup=args.warmup,
    )
    print(report.read_text())
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    from bench.memory import run_memory

    report = run_memory(args.checkpoint, args.out, duration=args.duration, clients=args.clients)
    print(report.read_text())
    return 0


def cmd_budgets(args: argparse.Namespace) -> int:
    from bench.budgets import run_budgets

    report = run_budgets(
        args.checkpoint,
        args.out,
        task=args.task,
        duration=args.duration,
        warmup=args.warmup,
        points=args.points,
        min_load=args.min_load,
        max_load=args.max_load,
        budget_mix=args.budget_mix,
        profile_iters=args.profile_iters,
        rounds=args.rounds,
    )
    print(report.read_text())
    return 0


def cmd_transport(args: argparse.Namespace) -> int:
    from bench.transport import BASELINE_REV, run_transport

    rev = args.baseline_rev or BASELINE_REV
    report = run_transport(
        args.out,
        concurrencies=ints(args.clients),
        duration=args.duration,
        rounds=args.rounds,
        baseline_rev=None if rev == "none" else rev,
    )
    print(report.read_text())
    return 0


def cmd_overload(args: argparse.Namespace) -> int:
    import shlex

    from bench.overload import OverloadOptions, run_overload

    options = OverloadOptions(
        task=args.task,
        budget=args.budget,
        duration=args.duration,
        warmup=args.warmup,
        capacity_clients=args.capacity_clients,
        factors=ints(args.factors),
        loads=floats(args.loads),
        profile_iters=args.profile_iters,
        server_args=tuple(shlex.split(args.server_args)),
        client_nice=args.client_nice,
        progress=not args.quiet,
    )
    report = run_overload(args.checkpoint, args.out, options)
    print(report.read_text())
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    from bench.scale import ScaleOptions, run_scale

    options = ScaleOptions(
        task=args.task,
        level=args.level,
        task_mix=args.task_mix,
        budget_mix=args.budget_mix,
        clients=args.clients,
        replicas=ints(args.replicas),
        duration=args.duration,
        warmup=args.warmup,
        latency_rounds=args.latency_rounds,
        slow_ms=args.slow_ms,
        skew_load=args.skew_load,
        skew_rate=args.skew_rate,
        profile_iters=args.profile_iters,
        progress=not args.quiet,
    )
    report = run_scale(args.checkpoint, args.out, options)
    print(report.read_text())
    return 0


def cmd_refusal(args: argparse.Namespace) -> int:
    from bench.refusal import run

    data = run(args.out, checkpoint=args.checkpoint, requests=args.requests, clients=args.clients)
    print(json.dumps(data["cpu_us_per_request"], indent=2))
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    from bench.pairs import run

    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    run(
        args.out,
        parts=parts,
        checkpoint=args.checkpoint,
        rounds=args.rounds,
        requests=args.requests,
        clients=args.clients,
    )
    with open(f"{args.out}/pairs.md") as report:
        print(report.read(), end="")
    return 0


def cmd_all(args: argparse.Namespace) -> int:
    from bench.all import SuiteOptions, run_all

    options = SuiteOptions(
        task=args.task,
        duration=args.duration,
        warmup=args.warmup,
        clients=ints(args.clients),
        peer_levels=words(args.peer_levels),
        points=args.points,
        rounds=args.rounds,
        repeats=args.repeats,
        requests=args.requests,
        budget_mix=args.budget_mix,
        profile_iters=args.profile_iters,
    )
    docs = run_all(args.checkpoint, args.out, docs=args.docs, options=options)
    print(f"wrote {docs} and every part's JSON, markdown and plots under {args.out}")
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    from bench.soak import DEFAULT_MIX, run_soak

    if args.requests < 1 or args.concurrency < 1 or args.max_duration <= 0:
        raise ValueError("--requests and --concurrency must be >= 1, --max-duration > 0")
    report = run_soak(
        args.checkpoint,
        args.out,
        requests=args.requests,
        concurrency=args.concurrency,
        budget_mix=args.budget_mix or DEFAULT_MIX,
        task_mix=args.task_mix,
        max_duration=args.max_duration,
        progress=not args.quiet,
    )
    print(report.read_text())
    return 0
