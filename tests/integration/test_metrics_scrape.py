"""Metrics as an operator sees them (issue 8 item 7): a real worker with its web port on, a scripted
scenario (one corrupt record, a flaky remote engine, one job that breaches its SLA), then ``/metrics`` is
scraped over HTTP and the counters must have moved exactly as the scenario dictates. ``/healthz`` and
``/readyz`` must answer too."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.executor_kit import Behaviour, digest, free_port, http_env, inventory, scripted_engine
from tests.integration.kit import produce
from tests.integration.pipeline_kit import T0, Deployment
from tests.integration.test_executor_pipeline import wait_for_jobs

FLAKY, DOWN, OK1, OK2 = (digest(n) for n in range(301, 305))
BEHAVIOURS = {
    FLAKY: Behaviour("flaky", n=2),  # two retries, then completed
    DOWN: Behaviour("down"),  # 3 attempts (two retries), then dead letter + SLA breach
    OK1: Behaviour("ok"),
    OK2: Behaviour("ok"),
}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in scraped.items() if n == name and wanted <= ls)


async def test_metrics_scrape_follows_the_scenario(
    deployment: Deployment,
    prefix: str,
) -> None:
    pipe = deployment()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with scripted_engine(BEHAVIOURS) as engine:
        try:
            env = http_env(engine, STELLA_RETRY_MAX_ATTEMPTS="3")
            await pipe.start(extra_env={**env, "STELLA_WEB_PORT": str(port)})
            async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:
                # The web server answers once the worker is up; /readyz turns 200 when it is ready.
                deadline = time.monotonic() + 90
                while True:
                    pipe.alive()
                    try:
                        health = await client.get("/healthz")
                        ready = await client.get("/readyz")
                        if health.status_code == 200 and ready.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, pipe.workers[0].output()[-3000:]
                    await asyncio.sleep(0.5)
                assert health.json() == {"status": "alive"}
                assert ready.json()["status"] == "ready"
                assert all(check["ok"] for check in ready.json()["checks"].values())

                before = samples((await client.get("/metrics")).text)
                assert value(before, "scheduler_deadletters_total") == 0
                assert value(before, "scheduler_retries_total") == 0
                assert value(before, "scheduler_sla_breaches_total") == 0

                await produce(
                    pipe.bootstrap, f"{prefix}advisories", [(b"broken", b'{"schema": "scheduler.advisory@1"')]
                )
                await pipe.publish([inventory("acme", d, T0) for d in BEHAVIOURS])
                await wait_for_jobs(pipe, len(BEHAVIOURS))
                await pipe.settle(timeout=120)

                response = await client.get("/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain")
                after = samples(response.text)

            # One corrupt advisory (decode) and one job given up (job-failed): two dead letters.
            assert value(after, "scheduler_deadletters_total", topic="advisories", reason="decode") == 1
            assert value(after, "scheduler_deadletters_total", topic="jobs", reason="job-failed") == 1
            assert value(after, "scheduler_deadletters_total") == 2
            # Two retries of the flaky image + two of the always-down image (3 attempts each).
            assert value(after, "scheduler_retries_total", **{"class": "normal"}) == 4
            assert value(after, "scheduler_retries_total") == 4
            assert value(after, "scheduler_sla_breaches_total", **{"class": "normal"}) == 1
            assert value(after, "scheduler_sla_breaches_total") == 1
            # Planner and runner: one window planned, four images evaluated (3 completed, 1 failed).
            assert value(after, "scheduler_planner_runs_total", status="planned") >= 1
            assert value(after, "scheduler_jobs_emitted_total") == 4
            assert value(after, "scheduler_runner_images_total", result="completed") == 3
            assert value(after, "scheduler_runner_images_total", result="failed") == 1
            assert value(after, "scheduler_runner_delta_total") >= 3  # every completed image added a finding
            # Five failed attempts reached the engine: 503, 503 (flaky) and 500 x 3 (down).
            assert (
                value(after, "scheduler_executor_errors_total", executor="HttpExecutor", kind="transient")
                == 5
            )
            assert engine.arrivals_for(FLAKY) == 3
            assert engine.arrivals_for(DOWN) == 3
            pipe.alive()
        finally:
            pipe.stop()
