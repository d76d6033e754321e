"""The locust file, run by the real ``locust`` command against a tiny HTTP fake.

Locust is never imported into the test process: it monkey-patches the standard library
(gevent) on import, which would change every other test.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from tests.clients.fakes import INFER_RESPONSE, MODELS_RESPONSE

LOCUSTFILE = Path(__file__).resolve().parents[2] / "clients" / "locustfile.py"
LOCUST = Path(sys.executable).with_name("locust")
SHAPES = {t["name"]: tuple(t["input_shape"]) for t in MODELS_RESPONSE["tasks"]}


class Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, str | None]] = Counter()
        self.bad: list[str] = []


def serve(seen: Seen) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def reply(self, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            with seen.lock:
                seen.calls[(self.path, None)] += 1
            self.reply(MODELS_RESPONSE)

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            task = url.path.removeprefix("/infer/")
            budget = parse_qs(url.query).get("budget", [None])[0]
            data = self.rfile.read(int(self.headers["Content-Length"]))
            x = np.load(io.BytesIO(data), allow_pickle=False)
            with seen.lock:
                seen.calls[(url.path, budget)] += 1
                if self.headers["Content-Type"] != "application/x-npy":
                    seen.bad.append(f"content type {self.headers['Content-Type']}")
                if x.shape != (1, *SHAPES[task]) or x.dtype != np.float32:
                    seen.bad.append(f"{task}: {x.shape} {x.dtype}")
            self.reply(INFER_RESPONSE | {"task": task, "budget": {"spec": budget, "met": True}})

    server = QuietServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


class QuietServer(ThreadingHTTPServer):
    # A connection per request (HTTP/1.0): socketserver's backlog of 5 overflowed on a busy
    # box, and a dropped SYN is retried after 1 s, past the 2 s run's end (a failure).
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # locust drops connections when it stops: broken pipes are expected


@pytest.fixture
def fake_server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    server = serve(seen)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not LOCUST.exists() and not shutil.which("locust"), reason="no locust")
def test_locust_user_posts_npy_with_budget_mix(fake_server: tuple[str, Seen]) -> None:
    url, seen = fake_server
    env = os.environ | {"DVN_BUDGET_MIX": "15ms+2MiB:1,none:1", "DVN_TASK_MIX": "shapes:1"}
    command = [str(LOCUST) if LOCUST.exists() else "locust", "-f", str(LOCUSTFILE)]
    command += ["--headless", "-u", "2", "-r", "2", "-t", "2s", "--host", url, "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert seen.bad == []
    assert seen.calls[("/v1/models", None)] == 2  # one per user, on start
    assert seen.calls[("/infer/shapes", "15ms,2MiB")] > 0
    assert seen.calls[("/infer/shapes", None)] > 0
    assert not any(path == "/infer/digits" for path, _ in seen.calls)
    stats = {(s["method"], s["name"]): s for s in json.loads(done.stdout)}
    posts = stats[("POST", "/infer/shapes [15ms,2MiB]")]
    assert posts["num_failures"] == 0
    # Locust stops users mid-request: up to one request a user reaches the server unrecorded.
    served = seen.calls[("/infer/shapes", "15ms,2MiB")]
    assert served - 2 <= posts["num_requests"] <= served
    budget = stats[("BUDGET", "15ms,2MiB")]["num_requests"]
    assert posts["num_requests"] - 2 <= budget <= posts["num_requests"]
