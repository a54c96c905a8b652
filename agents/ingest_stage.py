"""Source-topic agents: inventory, advisories, VEX and runtime events, each routed to the stage whose
partitioning can resolve it (docs/architecture.md §2)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

import faust

from agents.pipeline import Pipeline
from agents.shell import Output, apply_guarded, partition_of, publish
from schemas.messages import (
    AdvisoryDelta,
    CursorUpdate,
    ImageRemoved,
    Inventory,
    RuntimeEvent,
    VexStatement,
)
from streams.index import (
    ImageKey,
    IndexUpdate,
    SourcePosition,
    apply_inventory,
    decode_record,
    encode_record,
    encode_updates,
)
from streams.resolve import (
    AdvisoryRequest,
    VexPackageRequest,
    decode_advisory_packages,
    encode_advisory_packages,
    encode_requests,
    split_advisory,
    vex_requests,
    with_image_package,
)

# Internal records on the package-keyed topics carry a one-byte type tag. The single-item tags are still
# read (records written before the batched shuffle; the Quix peer in bench/ uses them); this stage writes
# the batched ones: one record per input per destination partition, keyed by its first package.
TAG_INDEX_UPDATE = b"U"
TAG_ADVISORY = b"A"
TAG_VEX = b"V"
TAG_INDEX_UPDATES = b"u"
TAG_ADVISORIES = b"a"
TAG_VEXES = b"v"


Item = TypeVar("Item", IndexUpdate, AdvisoryRequest, VexPackageRequest)


def cursor(source: str, last_id: str, event: faust.EventT[Any], modified: Any = None) -> CursorUpdate:
    message = event.message
    return CursorUpdate(
        source=source, last_id=last_id, modified=modified, partition=message.partition, offset=message.offset
    )


def register(pipe: Pipeline) -> None:
    app, n = pipe.app, pipe.settings.partitions
    images = pipe.table("images")
    advisory_packages = pipe.table("advisory-packages")

    def routed(out: Output) -> Output:
        # Sent to the partition of its key (its first package): every item of the record maps there too.
        return replace(out, partition=partition_of((out.key or b"").decode(), n))

    def by_partition(items: list[Item]) -> list[list[Item]]:
        """Package-keyed items (in their given order) grouped by the index partition of their package."""
        groups: dict[int, list[Item]] = {}
        for item in items:
            groups.setdefault(partition_of(item.package, n), []).append(item)
        return [groups[p] for p in sorted(groups)]

    @app.agent(pipe.source("inventory"), name="inventory")
    async def inventory_agent(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            decoded = await pipe.decode(event)
            if decoded is None:
                return
            key = (event.key or b"").decode(errors="replace")
            inventory = decoded.model
            assert inventory is None or isinstance(inventory, Inventory)
            position = SourcePosition(event.message.partition, event.message.offset)

            def fold(
                state: bytes | None,
                inventory: Inventory | None = inventory,
                position: SourcePosition = position,
            ) -> tuple[bytes | None, list[Output]]:
                record = decode_record(state) if state else None
                indexed = with_image_package(inventory) if inventory is not None else None
                outcome = apply_inventory(record, indexed, source=position, partitions=n)
                outputs = [
                    routed(
                        pipe.out("index-updates", group[0].package, TAG_INDEX_UPDATES + encode_updates(group))
                    )
                    for group in by_partition(outcome.updates)
                ]
                if inventory is not None:
                    outputs.append(pipe.out("catalog-updates", inventory.tenant, inventory))
                elif record is not None:
                    removed = ImageRemoved(tenant=record.key.tenant, image_digest=record.key.digest)
                    outputs.append(pipe.out("catalog-updates", record.key.tenant, removed))
                if outcome.impact is not None:
                    outputs.append(pipe.out("impacts", outcome.impact.tenant, outcome.impact))
                return (encode_record(outcome.record) if outcome.record else None), outputs

            table_key = ImageKey(inventory.tenant, inventory.image_digest).text if inventory else key
            if table_key:
                await apply_guarded(images, table_key, event, fold)

        await pipe.run(stream, "inventory", handle, batched=True)

    @app.agent(pipe.source("advisories"), name="advisories")
    async def advisory_agent(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            decoded = await pipe.decode(event)
            if decoded is None:
                return
            delta = decoded.model
            assert isinstance(delta, AdvisoryDelta)

            def fold(
                state: bytes | None, delta: AdvisoryDelta = delta, event: Any = event
            ) -> tuple[bytes | None, list[Output]]:
                current = decode_advisory_packages(state) if state else None
                new_state, requests = split_advisory(current, delta)
                outputs = [
                    routed(
                        pipe.out("impact-requests", group[0].package, TAG_ADVISORIES + encode_requests(group))
                    )
                    for group in by_partition(requests)
                ]
                outputs.append(
                    pipe.out("cursors", "advisories", cursor("advisories", delta.id, event, delta.modified))
                )
                return (encode_advisory_packages(new_state) if new_state else state), outputs

            await apply_guarded(advisory_packages, delta.id, event, fold)

        await pipe.run(stream, "advisories", handle, batched=True)

    @app.agent(pipe.source("vex"), name="vex")
    async def vex_agent(stream: faust.StreamT[Any]) -> None:
        # Stateless: the same statement always splits into the same requests, so a redelivery only
        # repeats idempotent work downstream.
        async def handle(event: faust.EventT[Any]) -> None:
            decoded = await pipe.decode(event)
            if decoded is None:
                return
            statement = decoded.model
            assert isinstance(statement, VexStatement)
            requests = vex_requests(statement)
            outputs = [
                routed(pipe.out("impact-requests", group[0].package, TAG_VEXES + encode_requests(group)))
                for group in by_partition(requests)
            ]
            outputs.append(
                pipe.out("cursors", "vex", cursor("vex", statement.statement_id, event, statement.timestamp))
            )
            await publish(outputs)

        await pipe.run(stream, "vex", handle, batched=True)

    @app.agent(pipe.source("runtime"), name="runtime")
    async def runtime_agent(stream: faust.StreamT[Any]) -> None:
        # Re-keyed by tenant: running state is needed where priorities are decided (the tenant stage).
        async def handle(event: faust.EventT[Any]) -> None:
            decoded = await pipe.decode(event)
            if decoded is None:
                return
            runtime = decoded.model
            assert isinstance(runtime, RuntimeEvent)
            await publish([pipe.out("catalog-updates", runtime.tenant, runtime)])

        await pipe.run(stream, "runtime", handle, batched=True)
