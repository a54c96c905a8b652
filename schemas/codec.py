"""The one decode path every agent uses for Kafka records, and the matching encoder (DESIGN.md §3).

``decode`` never raises: every way a record can be unusable is a ``Rejected`` with a short reason code
(``oversized`` | ``decode`` | ``validate`` | ``schema-unknown``), a human message and the schema id the
topic expects, ready for ``dead_letter``. A null value on ``inventory`` is a tombstone (the image is
gone), so it decodes to ``Decoded(model=None)``; on any other topic a null value is rejected.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ValidationError

from schemas.canonical import dumps
from schemas.messages import (
    SOURCE_MODELS,
    CursorUpdate,
    DeadLetter,
    Impact,
    JobCommand,
    JobResult,
    RunEvent,
    SignedEnvelope,
    SimulationCompleted,
    SlaBreach,
    schema_id_of,
)

RejectReason = Literal["oversized", "decode", "validate", "schema-unknown", "processing-error", "job-failed"]

TOPIC_MODELS: dict[str, type[BaseModel]] = {
    **SOURCE_MODELS,
    "impacts": Impact,
    "jobs": JobCommand,
    "job-results": JobResult,
    "run-events": RunEvent,
    "sla-breaches": SlaBreach,
    "simulations": SimulationCompleted,
    "deadletter": DeadLetter,
    "cursors": CursorUpdate,
    "events.signed": SignedEnvelope,
}
TOMBSTONE_TOPICS = frozenset({"inventory"})


def _extra_models() -> dict[str, tuple[type[BaseModel], ...]]:
    # Internal topics that carry more than one message type; the `schema` field picks the model.
    from schemas.messages import ImageRemoved, Inventory, JobAttempt, JobCancel, RuntimeEvent, Tick
    from streams.runs import JobStarted, RunCancelRequested, RunPlanned

    return {
        "impacts": (Tick,),
        "catalog-updates": (Inventory, ImageRemoved, RuntimeEvent),
        "job-attempts": (JobAttempt, JobCancel, Tick),
        "run-inputs": (RunPlanned, JobCommand, JobStarted, JobResult, RunCancelRequested),
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


def decode(logical_topic: str, key: bytes | None, value: bytes | None, max_bytes: int) -> Decoded | Rejected:
    models = models_for(logical_topic)
    if not models:
        return Rejected(logical_topic, "schema-unknown", f"no message model for topic {logical_topic!r}", "")
    expected = " | ".join(schema_id_of(m) for m in models)

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
    if "schema_id" in model.model_fields:
        found = doc.get("schema")
        if found is None:
            return reject("schema-unknown", f"no 'schema' field (expected {expected})")
        chosen = next((m for m in models if schema_id_of(m) == found), None)
        if chosen is None:
            return reject("schema-unknown", f"schema {found!r} is not {expected!r}")
        model = chosen
    try:
        return Decoded(logical_topic, key, model.model_validate(doc))
    except ValidationError as exc:
        errors = exc.errors()
        shown = "; ".join(f"{_path(e['loc'])}: {e['msg']}" for e in errors[:_MAX_ERRORS_SHOWN])
        more = f" (+{len(errors) - _MAX_ERRORS_SHOWN} more)" if len(errors) > _MAX_ERRORS_SHOWN else ""
        return reject("validate", shown + more)
    except (ValueError, TypeError, RecursionError) as exc:
        return reject("validate", f"{type(exc).__name__}: {exc}")


def encode(model: BaseModel) -> bytes:
    """Canonical JSON (sorted keys, UTC seconds, no floats) for any message model."""
    return dumps(model)


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def dead_letter(
    rejected: Rejected,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    at: datetime,
) -> DeadLetter:
    """Everything needed to inspect and replay a rejected record; the original bytes travel as base64."""
    return DeadLetter.model_validate(
        {
            "source_topic": topic,
            "partition": partition,
            "offset": offset,
            "key_b64": _b64(key),
            "value_b64": _b64(value),
            "expected_schema": rejected.expected_schema,
            "reason": rejected.reason,
            "error": rejected.message or rejected.reason,
            "at": at,
        }
    )
