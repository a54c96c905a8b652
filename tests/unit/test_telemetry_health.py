"""telemetry.health: readiness aggregation, and the dependency probes failing fast and cleanly."""

from __future__ import annotations

import asyncio
import socket
import time
from functools import partial

from telemetry.health import (
    Readiness,
    Result,
    check,
    flag_check,
    kafka_reachable,
    liveness,
    mongo_reachable,
    status_code,
)


async def ok() -> Result:
    return True, "fine"


async def down() -> Result:
    return False, "no broker"


async def hangs() -> Result:
    await asyncio.sleep(60)
    return True, "never"


async def raises() -> Result:
    raise ConnectionError("mongodb://admin:hunter2@db:27017 refused")


def closed_port() -> int:
    # A port nothing listens on: bind, read the number, close.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_all_checks_pass() -> None:
    ready, body = await check(Readiness({"kafka": ok, "mongo": ok}))
    assert ready
    assert status_code(ready) == 200
    assert body == {
        "status": "ready",
        "checks": {"kafka": {"ok": True, "detail": "fine"}, "mongo": {"ok": True, "detail": "fine"}},
    }


async def test_one_failure_makes_it_not_ready_and_reports_every_check() -> None:
    ready, body = await check(Readiness({"kafka": down, "mongo": ok}))
    assert not ready
    assert status_code(ready) == 503
    assert body["status"] == "not ready"
    assert body["checks"]["kafka"] == {"ok": False, "detail": "no broker"}
    assert body["checks"]["mongo"]["ok"] is True


async def test_slow_and_raising_checks_are_bounded_and_hide_credentials() -> None:
    readiness = Readiness(timeout=0.2).add("slow", hangs).add("mongo", raises).add("kafka", ok)
    started = time.monotonic()
    ready, body = await check(readiness)
    assert time.monotonic() - started < 2
    assert not ready
    assert body["checks"]["slow"] == {"ok": False, "detail": "timed out after 0.2s"}
    detail = body["checks"]["mongo"]["detail"]
    assert detail.startswith("ConnectionError")
    assert "hunter2" not in detail


async def test_no_checks_is_ready_and_liveness_needs_nothing() -> None:
    assert (await check(Readiness()))[0]
    assert liveness() == (True, {"status": "alive"})


async def test_flag_check_follows_the_flag() -> None:
    state = {"recovered": False}
    readiness = Readiness(
        {"tables_recovered": flag_check(lambda: state["recovered"], "recovered", "recovering")}
    )
    assert (await check(readiness))[1]["checks"]["tables_recovered"] == {"ok": False, "detail": "recovering"}
    state["recovered"] = True
    assert (await check(readiness))[0]


async def test_kafka_probe_fails_fast_on_a_closed_port() -> None:
    started = time.monotonic()
    ok_, detail = await kafka_reachable(f"127.0.0.1:{closed_port()}", timeout=1.0)
    assert not ok_
    assert "127.0.0.1" in detail
    assert time.monotonic() - started < 5


async def test_mongo_probe_fails_fast_on_a_closed_port_without_leaking_the_password() -> None:
    readiness = Readiness(
        {"mongo": partial(mongo_reachable, f"mongodb://admin:hunter2@127.0.0.1:{closed_port()}/", 0.5)},
        timeout=3,
    )
    started = time.monotonic()
    ready, body = await check(readiness)
    assert not ready
    assert time.monotonic() - started < 3
    assert "hunter2" not in str(body)
    assert len(body["checks"]["mongo"]["detail"]) <= 240
