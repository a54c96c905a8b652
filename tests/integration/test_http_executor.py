"""HttpExecutor against a real HTTP server on 127.0.0.1, driven by the retry core."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from agents.executors import (
    ExecOutcome,
    HttpExecutor,
    Ok,
    Permanent,
    Timeout,
    Transient,
    attempt_of,
    parse_retry_after,
)
from schemas.messages import Attempt, JobCommand, JobInputs
from streams import retry

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = retry.RetryPolicy(
    base_delay_s=10,
    factor=2,
    max_delay_s=300,
    max_attempts=4,
    attempt_timeout_s={"emergency": 60, "high": 60, "normal": 60, "background": 60},
)
FINDINGS = [
    {"id": "CVE-2", "package": "npm/b", "severity": "high"},
    {"id": "CVE-1", "package": "npm/a", "severity": "critical", "kev": True},
]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send(
        self, status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        with self.server.lock:
            self.server.requests.append((self.path, body, self.headers.get("Idempotency-Key")))
            key = (self.path, body["job_id"])
            self.server.calls[key] = self.server.calls.get(key, 0) + 1
            calls = self.server.calls[key]
        parts = self.path.strip("/").split("/")
        behaviour = parts[0]
        if parts[-1] != "reports":
            self._send(404, {"error": "no such route"})
        elif behaviour == "flaky":
            fails = int(parts[1])
            if calls <= fails:
                self._send(503, {"error": "warming up"})
            else:
                self._send(200, {"findings": FINDINGS, "verdict": "fail"})
        elif behaviour == "down":
            self._send(500, {"error": "always down"})
        elif behaviour == "limited":
            self._send(429, {"error": "slow down"}, {"Retry-After": "120"})
        elif behaviour == "hang":
            time.sleep(2.0)
            self._send(200, {"findings": [], "verdict": "pass"})
        elif behaviour == "bad":
            self._send(400, {"error": "unknown image"})
        elif behaviour == "garbled":
            self._send(200, {"findings": "nope"})
        else:
            self._send(200, {"findings": [], "verdict": "pass"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, Any], str | None]] = []
        self.calls: dict[tuple[str, str], int] = {}


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def base(srv: _Server, behaviour: str) -> str:
    host, port = srv.server_address[:2]
    return f"http://{host!s}:{port}/{behaviour}"


def job(job_id: str, deadline: timedelta = timedelta(hours=1), kind: str = "reevaluate") -> JobCommand:
    return JobCommand.model_validate(
        {
            "job_id": job_id,
            "run_id": "run-1",
            "tenant": "t1",
            "image_digest": "sha256:" + "cd" * 32,
            "kind": kind,
            "priority": "high",
            "window_start": T0,
            "window_end": T0,
            "deadline": T0 + deadline,
            "reasons": [],
            "inputs": JobInputs(policy_revision=7),
        }
    )


async def drive(
    executor: HttpExecutor, j: JobCommand
) -> tuple[list[Attempt], ExecOutcome, retry.RetryDecision | None]:
    """The worker loop in miniature: execute, record the attempt, ask the retry core, 'sleep' (simulated)."""
    now: datetime = T0
    attempts: list[Attempt] = []
    while True:
        outcome = await executor.execute(j)
        attempts.append(attempt_of(outcome, len(attempts) + 1, now))
        if isinstance(outcome, Ok):
            return attempts, outcome, None
        decision = retry.next_attempt(j, attempts, now, POLICY)
        if isinstance(decision, retry.GiveUp):
            return attempts, outcome, decision
        assert decision.at > now
        now = decision.at


async def test_fails_twice_then_succeeds(server: _Server) -> None:
    async with HttpExecutor(base(server, "flaky/2"), timeout_s=5) as ex:
        attempts, outcome, decision = await drive(ex, job("flaky-job"))
    assert [a.outcome for a in attempts] == ["transient", "transient", "ok"]
    assert decision is None
    assert isinstance(outcome, Ok)
    assert [f.id for f in outcome.findings] == ["CVE-1", "CVE-2"]  # sorted by package
    assert outcome.verdict == "fail"
    assert outcome.findings[0].kev
    path, body, idem = next(r for r in server.requests if r[1]["job_id"] == "flaky-job")
    assert path == "/flaky/2/reports"
    assert body == {
        "image_digest": "sha256:" + "cd" * 32,
        "mode": "analysis-only",
        "policy_revision": 7,
        "job_id": "flaky-job",
    }
    assert idem == "flaky-job"


async def test_always_500_exhausts_budget(server: _Server) -> None:
    async with HttpExecutor(base(server, "down"), timeout_s=5) as ex:
        attempts, outcome, decision = await drive(ex, job("down-job"))
    assert isinstance(outcome, Transient)
    assert "HTTP 500" in outcome.error
    assert len(attempts) == POLICY.max_attempts
    assert decision == retry.GiveUp("budget-exhausted", "4 of 4 attempts used")
    assert all(b.at > a.at for a, b in itertools.pairwise(attempts))


async def test_429_retry_after_is_honoured_then_deadline_gives_up(server: _Server) -> None:
    async with HttpExecutor(base(server, "limited"), timeout_s=5) as ex:
        attempts, outcome, decision = await drive(ex, job("limited-job", deadline=timedelta(minutes=6)))
    assert isinstance(outcome, Transient)
    assert outcome.retry_after_s == 120
    # 120 s apart each time (the hint beats the 10-40 s backoff); 3rd retry at +360 s would end past +6 min.
    assert [a.at - T0 for a in attempts] == [timedelta(0), timedelta(seconds=120), timedelta(seconds=240)]
    assert isinstance(decision, retry.GiveUp)
    assert decision.reason == "deadline-unreachable"


async def test_hang_past_timeout(server: _Server) -> None:
    async with HttpExecutor(base(server, "hang"), timeout_s=0.3) as ex:
        started = time.monotonic()
        outcome = await ex.execute(job("hang-job"))
        assert time.monotonic() - started < 1.5
    assert isinstance(outcome, Timeout)
    d = retry.next_attempt(job("hang-job"), [attempt_of(outcome, 1, T0)], T0, POLICY)
    assert isinstance(d, retry.Retry)


async def test_400_is_permanent_and_never_retried(server: _Server) -> None:
    async with HttpExecutor(base(server, "bad"), timeout_s=5) as ex:
        attempts, outcome, decision = await drive(ex, job("bad-job", kind="rescan"))
    assert isinstance(outcome, Permanent)
    assert "HTTP 400" in outcome.error
    assert len(attempts) == 1
    assert decision is not None
    assert decision.reason == "permanent-error"  # type: ignore[union-attr]
    body = next(r[1] for r in server.requests if r[1]["job_id"] == "bad-job")
    assert body["mode"] == "content-refresh"


async def test_malformed_success_body_is_permanent(server: _Server) -> None:
    async with HttpExecutor(base(server, "garbled"), timeout_s=5) as ex:
        assert isinstance(await ex.execute(job("garbled-job")), Permanent)


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # nothing listens on the port now
    async with HttpExecutor(f"http://127.0.0.1:{port}", timeout_s=2) as ex:
        outcome = await ex.execute(job("refused-job"))
    assert isinstance(outcome, Transient)


async def test_shared_client_and_per_class_timeouts(server: _Server) -> None:
    async with httpx.AsyncClient() as client:
        ex = HttpExecutor(base(server, "ok"), timeout_s={"high": 5.0}, client=client)
        assert ex.timeout_for(job("x")) == 5.0
        outcome = await ex.execute(job("ok-job"))
        await ex.aclose()  # must not close a client it does not own
        assert not client.is_closed
    assert outcome == Ok([], "pass")


def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("30") == 30
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now) == 60
    assert parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
