"""Liveness and readiness for the worker and the HTTP API.

``/healthz`` answers "is the process alive" and never touches a dependency (a broker outage must not get
every worker restarted). ``/readyz`` runs the named checks of a ``Readiness`` concurrently, each bounded by
a timeout, and reports every check's result, so one slow dependency neither hangs the probe nor hides the
others:

    readiness = Readiness({
        "kafka": partial(kafka_reachable, settings.kafka_bootstrap),
        "mongo": partial(mongo_reachable, settings.mongo_url),
        "tables_recovered": flag_check(lambda: app_recovered, "tables recovered", "recovering tables"),
    })
    ok, body = await check(readiness)      # serve body as JSON with status_code(ok)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Result = tuple[bool, str]
Check = Callable[[], Awaitable[Result]]

DEFAULT_TIMEOUT = 3.0


@dataclass
class Readiness:
    checks: dict[str, Check] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT

    def add(self, name: str, probe: Check) -> Readiness:
        self.checks[name] = probe
        return self


def _hide_credentials(text: str) -> str:
    # Check details end up in an unauthenticated probe body; connection errors often echo the URL.
    return re.sub(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@]+@", r"\1***@", text, flags=re.IGNORECASE)


MAX_DETAIL = 240


def _describe(exc: BaseException) -> str:
    # pymongo's server-selection errors dump the whole topology; the first part says what matters.
    message = str(exc).strip()
    text = _hide_credentials(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


async def _run_one(probe: Check, timeout: float) -> Result:
    try:
        ok, detail = await asyncio.wait_for(probe(), timeout)
    except TimeoutError:
        return False, f"timed out after {timeout:g}s"
    except Exception as exc:  # a failing check is a "not ready" answer, not a 500
        return False, _describe(exc)
    return bool(ok), _hide_credentials(detail)


async def check(readiness: Readiness) -> tuple[bool, dict[str, Any]]:
    """Run every check concurrently. Returns (ready, body) with body
    ``{"status": "ready"|"not ready", "checks": {name: {"ok": bool, "detail": str}}}``. No checks means
    ready: a process with no dependencies is ready once it is alive."""
    names = sorted(readiness.checks)
    results = await asyncio.gather(*(_run_one(readiness.checks[n], readiness.timeout) for n in names))
    checks = {name: {"ok": ok, "detail": detail} for name, (ok, detail) in zip(names, results, strict=True)}
    ready = all(ok for ok, _ in results)
    return ready, {"status": "ready" if ready else "not ready", "checks": checks}


def liveness() -> tuple[bool, dict[str, Any]]:
    return True, {"status": "alive"}


def status_code(ok: bool) -> int:
    return 200 if ok else 503


def flag_check(flag: Callable[[], bool], ok_detail: str = "ok", wait_detail: str = "not yet") -> Check:
    """A check over in-process state (e.g. "tables recovered" set by the worker's on_partitions_assigned)."""

    async def probe() -> Result:
        return (True, ok_detail) if flag() else (False, wait_detail)

    return probe


async def kafka_reachable(
    bootstrap: str, timeout: float = DEFAULT_TIMEOUT, expect_topics: Iterable[str] = ()
) -> Result:
    """Ask the broker for its topic list. With ``expect_topics``, also not ready until they all exist
    (source topics are pre-created by the ops scripts, never auto-created)."""
    from aiokafka.admin import AIOKafkaAdminClient  # imported late: the API's /healthz needs no Kafka

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(1, int(timeout * 1000)),
        client_id="stella-sched-health",
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        topics = set(await asyncio.wait_for(admin.list_topics(), timeout))
    except TimeoutError:
        return False, f"broker {bootstrap} did not answer within {timeout:g}s"
    except Exception as exc:
        return False, f"broker {bootstrap}: {_describe(exc)}"
    finally:
        # Closing a client that never connected can fail; the answer stands.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), timeout)
    missing = sorted(set(expect_topics) - topics)
    if missing:
        return False, f"missing topics: {', '.join(missing)}"
    return True, f"{len(topics)} topics"


def _ping_mongo(url: str, timeout: float) -> None:
    from pymongo import MongoClient

    ms = max(1, int(timeout * 1000))
    client: MongoClient[Mapping[str, Any]] = MongoClient(
        url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms
    )
    try:
        client.admin.command("ping")
    finally:
        client.close()


async def mongo_reachable(url: str, timeout: float = DEFAULT_TIMEOUT) -> Result:
    """``ping`` on the admin database, in a thread (pymongo is blocking)."""
    try:
        await asyncio.to_thread(_ping_mongo, url, timeout)
    except Exception as exc:
        return False, _describe(exc)
    return True, "ping ok"
