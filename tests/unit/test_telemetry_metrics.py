"""telemetry.metrics: the names, types and label sets other modules and the ops files rely on."""

from __future__ import annotations

import importlib
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

import telemetry.metrics as tm
from schemas.messages import DeadLetter, Finding, FindingsDelta, JobCommand, JobInputs, JobResult

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "scheduler_planner_runs": ("counter", ("status",)),
    "scheduler_planner_latency_seconds": ("histogram", ()),
    "scheduler_runner_images": ("counter", ("mode", "result")),
    "scheduler_runner_delta": ("counter", ()),
    "scheduler_runner_delta_critical": ("counter", ()),
    "scheduler_runner_delta_high": ("counter", ()),
    "scheduler_runner_delta_kev": ("counter", ()),
    "scheduler_run_duration_seconds": ("histogram", ()),
    "scheduler_runs_active": ("gauge", ()),
    "scheduler_runner_backlog": ("gauge", ("class",)),
    "scheduler_consumer_lag": ("gauge", ("group", "topic", "partition")),
    "scheduler_messages_folded": ("counter", ("agent",)),
    "scheduler_duplicates_skipped": ("counter", ("agent",)),
    "scheduler_deadletters": ("counter", ("topic", "reason")),
    "scheduler_retries": ("counter", ("class",)),
    "scheduler_sla_breaches": ("counter", ("class",)),
    "scheduler_impact_resolution_seconds": ("histogram", ("source",)),
    "scheduler_impacts": ("counter", ("source",)),
    "scheduler_jobs_emitted": ("counter", ("class", "kind")),
    "scheduler_late_impacts": ("counter", ()),
    "scheduler_schedule_lag_seconds": ("histogram", ()),
    "scheduler_schedule_occurrences": ("counter", ("outcome",)),
    "scheduler_projection_lag": ("gauge", ("collection_group", "topic", "partition")),
    "scheduler_projection_writes": ("counter", ("collection",)),
    "scheduler_executor_latency_seconds": ("histogram", ("executor",)),
    "scheduler_executor_errors": ("counter", ("executor", "kind")),
    "scheduler_signed_events": ("counter", ("predicate",)),
    "scheduler_api_requests": ("counter", ("route", "method", "status")),
    "scheduler_api_request_seconds": ("histogram", ("route",)),
    "scheduler_worker_up": ("gauge", ()),
    "scheduler_tables_recovered": ("gauge", ()),
    "scheduler_publish_stalled": ("gauge", ("agent",)),
}
UNBOUNDED = {
    "tenant",
    "image",
    "digest",
    "image_digest",
    "job_id",
    "run_id",
    "id",
    "purl",
    "advisory",
    "path",
}


def value(name: str, **labels: str) -> float:
    got = REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_every_metric_has_the_agreed_type_and_labels() -> None:
    described = {fam.name: (fam.type, m._labelnames) for m in tm.ALL_METRICS for fam in m.describe()}
    assert described == EXPECTED


def test_no_unbounded_labels() -> None:
    for m in tm.ALL_METRICS:
        assert not UNBOUNDED & set(m._labelnames), m


def test_exposed_names_follow_the_stellaops_worker_names() -> None:
    names = tm.series_names()
    for required in (
        "scheduler_planner_runs_total",
        "scheduler_planner_latency_seconds_bucket",
        "scheduler_runner_images_total",
        "scheduler_runner_delta_total",
        "scheduler_runner_delta_critical_total",
        "scheduler_runner_delta_high_total",
        "scheduler_runner_delta_kev_total",
        "scheduler_run_duration_seconds_count",
        "scheduler_runs_active",
        "scheduler_runner_backlog",
    ):
        assert required in names
    assert "scheduler_runner_delta_total_total" not in names


def test_reimport_is_idempotent() -> None:
    before = tm.RETRIES
    reloaded = importlib.reload(tm)
    assert reloaded.RETRIES is before
    assert reloaded.metric("scheduler_retries_total") is before


def test_known_label_values_exist_at_zero_for_increase() -> None:
    for cls in ("emergency", "high", "normal", "background"):
        assert REGISTRY.get_sample_value("scheduler_sla_breaches_total", {"class": cls}) is not None
        assert REGISTRY.get_sample_value("scheduler_runner_backlog", {"class": cls}) is not None
    assert REGISTRY.get_sample_value("scheduler_planner_runs_total", {"status": "failed"}) is not None


def _job() -> JobCommand:
    return JobCommand(
        job_id="j1",
        run_id="r1",
        tenant="acme",
        image_digest="sha256:" + "a" * 64,
        kind="rescan",
        priority="emergency",
        window_start=T0,
        window_end=T0 + timedelta(seconds=30),
        deadline=T0 + timedelta(minutes=15),
        reasons=[],
        inputs=JobInputs(),
    )


