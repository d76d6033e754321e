#!/usr/bin/env bash
# The whole test suite: lint, types and pytest (unit, server, clients, integration).
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
if [ "$#" -gt 0 ]; then  # the tests named, as pytest runs them
    echo ">> mypy"
    .venv/bin/mypy
    exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
fi
# Three phases (docs/decisions.md, test suite). In-process tests and the benchmarks' smoke
# runs (which assert no timing) on every core, a file per worker so that a module's
# fixtures are built once. Then the real-process tests named in PAIRED, which assert no
# latency, on every core too, and mypy beside them: they mostly wait on processes starting
# and stopping. Last, one test at a time, the other real-process tests (any new one too,
# until it is shown not to need it): latency, goodput, their ratios, and real Ray (its
# router test's shares), which a second worker on the same cores would make noisy.
SERIAL=(tests/integration tests/server/ray tests/bench/test_scale.py)
PAIRED=(tests/integration/test_serve_process.py tests/integration/test_engine_faults.py
        tests/integration/test_soak.py tests/integration/test_prometheus.py
        tests/integration/test_clients_process.py tests/deploy tests/bench/test_pairs.py)
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider)
echo ">> pytest: in-process tests and benchmark smoke runs, one worker per core"
"${PYTEST[@]}" -n auto --dist loadfile "${SERIAL[@]/#/--ignore=}" "${PAIRED[@]/#/--ignore=}"
echo ">> pytest: real processes, no latency asserted, one worker per core; mypy beside them"
types=$(mktemp)
.venv/bin/mypy >"$types" 2>&1 &
typing=$!
trap 'kill "$typing" 2>/dev/null || true; rm -f "$types"' EXIT
"${PYTEST[@]}" -n auto --dist loadfile "${PAIRED[@]}"
echo ">> mypy"
if wait "$typing"; then cat "$types"; else cat "$types"; exit 1; fi
echo ">> pytest: latency, goodput and real Ray, one test at a time"
"${PYTEST[@]}" "${SERIAL[@]}" "${PAIRED[@]/#/--ignore=}"  # the PAIRED files left out
