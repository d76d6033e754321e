"""Server settings: environment variables with the ``DVN_`` prefix, overridden by flags,
validated at start with messages that name the variable and how to fix it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def shipped_checkpoint(name: str) -> Path:
    """A checkpoint shipped inside the model_store package: ``standard`` (the default
    served) or ``demo`` (small and fast: tests and quick runs)."""
    import model_store

    return Path(model_store.__file__).resolve().parent / "checkpoints" / name


def standard_checkpoint() -> Path:
    """The checkpoint ``dvn serve`` serves by default (docs/training.md)."""
    return shipped_checkpoint("standard")


def demo_checkpoint() -> Path:
    """The small demo checkpoint: tests, benchmarks' default, quick runs."""
    return shipped_checkpoint("demo")


class SettingsError(ValueError):
    """Bad settings; the message lists each bad value and its variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DVN_", extra="forbid", frozen=True)

    checkpoint: Path = Field(
        default_factory=standard_checkpoint, description="checkpoint directory"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    device: str = Field(default="auto", description="auto (CUDA when present), cpu, cuda, cuda:N")
    max_batch_size: int = Field(default=32, ge=1, le=1024, description="examples per forward")
    max_queue_size: int = Field(default=256, ge=1, description="requests per (task, level) queue")
    max_inflight: int = Field(
        default=512,
        ge=1,
        description="inference requests handled at once; past it 429 before the body is read",
    )
    concurrency_limit: Literal["fixed", "gradient2"] = Field(
        default="fixed",
        description="each front end's bound on requests in flight: fixed is max_inflight; "
        "gradient2 adapts it to the latency achieved, at most max_inflight (docs/decisions.md)",
    )
    frontend_nice: int = Field(
        default=0,
        ge=0,
        le=19,
        description="added to each front-end process's niceness: past capacity the engine's "
        "forwards get the cores before the front ends' parsing and refusing "
        "(docs/decisions.md, CPU priority); 5 measured best on 2 cores; 0: equal",
    )
    engine_nice: int = Field(
        default=0,
        ge=-20,
        le=19,
        description="added to the engine process's niceness; negative (ahead of every other "
        "process on the host) needs CAP_SYS_NICE, and without it is logged and ignored",
    )
    max_request_batch: int = Field(default=64, ge=1, description="examples in one request")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=16_000_000, ge=1)
    profile_iters: int = Field(
        default=3, ge=1, le=100, description="timed forwards per batch size at start"
    )
    drain_timeout_s: float = Field(default=30.0, ge=0)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    protect_health: bool = False
    protect_metrics: bool = False
    log_json: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    torch_threads: int | None = Field(default=None, ge=1)
    inline_forward_ms: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="a forward predicted to take at most this long runs on the event loop's "
        "thread when no other request is queued and no forward runs (no thread hand-off); 0: never",
    )
    level_plans: bool = Field(
        default=True,
        description="run the hottest levels on their own folded copy of their weights "
        "(faster small levels), within plan_bytes; false: every level on the one set",
    )
    plan_bytes: int | None = Field(
        default=None,
        ge=0,
        description="bytes the per-level weight copies may hold in all; default: as many as "
        "the checkpoint's own weights (1x); 0: none",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return value


# Settings that are no longer read, and why (docs/configuration.md, "Retired settings"). The
# behaviour each tuned is gone, so no value of it can be honoured; a deployment that still
# sets one starts as before, and ``dvn serve`` logs a warning naming it.
RETIRED: dict[str, str] = {
    "max_batch_delay_ms": "a batch closes as soon as the executor is free: the engine cannot "
    "see requests on their way to it, and waiting for more lowered throughput and raised "
    "latency (docs/decisions.md, batch closing)",
    "express_forward_ms": "the express lane (a second forward beside a running one) is gone: "
    "on the engine process it almost never ran and did not raise effective accuracy "
    "(docs/decisions.md)",
}


def retired_in_use(environ: Mapping[str, str] | None = None, **flags: Any) -> list[tuple[str, str]]:
    """(where, why) of every retired setting given: as a ``DVN_`` variable in ``environ``
    (default: the process's) or as a flag in ``flags`` (name: value; None is not given)."""
    environ = os.environ if environ is None else environ
    found = []
    for name, why in RETIRED.items():
        variable = f"DVN_{name.upper()}"
        if variable in environ:
            found.append((variable, why))
        if flags.get(name) is not None:
            found.append((f"--{name.replace('_', '-')}", why))
    return found


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with ``overrides`` (flags) on top; ``None`` overrides
    are ignored.

    Raises:
        SettingsError: one line per bad value, naming its variable.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            source = f"--{field.replace('_', '-')}" if field in given else f"DVN_{field.upper()}"
            lines.append(f"{source}={err.get('input')!r}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(lines)) from e
