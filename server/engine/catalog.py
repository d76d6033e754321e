"""What the engine tells about its checkpoint without running a request: the summary of
``GET /v1/models``, the dry run of ``GET /plan``, and exported levels (archives, and the
level a memory budget exports)."""

from __future__ import annotations

import asyncio
from typing import Any

from server.budget import parse_budget
from server.engine.archive import build_archive
from server.engine.core import Engine
from server.engine.profile import predict_latency
from server.engine.selection import (
    OnMiss,
    check_level,
    fits_latency,
    fits_memory,
    select_level,
)
from server.errors import InvalidParameter, ServeError


def summary(engine: Engine) -> dict[str, Any]:
    """The checkpoint as ``GET /v1/models`` shows it."""
    m = engine.manifest
    tasks = []
    for t in m.tasks:
        levels = []
        for lv in t.levels:
            row = engine.profile.table.get((t.name, lv.level), {})
            levels.append(
                {
                    **lv.model_dump(exclude={"accuracy"}),
                    "accuracy": None if lv.accuracy is None else lv.accuracy.value,
                    "latency_ms": {str(b): round(s * 1e3, 4) for b, s in sorted(row.items())},
                }
            )
        tasks.append({**t.model_dump(exclude={"levels"}), "levels": levels})
    return {
        "name": m.name,
        "version": m.version,
        "sha256": m.weights_sha256,
        "device": engine.device,
        "num_units": m.num_units,
        "param_bytes": engine.param_bytes,
        "unit_param_bytes": {str(u): n for u, n in engine.unit_bytes.items()},
        "tasks": tasks,
    }


async def archive(engine: Engine, task: str, level: int) -> bytes:
    """One level as a standalone checkpoint archive (built once, then cached).

    Raises:
        UnknownTask, InvalidParameter: no such task or level.
    """
    entry = engine.task(task)
    check_level(entry, level)
    key = (entry.name, level)
    data = engine.archives.get(key)
    if data is None:
        data = await asyncio.to_thread(build_archive, engine.checkpoint, entry.name, level)
        engine.archives[key] = data
    return data


def plan(
    engine: Engine, task: str, budget_spec: str | None, on_miss: OnMiss, examples: int
) -> dict[str, Any]:
    """``GET /plan/{task}``: the level a request would get now, and every level's cost."""
    entry = engine.task(task)
    parsed = parse_budget(budget_spec)
    options = engine.forecast.options(entry, examples, parsed)
    chosen: dict[str, Any] = {
        "level": None,
        "selection": None,
        "budget_met": None,
        "error": None,
    }
    try:
        sel = select_level(entry.name, options, parsed, on_miss=on_miss)
        met = None
        if parsed is not None:
            option = next(o for o in options if o.level == sel.level)
            met = fits_memory(option, parsed) and fits_latency(option, parsed)
        chosen = {"level": sel.level, "selection": sel.reason, "budget_met": met, "error": None}
    except ServeError as e:
        chosen["error"] = e.body()["error"]
    levels = []
    state = engine.forecast.queue_state()
    for lv, option in zip(entry.levels, options, strict=True):
        # What runs before this level's forward: the running batch and every backlog.
        wait_s = predict_latency(
            engine.profile, state, (entry.name, lv.level), 0, engine.settings.max_batch_size
        )
        levels.append(
            {
                "level": lv.level,
                "units": lv.units,
                "params": lv.params,
                "param_bytes": lv.param_bytes,
                "flops": lv.flops,
                "accuracy": None if lv.accuracy is None else lv.accuracy.value,
                "predicted_latency_ms": round(option.predicted_latency_s * 1e3, 3),
                "queue_wait_ms": round(wait_s * 1e3, 3),
                "queue_depth": engine.batcher.depth((entry.name, lv.level)),
                "fits_memory": fits_memory(option, parsed),
                "fits_latency": fits_latency(option, parsed),
            }
        )
    return {
        "task": entry.name,
        "budget": None if parsed is None else parsed.to_dict(),
        **chosen,
        "levels": levels,
    }


def export_level(engine: Engine, task: str, budget_spec: str | None) -> int:
    """The largest level of ``task`` whose parameters fit a memory budget.

    Raises:
        InvalidParameter: no budget, or not a memory budget alone.
        BudgetUnsatisfiable: below the smallest level.
    """
    entry = engine.task(task)
    parsed = parse_budget(budget_spec)
    if parsed is None or parsed.memory_bytes is None or parsed.latency_s is not None:
        raise InvalidParameter(
            "export takes a memory budget only, e.g. ?budget=2MiB (or use "
            f"/v1/models/{task}/levels/{{level}}/export)"
        )
    options = engine.forecast.options(entry, 1)
    by_memory = [o for o in options if fits_memory(o, parsed)]
    if not by_memory:
        select_level(entry.name, options, parsed)  # raises BudgetUnsatisfiable
    return max(o.level for o in by_memory)
