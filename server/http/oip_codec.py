"""Open Inference Protocol v2 requests to model-space arrays and answers to responses
(docs/oip.md); the JSON objects themselves are in :mod:`server.http.oip_protocol`.

Every failure here is a :class:`~server.errors.ServeError` (``InvalidInput`` or
``InvalidParameter``) whose message says what was wrong and what the model takes.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from model_store.manifest import Manifest, TaskEntry
from model_store.tasks import TaskSpec
from server.engine.outcome import Answer
from server.engine.selection import OnMiss
from server.errors import InvalidInput, InvalidParameter
from server.http.decode import holds_bool, may_hold_bool
from server.http.oip_protocol import (
    ACCEPTS,
    BINARY_UNSUPPORTED,
    CLASS_INDEX,
    DATATYPES,
    DVN_PARAMETERS,
    FLOAT_DATATYPES,
    IGNORED_OUTPUT_PARAMETERS,
    IGNORED_PARAMETERS,
    INPUT_NAME,
    MAX_BUDGET_CHARS,
    OUTPUT_NAMES,
    PIXEL_DATATYPE,
    PLATFORM,
    PROBABILITIES,
    InferenceRequest,
)


# -- requests ------------------------------------------------------------------------------
def parse_request(body: bytes) -> InferenceRequest:
    """The body as an inference request.

    Raises:
        InvalidInput: not JSON, not an object, or not an inference request (says where).
    """
    try:
        doc = json.loads(body)
    except RecursionError as e:  # "[[[[..." deeper than the parser goes
        raise InvalidInput("body is nested too deeply to be an inference request") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(
            f"body is not valid JSON ({e}); send an inference request such as "
            '{"inputs": [{"name": "input", "shape": [...], "datatype": "FP32", "data": [...]}]}'
        ) from e
    if not isinstance(doc, dict):
        raise InvalidInput(
            'body must be a JSON object (an inference request): {"inputs": [{"name": "input", '
            '"shape": [...], "datatype": "FP32", "data": [...]}]}'
        )
    try:
        request = InferenceRequest.model_validate(doc)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()
        )
        raise InvalidInput(f"invalid inference request: {problems}") from e
    if may_hold_bool(body) and any(holds_bool(t.data) for t in request.inputs):
        raise InvalidInput(
            f"input {INPUT_NAME!r} data must be numbers; it holds booleans (the BOOL datatype "
            f"is not accepted); send {ACCEPTS}"
        )
    return request


@dataclass(frozen=True)
class DvnParameters:
    """What the request's ``parameters`` ask of the DVN (same meaning as the v1 query)."""

    budget: str | None = None
    level: int | None = None
    on_miss: OnMiss = "degrade"


def dvn_parameters(parameters: dict[str, Any] | None) -> DvnParameters:
    """Read ``budget``, ``level`` and ``on_miss``; the budget's grammar is checked later, by
    :func:`server.budget.parse_budget`, and the level's range by the service.

    Raises:
        InvalidParameter: an unknown parameter or a value of the wrong type.
    """
    given = parameters or {}
    unknown = [k for k in given if k not in DVN_PARAMETERS and k not in IGNORED_PARAMETERS]
    if unknown:
        raise InvalidParameter(
            f'unknown parameter {unknown[0]!r}; this server takes budget (e.g. "15ms,2MiB"), '
            'level (1-based) and on_miss ("degrade" or "reject")'
        )
    budget = given.get("budget")
    if budget is not None and not isinstance(budget, str):
        raise InvalidParameter(
            f'parameter budget must be a string such as "15ms,2MiB"; got {json.dumps(budget)}'
        )
    if budget is not None and len(budget) > MAX_BUDGET_CHARS:
        raise InvalidParameter(
            f"parameter budget is {len(budget)} characters long, over the limit of "
            f'{MAX_BUDGET_CHARS}; a budget is one or two constraints, e.g. "15ms,2MiB"'
        )
    level = given.get("level")
    if isinstance(level, float) and level.is_integer():
        level = int(level)  # JSON has one number type: 2.0 is the integer 2 (JSON Schema too)
    if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
        raise InvalidParameter(
            f"parameter level must be an integer (1-based); got {json.dumps(level)}"
        )
    on_miss = given.get("on_miss", "degrade")
    if on_miss == "degrade" or on_miss == "reject":
        return DvnParameters(budget=budget, level=level, on_miss=on_miss)
    raise InvalidParameter(
        f'parameter on_miss must be "degrade" or "reject"; got {json.dumps(on_miss)}'
    )


