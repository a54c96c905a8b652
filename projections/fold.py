"""Pure fold from positioned messages to read-model document updates (docs/architecture.md §6).

Position guard
--------------
Every document carries ``_pos``: a map from *source partition* (``topic:partition``) to the highest offset
of that partition that has changed it. An update from partition P at offset o applies only if
``_pos[P]`` is absent or ``< o``. Offsets have gaps (compaction, transaction markers, filtered messages),
so "greater than" is the only test that is safe; "== last + 1" would wedge on the first gap.

Guarding per (document, partition) rather than with one position per document is what makes several
partitions and topics able to change one document: Kafka orders nothing across partitions, so a single
"last position" would reject a perfectly new message from partition 1 because partition 0 happens to be at a
higher offset. Per partition, the guard turns at-least-once redelivery (a replayed suffix) into exactly-once
application, because Kafka keeps each partition in order.

That leaves the question of what several partitions may write to the same document. The rule the fold keeps:

* a path that is ``set`` (last writer wins) has exactly one owner topic, and that topic's key sends every
  message for the document to one partition (runs by run id, jobs and images by image digest, dead letters
  by source topic). Other topics may only ``set_on_insert`` that path: a default until the owner speaks,
  and every non-owner that can create the document seeds the same default (or none does). Then whoever
  comes first, the owner's last value wins, or else the common default shows;
* values that follow from the document id (a window's tenant and start) may be set by anyone: they agree;
* aggregates fed from many partitions (window job/image/impact counts) are maps used as sets
  (``jobs.<job_id>``), written with idempotent ``set`` of fixed values, counted on read (``window_view``);
* monotone values use ``max`` / ``min``, which commute.

If a topic is re-partitioned (partition count changes), documents owned by it may briefly see two
partitions; rebuild the projection after such a change.

Documents hold only JSON-safe values (strings, ints, bools, lists, maps) with canonical UTC timestamp strings,
so they sort and compare the same in MongoDB and in memory.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from schemas.audit import AuditSnapshot
from schemas.canonical import dumps, format_time
from schemas.messages import (
    TERMINAL_RUN_STATES,
    AdvisoryDelta,
    CursorUpdate,
    DeadLetter,
    ImageRemoved,
    Impact,
    ImpactBatch,
    Inventory,
    JobCommand,
    JobResult,
    PolicyChange,
    RunEvent,
    RuntimeEvent,
    ScheduleEvent,
    SignedEnvelope,
    SimulationCompleted,
    SimulationRequest,
    SlaBreach,
    VexStatement,
)
from streams.audit.ledger import SNAPSHOT_PAYLOAD_TYPE
from streams.tenants import ImageMeta

RUNS = "runs"
JOBS = "jobs"
IMAGES = "images"
WINDOWS = "windows"
CURSORS = "cursors"
DEADLETTERS = "deadletters"
AUDIT_SNAPSHOTS = "audit_snapshots"
SCHEDULES = "schedules"
SCHEDULE_RUNS = "schedule_runs"
SIMULATIONS = "simulations"
COLLECTIONS: tuple[str, ...] = (
    RUNS,
    JOBS,
    IMAGES,
    WINDOWS,
    CURSORS,
    DEADLETTERS,
    AUDIT_SNAPSHOTS,
    SCHEDULES,
    SCHEDULE_RUNS,
    SIMULATIONS,
)
POS = "_pos"
_ID = "_id"
# What a job document says before its result arrives. Every non-owner that may create a job document seeds
# exactly this, so which of them came first cannot show.
JOB_DEFAULTS: dict[str, Any] = {"status": "queued"}

Document = dict[str, Any]
State = dict[str, dict[str, Document]]


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a message sits in Kafka. Ordered by (topic, partition, offset)."""

    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> str:
        return source_key(self.topic, self.partition)


def field_key(value: str) -> str:
    """Make an arbitrary string usable as one MongoDB field name (no '.', no leading '$'); reversible."""
    text = value.replace("%", "%25").replace(".", "%2E")
    return "%24" + text[1:] if text.startswith("$") else text


def unfield_key(key: str) -> str:
    """The inverse of ``field_key``."""
    text = "$" + key[3:] if key.startswith("%24") else key
    return text.replace("%2E", ".").replace("%25", "%")


