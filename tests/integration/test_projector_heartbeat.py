"""The projector keeps its group membership while the worker's event loop is held (the VEX soak crash).

The worker's agents, its knowledge feed and (before) the projector's aiokafka consumer shared one event
loop; aiokafka heartbeats from a task on that loop. A turn longer than the session timeout (10 s) expelled
the projector: a rebalance, then its commit refused with CommitFailedError, which stopped the worker
(docs/partitioning.md, failure modes). Here the test's own loop is held for longer than the session timeout
while the projector runs as the worker runs it; its group generation must not change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agents.projector import ProjectorService
from agents.settings import Settings

SESSION_TIMEOUT_S = 10.0  # agents/projector.py: session_timeout_ms


def generation(service: ProjectorService) -> int:
    consumer: Any = service.consumer
    coordinator = getattr(consumer, "_coordinator", None)  # set once the consumer has started
    return -1 if coordinator is None else int(coordinator.generation)


async def hold_the_loop(service: ProjectorService, run: Callable[[], Awaitable[None]]) -> tuple[int, int]:
    task = asyncio.ensure_future(run())
    try:
        deadline = time.monotonic() + 120
        while generation(service) < 1 or not service.consumer or not service.consumer.assignment():
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "the projector never joined its group"
            await asyncio.sleep(0.2)
        before = generation(service)
        # Deliberately blocking: one loop turn longer than the session timeout, as in the soak.
        time.sleep(SESSION_TIMEOUT_S * 1.5)  # noqa: ASYNC251
        await asyncio.sleep(3)  # the loop runs again: an expelled member learns it from its next heartbeat
        assert not task.done(), task.exception()
        return before, generation(service)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_projector_keeps_its_membership_while_the_worker_loop_is_held(projector_settings: Settings) -> None:
    settings = projector_settings
    service = ProjectorService(settings)
    before, after = asyncio.run(hold_the_loop(service, service.run_on_own_loop))
    assert after == before, f"the projector was expelled from its group (generation {before} → {after})"
