"""The one table of the server's error messages: every English sentence a refusal says,
whose wording tells a person how to fix the request, is written here once.

Tests assert what a program reads (status, ``error.type``, headers, counts) where a refusal
happens, and its words through this table, so a reworded message changes this file only:

- by row: the request tables that tests/server/test_errors_messages.py sends again, one
  request per row (``MESSAGES``, ``EXPORT_MESSAGES``, ``OIP_MESSAGES``, ``CLIENT_MESSAGES``,
  ``ROUTING_MESSAGES``, ``BUDGET_MESSAGES``);
- by template, for a refusal that takes a scenario (a slow or failing forward, a full queue,
  a server with its own limits, a hand-made level table): the test fills in
  (``str.format``) what its scenario decides and compares the whole sentence; where a time
  measured while it runs, or a library's own words, are part of it, :func:`matching` makes
  the template a pattern that matches those parts.
"""

from __future__ import annotations

import re

from PIL import Image

UNITS = "us, ms, s, B, kB, MB, GB, KiB, MiB, GiB"
SHAPE = "task 'digits' takes one example of shape (1, 8, 8) or a batch (B, 1, 8, 8); got shape {}"
NUMBERS = '"inputs" must be a number array (nested lists of equal length, numbers only); '
NON_FINITE = (
    "inputs contain NaN or Inf (first at index {}, after float32 conversion); send finite values"
)
NOT_NPY = (
    "body is not a valid .npy array (it does not start with the .npy magic '\\x93NUMPY'); "
    "send the bytes np.save writes"
)
PICKLE = (
    ".npy body holds Python objects, which would need unpickling: refused; send a numeric "
    "array (np.save of a float32 array)"
)
NPY_DTYPE = (
    ".npy dtype {} is not accepted: send float32 (or float16/float64) model-space values; for "
    "raw pixels send a PNG or JPEG image"
)
TOO_LARGE = "body{} is over the 4096-byte limit; send fewer examples per request (or raise DVN_MAX_BODY_BYTES)"  # fmt: skip
MEDIA = (
    "content type {} is not accepted; send application/json, application/x-npy, image/png or "
    "image/jpeg"
)
BOMB = (  # Pillow refuses it in Image.open, before the server's own pixel limit is checked
    "image refused as a decompression bomb (Image size (400000000 pixels) exceeds limit of "
    f"{2 * Image.MAX_IMAGE_PIXELS} pixels, could be decompression bomb DOS attack.)"
)
# test_bad_input's streamed body: CHUNK x STREAM_CHUNKS bytes, never declared.
STREAMED_BODY_BYTES = 1024 * 1024

# -- Request tables: rows that tests/server/test_errors_messages.py sends again ---------------

