#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest (unit, server, clients, integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-deps.sh
# Python caches the bytecode of what the tests import (setup compiled only the server's and
# the benchmarks' modules), where an environment may have turned that off.
unset PYTHONDONTWRITEBYTECODE
echo ">> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || { .venv/bin/ruff format --check .; exit 1; }
echo ">> mypy"
.venv/bin/mypy
if [ "$#" -gt 0 ]; then  # the tests named, as pytest runs them
    exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
fi
# Tests that start servers, Ray or Prometheus beside the suite's own checks of latency,
# goodput and ratios run one at a time, as a user's server would; the rest (in-process
# tests, and the benchmarks' smoke runs, which assert no timing) on every core, a file per
# worker so that a module's fixtures are built once (docs/decisions.md, test suite).
SERIAL=(tests/integration tests/server/ray tests/deploy tests/bench/test_scale.py tests/bench/test_pairs.py)
echo ">> pytest: in-process tests and benchmark smoke runs, one worker per core"
.venv/bin/python -m pytest -q -p no:cacheprovider -n auto --dist loadfile "${SERIAL[@]/#/--ignore=}"
echo ">> pytest: servers, Ray and Prometheus, one test at a time"
.venv/bin/python -m pytest -q -p no:cacheprovider "${SERIAL[@]}"