def requested_outputs(request: InferenceRequest, model: str) -> list[str]:
    """Names of the outputs to answer with: every output when none is named.

    Raises:
        InvalidInput: an unknown output name or output parameter.
    """
    if not request.outputs:
        return list(OUTPUT_NAMES)
    names: list[str] = []
    for output in request.outputs:
        if output.name not in OUTPUT_NAMES:
            raise InvalidInput(
                f"unknown output {output.name!r} for model {model!r}; its outputs are "
                f"{PROBABILITIES!r} (FP32, [B, classes]) and {CLASS_INDEX!r} (INT64, [B])"
            )
        for key in output.parameters or {}:
            if key not in IGNORED_OUTPUT_PARAMETERS:
                raise InvalidInput(
                    f"output parameter {key!r} of output {output.name!r} is not supported; "
                    "leave it out (outputs are answered as JSON tensors)"
                )
        if output.name not in names:
            names.append(output.name)
    return names


def input_array(request: InferenceRequest, model: str) -> tuple[np.ndarray, bool]:
    """The request's one input tensor as an array of its declared shape (float32, float16 or
    float64 values; UINT8 pixels as float32), and whether it holds raw pixels.

    Raises:
        InvalidInput: no input or more than one, an unknown name, a datatype the model does
            not take, no data, or data that is ragged, not numbers, or not as many
            elements as the shape says.
    """
    inputs = request.inputs
    if not inputs:
        raise InvalidInput(
            f"the request has no inputs; model {model!r} takes one input named {INPUT_NAME!r}"
        )
    if len(inputs) > 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise InvalidInput(
            f"model {model!r} takes one input, {INPUT_NAME!r}; got {len(inputs)} ({names})"
        )
    tensor = inputs[0]
    if tensor.name != INPUT_NAME:
        raise InvalidInput(
            f"unknown input {tensor.name!r} for model {model!r}; its input is named {INPUT_NAME!r}"
        )
    datatype = tensor.datatype
    if datatype not in DATATYPES:
        raise InvalidInput(
            f"unknown datatype {datatype!r}; the protocol's datatypes are "
            f"{', '.join(DATATYPES)} (case-sensitive), and model {model!r} takes {ACCEPTS}"
        )
    if datatype not in FLOAT_DATATYPES and datatype != PIXEL_DATATYPE:
        raise InvalidInput(
            f"datatype {datatype} is not accepted for input {INPUT_NAME!r} of model {model!r}; "
            f"send {ACCEPTS}"
        )
    if "binary_data_size" in (tensor.parameters or {}):
        raise InvalidInput(BINARY_UNSUPPORTED)
    if "shared_memory_region" in (tensor.parameters or {}):
        raise InvalidInput(
            'the shared memory extension is not supported; send the tensor as JSON "data"'
        )
    if tensor.data is None:
        raise InvalidInput(
            f'input {INPUT_NAME!r} has no "data"; send its elements as a JSON array '
            "(row-major, flat or nested)"
        )
    shape = tensor.shape
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {INPUT_NAME!r} has shape {shape}; dimensions must be 0 or more")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # No dtype here: with one, numpy would parse "0.5" and take true as 1.
            data = np.asarray(tensor.data)
    except (ValueError, TypeError) as e:
        raise InvalidInput(
            f"input {INPUT_NAME!r} data must be numbers, flat or as nested lists of equal "
            f"length; it is ragged or holds non-numbers ({e})"
        ) from e
    if data.dtype.kind not in "iuf" and data.size > 0:
        raise InvalidInput(
            f"input {INPUT_NAME!r} data must be numbers; it holds strings, booleans, nulls or "
            f"integers past 64 bits (numpy dtype {data.dtype})"
        )
    elements = math.prod(shape)
    if data.size != elements:
        raise InvalidInput(
            f"input {INPUT_NAME!r} has shape {shape} ({elements} elements) but its data holds "
            f"{data.size}; send every element, in row-major order"
        )
    if datatype == PIXEL_DATATYPE:
        # JSON does not tell 153 from 153.0: a whole number is one, however written.
        if data.size and data.dtype.kind not in "iu" and not np.all(np.mod(data, 1) == 0):
            raise InvalidInput(
                f"input {INPUT_NAME!r} is UINT8 (raw pixels) but its data holds non-integers; "
                "send integers 0..255, or FP32 model-space values"
            )
        if data.size and (int(data.min()) < 0 or int(data.max()) > 255):
            bad = int(data.min()) if int(data.min()) < 0 else int(data.max())
            raise InvalidInput(
                f"input {INPUT_NAME!r} is UINT8 (raw pixels) but its data holds {bad}; "
                "send integers 0..255"
            )
        return data.reshape(shape).astype(np.float32), True
    with np.errstate(over="ignore"):  # out of range becomes Inf, refused by check_array
        return data.reshape(shape).astype(FLOAT_DATATYPES[datatype]), False