# tests/server/http/test_bad_input.py's TABLE, by row id.
# fmt: off
MESSAGES = {
    "unknown-task": "unknown task 'nope'; this server serves: digits, shapes",
    "task-case": "unknown task 'DIGITS'; this server serves: digits, shapes",
    "no-task": "no route /infer/; see /docs for the API",
    "wrong-method": "GET is not allowed on /infer/digits",
    "budget-unknown-unit": f"budget '5xs': unknown unit 'xs'; use one of {UNITS} (units are case-sensitive), e.g. budget=15ms,2MiB",
    "budget-unit-case": f"budget '2mib': unknown unit 'mib'; use one of {UNITS} (units are case-sensitive), e.g. budget=15ms,2MiB",
    "budget-no-unit": f"budget '15': cannot read '15'; each constraint is a positive number and a unit ({UNITS}), e.g. budget=15ms,2MiB",
    "budget-negative": f"budget '-5ms': cannot read '-5ms'; each constraint is a positive number and a unit ({UNITS}), e.g. budget=15ms,2MiB",
    "budget-zero": "budget '0ms': '0ms' must be a positive finite number",
    "budget-nan": f"budget 'NaNms': cannot read 'NaNms'; each constraint is a positive number and a unit ({UNITS}), e.g. budget=15ms,2MiB",
    "budget-overflows-to-inf": "budget '1e999ms': '1e999ms' must be a positive finite number",
    "budget-latency-absurd": "budget '1e9s': latency '1e9s' is over the 3600 s limit; leave the latency budget out to get the best level",
    "budget-memory-absurd": "budget '1e18B': memory '1e18B' is over 1 PiB; leave the memory budget out to get the best level",
    "budget-under-a-byte": "budget '0.5B': memory '0.5B' is under one byte",
    "budget-two-latencies": "budget '5ms,10ms': more than one latency constraint; give one",
    "budget-two-memories": "budget '1MiB,15ms,2MiB': more than one memory constraint; give one",
    "budget-empty-part": f"budget '5ms,': cannot read ''; each constraint is a positive number and a unit ({UNITS}), e.g. budget=15ms,2MiB",
    "budget-too-long": "budget is 201 characters long, over the 200 allowed; a budget is at most one latency and one memory constraint, e.g. budget=15ms,2MiB",
    "budget-below-smallest-level": "memory budget 1000 B (1000 B) is below the smallest level of task 'digits': level 1 needs 1744 B (1.7 KiB); raise the budget to at least that",
    "level-zero": "level 0 is out of range for task 'digits': use 1..4",
    "level-over": "level 5 is out of range for task 'digits': use 1..4",
    "level-negative": "level -1 is out of range for task 'digits': use 1..4",
    "level-not-a-number": "level must be a whole number (1-based), got 'two'",
    "level-fraction": "level must be a whole number (1-based), got '2.5'",
    "level-empty": "level must be a whole number (1-based), got ''",
    "on-miss-unknown": "on_miss must be degrade or reject, got 'maybe'",
    "top-k-not-a-number": "top_k must be a whole number (at least 1), got 'three'",
    "top-k-zero": "top_k must be at least 1, got 0",
    "json-malformed": 'body is not valid JSON (Expecting \',\' delimiter: line 1 column 17 (char 16)); send {"inputs": [...]}',
    "json-not-utf8": 'body is not valid JSON (Expecting value: line 1 column 1 (char 0)); send {"inputs": [...]}',
    "json-not-an-object": 'JSON body must be an object with an "inputs" field: {"inputs": [...]}',
    "json-nested-too-deeply": 'body is not valid JSON (nested too deeply); send {"inputs": [...]} with the task\'s input shape',
    "json-wrong-shape": SHAPE.format("(1, 2)"),
    "json-scalar": SHAPE.format("()"),
    "json-ragged": NUMBERS + "it is ragged or holds non-numbers (setting an array element with a sequence. The requested array has an inhomogeneous shape after 2 dimensions. The detected shape was (1, 8) + inhomogeneous part.)",
    "json-strings": NUMBERS + "it holds non-numbers (strings, booleans or nulls: numpy dtype <U3)",
    "json-booleans": NUMBERS + "it holds non-numbers (strings, booleans or nulls: numpy dtype bool)",
    "json-booleans-among-numbers": NUMBERS + "it holds non-numbers (strings, booleans or nulls: numpy dtype float64)",
    "json-nulls": NUMBERS + "it holds non-numbers (strings, booleans or nulls: numpy dtype object)",
    "json-nan": NON_FINITE.format("(1, 0, 2, 5)"),
    "json-inf": NON_FINITE.format("(0, 0, 7, 7)"),
    "json-overflows-float32": NON_FINITE.format("(0, 0, 0, 1)"),
    "json-empty-batch": "the batch is empty; send at least one example",
    "json-batch-over-limit": "batch of 5 examples is over the limit of 4 per request; split it into smaller requests",
    "npy-wrong-shape": SHAPE.format("(3, 16, 16)"),
    "npy-int-dtype": NPY_DTYPE.format("int32"),
    "npy-complex-dtype": NPY_DTYPE.format("complex64"),
    "npy-minus-inf": NON_FINITE.format("(0, 0, 3, 3)"),
    "npy-not-npy": NOT_NPY,
    "npy-truncated-data": "body is not a valid .npy array (its header declares shape (1, 8, 8) of float32, 256 bytes, but the body holds 246); send the whole np.save output",
    "npy-truncated-header": "body is not a valid .npy array (unreadable header: EOF: reading array header, expected 118 bytes got 10)",
    "npy-corrupt-header": "body is not a valid .npy array (unreadable header: ('EOF in multi-line statement', (2, 0)))",
    "npy-declares-terabytes": "body is not a valid .npy array (its header declares shape (1000000000000, 1, 8, 8) of float32, 256000000000000 bytes, but the body holds 256); send the whole np.save output",
    "npy-object-dtype-pickle": PICKLE,
    "npy-npz": "body is an .npz archive, not one .npy array; send np.save output",
    "png-not-an-image": "body is not a readable PNG image (cannot identify image file); send the bytes of a PNG file",
    "png-truncated": "body is not a readable PNG image (image file is truncated)",
    "jpeg-truncated": "body is not a readable JPEG image (Truncated File Read)",
    "png-sent-as-jpeg": "body is a PNG image but the content type says JPEG; send the matching Content-Type",
    "png-over-pixel-limit": "image is 5000x4000 = 20000000 pixels, over the limit of 16000000; the task takes 8x8: resize it first",
    "png-decompression-bomb": BOMB,
    "media-csv": MEDIA.format("'text/csv'"),
    "media-none": MEDIA.format("'(none)'"),
    "media-multipart": MEDIA.format("'multipart/form-data'"),
    "media-gif": MEDIA.format("'image/gif'"),
    "body-declared-over-limit": TOO_LARGE.format(" of 5000 bytes"),
    "body-streamed-over-limit": TOO_LARGE.format(""),
    "body-streamed-declared-over-limit": TOO_LARGE.format(f" of {STREAMED_BODY_BYTES} bytes"),
}
# fmt: on


