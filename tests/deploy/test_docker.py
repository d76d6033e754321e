"""The Dockerfile lints clean and builds the image the deployment relies on.

No Docker engine runs in CI, so these tests read the Dockerfile: hadolint for
the practices, then the facts compose and operators rely on (non-root user,
health check on /readyz, the demo checkpoint, the port, the command) and that
every file it copies is in the build context.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
HADOLINT = REPO_ROOT / ".venv" / "bin" / "hadolint"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages of (KEYWORD, arguments), continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_hadolint_reports_nothing() -> None:
    assert HADOLINT.exists(), f"{HADOLINT} missing: run `bash scripts/setup.sh` (dev extra)"
    result = subprocess.run(
        [str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_cpu_base_by_default_and_cuda_selectable() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cpu$", text, re.M)
    assert "nvidia/cuda:" in text, "the CUDA alternative must be documented in the Dockerfile"


def test_multi_stage_builder_installs_torch_then_project(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    builder = next(s for s in stages if s.name == "builder")
    runs = builder.args("RUN")
    torch_step = next(i for i, r in enumerate(runs) if "torch==" in r)
    project_step = next(i for i, r in enumerate(runs) if re.search(r"pip install .*\s\.$", r))
    assert torch_step < project_step, "torch must be installed (and cached) before the project"
    assert not any("-e " in r or "--editable" in r for r in runs), "the image needs a real install"


def test_runtime_runs_as_non_root(runtime: Stage) -> None:
    users = runtime.args("USER")
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"runtime runs as {user!r}"


def test_healthcheck_probes_readyz(runtime: Stage) -> None:
    (healthcheck,) = runtime.args("HEALTHCHECK")
    assert "CMD" in healthcheck
    assert "http://127.0.0.1:8000/readyz" in healthcheck
    assert "urllib.request" in healthcheck, "slim images have no curl"


@pytest.mark.parametrize("name", ["standard", "demo"])
def test_runtime_copies_shipped_checkpoints_and_venv(runtime: Stage, name: str) -> None:
    copies = runtime.args("COPY")
    assert any(shlex.split(c)[-2] == f"model_store/checkpoints/{name}" for c in copies), (
        f"no COPY of model_store/checkpoints/{name} in {copies}"
    )
    assert any(c.startswith("--from=builder") and "/opt/venv" in c for c in copies)


def test_exposes_port_and_serves(runtime: Stage) -> None:
    assert runtime.args("EXPOSE") == ["8000"]
    assert runtime.args("CMD") == ['["dvn", "serve", "--host", "0.0.0.0", "--port", "8000"]']


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        globs = {glob, glob.replace("**/", "")}
        if any(fnmatch.fnmatchcase(c, g) for c in candidates for g in globs):
            ignored = not negate
    return ignored


def _dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _copied_sources(stages: list[Stage]) -> list[str]:
    """Build-context paths the Dockerfile copies (not those copied between stages)."""
    return [
        src
        for stage in stages
        for copy in stage.args("COPY")
        if not copy.startswith("--from=")
        for src in [w for w in shlex.split(copy) if not w.startswith("--")][:-1]
    ]


def test_copied_sources_exist(stages: list[Stage]) -> None:
    sources = _copied_sources(stages)
    assert {"model_store/checkpoints/standard", "model_store/checkpoints/demo"} <= set(sources)
    missing = [s for s in sources if not (REPO_ROOT / s).exists()]
    assert not missing, f"the Dockerfile copies files the repository lacks: {missing}"


def test_copied_sources_are_not_dockerignored(stages: list[Stage]) -> None:
    patterns = _dockerignore_patterns()
    excluded = [s for s in _copied_sources(stages) if _ignored(s, patterns)]
    assert not excluded, f".dockerignore drops files the Dockerfile copies: {excluded}"


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        (".venv/bin/python", True),
        (".git/HEAD", True),
        ("tests/deploy/test_docker.py", True),
        ("server/__pycache__/app.cpython-311.pyc", True),
        ("model_store/checkpoints/scratch/weights.safetensors", True),
        ("model_store/checkpoints/demo/weights.safetensors", False),
        ("model_store/checkpoints/demo/manifest.json", False),
        ("model_store/checkpoints/standard/weights.safetensors", False),
        ("server/app.py", False),
        ("pyproject.toml", False),
    ],
)
def test_build_context_keeps_only_what_the_image_needs(path: str, ignored: bool) -> None:
    assert _ignored(path, _dockerignore_patterns()) is ignored
