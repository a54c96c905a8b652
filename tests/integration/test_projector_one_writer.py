"""Two workers' projectors in one group: one of them holds every projected partition, the other none
(agents/projector_assignor.py: FerretDB loses one of two concurrent updates of a document, so the read
models need a single writer; chaos seed 37558 lost a job from a window that way)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agents.projector import ProjectorService
from agents.settings import Settings
from projections.topics import PROJECTED


def held(service: ProjectorService) -> int:
    consumer: Any = service.consumer
    return len(consumer.assignment()) if consumer is not None else 0


async def two_projectors(settings: Settings) -> tuple[int, int]:
    first, second = ProjectorService(settings), ProjectorService(settings)
    tasks = [asyncio.ensure_future(s.run_on_own_loop()) for s in (first, second)]
    expected = len(PROJECTED) * settings.partitions
    try:
        deadline = time.monotonic() + 180
        stable_since: float | None = None
        while True:
            for task in tasks:
                assert not task.done(), task.exception()
            counts = (held(first), held(second))
            both_in = all(s.consumer is not None and s.ready.is_set() for s in (first, second))
            settled = both_in and sorted(counts) == [0, expected]
            if settled and stable_since is None:
                stable_since = time.monotonic()
            elif not settled:
                stable_since = None
            if stable_since is not None and time.monotonic() - stable_since > 5:
                return counts  # both members in the group, one assignment, unchanged for 5 s
            assert time.monotonic() < deadline, f"no single-writer assignment: {counts} of {expected}"
            await asyncio.sleep(0.5)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_one_projector_holds_every_partition(projector_settings: Settings) -> None:
    settings = projector_settings
    counts = asyncio.run(two_projectors(settings))
    assert sorted(counts) == [0, len(PROJECTED) * settings.partitions]
