"""A locust user for a DVN server: ``.npy`` requests with a mix of tasks and budgets.

    DVN_BUDGET_MIX="5ms:0.5,20ms:0.3,1MiB:0.2" \\
        locust -f clients/locustfile.py --host http://127.0.0.1:8000 \\
        --headless --users 16 --spawn-rate 16 --run-time 60s

Environment (read when a user starts, never at import): ``DVN_BUDGET_MIX`` (the
``dvn loadtest --budget-mix`` syntax; default: no budget), ``DVN_TASK_MIX`` (default: every
task of ``/v1/models``, equal weights), ``DVN_LEVEL`` (pin a level), ``DVN_API_KEY``.

Each request is named ``/infer/<task> [<budget>]`` in locust's statistics. Budget
attainment shows up as request type ``BUDGET``: one entry per answered request with a
budget, failed when the response says the budget was missed.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import numpy as np
from locust import HttpUser, constant, task

from clients import _protocol as protocol
from clients._workload import Mix, budget_param, input_pool, parse_mix
from clients.results import ModelSummary

BUDGET_MIX_ENV = "DVN_BUDGET_MIX"
TASK_MIX_ENV = "DVN_TASK_MIX"
LEVEL_ENV = "DVN_LEVEL"
API_KEY_ENV = "DVN_API_KEY"
POOL_SIZE = 16


class BudgetMissed(Exception):
    """Reported to locust for a response whose budget was not met."""


class DVNUser(HttpUser):
    """Sends requests back to back (closed loop; scale with ``--users``)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random()
        api_key = os.environ.get(API_KEY_ENV)
        self.headers = protocol.client_headers(api_key)
        response = self.client.get("/v1/models", headers=self.headers)
        response.raise_for_status()
        models = ModelSummary.model_validate(response.json())
        task_mix = os.environ.get(TASK_MIX_ENV)
        self.tasks_mix = (
            parse_mix(task_mix, what=TASK_MIX_ENV)
            if task_mix
            else Mix.uniform([t.name for t in models.tasks])
        )
        budget_mix = os.environ.get(BUDGET_MIX_ENV)
        self.budget_mix = (
            parse_mix(budget_mix, what=BUDGET_MIX_ENV) if budget_mix else Mix.uniform(["none"])
        )
        self.level = os.environ.get(LEVEL_ENV) or None
        rng = np.random.default_rng(self.rng.randrange(2**32))
        self.pools = {
            name: input_pool(models.task(name).input_shape, POOL_SIZE, rng)
            for name in self.tasks_mix.items
        }

    @task
    def infer(self) -> None:
        name = self.tasks_mix.choose(self.rng)
        item = self.budget_mix.choose(self.rng)
        query = {"budget": budget_param(item), "level": self.level}
        params = {k: v for k, v in query.items() if v is not None}
        body = self.rng.choice(self.pools[name])
        call = protocol.npy_infer_call(name, body, params)
        with self.client.request(
            call.method,
            call.path,
            params=call.params,
            data=call.content,
            headers={**self.headers, **call.headers},
            name=f"/infer/{name} [{item}]",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(_describe_error(response.status_code, response.text))
                return
            response.success()
            met = (response.json().get("budget") or {}).get("met")
        if met is not None:
            self.environment.events.request.fire(
                request_type="BUDGET",
                name=item,
                response_time=response.elapsed.total_seconds() * 1000,
                response_length=0,
                exception=None if met else BudgetMissed(f"budget {item} missed"),
                context={},
            )


def _describe_error(status: int, text: str) -> str:
    """``<status> <error.type>: <message>`` from the server's error body."""
    try:
        error: dict[str, Any] = json.loads(text)["error"]
        return f"{status} {error['type']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{status}: {text[:200]}"
