"""agents.knowledge.KnowledgeView: a job never runs on a view that has not read up to the source topics' ends.

Chaos soak seed 180090 (session 6): a worker that had just joined ran a job before its view had read the
image's inventory and answered "no inventory for image" (permanent). Two ways there: the view counted as
caught up while its consumer had started but not yet been assigned its partitions (an empty assignment has
nothing to wait for), and the job stage went on when the 30 s wait ran out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiokafka import TopicPartition

from agents.knowledge import KnowledgeView
from agents.settings import Settings

TP = TopicPartition("t.inventory", 0)


class _Consumer:
    """What `caught_up` asks of the consumer: its assignment and the end offsets."""

    def __init__(self, assigned: list[TopicPartition], end: int) -> None:
        self.assigned, self.end = assigned, end

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def end_offsets(self, parts: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.end for tp in parts}


def _view() -> KnowledgeView:
    return KnowledgeView(Settings(topic_prefix="t."))


async def test_a_started_consumer_without_its_assignment_is_not_caught_up() -> None:
    view = _view()
    view._consumer = _Consumer([], end=5)  # type: ignore[assignment]  # started, not yet assigned
    assert await view.caught_up(timeout=0.2) is False


async def test_caught_up_once_assigned_and_read_to_the_end() -> None:
    view = _view()
    view._consumer = _Consumer([TP], end=5)  # type: ignore[assignment]
    view._assigned.set()
    assert await view.caught_up(timeout=0.2) is False
    view._positions[TP] = 5
    assert await view.caught_up(timeout=0.2) is True


async def test_the_job_stage_wait_outlasts_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    view = _view()
    view._consumer = _Consumer([TP], end=3)  # type: ignore[assignment]
    view._assigned.set()

    async def read_late() -> None:
        await asyncio.sleep(0.5)
        view._positions[TP] = 3
        event: Any = view._progress
        event.set()

    reader = asyncio.create_task(read_late())
    with caplog.at_level(logging.WARNING, logger="agents.knowledge"):
        await asyncio.wait_for(view.wait_caught_up(report_every_s=0.1), 5.0)
    await reader
    assert view._positions[TP] == 3
    assert "still behind" in caplog.text
