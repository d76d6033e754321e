"""Response bodies of the v1 API as pydantic models (they document the OpenAPI schema;
handlers build the same shapes as plain dicts, see ``server.http.encode``)."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class TopClass(BaseModel):
    class_index: int
    class_name: str
    probability: float


class Prediction(BaseModel):
    class_index: int
    class_name: str
    probability: float
    probabilities: list[float] | None = None
    top_k: list[TopClass] | None = None


class BudgetReport(BaseModel):
    spec: str
    latency_s: float | None
    memory_bytes: int | None
    met: bool
    latency_met: bool | None
    memory_met: bool | None


class Cost(BaseModel):
    params: int
    param_bytes: int
    flops: int
    predicted_latency_ms: float
    measured_latency_ms: float


class ModelRef(BaseModel):
    name: str
    version: str
    sha256: str


class InferResponse(BaseModel):
    request_id: str
    task: str
    level: int
    units: list[int]
    selection: str
    predictions: list[Prediction]
    budget: BudgetReport | None
    cost: Cost
    model: ModelRef


class PlanLevel(BaseModel):
    level: int
    units: list[int]
    params: int
    param_bytes: int
    flops: int
    accuracy: float | None
    predicted_latency_ms: float
    queue_wait_ms: float
    queue_depth: int
    fits_memory: bool
    fits_latency: bool


class PlanResponse(BaseModel):
    task: str
    budget: dict[str, object] | None
    level: int | None
    selection: str | None
    budget_met: bool | None
    error: ErrorDetail | None
    levels: list[PlanLevel]


class ModelLevel(BaseModel):
    level: int
    units: list[int]
    params: int
    param_bytes: int
    flops: int
    accuracy: float | None
    latency_ms: dict[str, float]


class ModelTask(BaseModel):
    name: str
    classes: list[str]
    input_shape: list[int]
    preprocessing: dict[str, object]
    unit_order: list[int]
    levels: list[ModelLevel]


class ModelsResponse(BaseModel):
    name: str
    version: str
    sha256: str
    device: str
    num_units: int
    param_bytes: int
    unit_param_bytes: dict[str, int]
    tasks: list[ModelTask]


class Status(BaseModel):
    status: str
