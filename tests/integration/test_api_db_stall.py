"""Issue 14 #9: while the database stalled (connections open, no answers), API reads hung for more than 30 s,
``/readyz`` said ready and shutdown needed SIGKILL. Here the real FerretDB sits behind a TCP relay the test
can freeze: reads must answer 503 with Retry-After within the configured bound, readiness must say not ready,
both must recover when the database answers again, and the server must stop on its own."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from agents.settings import Settings
from controlplane.app import ApiDeps, create_app
from controlplane.auth import token_hash
from controlplane.backends import MemoryPublisher
from controlplane.config import ApiConfig
from controlplane.testing import ServerThread

AUTH = {"Authorization": "Bearer tok-r"}
DB_TIMEOUT = 1.5


class FreezableRelay:
    """127.0.0.1:<port> → the database. ``frozen``: bytes are held, connections stay open (a stall)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while not self.flowing.wait(0.5):
                    if self.closed:
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.closed = True
        self.flowing.set()
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def relay(mongo_url: str) -> Iterator[FreezableRelay]:
    parsed = urlparse(mongo_url)
    r = FreezableRelay(parsed.hostname or "127.0.0.1", parsed.port or 27017)
    yield r
    r.close()


def wait_for_status(http: httpx.Client, url: str, status: int, budget: float = 120.0) -> httpx.Response:
    deadline = time.monotonic() + budget
    while True:
        response = http.get(url, headers=AUTH)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_a_stalled_database_answers_503_not_ready_and_recovers(
    relay: FreezableRelay, tmp_path: Path, mongo_db: tuple[Any, str]
) -> None:
    tokens = tmp_path / "access.json"
    entry = {"token_sha256": token_hash("tok-r"), "tenant": "acme", "scopes": ["scheduler.runs.read"]}
    tokens.write_text(json.dumps({"tokens": [entry]}))
    settings = Settings(
        mongo_url=f"mongodb://127.0.0.1:{relay.port}/", mongo_db=mongo_db[1], topic_prefix="stall."
    )
    config = ApiConfig(tokens_path=str(tokens), db_timeout_seconds=DB_TIMEOUT)
    server = ServerThread(create_app(settings, ApiDeps(publisher=MemoryPublisher()), config)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert wait_for_status(http, "/api/v1/runs", 200).status_code == 200
            assert wait_for_status(http, "/readyz", 200).status_code == 200

            relay.flowing.clear()  # the database stalls
            started = time.monotonic()
            stalled = http.get("/api/v1/runs", headers=AUTH)
            took = time.monotonic() - started
            assert stalled.status_code == 503, stalled.text
            assert stalled.headers.get("Retry-After")
            assert stalled.json()["error"]["code"] == "unavailable"
            # bounded by the configured timeout, not by the client's 60 s (generous margin for a busy box)
            assert took < 20, took
            ready = http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["error"]["details"]["mongo"] == "unreachable"

            relay.flowing.set()  # the database answers again
            assert wait_for_status(http, "/api/v1/runs", 200).status_code == 200
            assert wait_for_status(http, "/readyz", 200).status_code == 200
            relay.flowing.clear()  # stalled again while the server shuts down
    finally:
        started = time.monotonic()
        server.stop()
        stopped_in = time.monotonic() - started
    assert not server.thread.is_alive()
    assert stopped_in < 30
