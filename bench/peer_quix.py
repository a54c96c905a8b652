"""The peer: the same impact fold written with Quix Streams 3.x. ``python -m bench.peer_quix PREFIX PARTITIONS``.

Topology (topics under PREFIX, pre-created by the driver with PARTITIONS each):

    inventory  (key tenant/digest) ─ stateful apply ─► package (key package, tag U) + impacts (new image)
    advisories (key advisory id)   ─ stateful apply ─► package (key package, tag A)
    package    (key package)       ─ stateful apply ─► impacts (key tenant)
    impacts    (key tenant)        ─ stateful apply ─► jobs (key digest)

Every step calls the same pure functions our faust agents call (``apply_inventory``, ``split_advisory``,
``apply_index_update``, ``resolve_advisory``, ``add_impact``), with Quix's own per-key state (RocksDB,
changelog topics on, at-least-once) holding their encoded values. Differences from ours, all in the peer's
favour: index updates and advisory requests share one tagged topic (ours: two co-partitioned topics read by
one agent); the id → image directory lives in the package's own state (ours: a global table); no catalog,
no run plans, no cursors, no dead-letter handling, no source-position guards.
"""

from __future__ import annotations

import base64
import sys
from typing import Any

from quixstreams import Application, message_context
from quixstreams.models.serializers import Serializer
from quixstreams.state import State

from agents.ingest_stage import TAG_ADVISORY, TAG_INDEX_UPDATE
from schemas.codec import Decoded, decode, encode
from schemas.messages import AdvisoryDelta, Impact, Inventory
from streams.index import (
    ImageRef,
    SourcePosition,
    apply_index_update,
    apply_inventory,
    decode_entry,
    decode_record,
    decode_update,
    encode_entry,
    encode_record,
    encode_update,
)
from streams.jobs import PendingJob
from streams.resolve import (
    decode_advisory_packages,
    decode_advisory_request,
    decode_specs,
    encode_advisory_packages,
    encode_request,
    encode_specs,
    resolve_advisory,
    split_advisory,
    with_image_package,
)
from streams.windows import (
    Entry,
    WindowIndex,
    add_impacts,
    decode_index,
    entries_needed,
    fold_split,
    load_entries,
    store_changes,
)

MAX_BYTES = 1_048_576
Row = tuple[str, bytes, bytes]  # (logical topic, key, value)


class _Payload(Serializer):
    """Rows carry (topic, key, value): the value bytes go on the wire."""

    def __call__(self, value: Row, ctx: Any) -> bytes:
        return value[2]


def _get(state: State, name: str) -> bytes | None:
    raw = state.get(name)
    return base64.b64decode(raw) if raw is not None else None


def _set(state: State, name: str, data: bytes) -> None:
    state.set(name, base64.b64encode(data).decode())