def normalise_pixels(pixels: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """Raw pixels (B, C, H, W) in 0..255 to model space, as an image upload is: scaled to
    [0, 1], then (x - mean) / std per channel."""
    prep = spec.preprocessing
    mean = np.asarray(prep.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(prep.std, dtype=np.float32)[:, None, None]
    scaled = pixels.astype(np.float32) / 255.0
    return np.ascontiguousarray((scaled - mean) / std, dtype=np.float32)


# -- responses -----------------------------------------------------------------------------
def output_tensors(probabilities: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    """The named outputs of ``probabilities`` (B, classes), flat row-major."""
    probs = np.asarray(probabilities, dtype=np.float32)
    found: list[dict[str, Any]] = []
    for name in names:
        if name == PROBABILITIES:
            found.append(
                {
                    "name": PROBABILITIES,
                    "datatype": "FP32",
                    "shape": [int(probs.shape[0]), int(probs.shape[1])],
                    "data": probs.ravel().tolist(),
                }
            )
        else:
            found.append(
                {
                    "name": CLASS_INDEX,
                    "datatype": "INT64",
                    "shape": [int(probs.shape[0])],
                    "data": probs.argmax(axis=1).tolist(),
                }
            )
    return found


def response_parameters(answer: Answer) -> dict[str, Any]:
    """What the DVN did, as protocol parameters (scalars only): level, units ("0,1"),
    selection, budget_met (only with a budget), the level's bytes and the latency."""
    entry = answer.task.levels[answer.level - 1]
    found: dict[str, Any] = {
        "level": answer.level,
        "units": ",".join(str(u) for u in answer.units),
        "selection": answer.reason,
    }
    if answer.budget is not None:
        found["budget"] = answer.budget.spec
        found["budget_met"] = bool(answer.budget_met)
    found["param_bytes"] = entry.param_bytes
    found["measured_latency_ms"] = round(answer.measured_latency_s * 1e3, 3)
    return found


def inference_response(
    answer: Answer, version: str, request_id: str | None, names: list[str]
) -> dict[str, Any]:
    """``$inference_response`` of ``answer``."""
    doc: dict[str, Any] = {"model_name": answer.task.name, "model_version": version}
    if request_id is not None:
        doc["id"] = request_id
    doc["parameters"] = response_parameters(answer)
    doc["outputs"] = output_tensors(answer.probabilities, names)
    return doc


def model_metadata(task: TaskEntry, manifest: Manifest) -> dict[str, Any]:
    """``$metadata_model_response`` of a task, with the DVN's facts in ``parameters``
    (scalars only, as the protocol's parameters are: lists are joined by commas, class
    names are a JSON array in a string)."""
    prep = task.preprocessing
    parameters: dict[str, Any] = {
        "checkpoint": manifest.name,
        "sha256": manifest.weights_sha256,
        "classes": json.dumps(task.classes),
        "color_mode": str(prep["color_mode"]),
        "mean": ",".join(str(v) for v in prep["mean"]),
        "std": ",".join(str(v) for v in prep["std"]),
        "levels": len(task.levels),
    }
    for lv in task.levels:
        parameters[f"level_{lv.level}_units"] = ",".join(str(u) for u in lv.units)
        parameters[f"level_{lv.level}_param_bytes"] = lv.param_bytes
        if lv.accuracy is not None:
            parameters[f"level_{lv.level}_accuracy"] = lv.accuracy.value
    return {
        "name": task.name,
        "versions": [manifest.version],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *task.input_shape]}],
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(task.classes)]},
            {"name": CLASS_INDEX, "datatype": "INT64", "shape": [-1]},
        ],
        "parameters": parameters,
    }


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` references inlined (none is recursive),
    so that it stands alone inside the OpenAPI document."""
    defs: dict[str, Any] = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
