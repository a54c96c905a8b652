"""A job's JobStarted is acked while its executor runs, never after its outcome is published: the run
must see the start before the result, and waiting for the ack first cost every job a round trip. An
attempt that ends early (the executor crashes) does not wait for it: the job's next attempt announces again.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from agents import job_stage
from agents.executors import Ok
from agents.job_stage import Runner
from agents.shell import Output
from schemas.codec import encode
from schemas.messages import JobCommand
from streams.fairness import Caps
from streams.job_queue import Entry
from streams.retry import RetryPolicy
from tests.unit.test_job_order import job

JOB = job(1, "a", 0)


class Pipe:
    """What the runner asks of a Pipeline: outputs and the attempt timeout."""

    class settings:
        executor_timeout_seconds = 5

    def out(self, logical: str, key: str | bytes | None, message: BaseModel | bytes) -> Output:
        value = message if isinstance(message, bytes) else encode(message)
        topic: Any = logical
        return Output(topic, key.encode() if isinstance(key, str) else key, value)


class Broker:
    """`publish` with acks that take `ack_s`; the log says when each send began and was acked."""

    def __init__(self, ack_s: float) -> None:
        self.ack_s = ack_s
        self.log: list[tuple[str, str]] = []

    async def publish(self, outputs: Any) -> None:
        outputs = list(outputs)
        names = ",".join(orjson.loads(o.value)["schema"] for o in outputs)
        self.log.append(("send", names))
        await asyncio.sleep(self.ack_s)
        self.log.append(("acked", names))


class Executor:
    def __init__(self, broker: Broker, fail: bool = False) -> None:
        self.broker, self.fail = broker, fail

    async def execute(self, job: JobCommand) -> Any:
        self.broker.log.append(("execute", job.job_id))
        await asyncio.sleep(0.01)
        if self.fail:
            raise RuntimeError("executor crashed")
        return Ok(findings=[], verdict="pass")


def attempt(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> tuple[Broker, Any]:
    broker = Broker(ack_s=0.05)
    monkeypatch.setattr(job_stage, "publish", broker.publish)
    pipe: Any = Pipe()
    runner = Runner(pipe, Executor(broker, fail), Caps(), RetryPolicy())

    async def go() -> Any:
        return await runner._attempt(Entry(JOB))

    return broker, go


def test_start_acked_while_executing_and_before_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    broker, go = attempt(monkeypatch)
    assert asyncio.run(go()) is None
    started = "scheduler.job-started@1"
    assert broker.log.count(("send", started)) == 1
    # The executor ran before the start was acked (overlap), and the outcome was sent only after.
    assert broker.log.index(("execute", JOB.job_id)) < broker.log.index(("acked", started))
    result_sent = next(i for i, (what, names) in enumerate(broker.log) if what == "send" and names != started)
    assert broker.log.index(("acked", started)) < result_sent
    assert "scheduler.job-result@1" in broker.log[result_sent][1]


def test_a_crashed_attempt_does_not_wait_for_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    broker, go = attempt(monkeypatch, fail=True)

    async def crash_then_settle() -> None:
        with pytest.raises(RuntimeError, match="executor crashed"):
            await go()
        await asyncio.sleep(0.1)  # a cancelled announce never completes

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(crash_then_settle())
    assert ("acked", "scheduler.job-started@1") not in broker.log
    assert [what for what, _ in broker.log if what == "send"] == ["send"]  # no outcome published
