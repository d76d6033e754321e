"""Answers to response bodies and headers, shared by the v1 routes."""

from __future__ import annotations

from typing import Any

import numpy as np

from model_store.manifest import Manifest
from server.engine.outcome import Answer


def predictions(answer: Answer, top_k: int | None) -> list[dict[str, Any]]:
    probs = answer.probabilities  # (examples, classes)
    classes = answer.task.classes
    best = probs.argmax(axis=1)
    found: list[dict[str, Any]] = []
    rows = probs.tolist()
    if top_k is not None:
        k = min(top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    for i, row in enumerate(rows):
        c = int(best[i])
        item: dict[str, Any] = {"class_index": c, "class_name": classes[c], "probability": row[c]}
        if top_k is None:
            item["probabilities"] = row
        else:
            item["top_k"] = [
                {"class_index": int(j), "class_name": classes[int(j)], "probability": row[int(j)]}
                for j in order[i]
            ]
        found.append(item)
    return found


def budget_report(answer: Answer) -> dict[str, Any] | None:
    if answer.budget is None:
        return None
    return {
        **answer.budget.to_dict(),
        "met": bool(answer.budget_met),
        "latency_met": answer.latency_met,
        "memory_met": answer.memory_met,
    }


def infer_body(
    answer: Answer, manifest: Manifest, request_id: str, top_k: int | None
) -> dict[str, Any]:
    entry = answer.task.levels[answer.level - 1]
    return {
        "request_id": request_id,
        "task": answer.task.name,
        "level": answer.level,
        "units": answer.units,
        "selection": answer.reason,
        "predictions": predictions(answer, top_k),
        "budget": budget_report(answer),
        "cost": {
            "params": entry.params,
            "param_bytes": entry.param_bytes,
            "flops": entry.flops,
            "predicted_latency_ms": round(answer.predicted_latency_s * 1e3, 3),
            "measured_latency_ms": round(answer.measured_latency_s * 1e3, 3),
        },
        "model": {
            "name": manifest.name,
            "version": manifest.version,
            "sha256": manifest.weights_sha256,
        },
    }


def infer_headers(answer: Answer) -> dict[str, str]:
    headers = {
        "X-DVN-Level": str(answer.level),
        "X-DVN-Units": ",".join(str(u) for u in answer.units),
    }
    if answer.budget is not None:
        headers["X-DVN-Budget-Met"] = "true" if answer.budget_met else "false"
    return headers
