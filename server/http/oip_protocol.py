"""The KServe Open Inference Protocol v2 over REST (docs/oip.md): its JSON objects as pydantic
models, the request's input tensor to a model-space array and an answer to output tensors.

Each DVN task is one model, named as the task; its version is the checkpoint's. Every
failure here is a :class:`~server.errors.ServeError` (``InvalidInput`` or
``InvalidParameter``) whose message says what was wrong and what the model takes; the
routes in :mod:`server.http.oip` answer it as ``{"error": "<message>"}``.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, PlainValidator, StrictInt, StrictStr

# Every datatype the protocol defines (case-sensitive), and the ones a DVN input takes.
DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
)  # fmt: skip
FLOAT_DATATYPES: dict[str, type[np.floating[Any]]] = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
PIXEL_DATATYPE = "UINT8"  # raw pixels 0..255, preprocessed as the task's manifest says
INPUT_NAME = "input"
PROBABILITIES, CLASS_INDEX = "probabilities", "class_index"
OUTPUT_NAMES = (PROBABILITIES, CLASS_INDEX)
PLATFORM = "pytorch_dvn"  # the protocol's "<project>_<format>": a DVN checkpoint, not TorchScript
EXTENSIONS = ["dvn_budget"]  # budget, level and on_miss in the request's parameters

# Request parameters this server reads, and ones clients send that it accepts and ignores
# (tritonclient asks for binary outputs by default; the answer is JSON, which it reads too).
DVN_PARAMETERS = ("budget", "level", "on_miss")
IGNORED_PARAMETERS = ("binary_data_output",)
IGNORED_OUTPUT_PARAMETERS = ("binary_data",)
MAX_BUDGET_CHARS = 200  # as the v1 query parameter
ACCEPTS = (
    "FP32 (or FP16, FP64) model-space values, or UINT8 raw pixels 0..255 that the server "
    "preprocesses"
)
BINARY_UNSUPPORTED = (
    "the binary tensor data extension is not supported; send the tensor as JSON "
    '"data" (tritonclient: set_data_from_numpy(x, binary_data=False))'
)


def _parameter_value(value: Any) -> str | int | float | bool:
    # bool is an int: it passes too, which is what the protocol allows.
    if isinstance(value, str | int | float):
        return value
    raise ValueError("a parameter value must be a string, a number or a boolean")


ParameterValue = Annotated[
    str | int | float | bool,
    PlainValidator(_parameter_value, json_schema_input_type=str | int | float | bool),
]
Parameters = dict[str, ParameterValue]


# -- JSON objects --------------------------------------------------------------------------
class RequestInput(BaseModel):
    """``$request_input``; ``data`` is flat row-major or nested, checked by :func:`input_array`."""

    name: StrictStr
    shape: list[StrictInt]
    datatype: StrictStr
    parameters: Parameters | None = None
    data: list[Any] | None = None  # absent only with the (unsupported) binary extension


class RequestOutput(BaseModel):
    """``$request_output``."""

    name: StrictStr
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    """``$inference_request``: budget, level and on_miss travel in ``parameters``."""

    id: StrictStr | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    """``$response_output``: ``data`` flat, row-major."""

    name: str
    shape: list[int]
    datatype: str
    data: list[float] | list[int]


class InferenceResponse(BaseModel):
    """``$inference_response``; ``id`` only when the request gave one."""

    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, str | int | float | bool]
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    """``$metadata_tensor``: -1 marks the variable batch dimension."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """``$metadata_model_response`` plus ``parameters``: the DVN's levels and preprocessing."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: dict[str, str | int | float | bool]


class ServerMetadata(BaseModel):
    """``$metadata_server_response``."""

    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class OipError(BaseModel):
    """The protocol's one error shape; the server's error type is in ``X-DVN-Error-Type``."""

    error: str
