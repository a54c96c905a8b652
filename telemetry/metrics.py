"""Every Prometheus metric stella-sched exports, defined once (docs/architecture.md §9).

Agents, executors, projectors and the HTTP API import the objects (or the typed helpers below) and call
them; nothing else in the project defines metrics, so the dashboard and alert tests can check every name
they use against this module. Names follow the StellaOps Scheduler worker metrics where they match.

Label policy: every label has a small, bounded set of values. Never put image digests, job / run /
event ids, purls, advisory ids or **tenants** in a label: tenants are unbounded in a multi-tenant
deployment and would also leak tenant names to whoever can read the metrics endpoint. Per-tenant
questions are answered by the read models (``stella-sched query ...``), not by Prometheus. The bounded
labels are:

- ``class``: priority class (emergency, high, normal, background)
- ``status`` / ``result`` / ``mode`` / ``kind`` / ``source`` / ``predicate``: enums from schemas.messages
- ``topic``: *logical* topic name (without ``STELLA_TOPIC_PREFIX``), ``partition``: partition number
  (capped by ``STELLA_PARTITIONS``), ``group``: consumer group
- ``agent``, ``executor``, ``collection``, ``collection_group``: names fixed in code
- ``route``: the route *template* (``/runs/{run_id}``), never the concrete path

Everything uses the default ``prometheus_client.REGISTRY``. Definitions are idempotent: importing this
module twice (importlib import mode, reloads) returns the collectors already registered instead of
failing with "Duplicated timeseries".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from threading import Thread
from time import perf_counter
from typing import Literal, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.metrics import MetricWrapperBase

from schemas.messages import (
    TERMINAL_JOB_STATUSES,
    DeadLetter,
    ImpactSource,
    JobCommand,
    JobKind,
    JobResult,
    PriorityClass,
)

PlannerStatus = Literal["planned", "empty", "failed"]
ExecutorErrorKind = Literal["transient", "permanent", "timeout"]

PRIORITY_CLASSES: tuple[PriorityClass, ...] = ("emergency", "high", "normal", "background")
JOB_KINDS: tuple[JobKind, ...] = ("reevaluate", "rescan")
JOB_STATUSES: tuple[str, ...] = tuple(sorted(TERMINAL_JOB_STATUSES))
PLANNER_STATUSES: tuple[PlannerStatus, ...] = ("planned", "empty", "failed")
IMPACT_SOURCES: tuple[ImpactSource, ...] = ("advisory", "vex", "policy", "recheck", "runtime", "inventory")

# Planning latency is event-time based and includes the impact window (30 s) plus grace, so the
# interesting range is tens of seconds to the 15 min emergency SLA and beyond.
PLANNING_BUCKETS = (1.0, 5.0, 15.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
# A run lives from its first job to its last result: seconds for a small window, hours for a sweep
# (the background SLA is 24 h).
RUN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 28800.0, 86400.0)
# Index lookups and selector resolution are in-process; anything over a few seconds is a problem.
RESOLUTION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Executors go up to the HTTP timeout (STELLA_EXECUTOR_TIMEOUT_SECONDS, default 30 s).
EXECUTOR_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_M = TypeVar("_M", bound=MetricWrapperBase)


def _existing(kind: type[_M], name: str) -> _M | None:
    # The registry keeps a name → collector map; using it is the only way to make re-definition
    # idempotent without a private registry (the project wants the default REGISTRY).
    found = REGISTRY._names_to_collectors.get(name)
    if found is None:
        return None
    if not isinstance(found, kind):
        raise TypeError(f"metric {name} is already registered as {type(found).__name__}")
    return found


def _counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    return _existing(Counter, name) or Counter(name, doc, labelnames=tuple(labels))


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    return _existing(Gauge, name) or Gauge(name, doc, labelnames=tuple(labels))


def _histogram(name: str, doc: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> Histogram:
    return _existing(Histogram, name) or Histogram(name, doc, labelnames=tuple(labels), buckets=buckets)


# --- StellaOps worker metrics -------------------------------------------------------------------------

PLANNER_RUNS = _counter(
    "scheduler_planner_runs_total",
    "Impact windows planned, by outcome (planned: a run with jobs; empty: no image impacted; failed).",
    ["status"],
)
PLANNER_LATENCY = _histogram(
    "scheduler_planner_latency_seconds",
    "Event-time latency from a delta being received to its job command being emitted.",
    PLANNING_BUCKETS,
)
RUNNER_IMAGES = _counter(
    "scheduler_runner_images_total",
    "Images evaluated, by job kind (mode) and JobResult status (result).",
    ["mode", "result"],
)
RUNNER_DELTA = _counter("scheduler_runner_delta_total", "Findings added across evaluated images.")
RUNNER_DELTA_CRITICAL = _counter(
    "scheduler_runner_delta_critical_total", "Critical findings added across evaluated images."
)
RUNNER_DELTA_HIGH = _counter(
    "scheduler_runner_delta_high_total", "High findings added across evaluated images."
)
RUNNER_DELTA_KEV = _counter(
    "scheduler_runner_delta_kev_total", "Added findings that are in the KEV catalogue (known exploited)."
)
RUN_DURATION = _histogram(
    "scheduler_run_duration_seconds",
    "Event-time duration of terminal runs, from planning to the last job result.",
    RUN_BUCKETS,
)
RUNS_ACTIVE = _gauge("scheduler_runs_active", "Runs not yet terminal (planning, queued or running).")
RUNNER_BACKLOG = _gauge(
    "scheduler_runner_backlog", "Jobs queued (emitted, no terminal result yet), by priority class.", ["class"]
)

# --- stream processing ---------------------------------------------------------------------------------

CONSUMER_LAG = _gauge(
    "scheduler_consumer_lag",
    "Messages between a consumer group's committed offset and the partition's end offset.",
    ["group", "topic", "partition"],
)
MESSAGES_FOLDED = _counter(
    "scheduler_messages_folded_total", "Messages folded into an agent's table or state.", ["agent"]
)
BATCH_SIZE = _histogram(
    "scheduler_batch_records",
    "Records a fold stage handled per broker-ack wait (one batch).",
    (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
    ["agent"],
)
DUPLICATES_SKIPPED = _counter(
    "scheduler_duplicates_skipped_total",
    "Messages an agent skipped because their id or source offset was already applied (at-least-once).",
    ["agent"],
)
DEADLETTERS = _counter(
    "scheduler_deadletters_total",
    "Messages sent to the dead-letter topic, by logical source topic and reason code.",
    ["topic", "reason"],
)
RETRIES = _counter(
    "scheduler_retries_total", "Job attempts scheduled for retry, by priority class.", ["class"]
)
SLA_BREACHES = _counter(
    "scheduler_sla_breaches_total", "Jobs that missed their SLA deadline, by priority class.", ["class"]
)
IMPACT_RESOLUTION = _histogram(
    "scheduler_impact_resolution_seconds",
    "Wall-clock time to resolve one input delta to the images it impacts, by input source.",
    RESOLUTION_BUCKETS,
    ["source"],
)
IMPACTS = _counter(
    "scheduler_impacts_total", "Impacts produced (one per image per delta), by source.", ["source"]
)
JOBS_EMITTED = _counter(
    "scheduler_jobs_emitted_total", "Job commands emitted, by priority class and job kind.", ["class", "kind"]
)
LATE_IMPACTS = _counter(
    "scheduler_late_impacts_total",
    "Impacts that arrived after their window closed and were moved to the next open window.",
)
LOST_WINDOW_CHUNKS = _counter(
    "scheduler_window_chunks_lost_total",
    "Window state chunks the tenant's index counts but the windows table lacked (a lost table write); the "
    "fold went on without their reasons (streams.windows.load_entries).",
)

SCHEDULE_LAG = _histogram(
    "scheduler_schedule_lag_seconds",
    "Time from a schedule occurrence's nominal (cron) time to its run being planned (fired occurrences).",
    (1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 4 * 3600, 86400),
)
SCHEDULE_OCCURRENCES = _counter(
    "scheduler_schedule_occurrences_total",
    "Schedule occurrences decided, by outcome (fired, missed: skipped by the missed-run policy).",
    ["outcome"],
)

# --- projections, executors, signing, API, process ------------------------------------------------------

PROJECTION_LAG = _gauge(
    "scheduler_projection_lag",
    "Offsets between a projector's checkpoint and the partition's end (read-model staleness).",
    ["collection_group", "topic", "partition"],
)
PROJECTION_WRITES = _counter(
    "scheduler_projection_writes_total", "Read-model documents written, by collection.", ["collection"]
)
EXECUTOR_LATENCY = _histogram(
    "scheduler_executor_latency_seconds",
    "Wall-clock time of one execution attempt.",
    EXECUTOR_BUCKETS,
    ["executor"],
)
EXECUTOR_ERRORS = _counter(
    "scheduler_executor_errors_total",
    "Failed execution attempts, by executor and error kind (transient, permanent, timeout).",
    ["executor", "kind"],
)
SIGNED_EVENTS = _counter(
    "scheduler_signed_events_total", "DSSE envelopes produced, by predicate type.", ["predicate"]
)
API_REQUESTS = _counter(
    "scheduler_api_requests_total",
    "HTTP API requests, by route template, method and status code.",
    ["route", "method", "status"],
)
API_REQUEST_SECONDS = _histogram(
    "scheduler_api_request_seconds", "HTTP API request duration, by route template.", API_BUCKETS, ["route"]
)
WORKER_UP = _gauge(
    "scheduler_worker_up",
    "1 while this worker process is running its agents; 0 before start, after stop, and in the API.",
)
TABLES_RECOVERED = _gauge(
    "scheduler_tables_recovered",
    "1 once the worker's tables have been recovered from their changelogs after partition assignment.",
)
PUBLISH_STALLED = _gauge(
    "scheduler_publish_stalled",
    "1 while an agent cannot get its outputs acknowledged by the broker (it keeps its input uncommitted and "
    "retries; /readyz is not ready meanwhile), by agent.",
    ["agent"],
)

ALL_METRICS: tuple[MetricWrapperBase, ...] = (
    PLANNER_RUNS,
    PLANNER_LATENCY,
    RUNNER_IMAGES,
    RUNNER_DELTA,
    RUNNER_DELTA_CRITICAL,
    RUNNER_DELTA_HIGH,
    RUNNER_DELTA_KEV,
    RUN_DURATION,
    RUNS_ACTIVE,
    RUNNER_BACKLOG,
    CONSUMER_LAG,
    MESSAGES_FOLDED,
    DUPLICATES_SKIPPED,
    DEADLETTERS,
    RETRIES,
    SLA_BREACHES,
    IMPACT_RESOLUTION,
    IMPACTS,
    JOBS_EMITTED,
    LATE_IMPACTS,
    SCHEDULE_LAG,
    SCHEDULE_OCCURRENCES,
    PROJECTION_LAG,
    PROJECTION_WRITES,
    EXECUTOR_LATENCY,
    EXECUTOR_ERRORS,
    SIGNED_EVENTS,
    API_REQUESTS,
    API_REQUEST_SECONDS,
    WORKER_UP,
    TABLES_RECOVERED,
    PUBLISH_STALLED,
)


def _initialise_series() -> None:
    """Create the children whose label values are known in advance, at 0.

    ``increase()`` cannot see the first increment of a series that did not exist before it, so the
    SLA-breach and planner-failure alerts would miss the first event after a restart without this.
    """
    for cls in PRIORITY_CLASSES:
        RETRIES.labels(cls)
        SLA_BREACHES.labels(cls)
        RUNNER_BACKLOG.labels(cls)
        for kind in JOB_KINDS:
            JOBS_EMITTED.labels(cls, kind)
    for status in PLANNER_STATUSES:
        PLANNER_RUNS.labels(status)
    for outcome in ("fired", "missed"):
        SCHEDULE_OCCURRENCES.labels(outcome)
    for mode in JOB_KINDS:
        for result in JOB_STATUSES:
            RUNNER_IMAGES.labels(mode, result)


_initialise_series()


# --- helpers ---------------------------------------------------------------------------------------------


def record_planner_run(status: PlannerStatus) -> None:
    PLANNER_RUNS.labels(status).inc()


def observe_planning_latency(received_at: datetime, emitted_at: datetime) -> None:
    """Event-time latency (docs/architecture.md §3): both times come from messages, so replays observe the
    same values. Clock skew between producers can make it negative; that is clamped to 0."""
    PLANNER_LATENCY.observe(max(0.0, (emitted_at - received_at).total_seconds()))


def record_job_emitted(job: JobCommand) -> None:
    JOBS_EMITTED.labels(job.priority, job.kind).inc()


def observe_job_result(result: JobResult, mode: JobKind = "reevaluate") -> None:
    """Count one evaluated image and the findings its result added.

    ``mode`` is the job kind of the command that produced the result (JobResult does not carry it).
    SLA breaches are counted here, from ``result.sla_breached``, because every breach (late result or
    give-up) ends in a JobResult while only give-ups emit an SlaBreach event; counting the events too
    would count give-ups twice.
    The delta counters count *added* findings only, like DeltaSummary.new_critical/new_high; the KEV
    counter counts added findings flagged KEV (not every KEV finding on a re-evaluated image, which
    would grow on every recheck without anything having changed).
    """
    RUNNER_IMAGES.labels(mode, result.status).inc()
    if result.sla_breached:
        SLA_BREACHES.labels(result.priority).inc()
    added = result.delta.added
    if not added:
        return
    RUNNER_DELTA.inc(len(added))
    critical = sum(1 for f in added if f.severity == "critical")
    high = sum(1 for f in added if f.severity == "high")
    kev = sum(1 for f in added if f.kev)
    if critical:
        RUNNER_DELTA_CRITICAL.inc(critical)
    if high:
        RUNNER_DELTA_HIGH.inc(high)
    if kev:
        RUNNER_DELTA_KEV.inc(kev)


def observe_run_duration(started_at: datetime, finished_at: datetime) -> None:
    RUN_DURATION.observe(max(0.0, (finished_at - started_at).total_seconds()))


def set_runs_active(count: int) -> None:
    RUNS_ACTIVE.set(count)


def set_backlog(priority: PriorityClass, count: int) -> None:
    RUNNER_BACKLOG.labels(priority).set(count)


def set_consumer_lag(group: str, topic: str, partition: int, lag: int) -> None:
    CONSUMER_LAG.labels(group, topic, str(partition)).set(max(0, lag))


def set_projection_lag(collection_group: str, topic: str, partition: int, lag: int) -> None:
    PROJECTION_LAG.labels(collection_group, topic, str(partition)).set(max(0, lag))


def record_folded(agent: str, count: int = 1) -> None:
    MESSAGES_FOLDED.labels(agent).inc(count)


def record_batch(agent: str, records: int) -> None:
    BATCH_SIZE.labels(agent).observe(records)


def set_publish_stalled(agent: str, stalled: bool) -> None:
    PUBLISH_STALLED.labels(agent).set(1 if stalled else 0)


def record_duplicate(agent: str) -> None:
    DUPLICATES_SKIPPED.labels(agent).inc()


def logical_topic(topic: str, prefix: str = "") -> str:
    """Strip the environment prefix so test runs and environments share one label value per topic."""
    return topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic


def record_dead_letter(topic: str, reason: str, prefix: str = "") -> None:
    DEADLETTERS.labels(logical_topic(topic, prefix), reason).inc()


def observe_dead_letter(letter: DeadLetter, prefix: str = "") -> None:
    record_dead_letter(letter.source_topic, letter.reason, prefix)


def record_retry(priority: PriorityClass) -> None:
    RETRIES.labels(priority).inc()


def observe_impact_resolution(source: ImpactSource, seconds: float, impacts: int) -> None:
    IMPACT_RESOLUTION.labels(source).observe(seconds)
    if impacts:
        IMPACTS.labels(source).inc(impacts)


@contextmanager
def time_impact_resolution(source: ImpactSource) -> Iterator[None]:
    started = perf_counter()
    try:
        yield
    finally:
        IMPACT_RESOLUTION.labels(source).observe(perf_counter() - started)


def record_late_impact(count: int = 1) -> None:
    LATE_IMPACTS.inc(count)


def record_lost_window_chunks(count: int) -> None:
    LOST_WINDOW_CHUNKS.inc(count)


def record_projection_write(collection: str, count: int = 1) -> None:
    PROJECTION_WRITES.labels(collection).inc(count)


@contextmanager
def time_executor(executor: str) -> Iterator[None]:
    """Observe one execution attempt, failed or not (a slow failure is still latency)."""
    started = perf_counter()
    try:
        yield
    finally:
        EXECUTOR_LATENCY.labels(executor).observe(perf_counter() - started)


def record_executor_error(executor: str, kind: ExecutorErrorKind) -> None:
    EXECUTOR_ERRORS.labels(executor, kind).inc()


def record_signed_event(predicate: str) -> None:
    SIGNED_EVENTS.labels(predicate).inc()


def observe_api_request(route: str, method: str, status: int, seconds: float) -> None:
    """``route`` must be the route template; concrete paths carry ids and would be unbounded."""
    API_REQUESTS.labels(route, method.upper(), str(status)).inc()
    API_REQUEST_SECONDS.labels(route).observe(seconds)


def set_worker_up(up: bool) -> None:
    WORKER_UP.set(1 if up else 0)


def set_tables_recovered(recovered: bool) -> None:
    TABLES_RECOVERED.set(1 if recovered else 0)


# --- exposition ------------------------------------------------------------------------------------------


def render() -> tuple[bytes, str]:
    """(body, content type) of the text exposition, for an ASGI / faust web ``/metrics`` handler."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> tuple[WSGIServer, Thread]:
    """Serve ``/metrics`` from a daemon thread. Bound to loopback by default like the worker's web
    port; pass ``addr="0.0.0.0"`` when Prometheus scrapes from another host. Several workers on one host
    need distinct ports."""
    return start_http_server(port, addr=addr)


def series_names(metrics: Iterable[MetricWrapperBase] = ALL_METRICS) -> frozenset[str]:
    """Every series name a query may use for these metrics: counters as ``*_total``, gauges as-is,
    histograms as ``*_bucket`` / ``*_sum`` / ``*_count``. Works for labelled metrics that have no
    children yet, unlike scraping samples."""
    names: set[str] = set()
    for metric in metrics:
        for family in metric.describe():
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "histogram":
                names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            else:
                names.add(family.name)
    return frozenset(names)


def metric(name: str) -> MetricWrapperBase:
    """Look a metric up by its exposed name (``scheduler_retries_total``), for tests and tooling."""
    for m in ALL_METRICS:
        if name in series_names((m,)):
            return m
    raise KeyError(name)
