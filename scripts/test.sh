#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest (unit, server, clients, integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-deps.sh
echo ">> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || { .venv/bin/ruff format --check .; exit 1; }
echo ">> mypy"
.venv/bin/mypy
echo ">> pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