@functools.lru_cache(maxsize=4096, typed=True)
def source_key(topic: str, partition: int) -> str:
    # Cached: every update of every message asks for its partition's key (a handful of distinct ones).
    return f"{field_key(topic)}:{partition}"


def _paths_conflict(paths: Sequence[str]) -> str | None:
    seen = set(paths)
    if len(seen) != len(paths):
        seen = set()
        for path in paths:
            if path in seen:
                return repr(path)
            seen.add(path)
    for path in paths:
        # Most paths have no dot: one membership test instead of a find per path (every update, hot).
        if "." not in path:
            continue
        dot = path.find(".")
        while dot != -1:
            if path[:dot] in seen:
                return f"{path[:dot]!r} / {path!r}"
            dot = path.find(".", dot + 1)
    return None


# Not frozen: a frozen dataclass sets each of its eight fields through object.__setattr__, and a rebuild
# makes one or two updates per record (frozen, 4 % more instructions in its decode and fold). Nothing
# changes an update once made; `replace` makes another.
@dataclass(slots=True)
class DocUpdate:
    """One guarded change to one document. Paths are dotted; no path may be a prefix of another."""

    collection: str
    doc_id: str
    source: str
    offset: int
    set: Mapping[str, Any] = field(default_factory=dict)
    set_on_insert: Mapping[str, Any] = field(default_factory=dict)
    max: Mapping[str, Any] = field(default_factory=dict)
    min: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # MongoDB refuses an update whose paths overlap; failing here keeps both stores equally strict.
        paths = [*self.set, *self.set_on_insert, *self.max, *self.min]
        # Most updates name distinct top-level fields, none reserved, which `_pos.<source>` cannot overlap:
        # one joined string answers that in C (the full check was a sixth of a rebuild's fold).
        joined = "\n".join(paths)
        if "." in joined or "\n_" in joined or joined[:1] == "_" or len(set(paths)) != len(paths):
            self._check(paths)

    def _check(self, paths: list[str]) -> None:
        paths.append(f"{POS}.{self.source}")
        conflict = _paths_conflict(paths)
        if conflict is not None:
            raise ValueError(f"update {self.collection}/{self.doc_id} has overlapping paths {conflict}")
        for p in paths[:-1]:
            if p[:1] == "_" and (p in (_ID, POS) or p.startswith((_ID + ".", POS + "."))):
                raise ValueError("updates may not write _id or _pos directly")

    def insert_fields(self) -> dict[str, Any]:
        """Dotted paths of the document this update creates when there is none."""
        return {**self.set_on_insert, **self.set, **self.max, **self.min, f"{POS}.{self.source}": self.offset}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    group: str
    topic: str
    partition: int
    offset: int

    @property
    def id(self) -> str:
        return checkpoint_id(self.group, self.topic, self.partition)


def checkpoint_id(group: str, topic: str, partition: int) -> str:
    return f"{group}/{topic}/{partition}"


# ---------------------------------------------------------------- applying (the in-memory semantics)


