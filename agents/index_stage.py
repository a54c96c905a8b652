"""The package-keyed stage: the index (package → version → image ids) and the resolution of advisory and
VEX requests against it. Both input topics are keyed by package key and co-partitioned."""

from __future__ import annotations

import time
from typing import Any

import faust

from agents import observe
from agents.ingest_stage import TAG_ADVISORY, TAG_INDEX_UPDATE, TAG_VEX
from agents.pipeline import Pipeline
from agents.shell import Output, apply_guarded, publish, read, write
from streams.guard import decode as unguard
from streams.index import (
    ImageRef,
    apply_index_update,
    decode_entry,
    decode_ref,
    decode_update,
    encode_entry,
    encode_ref,
)
from streams.resolve import (
    decode_advisory_request,
    decode_specs,
    decode_vex_package_request,
    encode_specs,
    resolve_advisory,
    resolve_vex_package,
)


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

    def lookup_in(partition: int) -> Any:
        def lookup(image_id: int) -> ImageRef | None:
            raw = read(directory, directory_key(partition, image_id))
            return decode_ref(raw) if raw else None

        return lookup

    def impacts_out(impacts: list[Any]) -> list[Output]:
        return [pipe.out("impacts", i.tenant, i) for i in impacts]

    @app.agent(pipe.source("index-updates", "impact-requests"), name="index")
    async def index_agent(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            value: bytes = event.value or b""
            tag, body = value[:1], value[1:]
            package = (event.key or b"").decode(errors="replace")
            lookup = lookup_in(event.message.partition)
            started = time.perf_counter()
            if tag == TAG_INDEX_UPDATE:
                update = decode_update(body)
                if update.op == "add":
                    # Idempotent: the same id always names the same image.
                    ref = encode_ref(ImageRef(update.tenant, update.digest))
                    write(directory, directory_key(event.message.partition, update.image_id), ref, event)

                def fold_index(
                    state: bytes | None, update: Any = update
                ) -> tuple[bytes | None, list[Output]]:
                    entry = decode_entry(state) if state else None
                    return encode_entry(apply_index_update(entry, update)), []

                await apply_guarded(index, package, event, fold_index)
            elif tag == TAG_ADVISORY:
                request = decode_advisory_request(body)

                def fold_specs(
                    state: bytes | None, request: Any = request
                ) -> tuple[bytes | None, list[Output]]:
                    current = decode_specs(state) if state else None
                    new_specs, resolution = resolve_advisory(
                        current, request, entry_of(request.package), lookup
                    )
                    # Counted here, where they are published: a redelivered duplicate never reaches the fold.
                    observe.impacts("advisory", time.perf_counter() - started, resolution.impacts)
                    return encode_specs(new_specs), impacts_out(resolution.impacts)

                await apply_guarded(specs, package, event, fold_specs)
            elif tag == TAG_VEX:
                vex_request = decode_vex_package_request(body)
                resolution = resolve_vex_package(vex_request, entry_of(vex_request.package), lookup)
                await publish(impacts_out(resolution.impacts))
                observe.impacts("vex", time.perf_counter() - started, resolution.impacts)
            else:
                raise ValueError(f"unknown record tag {tag!r}")

        await pipe.run(stream, "index", handle, batched=True)