def build(prefix: str, partitions: int, window: int, grace: int) -> Application:
    app = Application(
        broker_address="127.0.0.1:9092",
        consumer_group=f"{prefix}quix",
        auto_offset_reset="earliest",
        state_dir=f"run/bench/quix-state/{prefix}",
        commit_interval=1.0,
        loglevel="WARNING",
    )
    ins = {
        n: app.topic(f"{prefix}{n}", value_deserializer="bytes", key_deserializer="bytes")
        for n in (
            "inventory",
            "advisories",
            "package",
            "impacts",
        )
    }
    outs = {
        n: app.topic(f"{prefix}{n}", value_serializer=_Payload(), key_serializer="bytes")
        for n in ("package", "impacts", "jobs")
    }

    def route(value: Row, *_: Any) -> Any:
        return outs[value[0]]

    def inventory_fold(value: bytes, key: bytes, _ts: int, _h: Any, state: State) -> list[Row]:
        decoded = decode("inventory", key, value, MAX_BYTES)
        if not isinstance(decoded, Decoded) or not isinstance(decoded.model, Inventory):
            return []
        inventory = decoded.model
        ctx = message_context()
        raw = _get(state, "r")
        record = decode_record(raw) if raw else None
        outcome = apply_inventory(
            record,
            with_image_package(inventory),
            source=SourcePosition(ctx.partition, ctx.offset),
            partitions=partitions,
        )
        rows: list[Row] = [
            ("package", u.package.encode(), TAG_INDEX_UPDATE + encode_update(u)) for u in outcome.updates
        ]
        if outcome.impact is not None:
            rows.append(("impacts", outcome.impact.tenant.encode(), encode(outcome.impact)))
        if outcome.record is not None:
            _set(state, "r", encode_record(outcome.record))
        return rows

    def advisory_split(value: bytes, key: bytes, _ts: int, _h: Any, state: State) -> list[Row]:
        decoded = decode("advisories", key, value, MAX_BYTES)
        if not isinstance(decoded, Decoded) or not isinstance(decoded.model, AdvisoryDelta):
            return []
        raw = _get(state, "p")
        new_state, requests = split_advisory(decode_advisory_packages(raw) if raw else None, decoded.model)
        if new_state is not None:
            _set(state, "p", encode_advisory_packages(new_state))
        return [("package", r.package.encode(), TAG_ADVISORY + encode_request(r)) for r in requests]

    def package_fold(value: bytes, key: bytes, _ts: int, _h: Any, state: State) -> list[Row]:
        tag, body = value[:1], value[1:]
        raw = _get(state, "e")
        entry = decode_entry(raw) if raw else None
        if tag == TAG_INDEX_UPDATE:
            update = decode_update(body)
            if update.op == "add":
                state.set(f"d{update.image_id}", [update.tenant, update.digest])
            _set(state, "e", encode_entry(apply_index_update(entry, update)))
            return []
        request = decode_advisory_request(body)

        def lookup(image_id: int) -> ImageRef | None:
            ref = state.get(f"d{image_id}")
            return ImageRef(ref[0], ref[1]) if ref else None

        specs_raw = state.get("s")
        specs, resolution = resolve_advisory(
            decode_specs(specs_raw.encode()) if specs_raw else None, request, entry, lookup
        )
        state.set("s", encode_specs(specs).decode())
        return [("impacts", i.tenant.encode(), encode(i)) for i in resolution.impacts]

    # The same split window state as our tenant stage (streams.windows): an index under "w" and one state
    # key per pending job, so a fold reads and writes only the jobs it touches; the decoded index is
    # memoised while its bytes are unchanged, as ours is.
    last_index: dict[bytes, tuple[bytes, tuple[WindowIndex, dict[Entry, PendingJob]]]] = {}

    def window_fold(value: bytes, key: bytes, _ts: int, _h: Any, state: State) -> list[Row]:
        decoded = decode("impacts", key, value, MAX_BYTES)
        if not isinstance(decoded, Decoded) or not isinstance(decoded.model, Impact):
            return []
        impacts = [decoded.model]
        raw = _get(state, "w")
        hit = last_index.get(key)
        carried: dict[Entry, PendingJob]
        if raw is None:
            index, carried = WindowIndex(), {}
        elif hit is not None and hit[0] == raw:
            index, carried = hit[1]
        else:
            index, carried = decode_index(raw)

        def read(name: str) -> bytes | None:
            return _get(state, name)

        needed = entries_needed(index, impacts, window, grace)
        loaded = load_entries(read, "w", index, needed, carried)
        result = fold_split(index, loaded, lambda current: add_impacts(current, impacts, window, grace))
        writes = store_changes("w", result)
        for name, data in writes:
            if data is None:
                state.delete(name)
            else:
                _set(state, name, data)
        last_index[key] = (writes[-1][1] or b"", (result.index, result.inline))
        return [("jobs", j.image_digest.encode(), encode(j)) for j in result.jobs]

    for name, fold in (
        ("inventory", inventory_fold),
        ("advisories", advisory_split),
        ("package", package_fold),
        ("impacts", window_fold),
    ):
        sdf = app.dataframe(ins[name])
        sdf = sdf.apply(fold, stateful=True, expand=True, metadata=True)
        sdf.to_topic(route, key=lambda row: row[1])
    return app


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    prefix, partitions = args[0], int(args[1])
    window, grace = (int(args[2]), int(args[3])) if len(args) > 3 else (30, 5)
    build(prefix, partitions, window, grace).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