def cannot_read(spec: str, part: str) -> str:
    return (
        f"budget {spec!r}: cannot read {part!r}; each constraint is a positive number and a "
        f"unit ({UNITS}), e.g. budget=15ms,2MiB"
    )


def unknown_unit(spec: str, unit: str) -> str:
    return (
        f"budget {spec!r}: unknown unit {unit!r}; use one of {UNITS} (units are "
        "case-sensitive), e.g. budget=15ms,2MiB"
    )


def not_positive(spec: str, part: str) -> str:
    return f"budget {spec!r}: {part!r} must be a positive finite number"


# The budget grammar (``server.budget.parse_budget``), spec by spec.
# fmt: off
BUDGET_MESSAGES: list[tuple[str, str]] = [
    ("5xs", unknown_unit("5xs", "xs")),
    ("5MS", unknown_unit("5MS", "MS")),
    ("5kib", unknown_unit("5kib", "kib")),
    ("5KB", unknown_unit("5KB", "KB")),
    ("2h", unknown_unit("2h", "h")),
    ("-5ms", cannot_read("-5ms", "-5ms")),
    ("0ms", not_positive("0ms", "0ms")),
    ("0.0MiB", not_positive("0.0MiB", "0.0MiB")),
    ("0e5s", not_positive("0e5s", "0e5s")),
    ("NaNms", cannot_read("NaNms", "NaNms")),
    ("nanms", cannot_read("nanms", "nanms")),
    ("infms", cannot_read("infms", "infms")),
    ("1e999ms", not_positive("1e999ms", "1e999ms")),
    ("1e999B", not_positive("1e999B", "1e999B")),
    ("3601s", "budget '3601s': latency '3601s' is over the 3600 s limit; leave the latency budget out to get the best level"),
    ("1e300ms", "budget '1e300ms': latency '1e300ms' is over the 3600 s limit; leave the latency budget out to get the best level"),
    ("2000000GiB", "budget '2000000GiB': memory '2000000GiB' is over 1 PiB; leave the memory budget out to get the best level"),
    ("0.5B", "budget '0.5B': memory '0.5B' is under one byte"),
    ("5ms,10ms", "budget '5ms,10ms': more than one latency constraint; give one"),
    ("5ms,1s", "budget '5ms,1s': more than one latency constraint; give one"),
    ("1MiB,2kB", "budget '1MiB,2kB': more than one memory constraint; give one"),
    ("5ms,", cannot_read("5ms,", "")),
    (",5ms", cannot_read(",5ms", "")),
    ("5ms,,2MiB", cannot_read("5ms,,2MiB", "")),
    ("ms", cannot_read("ms", "ms")),
    ("15", cannot_read("15", "15")),
    ("fast", cannot_read("fast", "fast")),
    ("15ms;2MiB", cannot_read("15ms;2MiB", "15ms;2MiB")),
    ("1 5ms", cannot_read("1 5ms", "1 5ms")),
    ("0x10B", cannot_read("0x10B", "0x10B")),
    ("1e5e5ms", cannot_read("1e5e5ms", "1e5e5ms")),
]
# fmt: on

