"""The ``dvn`` command: one entry point, subcommands registered by each package.

Each package's ``cli`` module adds its subcommands with ``register(subparsers)`` and
imports its heavy modules only when a subcommand runs, so ``dvn --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from bench import cli as bench_cli
from clients import cli as clients_cli
from model_store import cli as model_cli
from server import cli as server_cli


class UsageError(Exception):
    """A command was given something it cannot use; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvn",
        description="dvn-serve: serve every task of a deep virtual network at the level "
        "each request's memory or latency budget allows.",
        epilog="Run `dvn COMMAND --help` for a command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (server_cli, model_cli, clients_cli, bench_cli):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError, UsageError) as e:
        # Every expected failure (bad checkpoint, bad data, bad flag) carries a message
        # that says what to fix; a traceback would only bury it.
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"dvn {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
