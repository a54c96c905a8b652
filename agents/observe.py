"""The stages' one doorway to telemetry.metrics.

Every call is wrapped: a metrics mistake must cost a data point, never a message (an exception inside an
agent would otherwise dead-letter or stall real work)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import wraps
from typing import Any, ParamSpec

from schemas.messages import Impact, JobCommand, JobResult, ScheduleEvent

log = logging.getLogger("stella.observe")
P = ParamSpec("P")
_warned: set[str] = set()


def _safe(fn: Callable[P, None]) -> Callable[P, None]:
    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            if fn.__name__ not in _warned:
                _warned.add(fn.__name__)
                log.exception("metrics: %s failed (reported once)", fn.__name__)

    return wrapper


def _m() -> Any:
    from telemetry import metrics

    return metrics


@_safe
def folded(agent: str) -> None:
    _m().record_folded(agent)


@_safe
def batch(agent: str, records: int) -> None:
    _m().record_batch(agent, records)


@_safe
def publish_stalled(agent: str, stalled: bool) -> None:
    _m().set_publish_stalled(agent, stalled)


@_safe
def duplicate(agent: str) -> None:
    _m().record_duplicate(agent)


@_safe
def dead_letter(topic: str, reason: str) -> None:
    _m().record_dead_letter(topic, reason)


@_safe
def impacts(source: str, seconds: float, found: Iterable[Impact]) -> None:
    items = list(found)
    _m().observe_impact_resolution(source, seconds, len(items))


@_safe
def impacts_from(items: Iterable[Impact]) -> None:
    metrics = _m()
    for impact in items:
        metrics.IMPACTS.labels(source=impact.reasons[0].source if impact.reasons else "unknown").inc()


@_safe
def jobs_emitted(jobs: Iterable[JobCommand], planned_at: datetime | None = None) -> None:
    metrics = _m()
    jobs = list(jobs)
    for job in jobs:
        metrics.record_job_emitted(job)
    if jobs:
        metrics.record_planner_run("planned")


@_safe
def late(count: int) -> None:
    if count > 0:
        _m().record_late_impact(count)


def lost_window_chunks(count: int) -> None:
    _m().record_lost_window_chunks(count)


@_safe
def backlog(depths: dict[str, int]) -> None:
    metrics = _m()
    for cls, depth in depths.items():
        metrics.set_backlog(cls, depth)


@_safe
def retry(priority: str) -> None:
    _m().record_retry(priority)


@_safe
def executor(name: str, outcome_kind: str | None, seconds: float) -> None:
    metrics = _m()
    metrics.EXECUTOR_LATENCY.labels(executor=name).observe(seconds)
    if outcome_kind is not None:
        metrics.record_executor_error(name, outcome_kind)


@_safe
def job_result(result: JobResult, kind: str = "reevaluate") -> None:
    _m().observe_job_result(result, kind)


@_safe
def run_finished(started: datetime, finished: datetime) -> None:
    _m().observe_run_duration(started, finished)


@_safe
def runs_active(count: int) -> None:
    _m().set_runs_active(count)


@_safe
def signed(predicate: str) -> None:
    _m().record_signed_event(predicate)


@_safe
def projection_writes(count: int) -> None:
    _m().record_projection_write("all", count)


@_safe
def projection_lag(group: str, topic: str, partition: int, lag: int) -> None:
    _m().set_projection_lag(group, topic, partition, lag)


@_safe
def consumer_lag(group: str, topic: str, partition: int, lag: int) -> None:
    _m().set_consumer_lag(group, topic, partition, lag)


@_safe
def worker_up(up: bool) -> None:
    _m().set_worker_up(up)


@_safe
def schedule_decisions(event: ScheduleEvent, planned_at: datetime) -> None:
    metrics = _m()
    for occurrence in event.occurrences:
        if occurrence.fired:
            metrics.SCHEDULE_OCCURRENCES.labels(outcome="fired").inc()
            lag = (planned_at - occurrence.nominal).total_seconds()
            metrics.SCHEDULE_LAG.observe(max(lag, 0.0))
        else:
            metrics.SCHEDULE_OCCURRENCES.labels(outcome="missed").inc()