# GET /v1/models/{task}/export and /levels/{level}/export (tests/server/http/test_models.py)
# fmt: off
EXPORT_MESSAGES = {
    "/v1/models/digits/export": "export takes a memory budget only, e.g. ?budget=2MiB (or use /v1/models/digits/levels/{level}/export)",
    "/v1/models/digits/export?budget=5ms": "export takes a memory budget only, e.g. ?budget=2MiB (or use /v1/models/digits/levels/{level}/export)",
    "/v1/models/digits/export?budget=5ms,1MiB": "export takes a memory budget only, e.g. ?budget=2MiB (or use /v1/models/digits/levels/{level}/export)",
    "/v1/models/digits/export?budget=1XB": "budget '1XB': unknown unit 'XB'; use one of us, ms, s, B, kB, MB, GB, KiB, MiB, GiB (units are case-sensitive), e.g. budget=15ms,2MiB",
    "/v1/models/nope/export?budget=1MiB": "unknown task 'nope'; this server serves: digits, shapes",
    "/v1/models/nope/levels/1/export": "unknown task 'nope'; this server serves: digits, shapes",
    "/v1/models/digits/levels/0/export": "level 0 is out of range for task 'digits': use 1..4",
    "/v1/models/digits/levels/5/export": "level 5 is out of range for task 'digits': use 1..4",
    "/v1/models/digits/levels/top/export": "level must be a whole number (1-based), got 'top'",
    "/v1/models/digits/levels/1.0/export": "level must be a whole number (1-based), got '1.0'",
}
# fmt: on

