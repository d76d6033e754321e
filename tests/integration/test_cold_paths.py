"""A freshly started server answers the first request of every body type as it answers the
later ones: each front end warms its decoders and encoders before it serves
(server/http/warmup.py), so the README's first PNG request is not a 504.

Compared by the server's own measure (``cost.measured_latency_ms``, arrival to answer)
as a ratio to the later requests' median, not as an absolute time: the test box is
shared, so a first request as slow as the slowest later one passes too: the box's noise,
not a cold path. Before the warm-up the first PNG request took over 5 ms (504 under the
README's ``5ms`` budget) against about 1.3 ms for the later ones, a ratio this test
refuses. The requests carry a loose latency budget for that reason: under the README's
5 ms, a front end the shared box descheduled for a few ms is refused 429 by admission (its
budget spent before the body is read, as designed), which says nothing about cold paths
and failed CI once.

One JSON request opens the server before the measured ones: the engine's first answer at a
level also creates that level's metric series (about 1 ms, the same for every body type),
which is not a decoder's cold path; JSON decoding has none of its own (the json module is
loaded at import), and the Open Inference Protocol's JSON is measured from its first."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench._process import ROOT, dvn_serve
from server.settings import demo_checkpoint

BUDGET = "1s,100KiB"  # the README's memory budget; a latency budget the box's noise never spends
LATER = 8  # requests of each body type after the first
MAX_RATIO = 3.0  # first request / median of the later ones (unless a later one was slower)


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.open(ROOT / "examples" / "digit.png").convert("L").save(buffer, format="JPEG")
    return buffer.getvalue()


def oip_json() -> bytes:
    pixels = np.asarray(Image.open(ROOT / "examples" / "digit.png").convert("L").resize((8, 8)))
    doc = {
        "parameters": {"budget": BUDGET},
        "inputs": [
            {"name": "input", "shape": [1, 1, 8, 8], "datatype": "UINT8",
             "data": pixels.ravel().tolist()}
        ],
    }  # fmt: skip
    return json.dumps(doc).encode()


# body type -> (path, content type, body)
BODIES = {
    "png": ("/infer/digits", "image/png", (ROOT / "examples" / "digit.png").read_bytes()),
    "jpeg": ("/infer/digits", "image/jpeg", jpeg()),
    "npy": (
        "/infer/digits",
        "application/x-npy",
        (ROOT / "examples" / "demo" / "digit.npy").read_bytes(),
    ),
    "json": (
        "/infer/digits",
        "application/json",
        (ROOT / "examples" / "demo" / "digit.json").read_bytes(),
    ),
    "oip": ("/v2/models/digits/infer", "application/json", oip_json()),
}


def send(url: str, kind: str) -> tuple[int, bool | None, float]:
    """One request of a body type on a new connection: status, budget met, the server's
    measured latency in ms (NaN when refused)."""
    path, content_type, body = BODIES[kind]
    query = {"budget": BUDGET, "top_k": "3"} if path.startswith("/infer") else {}
    r = httpx.post(
        url + path, params=query, content=body, headers={"content-type": content_type}, timeout=30
    )
    if r.status_code != 200:
        return r.status_code, None, float("nan")
    doc = r.json()
    if path.startswith("/infer"):
        return 200, doc["budget"]["met"], doc["cost"]["measured_latency_ms"]
    params = doc["parameters"]
    return 200, params["budget_met"], params["measured_latency_ms"]


Sample = tuple[int, bool | None, float]


def fresh_server_samples(log_path: Path) -> tuple[dict[str, Sample], dict[str, list[Sample]]]:
    """A fresh two-front-end server's first request of each body type, and the next
    ``LATER`` of each. Two front ends, a new connection per request: the first requests reach
    both, and each must have warmed its own codecs."""
    with dvn_serve(demo_checkpoint(), log_path, "--workers", "2") as server:
        send(server.url, "json")
        first = {kind: send(server.url, kind) for kind in BODIES}
        later = {kind: [send(server.url, kind) for _ in range(LATER)] for kind in BODIES}
        assert server.output().count("front end warmed up") == 2, server.output()
    return first, later


def slow_firsts(first: dict[str, Sample], later: dict[str, list[Sample]]) -> dict[str, str]:
    """The body types whose first request was refused, missed its budget, or was slower than
    ``MAX_RATIO`` x the later ones' median (and than the slowest of them), with the samples."""
    slow = {}
    for kind in BODIES:
        status, met, latency = first[kind]
        assert [s for s, _, _ in later[kind]] == [200] * LATER, (kind, later[kind])
        answered = [ms for _, _, ms in later[kind]]
        limit = max(MAX_RATIO * statistics.median(answered), max(answered))
        if status != 200 or not met or not latency <= limit:
            slow[kind] = f"first {first[kind]}, later {later[kind]}"
    return slow


def test_first_request_of_each_body_type_is_as_fast_as_later_ones(tmp_path: Path) -> None:
    # A cold path is slow on every fresh server; the shared box's hiccups are not: a first
    # request too slow is measured again on a second fresh server, and fails the test only
    # if it is too slow there as well. (A 20 ms stall in a third of fresh servers, the first
    # OIP request at the front end the start-up probe had not reached, was FastAPI building
    # its routers' state: warm_routes does it now, and tests/server/http/test_warmup.py
    # counts the calls of each router's first request.)
    slow = slow_firsts(*fresh_server_samples(tmp_path / "serve.log"))
    if slow:
        again = slow_firsts(*fresh_server_samples(tmp_path / "serve-again.log"))
        assert not slow.keys() & again.keys(), (slow, again)
