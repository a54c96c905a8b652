"""A real remote Scanner / Policy Engine for the job-execution tests: an HTTP server on 127.0.0.1 (an
ephemeral port, served from a thread) answering ``POST /reports`` with a scripted behaviour per image
digest, and recording every request it receives (wall-clock arrival, digest, job id, answer)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from schemas.messages import Component, Inventory

FINDINGS = [{"id": "CVE-2026-0001", "package": "npm/left-pad", "severity": "high"}]


@dataclass(frozen=True)
class Behaviour:
    """What the server does with the calls for one image.

    kind: ``ok`` | ``flaky`` (503 for the first ``n`` calls, then ok) | ``down`` (always 500) |
    ``limited`` (429 with ``Retry-After: retry_after`` for the first ``n`` calls, then ok) |
    ``hang`` (the first ``n`` calls sleep ``hang_s`` before answering, then ok) | ``bad`` (always 400).
    """

    kind: str = "ok"
    n: int = 0
    retry_after: int = 3
    hang_s: float = 5.0


@dataclass(frozen=True)
class Call:
    at: float  # time.monotonic() on arrival
    digest: str
    job_id: str
    status: int  # what the server answered (0: hung up on / client gone)


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedEngine
    protocol_version = "HTTP/1.1"  # keep-alive: the fairness test sends thousands of requests

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        digest, job_id = body["image_digest"], body["job_id"]
        srv = self.server
        with srv.lock:
            srv.counts[digest] = srv.counts.get(digest, 0) + 1
            nth = srv.counts[digest]
            behaviour = srv.behaviours.get(digest, Behaviour())
        status, payload, headers = 200, {"findings": FINDINGS, "verdict": "fail"}, {}
        if behaviour.kind == "flaky" and nth <= behaviour.n:
            status, payload = 503, {"error": "warming up"}
        elif behaviour.kind == "down":
            status, payload = 500, {"error": "always down"}
        elif behaviour.kind == "limited" and nth <= behaviour.n:
            status, payload, headers = (
                429,
                {"error": "slow down"},
                {"Retry-After": str(behaviour.retry_after)},
            )
        elif behaviour.kind == "bad":
            status, payload = 400, {"error": "unknown image"}
        elif behaviour.kind == "hang" and nth <= behaviour.n:
            time.sleep(behaviour.hang_s)
            status = 0
        elif srv.delay_s:
            time.sleep(srv.delay_s)
        srv.gate.wait()  # a test holds the engine closed while it sets up the order it wants to observe
        with srv.lock:
            srv.calls.append(Call(arrived, digest, job_id, status))
        try:
            if status == 0:  # the client has given up long ago: answer anyway, into the void
                status = 200
            self._send(status, payload, headers)
        except OSError:
            pass


class ScriptedEngine(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, behaviours: dict[str, Behaviour] | None = None, delay_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.behaviours = dict(behaviours or {})
        self.delay_s = delay_s
        self.gate = threading.Event()  # cleared: requests wait (arrivals are still counted)
        self.gate.set()
        self.counts: dict[str, int] = {}
        self.calls: list[Call] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def calls_for(self, digest: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.digest == digest]

    def arrivals_for(self, digest: str) -> int:
        with self.lock:
            return self.counts.get(digest, 0)


@contextmanager
def scripted_engine(
    behaviours: dict[str, Behaviour] | None = None, delay_s: float = 0.0
) -> Iterator[ScriptedEngine]:
    srv = ScriptedEngine(behaviours, delay_s)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.gate.set()
        srv.shutdown()
        srv.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def inventory(tenant: str, image_digest: str, observed_at: datetime) -> Inventory:
    """A one-component image: its first sighting is an inventory impact, hence one job."""
    return Inventory(
        tenant=tenant,
        image_digest=image_digest,
        repository="registry.example/app",
        components=[Component(purl="pkg:npm/left-pad@1.3.0", package="npm/left-pad", version="1.3.0")],
        observed_at=observed_at,
        source="test",
    )


def http_env(engine: ScriptedEngine, **overrides: str) -> dict[str, str]:
    """Worker environment for the HTTP executor with small, test-sized retry settings."""
    env = {
        "STELLA_EXECUTOR": "http",
        "STELLA_EXECUTOR_URL": engine.url,
        "STELLA_EXECUTOR_TIMEOUT_SECONDS": "2",
        "STELLA_EXECUTOR_CONCURRENCY": "8",
        "STELLA_RETRY_BASE_SECONDS": "1",
        "STELLA_RETRY_MAX_SECONDS": "8",
        "STELLA_RETRY_MAX_ATTEMPTS": "4",
    }
    env.update(overrides)
    return env
