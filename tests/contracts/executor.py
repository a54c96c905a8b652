"""The Executor port's contract (agents.executors.Executor), as an abstract suite: whatever runs a job,
the retry core must see the same classification of the same remote behaviour. tests/unit/test_executor_memory.py
runs it against MemoryExecutor, tests/integration/test_executor_contract.py against HttpExecutor talking
to a real HTTP engine (tests/integration/executor_kit.py)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agents.executors import (
    ExecOutcome,
    Executor,
    Ok,
    Permanent,
    Timeout,
    Transient,
    execute_with_timeout,
)
from schemas.messages import Finding, JobCommand, JobInputs
from streams.findings import sort_findings

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ATTEMPT_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Script:
    """What the engine does with the calls for one image (executor_kit.Behaviour's language).

    kind: ``ok`` | ``flaky`` (unavailable for the first ``n`` calls, then ok) | ``down`` (always a server
    error) | ``limited`` (rate limited with ``retry_after`` for the first ``n`` calls, then ok) | ``hang``
    (the first ``n`` calls outlast the attempt timeout, then ok) | ``bad`` (always rejects the job).
    """

    kind: str = "ok"
    n: int = 0
    retry_after: int = 3


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def job(image: int, job_id: str = "job-1") -> JobCommand:
    return JobCommand.model_validate(
        {
            "job_id": job_id,
            "run_id": "run-1",
            "tenant": "t1",
            "image_digest": digest(image),
            "kind": "reevaluate",
            "priority": "high",
            "window_start": T0,
            "window_end": T0,
            "deadline": T0 + timedelta(hours=1),
            "reasons": [],
            "inputs": JobInputs(policy_revision=7),
        }
    )


class ExecutorContract:
    """Subclass as ``Test...``: ``engine(scripts)`` yields an executor whose remote side behaves per
    image digest as scripted (``ok`` for digests without a script); an engine that answers ok answers
    ``findings`` (in any order) and ``verdict``."""

    findings: list[Finding]
    verdict: str = "fail"

    def engine(self, scripts: Mapping[str, Script]) -> AbstractAsyncContextManager[Executor]:
        raise NotImplementedError

    async def calls(self, executor: Executor, j: JobCommand, n: int) -> list[ExecOutcome]:
        return [await execute_with_timeout(executor, j, ATTEMPT_TIMEOUT_S + 5) for _ in range(n)]

    async def test_ok_gives_sorted_findings_and_the_verdict(self) -> None:
        async with self.engine({}) as executor:
            (outcome,) = await self.calls(executor, job(1), 1)
        assert outcome == Ok(sort_findings(self.findings), "fail")
        assert self.verdict == "fail"

    async def test_unavailable_is_transient_until_it_answers(self) -> None:
        async with self.engine({digest(2): Script("flaky", n=2)}) as executor:
            outcomes = await self.calls(executor, job(2), 3)
        assert [type(o) for o in outcomes] == [Transient, Transient, Ok]

    async def test_server_error_stays_transient(self) -> None:
        async with self.engine({digest(3): Script("down")}) as executor:
            outcomes = await self.calls(executor, job(3), 3)
        assert all(isinstance(o, Transient) for o in outcomes)

    async def test_rate_limit_carries_retry_after(self) -> None:
        async with self.engine({digest(4): Script("limited", n=1, retry_after=7)}) as executor:
            first, second = await self.calls(executor, job(4), 2)
        assert isinstance(first, Transient)
        assert first.retry_after_s == 7
        assert isinstance(second, Ok)

    async def test_rejection_is_permanent_every_time(self) -> None:
        async with self.engine({digest(5): Script("bad")}) as executor:
            outcomes = await self.calls(executor, job(5), 2)
        assert all(isinstance(o, Permanent) for o in outcomes)

    async def test_an_attempt_past_its_timeout_is_a_timeout(self) -> None:
        async with self.engine({digest(6): Script("hang", n=1)}) as executor:
            first, second = await self.calls(executor, job(6), 2)
        assert isinstance(first, Timeout)
        assert isinstance(second, Ok)

    async def test_scripts_are_per_image(self) -> None:
        scripts = {digest(7): Script("bad"), digest(8): Script("flaky", n=1)}
        async with self.engine(scripts) as executor:
            bad = await self.calls(executor, job(7), 1)
            flaky = await self.calls(executor, job(8, "job-2"), 2)
            fine = await self.calls(executor, job(9, "job-3"), 1)
        assert [type(o) for o in bad + flaky + fine] == [Permanent, Transient, Ok, Ok]
