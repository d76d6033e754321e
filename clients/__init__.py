"""Clients of a DVN server: Python API (sync and async), local runner, load generator.

    from clients import DVNClient
    with DVNClient("http://127.0.0.1:8000") as dvn:
        print(dvn.infer("digits", x, budget="15ms").predictions[0].class_name)

Names are imported on first use, so ``dvn --help`` (which imports ``clients.cli``) does not
pay for httpx, numpy or torch. See docs/clients.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clients.async_client import AsyncDVNClient
    from clients.client import DVNClient
    from clients.errors import DVNError
    from clients.loadtest import LoadTestConfig, arun_loadtest, run_loadtest
    from clients.local import LocalDVN
    from clients.results import InferResult, ModelSummary, Plan, Prediction

_EXPORTS = {
    "AsyncDVNClient": "clients.async_client",
    "DVNClient": "clients.client",
    "DVNError": "clients.errors",
    "InferResult": "clients.results",
    "LoadTestConfig": "clients.loadtest",
    "LocalDVN": "clients.local",
    "ModelSummary": "clients.results",
    "Plan": "clients.results",
    "Prediction": "clients.results",
    "arun_loadtest": "clients.loadtest",
    "run_loadtest": "clients.loadtest",
}

__all__ = [
    "AsyncDVNClient",
    "DVNClient",
    "DVNError",
    "InferResult",
    "LoadTestConfig",
    "LocalDVN",
    "ModelSummary",
    "Plan",
    "Prediction",
    "arun_loadtest",
    "run_loadtest",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clients' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