def get_path(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _has_path(doc: Mapping[str, Any], path: str) -> bool:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _set_path(doc: Document, path: str, value: Any) -> None:
    if "." not in path:
        # Most paths are top-level and most values scalars: the rebuild sets millions of them.
        doc[path] = value if type(value) in _ATOMIC else copy_tree(value)
        return
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    # A copy of its own: no document shares a container with an update (or with another document).
    node[leaf] = copy_tree(value)


def _set_paths(doc: Document, fields: Mapping[str, Any], take: bool = False) -> None:
    """``_set_path`` of every field in order, top-level ones inline (a call per field added up). ``take``:
    top-level values go in uncopied (see ``apply_in_place``)."""
    for path, value in fields.items():
        if "." in path:
            _set_path(doc, path, value)
        elif take or type(value) in _ATOMIC:
            doc[path] = value
        else:
            doc[path] = copy_tree(value)


def copy_tree(value: Any) -> Any:
    """A deep copy of a JSON-shaped value (dicts, lists, scalars): what documents hold. Several times faster
    than ``copy.deepcopy`` (no memo; scalars are returned as they are); anything else goes to deepcopy."""
    kind = type(value)
    # Scalars are tested inline: a call per leaf was most of the cost of copying a document.
    if kind is dict:
        return {k: v if type(v) in _ATOMIC else copy_tree(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _ATOMIC else copy_tree(v) for v in value]
    if kind in _ATOMIC:
        return value
    return copy.deepcopy(value)


_ATOMIC = frozenset({str, int, bool, float, type(None)})


def accepts(doc: Mapping[str, Any] | None, update: DocUpdate) -> bool:
    """The position guard: absent document, absent partition entry, or an older offset."""
    if doc is None:
        return True
    if "." in update.source:
        last = get_path(doc, f"{POS}.{update.source}")
    else:
        # get_path of "_pos.<source>" without building and splitting the path (source_key has no dots).
        positions = doc.get(POS)
        last = positions.get(update.source) if isinstance(positions, Mapping) else None
    return last is None or last < update.offset


def apply_update(doc: Mapping[str, Any] | None, update: DocUpdate) -> Document:
    """The document after ``update``; a rejected update returns an unchanged copy."""
    return apply_in_place(None if doc is None else copy_tree(dict(doc)), update)


def apply_in_place(doc: Document | None, update: DocUpdate, *, take: bool = False) -> Document:
    """``apply_update`` without the copy: changes ``doc`` itself (or makes a new one) and returns it.

    For a store that owns its documents and hands out only copies (``MemoryStore``): copying the whole
    document for every update made folding a log quadratic in the size of its busiest documents (a rebuild).

    ``take``: the document keeps the update's top-level values themselves instead of copies. Only for an
    update nobody else holds or applies again, whose values no other update shares: what ``fold`` returns
    (the rebuild's store, ``MemoryStore(take_updates=True)``; the copies were 9 % of its decode and fold)."""
    if doc is None:
        new: Document = {"_id": update.doc_id}
        _set_paths(new, update.insert_fields(), take)
        return new
    if not accepts(doc, update):
        return doc
    _set_paths(doc, update.set, take)
    for path, value in update.max.items():
        if not _has_path(doc, path) or get_path(doc, path) < value:
            _set_path(doc, path, value)
    for path, value in update.min.items():
        if not _has_path(doc, path) or get_path(doc, path) > value:
            _set_path(doc, path, value)
    positions = doc.get(POS)
    if type(positions) is dict and "." not in update.source and type(update.offset) is int:
        positions[update.source] = update.offset  # what _set_path would do, without the path
    else:
        _set_path(doc, f"{POS}.{update.source}", update.offset)
    return doc


def apply_all(state: State, updates: Iterable[DocUpdate]) -> State:
    """Apply updates in order to ``{collection: {id: doc}}``; returns a new state."""
    out: State = {name: dict(docs) for name, docs in state.items()}
    for update in updates:
        docs = out.setdefault(update.collection, {})
        docs[update.doc_id] = apply_update(docs.get(update.doc_id), update)
    return out


# ---------------------------------------------------------------- folding


def _dump(message: Any, *exclude: str) -> dict[str, Any]:
    data: dict[str, Any] = message.model_dump(mode="json", by_alias=True, exclude={"schema_id", *exclude})
    return data


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def window_bounds(event_time: datetime, window_seconds: int) -> tuple[datetime, datetime]:
    """``[floor(t / W) * W, + W)`` (docs/architecture.md §3), as aware UTC datetimes."""
    seconds = int(event_time.timestamp())
    start = seconds - seconds % window_seconds
    return datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(start + window_seconds, UTC)


def window_id(tenant: str, window_start: datetime) -> str:
    return f"{tenant}/{format_time(window_start)}"


def image_id(tenant: str, image_digest: str) -> str:
    return f"{tenant}/{image_digest}"


def deadletter_id(source_topic: str, partition: int, offset: int) -> str:
    return f"{source_topic}/{partition}/{offset}"


def impact_id(impact: Impact) -> str:
    """Impacts carry no id; their canonical bytes are one, so a redelivered impact counts once."""
    return hashlib.sha256(dumps(impact)).hexdigest()


def _fold_run(msg: RunEvent, pos: Position) -> list[DocUpdate]:
    state = _dump(msg, "run_id", "at")
    terminal = msg.state in TERMINAL_RUN_STATES
    return [
        DocUpdate(
            RUNS,
            msg.run_id,
            pos.source,
            pos.offset,
            set={**state, "updated_at": _ts(msg.at), "completed_at": _ts(msg.at) if terminal else None},
            min={"created_at": _ts(msg.at)},
        )
    ]


def _fold_command(msg: JobCommand, pos: Position) -> list[DocUpdate]:
    data = _dump(msg, "job_id")
    job = DocUpdate(JOBS, msg.job_id, pos.source, pos.offset, set=data, set_on_insert=JOB_DEFAULTS)
    if msg.inputs.simulation is not None:
        return [job]  # a simulation's job is a job of its run, but no impact window planned it
    window = DocUpdate(
        WINDOWS,
        window_id(msg.tenant, msg.window_start),
        pos.source,
        pos.offset,
        set={
            "tenant": msg.tenant,
            "window_start": _ts(msg.window_start),
            "window_end": _ts(msg.window_end),
            f"jobs.{field_key(msg.job_id)}": msg.priority,
            f"images.{field_key(msg.image_digest)}": True,
            f"runs.{field_key(msg.run_id)}": True,
        },
    )
    return [job, window]


def _job_identity(msg: JobResult | SlaBreach) -> dict[str, Any]:
    """Fields a job's command owns; any other message about the job may only seed them."""
    return {
        "run_id": msg.run_id,
        "tenant": msg.tenant,
        "image_digest": msg.image_digest,
        "priority": msg.priority,
    }


def _fold_result(msg: JobResult, pos: Position) -> list[DocUpdate]:
    # One dump of the whole result, then slices of it: a dump per field and per finding was nine or more
    # pydantic calls per result (issue 15). Nested models have no aliases, so the slices are what dumping
    # each field alone gave.
    data = _dump(msg)
    finished = data["finished_at"]
    job = DocUpdate(
        JOBS,
        msg.job_id,
        pos.source,
        pos.offset,
        # The command owns identity and planning fields; a result that arrives first only seeds them.
        set_on_insert=_job_identity(msg),
        set={
            "status": msg.status,
            "finished_at": finished,
            "verdict": msg.verdict,
            "previous_verdict": msg.previous_verdict,
            "attempts": data["attempts"],
            "delta": data["delta"],
            "counts": data["counts"],
            "kev_hits": msg.kev_hits,
            "findings_count": len(msg.findings),
            "result_inputs": data["inputs"],
            "error": msg.error,
            "sla_breached": msg.sla_breached,
        },
    )
    latest: dict[str, Any] = {
        "tenant": msg.tenant,
        "image_digest": msg.image_digest,
        "status": msg.status,
        "job_id": msg.job_id,
        "run_id": msg.run_id,
        "finished_at": finished,
        "error": msg.error,
    }
    if msg.status == "completed":
        # A failed or skipped attempt says nothing about the image's findings: keep the last evaluation.
        latest |= {
            "verdict": msg.verdict,
            "findings": sorted(data["findings"], key=_finding_order),
            "counts": dict(data["counts"]),  # not the job update's dict: no two updates share a container
            "kev_hits": msg.kev_hits,
            "evaluated_at": finished,
            "evaluated_job_id": msg.job_id,
            # Why each finding is there (served by .../findings/{vuln}/explain, not by the image view).
            "traces": data["traces"],
            "traces_omitted": msg.traces_omitted,
        }
    if msg.simulation is not None:
        # A simulation's job (from `simulation-results`): its job document ends like any job's, with the
        # image's comparison; the image's live document is not touched.
        return [replace(job, set={**job.set, "simulation": data["simulation"]})]
    image = DocUpdate(IMAGES, image_id(msg.tenant, msg.image_digest), pos.source, pos.offset, set=latest)
    return [job, image]


def _finding_order(finding: Mapping[str, Any]) -> tuple[str, str]:
    return finding["id"], finding["package"]


def _fold_breach(msg: SlaBreach, pos: Position) -> list[DocUpdate]:
    return [
        DocUpdate(
            JOBS,
            msg.job_id,
            pos.source,
            pos.offset,
            set_on_insert={**JOB_DEFAULTS, **_job_identity(msg)},
            set={"sla_breach": {"deadline": _ts(msg.deadline), "at": _ts(msg.at), "reason": msg.reason}},
        )
    ]


def _fold_impact(msg: Impact, pos: Position, window_seconds: int) -> list[DocUpdate]:
    start, end = window_bounds(msg.event_time, window_seconds)
    return [
        DocUpdate(
            WINDOWS,
            window_id(msg.tenant, start),
            pos.source,
            pos.offset,
            # Impacts are windowed by event time here; the job stream owns window_end (it knows about late
            # events moved to the next window), so impacts only seed it.
            set_on_insert={"window_end": _ts(end)},
            set={
                "tenant": msg.tenant,
                "window_start": _ts(start),
                f"impacts.{impact_id(msg)}": msg.image_digest,
            },
        )
    ]


def _fold_impact_batch(msg: ImpactBatch, pos: Position, window_seconds: int) -> list[DocUpdate]:
    """The impacts of one record share its position: merged into one update per window document (two
    updates of one document at one position would be one too many for the position guard)."""
    merged: dict[str, DocUpdate] = {}
    for impact in msg.impacts:
        for update in _fold_impact(impact, pos, window_seconds):
            seen = merged.get(update.doc_id)
            merged[update.doc_id] = update if seen is None else replace(seen, set={**seen.set, **update.set})
    return [merged[doc_id] for doc_id in sorted(merged)]


def _image_update(
    msg: Inventory | ImageRemoved | RuntimeEvent, pos: Position, fields: dict[str, Any], **guards: Any
) -> list[DocUpdate]:
    """One update of the image's document; every image message also re-states the image's identity."""
    identity = {"tenant": msg.tenant, "image_digest": msg.image_digest}
    return [
        DocUpdate(
            IMAGES,
            image_id(msg.tenant, msg.image_digest),
            pos.source,
            pos.offset,
            set={**identity, **fields},
            **guards,
        )
    ]


def _fold_inventory(msg: Inventory, pos: Position) -> list[DocUpdate]:
    """The image's metadata from its inventory (owner of these paths: the ``inventory`` topic, keyed by
    ``tenant/digest``, so one partition per image). Labels are stored as ``{"key", "value"}`` items sorted by key:
    label keys such as ``app.kubernetes.io/name`` contain dots, which are not usable as field names."""
    return _image_update(
        msg,
        pos,
        {
            "repository": msg.repository,
            "tags": sorted(set(msg.tags)),
            "namespaces": sorted(set(msg.namespaces)),
            "labels": [{"key": k, "value": v} for k, v in sorted(msg.labels.items())],
            "inventory_observed_at": _ts(msg.observed_at),
            "inventory_source": msg.source,
            "component_count": len(msg.components),
            "removed": False,
        },
    )


def _fold_image_removed(msg: ImageRemoved, pos: Position) -> list[DocUpdate]:
    """An inventory tombstone: the image is gone. Its last metadata and evaluation stay readable."""
    return _image_update(msg, pos, {"removed": True})


def _fold_runtime(msg: RuntimeEvent, pos: Position) -> list[DocUpdate]:
    """Where the image runs: ``sites.<cluster/namespace>`` = running?, owned by the ``runtime`` topic (keyed
    by digest: one partition per image, so the last event of a site wins). ``image_view`` derives
    ``running``; a map of fixed-key booleans needs no read-modify-write."""
    site = f"{msg.cluster}/{msg.namespace}"
    return _image_update(
        msg,
        pos,
        {f"sites.{field_key(site)}": msg.state == "running"},
        max={"runtime_observed_at": _ts(msg.observed_at)},
    )


def inventory_tombstone(key: bytes | None) -> ImageRemoved | None:
    """The ``ImageRemoved`` an ``inventory`` tombstone stands for (its key is ``tenant/digest``), or None
    when the key does not say which image."""
    text = (key or b"").decode(errors="replace")
    tenant, sep, digest = text.partition("/")
    if not sep or not tenant or not digest:
        return None
    return ImageRemoved(tenant=tenant, image_digest=digest)


def image_labels(doc: Mapping[str, Any]) -> dict[str, str]:
    raw = doc.get("labels")
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return {
            str(item["key"]): str(item.get("value", ""))
            for item in raw
            if isinstance(item, Mapping) and "key" in item
        }
    return {}


def running_sites(doc: Mapping[str, Any]) -> list[str]:
    sites = doc.get("sites")
    if not isinstance(sites, Mapping):
        return []
    return sorted(unfield_key(k) for k, v in sites.items() if v is True)


def image_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An image document's derived fields as the API serves them: labels as a map, the running sites."""
    sites = running_sites(doc)
    return {"labels": image_labels(doc), "running": bool(sites), "running_sites": sites}


def image_meta(doc: Mapping[str, Any]) -> ImageMeta:
    """An images read-model document as the catalog's ImageMeta."""
    derived = image_fields(doc)
    return ImageMeta(
        digest=str(doc.get("image_digest", "")),
        repository=str(doc.get("repository") or ""),
        tags=tuple(sorted(doc.get("tags") or ())),
        namespaces=tuple(sorted(doc.get("namespaces") or ())),
        labels=tuple(sorted(derived["labels"].items())),
        running=bool(derived["running"]),
    )


def _fold_deadletter(msg: DeadLetter, pos: Position) -> list[DocUpdate]:
    doc_id = deadletter_id(msg.source_topic, msg.partition, msg.offset)
    return [DocUpdate(DEADLETTERS, doc_id, pos.source, pos.offset, set=_dump(msg))]


def _cursor(
    source: str, part: str, last_id: str, modified: datetime | None, offset: int, pos: Position
) -> DocUpdate:
    entry = {"last_id": last_id, "modified": _ts(modified), "offset": offset}
    return DocUpdate(
        CURSORS,
        source,
        pos.source,
        pos.offset,
        set={"source": source, f"partitions.{field_key(part)}": entry},
        max={"modified": _ts(modified)} if modified is not None else {},
    )


def _fold_cursor(msg: CursorUpdate, pos: Position) -> list[DocUpdate]:
    part = str(msg.partition) if msg.partition is not None else pos.source
    offset = msg.offset if msg.offset is not None else pos.offset
    return [_cursor(msg.source, part, msg.last_id, msg.modified, offset, pos)]


def _fold_audit_snapshot(envelope: SignedEnvelope, pos: Position) -> list[DocUpdate]:
    """The audit ledger's signed snapshots, one document per tenant and index (docs/audit-ledger.md).
    Stored as published, envelope included: the read model lists them; `audit verify` checks them."""
    if envelope.payloadType != SNAPSHOT_PAYLOAD_TYPE:
        return []
    try:
        snapshot = AuditSnapshot.model_validate_json(base64.b64decode(envelope.payload, validate=True))
    except ValueError:
        return []
    data = {**_dump(snapshot), "envelope": envelope.model_dump(mode="json")}
    doc_id = f"{snapshot.tenant}/{snapshot.index}"
    return [DocUpdate(AUDIT_SNAPSHOTS, doc_id, pos.source, pos.offset, set=data)]


def schedule_doc_id(tenant: str, schedule_id: str) -> str:
    return f"{tenant}/{schedule_id}"


def _fold_schedule(msg: ScheduleEvent, pos: Position) -> list[DocUpdate]:
    """One owner (`schedule-events`, keyed by tenant): the schedule document is last-writer-wins, and
    each decided occurrence gets a document of its own (id: its run id)."""
    sid = schedule_doc_id(msg.tenant, msg.schedule_id)
    if msg.rejected:
        # A command that changed nothing: recorded on the document, which may not exist (no other field).
        return [
            DocUpdate(
                SCHEDULES,
                sid,
                pos.source,
                pos.offset,
                set={"last_rejected": {"at": _ts(msg.at), "why": msg.rejected}},
                set_on_insert={"tenant": msg.tenant, "schedule_id": msg.schedule_id, "status": msg.status},
            )
        ]
    body = _dump(msg, "occurrences", "rejected")
    updates = [DocUpdate(SCHEDULES, sid, pos.source, pos.offset, set=body)]
    for occ in msg.occurrences:
        doc = {**_dump(occ), "tenant": msg.tenant, "schedule_id": msg.schedule_id, "planned_at": _ts(msg.at)}
        updates.append(DocUpdate(SCHEDULE_RUNS, occ.run_id, pos.source, pos.offset, set=doc))
    return updates


def _fold_simulation_request(msg: SimulationRequest, pos: Position) -> list[DocUpdate]:
    """The request owns what was asked; the state is "running" until the completed simulation says."""
    body = _dump(msg, "simulation_id", "images", "at")
    asked = {**body, "mode": "queue", "image_count": len(msg.images)}
    return [
        DocUpdate(
            SIMULATIONS,
            msg.simulation_id,
            pos.source,
            pos.offset,
            set=asked,
            set_on_insert={"state": "running"},
            # a repeated request (same id, a later time) changes nothing: the stage keeps the first one
            min={"requested_at": _ts(msg.at)},
        )
    ]


def _fold_simulation(msg: SimulationCompleted, pos: Position) -> list[DocUpdate]:
    """One owner per path: `simulations` (key tenant) sets the outcome; tenant, selector, rules and mode
    follow from the simulation id, so the request's equal values cannot disagree."""
    body = _dump(msg, "simulation_id", "at")
    return [
        DocUpdate(SIMULATIONS, msg.simulation_id, pos.source, pos.offset, set={**body, "at": _ts(msg.at)})
    ]


def fold(message: object, pos: Position, *, window_seconds: int = 30) -> list[DocUpdate]:
    """Document updates for one message at ``pos``; messages no read model needs give ``[]``."""
    if isinstance(message, RunEvent):
        return _fold_run(message, pos)
    if isinstance(message, JobCommand):
        return _fold_command(message, pos)
    if isinstance(message, JobResult):
        return _fold_result(message, pos)
    if isinstance(message, SlaBreach):
        return _fold_breach(message, pos)
    if isinstance(message, Impact):
        return _fold_impact(message, pos, window_seconds)
    if isinstance(message, ImpactBatch):
        return _fold_impact_batch(message, pos, window_seconds)
    if isinstance(message, DeadLetter):
        return _fold_deadletter(message, pos)
    if isinstance(message, Inventory):
        return _fold_inventory(message, pos)
    if isinstance(message, ImageRemoved):
        return _fold_image_removed(message, pos)
    if isinstance(message, RuntimeEvent):
        return _fold_runtime(message, pos)
    if isinstance(message, CursorUpdate):
        return _fold_cursor(message, pos)
    if isinstance(message, ScheduleEvent):
        return _fold_schedule(message, pos)
    if isinstance(message, SimulationRequest):
        return _fold_simulation_request(message, pos)
    if isinstance(message, SimulationCompleted):
        return _fold_simulation(message, pos)
    if isinstance(message, AdvisoryDelta):
        return [_cursor("advisories", pos.source, message.id, message.modified, pos.offset, pos)]
    if isinstance(message, VexStatement):
        return [_cursor("vex", pos.source, message.statement_id, message.timestamp, pos.offset, pos)]
    if isinstance(message, PolicyChange):
        last = f"{message.tenant}/{message.policy_id}@{message.revision}"
        return [_cursor("policy", pos.source, last, message.activated_at, pos.offset, pos)]
    if isinstance(message, SignedEnvelope):
        return _fold_audit_snapshot(message, pos)
    return []


def fold_batch(
    batch: Sequence[tuple[object, Position]],
    checkpoints: Mapping[tuple[str, int], int],
    *,
    group: str,
    window_seconds: int = 30,
) -> tuple[list[DocUpdate], list[Checkpoint]]:
    """Updates for the messages past their partition's checkpoint, and the checkpoints after the batch.

    Skipping at the checkpoint saves work on redelivery; correctness does not depend on it (the document
    guard rejects the same updates).
    """
    updates: list[DocUpdate] = []
    highest: dict[tuple[str, int], int] = {}
    for message, pos in batch:
        tp = (pos.topic, pos.partition)
        done = checkpoints.get(tp)
        if done is not None and pos.offset <= done:
            continue
        updates.extend(fold(message, pos, window_seconds=window_seconds))
        highest[tp] = max(highest.get(tp, pos.offset), pos.offset)
    new = [
        Checkpoint(group, topic, partition, offset) for (topic, partition), offset in sorted(highest.items())
    ]
    return updates, new


def window_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A window document with its set-maps counted: the shape the API serves."""
    view = {k: v for k, v in doc.items() if k not in {"jobs", "images", "runs", "impacts", POS}}
    view["job_count"] = len(doc.get("jobs") or {})
    view["image_count"] = len(doc.get("images") or {})
    view["impact_count"] = len(doc.get("impacts") or {})
    view["run_ids"] = sorted(doc.get("runs") or {})
    return view