def _result(added: list[Finding], sla_breached: bool = False) -> JobResult:
    return JobResult(
        job_id="j1",
        run_id="r1",
        tenant="acme",
        image_digest="sha256:" + "a" * 64,
        priority="emergency",
        status="completed",
        finished_at=T0,
        delta=FindingsDelta(status="changed" if added else "no_change", added=added),
        sla_breached=sla_breached,
    )


def test_observe_job_result_counts_images_and_added_findings() -> None:
    added = [
        Finding(id="CVE-1", package="pypi/a", severity="critical", kev=True),
        Finding(id="CVE-2", package="pypi/b", severity="critical"),
        Finding(id="CVE-3", package="pypi/c", severity="high"),
        Finding(id="CVE-4", package="pypi/d", severity="low", kev=True),
    ]
    names = (
        "scheduler_runner_delta_total",
        "scheduler_runner_delta_critical_total",
        "scheduler_runner_delta_high_total",
        "scheduler_runner_delta_kev_total",
    )
    before = [value(n) for n in names]
    images = value("scheduler_runner_images_total", mode="rescan", result="completed")
    breaches = value("scheduler_sla_breaches_total", **{"class": "emergency"})

    tm.observe_job_result(_result(added), mode="rescan")
    tm.observe_job_result(_result([], sla_breached=True), mode="rescan")

    assert [value(n) - b for n, b in zip(names, before, strict=True)] == [4, 2, 1, 2]
    assert value("scheduler_runner_images_total", mode="rescan", result="completed") - images == 2
    assert value("scheduler_sla_breaches_total", **{"class": "emergency"}) - breaches == 1


def test_job_emitted_and_planning_latency() -> None:
    emitted = value("scheduler_jobs_emitted_total", **{"class": "emergency", "kind": "rescan"})
    count = value("scheduler_planner_latency_seconds_count")
    total = value("scheduler_planner_latency_seconds_sum")
    tm.record_job_emitted(_job())
    tm.observe_planning_latency(T0, T0 + timedelta(seconds=42))
    tm.observe_planning_latency(T0 + timedelta(seconds=5), T0)  # producer clock skew
    assert value("scheduler_jobs_emitted_total", **{"class": "emergency", "kind": "rescan"}) - emitted == 1
    assert value("scheduler_planner_latency_seconds_count") - count == 2
    assert value("scheduler_planner_latency_seconds_sum") - total == 42


def test_dead_letters_use_logical_topic_names() -> None:
    letter = DeadLetter(
        source_topic="ci-7.advisories", partition=0, offset=9, reason="decode", error="bad json", at=T0
    )
    before = value("scheduler_deadletters_total", topic="advisories", reason="decode")
    tm.observe_dead_letter(letter, prefix="ci-7.")
    assert value("scheduler_deadletters_total", topic="advisories", reason="decode") - before == 1


def test_gauges_and_small_helpers() -> None:
    tm.set_backlog("high", 12)
    tm.set_consumer_lag("stella-sched", "jobs", 3, 250)
    tm.set_projection_lag("runs", "run-events", 1, -4)
    tm.set_runs_active(2)
    tm.set_worker_up(True)
    tm.set_tables_recovered(False)
    assert value("scheduler_runner_backlog", **{"class": "high"}) == 12
    assert value("scheduler_consumer_lag", group="stella-sched", topic="jobs", partition="3") == 250
    assert value("scheduler_projection_lag", collection_group="runs", topic="run-events", partition="1") == 0
    assert value("scheduler_runs_active") == 2
    assert value("scheduler_worker_up") == 1
    assert value("scheduler_tables_recovered") == 0

    errors = value("scheduler_executor_errors_total", executor="http", kind="timeout")
    with tm.time_executor("http"):
        pass
    tm.record_executor_error("http", "timeout")
    assert value("scheduler_executor_latency_seconds_count", executor="http") >= 1
    assert value("scheduler_executor_errors_total", executor="http", kind="timeout") - errors == 1

    tm.observe_api_request("/runs/{run_id}", "get", 200, 0.01)
    assert value("scheduler_api_requests_total", route="/runs/{run_id}", method="GET", status="200") >= 1

    with tm.time_impact_resolution("vex"):
        pass
    tm.observe_impact_resolution("advisory", 0.002, impacts=3)
    assert value("scheduler_impacts_total", source="advisory") >= 3


def test_render_is_prometheus_text() -> None:
    body, content_type = tm.render()
    assert content_type.startswith("text/plain")
    text = body.decode()
    assert "# TYPE scheduler_planner_runs_total counter" in text
    assert "# TYPE scheduler_runner_backlog gauge" in text


def test_metrics_server_serves_the_registry() -> None:
    server, thread = tm.start_metrics_server(0)
    try:
        port = server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert "scheduler_worker_up" in text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_metric_lookup_rejects_unknown_names() -> None:
    with pytest.raises(KeyError):
        tm.metric("scheduler_nope_total")
