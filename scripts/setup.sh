#!/usr/bin/env bash
# Creates .venv and installs the project on first use (and again when pyproject.toml changes).
# The pinned CPU build of torch goes first: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${DVN_TORCH_SPEC:-torch==2.13.0}"
stamp=.venv/.installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo ">> setting up .venv (first run or pyproject.toml changed)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet -e '.[dev,bench]'
echo "$want" > "$stamp"
echo ">> .venv ready"