# POST /v2/models/{task}/infer bodies, by case (tests/server/http/oip/test_errors.py), in
# the protocol's shape {"error": message}.
ACCEPTS = (
    "FP32 (or FP16, FP64) model-space values, or UINT8 raw pixels 0..255 that the server "
    "preprocesses"
)
# fmt: off
OIP_MESSAGES = {
    "datatype string": "unknown datatype 'FLOAT32'; the protocol's datatypes are BOOL, UINT8, UINT16, UINT32, "
     "UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES (case-sensitive), and model "
     f"'digits' takes {ACCEPTS}",
    "datatype case": "unknown datatype 'fp32'; the protocol's datatypes are BOOL, UINT8, UINT16, UINT32, "
     "UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES (case-sensitive), and model "
     f"'digits' takes {ACCEPTS}",
    "unsupported datatype": f"datatype INT64 is not accepted for input 'input' of model 'digits'; send {ACCEPTS}",
    "shape/data length": "input 'input' has shape [1, 1, 8, 9] (72 elements) but its data holds 64; send every "
     "element, in row-major order",
    "negative dimension": "input 'input' has shape [-1, 1, 8, 8]; dimensions must be 0 or more",
    "shape the task does not take": "task 'digits' takes one example of shape (1, 8, 8) or a batch (B, 1, 8, 8); got shape "
     "(2, 32)",
    "unknown input name": "unknown input 'pixels' for model 'digits'; its input is named 'input'",
    "two inputs": "model 'digits' takes one input, 'input'; got 2 ('input', 'mask')",
    "no inputs field": "invalid inference request: inputs: Field required",
    "empty inputs": "the request has no inputs; model 'digits' takes one input named 'input'",
    "NaN": "inputs contain NaN or Inf (first at index (0, 0, 0, 0), after float32 conversion); send "
     "finite values",
    "over FP32 range": "inputs contain NaN or Inf (first at index (0, 0, 7, 7), after float32 conversion); send "
     "finite values",
    "strings": "input 'input' data must be numbers; it holds strings, booleans, nulls or integers past 64 "
     "bits (numpy dtype <U3)",
    "no data": 'input \'input\' has no "data"; send its elements as a JSON array (row-major, flat or '
     "nested)",
    "binary extension": 'the binary tensor data extension is not supported; send the tensor as JSON "data" '
     "(tritonclient: set_data_from_numpy(x, binary_data=False))",
    "shared memory extension": 'the shared memory extension is not supported; send the tensor as JSON "data"',
    "shape of strings": "invalid inference request: inputs.0.shape.0: Input should be a valid integer",
    "UINT8 out of range": "input 'input' is UINT8 (raw pixels) but its data holds 256; send integers 0..255",
    "booleans among numbers": "input 'input' data must be numbers; it holds booleans (the BOOL datatype is not "
     "accepted); send FP32 (or FP16, FP64) model-space values, or UINT8 raw pixels 0..255 "
     "that the server preprocesses",
    "UINT8 not integers": "input 'input' is UINT8 (raw pixels) but its data holds non-integers; send integers "
     "0..255, or FP32 model-space values",
    "unknown output": "unknown output 'logits' for model 'digits'; its outputs are 'probabilities' (FP32, "
     "[B, classes]) and 'class_index' (INT64, [B])",
    "classification extension": "output parameter 'classification' of output 'class_index' is not supported; leave it out "
     "(outputs are answered as JSON tensors)",
    "unknown parameter": "unknown parameter 'budjet'; this server takes budget (e.g. \"15ms,2MiB\"), level "
     '(1-based) and on_miss ("degrade" or "reject")',
    "nested parameter": "invalid inference request: parameters.budget: Value error, a parameter value must be a "
     "string, a number or a boolean",
    "budget type": 'parameter budget must be a string such as "15ms,2MiB"; got 15',
    "budget grammar": "budget '5xs': unknown unit 'xs'; use one of us, ms, s, B, kB, MB, GB, KiB, MiB, GiB "
     "(units are case-sensitive), e.g. budget=15ms,2MiB",
    "memory budget too small": "memory budget 1000 B (1000 B) is below the smallest level of task 'digits': level 1 "
     "needs 1744 B (1.7 KiB); raise the budget to at least that",
    "budget length": 'parameter budget is 201 characters long, over the limit of 200; a budget is one or two '
     'constraints, e.g. "15ms,2MiB"',
    "level range": "level 9 is out of range for task 'digits': use 1..4",
    "level type": 'parameter level must be an integer (1-based); got "2"',
    "on_miss": 'parameter on_miss must be "degrade" or "reject"; got "wait"',
    "not an object": 'body must be a JSON object (an inference request): {"inputs": [{"name": "input", '
     '"shape": [...], "datatype": "FP32", "data": [...]}]}',
}
# fmt: on

