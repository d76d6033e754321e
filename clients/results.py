"""What the DVN clients return: immutable views of the server's JSON (docs/api.md).

Fields the contract documents are typed; fields a newer server adds are ignored, so an
older client keeps working against a newer server.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ClassProbability(_Result):
    """One entry of a top-k list."""

    class_index: int
    class_name: str
    probability: float


class Prediction(_Result):
    """The prediction for one example: the most probable class and its probability, plus
    every class's probability (``probabilities``) or the ``top_k`` most probable."""

    class_index: int
    class_name: str
    probability: float
    probabilities: list[float] | None = None
    top_k: list[ClassProbability] | None = None


class BudgetSpec(_Result):
    """A parsed budget: the text given and each kind's limit (``None`` when not given)."""

    spec: str
    latency_s: float | None = None
    memory_bytes: int | None = None


class BudgetOutcome(BudgetSpec):
    """A budget and whether the response met it (a kind not given counts as met)."""

    met: bool
    latency_met: bool | None = None
    memory_met: bool | None = None


class Cost(_Result):
    """What the level that answered costs."""

    params: int
    param_bytes: int
    flops: int
    predicted_latency_ms: float | None = None
    measured_latency_ms: float | None = None


class ModelRef(_Result):
    """The checkpoint that answered."""

    name: str
    version: str
    sha256: str


class InferResult(_Result):
    """The response to ``POST /infer/{task}``: one prediction per example sent."""

    request_id: str | None = None
    task: str
    level: int
    units: list[int]
    selection: str
    predictions: list[Prediction]
    budget: BudgetOutcome | None = None
    cost: Cost
    model: ModelRef

    @property
    def budget_met(self) -> bool | None:
        """Whether the budget was met; ``None`` when no budget was given."""
        return None if self.budget is None else self.budget.met


class ErrorInfo(_Result):
    """An error object as the server would send it."""

    type: str
    message: str


class PlanLevel(_Result):
    """One level as ``GET /plan`` sees it now."""

    level: int
    units: list[int]
    params: int
    param_bytes: int
    flops: int
    accuracy: float | None = None
    predicted_latency_ms: float | None = None
    queue_wait_ms: float | None = None
    queue_depth: int | None = None
    fits_memory: bool
    fits_latency: bool


class Plan(_Result):
    """The level a request with this budget would get now (``level`` is ``None`` and
    ``error`` says why when it would fail), and every level's cost."""

    task: str
    budget: BudgetSpec | None = None
    level: int | None = None
    selection: str | None = None
    budget_met: bool | None = None
    error: ErrorInfo | None = None
    levels: list[PlanLevel]


class PreprocessingInfo(_Result):
    """How the server turns an uploaded image into a model-space input."""

    color_mode: str
    size: list[int]
    mean: list[float]
    std: list[float]


class LevelInfo(_Result):
    """One (task, level) of the loaded checkpoint; ``latency_ms`` maps batch size to the
    profiled forward time on the server's device."""

    level: int
    units: list[int]
    params: int
    param_bytes: int
    flops: int
    accuracy: float | None = None
    latency_ms: dict[int, float] = {}


class TaskInfo(_Result):
    """One task of the loaded checkpoint."""

    name: str
    classes: list[str]
    input_shape: list[int]
    preprocessing: PreprocessingInfo
    unit_order: list[int]
    levels: list[LevelInfo]


class ModelSummary(_Result):
    """``GET /v1/models``: the loaded checkpoint."""

    name: str
    version: str
    sha256: str
    device: str
    num_units: int
    param_bytes: int
    unit_param_bytes: dict[int, int] = {}
    tasks: list[TaskInfo]

    def task(self, name: str) -> TaskInfo:
        """The task called ``name``.

        Raises:
            KeyError: no such task (the message lists the tasks).
        """
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"no task {name!r}; the server has {', '.join(t.name for t in self.tasks)}")
