"""Evidence: the tenant's DSSE envelopes on ``events.signed``, verified here with the API's public keys.

Signed events are not a read model; they are read from the topic (key ``tenant/subject``), the last
``SCAN_PER_PARTITION`` records of each partition at most, so a page costs a bounded read. The raw record
value is what ``stella-sched verify --file`` checks offline, byte for byte."""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from nacl.signing import VerifyKey

from controlplane.runtime import Runtime
from signing.dsse import verify
from signing.keys import KeyFileError, load_public_keys
from signing.statement import event_id

SCAN_PER_PARTITION = 5000
SHOWN = 100
SCAN_SECONDS = 20.0


@dataclass(frozen=True, slots=True)
class Evidence:
    partition: int
    offset: int
    subject: str
    event_id: str
    predicate_type: str
    envelope: dict[str, Any]
    statement: Any
    verified: bool
    keyid: str
    problem: str


def trusted_keys(rt: Runtime) -> tuple[dict[str, VerifyKey], str]:
    """The API's public keys (``STELLA_PUBLIC_KEYS``) and, when there are none, why."""
    path = rt.settings.public_keys
    if not path:
        return {}, "no public keys configured (STELLA_PUBLIC_KEYS)"
    try:
        return load_public_keys(path), ""
    except KeyFileError as exc:
        return {}, str(exc)


def judge(
    partition: int, offset: int, subject: str, value: bytes, keys: dict[str, VerifyKey], why: str
) -> Evidence:
    try:
        envelope = orjson.loads(value)
    except orjson.JSONDecodeError:
        envelope = {}
    if not isinstance(envelope, dict):
        envelope = {}
    result = verify(envelope, keys)
    statement: Any = result.statement
    try:
        payload = base64.b64decode(str(envelope.get("payload", "")), validate=True)
    except (binascii.Error, ValueError):
        payload = b""
    if statement is None and payload:
        try:
            statement = orjson.loads(payload)
        except orjson.JSONDecodeError:
            statement = None
    predicate = statement.get("predicateType", "") if isinstance(statement, dict) else ""
    problem = "" if result.ok else (why or f"{result.error}: {result.detail}".strip(": "))
    return Evidence(
        partition,
        offset,
        subject,
        event_id(payload),
        str(predicate),
        envelope,
        statement,
        result.ok,
        result.keyid or "",
        problem,
    )


async def _consumer(rt: Runtime) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=rt.settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=15000,
    )
    await consumer.start()
    name = rt.topic("events.signed")
    known = consumer.partitions_for_topic(name)
    if not known:
        await consumer._client.force_metadata_update()
        known = consumer.partitions_for_topic(name)
    return consumer, [TopicPartition(name, p) for p in sorted(known or ())]


async def tenant_evidence(rt: Runtime, tenant: str, subject: str | None) -> tuple[list[Evidence], bool]:
    """The tenant's newest signed events (of one subject, when given), newest first; and whether the scan
    stopped at its bound (older ones exist that were not looked at)."""
    keys, why = trusted_keys(rt)
    prefix = f"{tenant}/".encode()
    wanted = f"{tenant}/{subject}".encode() if subject else None
    consumer, parts = await _consumer(rt)
    found: list[tuple[int, Evidence]] = []
    bounded = False
    try:
        if not parts:
            return [], False
        consumer.assign(parts)
        begins = await consumer.beginning_offsets(parts)
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            start = max(begins[tp], ends[tp] - SCAN_PER_PARTITION)
            bounded = bounded or start > begins[tp]
            consumer.seek(tp, start)
        remaining = {tp for tp in parts if ends[tp] > (await consumer.position(tp))}
        deadline = time.monotonic() + SCAN_SECONDS
        while remaining:
            if time.monotonic() > deadline:
                bounded = True  # a slow broker: show what was read
                break
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=1000)
            for tp, records in batch.items():
                for r in records:
                    key = r.key or b""
                    if key.startswith(prefix) and (wanted is None or key == wanted) and r.value is not None:
                        subj = key[len(prefix) :].decode("utf-8", "replace")
                        found.append((r.timestamp, judge(tp.partition, r.offset, subj, r.value, keys, why)))
                    if r.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            if not batch:
                # nothing fetched within the poll: positions tell whether a partition is done
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    found.sort(key=lambda item: (item[0], item[1].partition, item[1].offset), reverse=True)
    return [e for _, e in found[:SHOWN]], bounded or len(found) > SHOWN


async def one_envelope(rt: Runtime, tenant: str, partition: int, offset: int) -> tuple[str, bytes] | None:
    """(subject, raw value) of the signed event at ``partition@offset`` if it is the tenant's."""
    consumer, parts = await _consumer(rt)
    try:
        tp = next((p for p in parts if p.partition == partition), None)
        if tp is None:
            return None
        consumer.assign([tp])
        ends = await consumer.end_offsets([tp])
        if offset >= ends[tp]:
            return None
        consumer.seek(tp, offset)
        batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
        for record in batch.get(tp, []):
            key = record.key or b""
            prefix = f"{tenant}/".encode()
            if record.offset == offset and key.startswith(prefix) and record.value is not None:
                return key[len(prefix) :].decode("utf-8", "replace"), record.value
        return None
    finally:
        await consumer.stop()