# tests/server/http/test_infer_errors.py's tables, row by row: (its url and body, message) and
# (its method and url, message).
# fmt: off
CLIENT_MESSAGES = [
    "unknown task 'nope'; this server serves: digits, shapes",
    "unknown task 'Digits'; this server serves: digits, shapes",
    "level 0 is out of range for task 'digits': use 1..4",
    "level 5 is out of range for task 'digits': use 1..4",
    "level must be a whole number (1-based), got 'two'",
    "on_miss must be degrade or reject, got 'maybe'",
    "top_k must be at least 1, got 0",
    "top_k must be at least 1, got -2",
    "budget is 201 characters long, over the 200 allowed; a budget is at most one latency and one memory constraint, e.g. budget=15ms,2MiB",
    "budget '5xs': unknown unit 'xs'; use one of us, ms, s, B, kB, MB, GB, KiB, MiB, GiB (units are case-sensitive), e.g. budget=15ms,2MiB",
    "budget '5ms,5ms': more than one latency constraint; give one",
    "memory budget 1000 B (1000 B) is below the smallest level of task 'digits': level 1 needs 1744 B (1.7 KiB); raise the budget to at least that",
    "task 'digits' takes one example of shape (1, 8, 8) or a batch (B, 1, 8, 8); got shape (1, 2)",
    "the batch is empty; send at least one example",
    'JSON body must be an object with an "inputs" field: {"inputs": [...]}',
]
ROUTING_MESSAGES = [
    "no route /nope; see /docs for the API",
    "no route /infer; see /docs for the API",
    "no route /infer/; see /docs for the API",
    "no route /infer/digits/extra; see /docs for the API",
    "PUT is not allowed on /infer/digits",
    "no route /v1/models/digits/levels/x/y; see /docs for the API",
    "GET is not allowed on /infer/digits",
    "POST is not allowed on /v1/models",
    "DELETE is not allowed on /plan/digits",
    "POST is not allowed on /healthz",
]
# fmt: on

# -- Refusals that take a scenario: templates ------------------------------------------------
# Named fields are what the test's scenario decides; ``{task!r}`` is quoted as the server
# quotes it.

# fmt: off
# Transport limits (server/http/): a server with its own body, batch and pixel limits.
BODY_OVER_LIMIT = "body of {size} bytes is over the {limit}-byte limit; send fewer examples per request (or raise DVN_MAX_BODY_BYTES)"
BATCH_OVER_LIMIT = "batch of {size} examples is over the limit of {limit} per request; split it into smaller requests"
PIXELS_OVER_LIMIT = "image is {width}x{height} = {pixels} pixels, over the limit of {limit}; the task takes {task_width}x{task_height}: resize it first"
PNG_SENT_AS_JPEG = "body is a PNG image but the content type says JPEG; send the matching Content-Type"
OIP_NOT_JSON = 'body is not valid JSON ({reason}); send an inference request such as {{"inputs": [{{"name": "input", "shape": [...], "datatype": "FP32", "data": [...]}}]}}'  # reason: the JSON parser's words
OIP_TOO_DEEP = "body is nested too deeply to be an inference request"
OIP_RAGGED = "input 'input' data must be numbers, flat or as nested lists of equal length; it is ragged or holds non-numbers ({reason})"  # reason: numpy's words

# Routing (both protocols, in their own shapes).
NO_ROUTE = "no route {path}; see /docs for the API"
METHOD_NOT_ALLOWED = "{method} is not allowed on {path}"

# API keys (server/http/auth.py).
NO_API_KEY = "this server needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
WRONG_API_KEY = "the API key is not valid for this server"

# Readiness and shutdown (server/errors.py, the front end's runtime).
WARMING_UP = "the server is warming up (profiling every level); retry shortly"
WARMING_UP_PROBE = "the server is warming up"  # /readyz says less
WARM_UP_FAILED = "warm-up failed ({error}); see the server log"
SHUTTING_DOWN = "the server is shutting down; retry on another replica"
DRAINING_PROBE = "the server is draining"
INFLIGHT_LIMIT = "the server is already handling {inflight} inference requests, its limit (DVN_MAX_INFLIGHT={limit}); retry after Retry-After, or on another replica"
ADAPTIVE_LIMIT = "this front end is handling {inflight} inference requests, its adaptive limit from the latency it achieves ({limit}); retry after Retry-After, or on another replica"  # fmt: skip
INTERNAL_ERROR = "internal error (request id {request_id})"

