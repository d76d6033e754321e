"""Held-out accuracy of every (task, level)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model_store.data import TaskData
from model_store.manifest import Accuracy
from model_store.model import DVN


@torch.no_grad()
def accuracy_of(
    model: DVN,
    task: int,
    level: int,
    x: np.ndarray,
    y: np.ndarray,
    device: torch.device,
    batch: int = 512,
) -> float:
    """Fraction of ``x`` whose top class at ``(task, level)`` equals ``y``."""
    model.eval()
    correct = 0
    for i in range(0, len(y), batch):
        xb = torch.from_numpy(x[i : i + batch]).to(device)
        pred = model(xb, task, level).argmax(1).cpu().numpy()
        correct += int((pred == y[i : i + batch]).sum())
    return correct / len(y)


def evaluate(
    model: DVN, tasks: Sequence[TaskData], device: torch.device
) -> dict[tuple[str, int], Accuracy]:
    """Accuracy of every level of every task on its held-out split."""
    model.to(device)
    found = {}
    for t, data in enumerate(tasks):
        for level in range(1, model.config.num_levels + 1):
            value = accuracy_of(model, t, level, data.x_test, data.y_test, device)
            found[(data.spec.name, level)] = Accuracy(
                value=round(value, 4), examples=len(data.y_test), data=data.source
            )
    return found
