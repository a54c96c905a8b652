"""The one decode path every agent uses for Kafka records, and the matching encoder
(docs/architecture.md §3).

``decode`` never raises: every way a record can be unusable is a ``Rejected`` with a short reason code
(``oversized`` | ``decode`` | ``validate`` | ``schema-unknown``), a human message and the schema id the
topic expects, ready for ``dead_letter``. A null value on ``inventory`` is a tombstone (the image is
gone), so it decodes to ``Decoded(model=None)``; on any other topic a null value is rejected.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ValidationError

from schemas.canonical import dumps
from schemas.digest import digest_problems
from schemas.messages import (
    SOURCE_MODELS,
    CursorUpdate,
    DeadLetter,
    Impact,
    JobCommand,
    JobResult,
    OriginalRef,
    RunEvent,
    ScheduleCommand,
    ScheduleEvent,
    SignedEnvelope,
    SimulationCompleted,
    SimulationRequest,
    SlaBreach,
    schema_id_of,
)

RejectReason = Literal[
    "oversized", "decode", "validate", "schema-unknown", "processing-error", "job-failed", "unpublishable"
]

TOPIC_MODELS: dict[str, type[BaseModel]] = {
    **SOURCE_MODELS,
    "impacts": Impact,
    "jobs": JobCommand,
    "job-results": JobResult,
    "run-events": RunEvent,
    "sla-breaches": SlaBreach,
    "simulations": SimulationCompleted,
    "simulation-requests": SimulationRequest,
    "simulation-results": JobResult,
    "deadletter": DeadLetter,
    "cursors": CursorUpdate,
    "events.signed": SignedEnvelope,
    "audit-snapshots": SignedEnvelope,
    "schedules": ScheduleCommand,
    "schedule-events": ScheduleEvent,
}
TOMBSTONE_TOPICS = frozenset({"inventory"})


def _extra_models() -> dict[str, tuple[type[BaseModel], ...]]:
    # Internal topics that carry more than one message type; the `schema` field picks the model.
    from schemas.audit import AuditFact
    from schemas.messages import (
        ImageRemoved,
        ImpactBatch,
        Inventory,
        JobAttempt,
        JobCancel,
        JobStarted,
        ReportSeen,
        RunCancelRequested,
        RunPlanned,
        RuntimeEvent,
        Tick,
    )

    return {
        "impacts": (ImpactBatch, Tick),
        "catalog-updates": (Inventory, ImageRemoved, RuntimeEvent, ReportSeen),
        "job-attempts": (JobAttempt, JobCancel, Tick),
        "run-inputs": (RunPlanned, JobCommand, JobStarted, JobResult, RunCancelRequested, Tick),
        "audit-facts": (AuditFact,),
    }


_MAX_ERRORS_SHOWN = 3


@dataclass(frozen=True)
class Decoded:
    topic: str
    key: bytes | None
    model: BaseModel | None  # None: a tombstone


@dataclass(frozen=True)
class Rejected:
    topic: str
    reason: RejectReason
    message: str
    expected_schema: str


def expected_schema(logical_topic: str) -> str:
    model = TOPIC_MODELS.get(logical_topic)
    return schema_id_of(model) if model is not None else ""


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


_EXTRA: dict[str, tuple[type[BaseModel], ...]] | None = None


def models_for(logical_topic: str) -> tuple[type[BaseModel], ...]:
    """Every model a topic may carry, its main one first."""
    global _EXTRA
    if _EXTRA is None:
        _EXTRA = _extra_models()
    main = TOPIC_MODELS.get(logical_topic)
    extra = tuple(m for m in _EXTRA.get(logical_topic, ()) if m is not main)
    return ((main,) if main is not None else ()) + extra


@dataclass(frozen=True)
class _Plan:
    """What ``decode`` needs to know about a topic, worked out once (it was a tenth of a rebuild's decode)."""

    models: tuple[type[BaseModel], ...]
    expected: str
    by_schema: dict[str, type[BaseModel]] | None  # None: the main model has no schema field


@functools.cache
def _plan(logical_topic: str) -> _Plan:
    models = models_for(logical_topic)
    by_schema: dict[str, type[BaseModel]] | None = None
    if models and "schema_id" in models[0].model_fields:
        by_schema = {}
        for m in models:
            by_schema.setdefault(schema_id_of(m), m)  # the first model of an id wins, as before
    return _Plan(models, " | ".join(schema_id_of(m) for m in models), by_schema)


def decode(logical_topic: str, key: bytes | None, value: bytes | None, max_bytes: int) -> Decoded | Rejected:
    plan = _plan(logical_topic)
    models = plan.models
    if not models:
        return Rejected(logical_topic, "schema-unknown", f"no message model for topic {logical_topic!r}", "")
    expected = plan.expected

    def reject(reason: RejectReason, message: str) -> Rejected:
        return Rejected(logical_topic, reason, message, expected)

    if value is None:
        if logical_topic in TOMBSTONE_TOPICS:
            return Decoded(logical_topic, key, None)
        return reject("decode", f"null value: {logical_topic!r} has no tombstones")
    size = len(value) + len(key or b"")
    if size > max_bytes:
        return reject("oversized", f"record is {size} bytes, the limit is {max_bytes}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return reject("decode", f"value is not JSON: {exc}")
    if not isinstance(doc, dict):
        return reject("decode", f"value is JSON {type(doc).__name__}, not an object")
    model = models[0]
    if plan.by_schema is not None:
        found = doc.get("schema")
        if found is None:
            return reject("schema-unknown", f"no 'schema' field (expected {expected})")
        chosen = plan.by_schema.get(found) if isinstance(found, str) else None
        if chosen is None:
            return reject("schema-unknown", f"schema {found!r} is not {expected!r}")
        model = chosen
    try:
        validated = model.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors()
        shown = "; ".join(f"{_path(e['loc'])}: {e['msg']}" for e in errors[:_MAX_ERRORS_SHOWN])
        more = f" (+{len(errors) - _MAX_ERRORS_SHOWN} more)" if len(errors) > _MAX_ERRORS_SHOWN else ""
        return reject("validate", shown + more)
    except (ValueError, TypeError, RecursionError) as exc:
        return reject("validate", f"{type(exc).__name__}: {exc}")
    if logical_topic in SOURCE_MODELS:
        bad = digest_problems(validated)
        if bad:
            return reject(
                "validate", "; ".join(f"{field}: {problem}" for field, problem in bad[:_MAX_ERRORS_SHOWN])
            )
    return Decoded(logical_topic, key, validated)


def encode(model: BaseModel) -> bytes:
    """Canonical JSON (sorted keys, UTC seconds, no floats) for any message model."""
    return dumps(model)


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


DEFAULT_MAX_BYTES = 1_048_576
# Room for everything but the copied bytes: positions, schema ids, the error text (capped below), the job.
DEAD_LETTER_OVERHEAD = 64 * 1024
MAX_ERROR_CHARS = 4000
HEAD_BYTES = 1024
MAX_INLINE_KEY = 4096


def _overhead(max_bytes: int) -> int:
    return min(DEAD_LETTER_OVERHEAD, max_bytes // 4)


def inline_budget(max_bytes: int) -> int:
    """How many original bytes a dead letter may copy (as base64, 4/3 larger) and still fit ``max_bytes``."""
    return max(0, (max_bytes - _overhead(max_bytes)) // 4 * 3)


def _reference(key: bytes | None, value: bytes | None) -> OriginalRef:
    data = value or b""
    return OriginalRef(
        value_size=len(data),
        value_sha256=hashlib.sha256(data).hexdigest(),
        value_head_b64=base64.b64encode(data[:HEAD_BYTES]).decode("ascii"),
        key_size=len(key or b""),
        key_sha256=hashlib.sha256(key).hexdigest() if key is not None else None,
    )


def dead_letter(
    rejected: Rejected,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    at: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DeadLetter:
    """Everything needed to inspect and replay a rejected record. The original bytes travel as base64 when
    they fit; otherwise the dead letter carries a reference (sha256, size, first bytes) and the record stays
    at its source position, so a dead letter always fits ``max_bytes`` and the position is never lost."""
    size = len(key or b"") + len(value or b"")
    by_reference = size > inline_budget(max_bytes)
    error = rejected.message or rejected.reason
    shown = min(MAX_ERROR_CHARS, _overhead(max_bytes) // 8)
    if len(error) > shown:
        error = error[:shown] + f"… ({len(error)} characters)"
    return DeadLetter.model_validate(
        {
            "source_topic": topic,
            "partition": partition,
            "offset": offset,
            "key_b64": _b64(key) if not by_reference or len(key or b"") <= MAX_INLINE_KEY else None,
            "value_b64": None if by_reference else _b64(value),
            "original": _reference(key, value) if by_reference else None,
            "expected_schema": rejected.expected_schema,
            "reason": rejected.reason,
            "error": error,
            "at": at,
        }
    )
