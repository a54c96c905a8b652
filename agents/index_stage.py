"""The package-keyed stage: the index (package → version → image ids) and the resolution of advisory and
VEX requests against it. Both input topics are keyed by package key and co-partitioned."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import faust

from agents import observe
from agents.ingest_stage import (
    TAG_ADVISORIES,
    TAG_ADVISORY,
    TAG_INDEX_UPDATE,
    TAG_INDEX_UPDATES,
    TAG_VEX,
    TAG_VEXES,
)
from agents.pipeline import Pipeline
from agents.shell import Output, apply_guarded, partition_of, publish, read, write
from schemas.messages import Impact, ImpactBatch
from streams.guard import decode as unguard
from streams.index import (
    ImageRef,
    IndexUpdate,
    apply_index_updates,
    by_package,
    decode_entry,
    decode_ref,
    decode_update,
    decode_updates,
    encode_entry,
    encode_ref,
)
from streams.resolve import (
    AdvisoryRequest,
    VexPackageRequest,
    decode_advisory_request,
    decode_advisory_requests,
    decode_specs,
    decode_vex_package_request,
    decode_vex_package_requests,
    encode_specs,
    resolve_advisory,
    resolve_vex_package,
)

# Impacts per impacts record: a few hundred KB at most, far below the record limit, and still one record
# where there used to be hundreds.
IMPACTS_PER_RECORD = 500
MAX_CACHED_REFS = 200_000  # ~40 MB at most


def register(pipe: Pipeline) -> None:
    app = pipe.app
    index = pipe.table("index")
    specs = pipe.table("advisory-specs")
    directory = pipe.table("directory")

    def entry_of(package: str) -> Any:
        state = unguard(read(index, package)).state
        return decode_entry(state) if state else None

    def directory_key(partition: int, image_id: int) -> str:
        # Keyed per partition: an image's entry is written while an index update is processed, in that
        # update's partition, and read while resolving a request for a package of the *same* partition
        # (the index entry naming the image is there too). A key written from several partitions breaks
        # faust: recovery remembers one partition per key and, once that partition moves to another
        # worker, deletes the key although another assigned partition also holds it (seen on scale-out:
        # VEX / advisory requests resolved to no images after a rebalance).
        return f"{partition}/{image_id}"

    # Decoded directory entries: an id always names the same image (`streams.index.image_id_for`: the
    # inventory's source position), so an entry once read never changes. An advisory on a common package
    # reads hundreds of them, each a rocksdb read and a decode otherwise.
    refs: dict[str, ImageRef] = {}

    def lookup_in(partition: int) -> Any:
        def lookup(image_id: int) -> ImageRef | None:
            key = directory_key(partition, image_id)
            if (ref := refs.get(key)) is not None:
                return ref
            raw = read(directory, key)
            if not raw:
                return None
            if len(refs) >= MAX_CACHED_REFS:
                refs.clear()
            ref = refs[key] = decode_ref(raw)
            return ref

        return lookup

    def impacts_out(impacts: list[Impact]) -> list[Output]:
        """One record per tenant partition (chunked: an advisory on a common package reaches every image),
        keyed by its first impact's tenant; a lone impact goes as itself."""
        n = pipe.settings.partitions
        groups: dict[int, list[Impact]] = {}
        for impact in impacts:
            groups.setdefault(partition_of(impact.tenant, n), []).append(impact)
        outputs = []
        for partition in sorted(groups):
            group = groups[partition]
            for start in range(0, len(group), IMPACTS_PER_RECORD):
                chunk = group[start : start + IMPACTS_PER_RECORD]
                message = chunk[0] if len(chunk) == 1 else ImpactBatch(impacts=chunk)
                outputs.append(replace(pipe.out("impacts", chunk[0].tenant, message), partition=partition))
        return outputs

    async def index_updates(event: faust.EventT[Any], updates: list[IndexUpdate]) -> None:
        partition = event.message.partition
        # One directory write per image and record (idempotent: the same id always names the same image).
        for update in updates:
            if update.op == "add":
                ref = encode_ref(ImageRef(update.tenant, update.digest))
                write(directory, directory_key(partition, update.image_id), ref, event)
                break
        # All of one package's updates in one fold: one table write per package and record.
        for package, group in by_package(updates).items():

            def fold_index(state: bytes | None, group: Any = group) -> tuple[bytes | None, list[Output]]:
                entry = decode_entry(state) if state else None
                return encode_entry(apply_index_updates(entry, group)), []

            await apply_guarded(index, package, event, fold_index)

    async def advisory_request(event: faust.EventT[Any], request: AdvisoryRequest, started: float) -> None:
        lookup = lookup_in(event.message.partition)

        def fold_specs(state: bytes | None) -> tuple[bytes | None, list[Output]]:
            current = decode_specs(state) if state else None
            new_specs, resolution = resolve_advisory(current, request, entry_of(request.package), lookup)
            # Counted here, where they are published: a redelivered duplicate never reaches the fold.
            observe.impacts("advisory", time.perf_counter() - started, resolution.impacts)
            return encode_specs(new_specs), impacts_out(resolution.impacts)

        await apply_guarded(specs, request.package, event, fold_specs)

    async def vex_request(event: faust.EventT[Any], request: VexPackageRequest, started: float) -> None:
        lookup = lookup_in(event.message.partition)
        resolution = resolve_vex_package(request, entry_of(request.package), lookup)
        await publish(impacts_out(resolution.impacts))
        observe.impacts("vex", time.perf_counter() - started, resolution.impacts)

    @app.agent(pipe.source("index-updates", "impact-requests"), name="index")
    async def index_agent(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            value: bytes = event.value or b""
            tag, body = value[:1], value[1:]
            started = time.perf_counter()
            if tag == TAG_INDEX_UPDATES:
                await index_updates(event, decode_updates(body))
            elif tag == TAG_ADVISORIES:
                for request in decode_advisory_requests(body):
                    await advisory_request(event, request, started)
            elif tag == TAG_VEXES:
                for vex in decode_vex_package_requests(body):
                    await vex_request(event, vex, started)
            # One item per record: written before the batched shuffle.
            elif tag == TAG_INDEX_UPDATE:
                await index_updates(event, [decode_update(body)])
            elif tag == TAG_ADVISORY:
                await advisory_request(event, decode_advisory_request(body), started)
            elif tag == TAG_VEX:
                await vex_request(event, decode_vex_package_request(body), started)
            else:
                raise ValueError(f"unknown record tag {tag!r}")

        await pipe.run(stream, "index", handle, batched=True)