# Level selection (server/engine/selection.py).
BELOW_SMALLEST_LEVEL = "memory budget {budget} B ({budget_human}) is below the smallest level of task {task!r}: level {level} needs {needs} B ({needs_human}); raise the budget to at least that"
NO_LEVEL_IN_TIME = "no level of task {task!r} can answer within {budget_ms} ms now (the fastest is predicted at {fastest_ms} ms); retry later, raise the budget, or use on_miss=degrade to get the smallest level anyway"
QUEUES_FULL = "every queue of task {task!r} that fits the budget is full; retry after the Retry-After interval or send less load"
PINNED_QUEUE_FULL = "the queue of task {task!r} level {level} is full; retry later or let the server choose the level (no level=)"

# Admission (server/engine/admission.py).
BACKLOG_SHED = "the engine's queues put the earliest answer to this request at {wait_ms} ms, over its latency budget of {budget_ms} ms; retry after Retry-After, raise the budget, or send to another replica"

# Batches and deadlines (server/engine/batching.py).
BATCH_FAILED = "the batch of {size} examples this request was in failed at task {task!r} level {level} ({error}); other batches are unaffected, retry it"
NON_FINITE_OUTPUT = "NonFiniteOutput: the model produced NaN or Inf for this batch"
RAN_OUT = "the latency budget of this task {task!r} request ran out {late_ms} ms ago while it was queued; not computed (nothing is computed after its deadline): retry with a larger budget, or none"
PREDICTED_LATE = "the latency budget of this task {task!r} request has {left_ms} ms left, and level {level} is predicted to take {predicted_ms} ms; not computed (on_miss=reject)"
# fmt: on

# Settings (server/settings.py): the source of each bad value, then pydantic's words.
# fmt: off
SETTINGS_MESSAGES = {
    "batch-size-zero": "DVN_MAX_BATCH_SIZE='0': Input should be greater than or equal to 1",
    "batch-size-over": "DVN_MAX_BATCH_SIZE='2000': Input should be less than or equal to 1024",
    "batch-size-words": "DVN_MAX_BATCH_SIZE='lots': Input should be a valid integer, unable to parse string as an integer",
    "port-over": "--port=70000: Input should be less than or equal to 65535",
    "port-negative": "--port=-1: Input should be greater than or equal to 0",
    "port-words": "DVN_PORT='http': Input should be a valid integer, unable to parse string as an integer",
    "device-flag": "--device='tpu': Value error, must be auto, cpu, cuda or cuda:N",
    "device-env": "DVN_DEVICE='cuda:x': Value error, must be auto, cpu, cuda or cuda:N",
    "log-level": "--log-level='verbose': Input should be 'debug', 'info', 'warning' or 'error'",
    "protect-health": "DVN_PROTECT_HEALTH='maybe': Input should be a valid boolean, unable to interpret input",
    "inline-forward": "DVN_INLINE_FORWARD_MS='-1': Input should be greater than or equal to 0",
    "body-bytes": "--max-body-bytes=10: Input should be greater than or equal to 1024",
    "profile-iters": "--profile-iters=0: Input should be greater than or equal to 1",
    "unknown-flag": "--colour='red': Extra inputs are not permitted",
}
# fmt: on
INVALID_SETTINGS = "invalid settings: {}"  # the bad values, each as above, joined by "; "


class Regex(str):
    """A field of :func:`matching` that is a pattern, not words."""


MEASURED = Regex(r"\d+\.\d")  # a time the server measured, in ms to one decimal as it writes it
THEIR_WORDS = Regex(r".+")  # a library's own words (Pillow's, numpy's, the JSON parser's)


def matching(template: str, **fields: object) -> re.Pattern[str]:
    """``template`` as a pattern for ``fullmatch``: a field says exactly its value, or, given
    a :class:`Regex` (:data:`MEASURED`, :data:`THEIR_WORDS`), matches that."""
    regexes = {name: value for name, value in fields.items() if isinstance(value, Regex)}
    markers = {name: f"\x00{name}\x00" for name in regexes}
    text = re.escape(template.format(**{**fields, **markers}))
    for name, marker in markers.items():
        text = text.replace(re.escape(marker), regexes[name])
    return re.compile(text)
