#!/usr/bin/env bash
# Creates .venv and installs the project on first use (and again when pyproject.toml changes).
# The pinned CPU build of torch goes first: an unpinned torch would pull a multi-GB CUDA build.
# pip compiles no bytecode (torch's and Ray's 15,000 files, about 30 s, most never imported):
# importing the server's and the benchmarks' modules once compiles what they use, and the
# tests cache what else they import (scripts/test.sh; docs/decisions.md, test suite).
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
.venv/bin/python -m pip install --quiet --no-compile "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet --no-compile -e '.[dev,bench]'
# What dvn serve, its front ends (uvicorn's protocols, Pillow's plugins) and bench import.
WARM=(dvn.cli server.launcher server.http.app server.engine.process server.ray.app bench.all
      matplotlib.pyplot uvicorn.loops.auto uvicorn.loops.uvloop uvicorn.protocols.http.auto
      uvicorn.protocols.http.httptools_impl uvicorn.protocols.websockets.auto
      uvicorn.protocols.websockets.websockets_sansio_impl zmq.utils.monitor numpy.random)
env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -c 'import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
from PIL import Image
Image.init()' "${WARM[@]}"
echo "$want" > "$stamp"
echo ">> .venv ready"
