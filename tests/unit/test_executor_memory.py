"""The Executor contract (tests/contracts/executor.py) against the in-memory twin, MemoryExecutor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from agents.executors import ExecOutcome, Executor, MemoryExecutor, Ok, Permanent, Timeout, Transient
from schemas.messages import Finding
from streams.findings import sort_findings
from tests.contracts.executor import ExecutorContract, Script

FINDINGS = [
    Finding(id="CVE-2", package="npm/b", severity="high"),
    Finding(id="CVE-1", package="npm/a", severity="critical", kev=True),
]


class TestMemoryExecutor(ExecutorContract):
    findings = FINDINGS

    def outcomes(self, script: Script) -> list[ExecOutcome]:
        ok: ExecOutcome = Ok(sort_findings(self.findings), "fail")
        if script.kind == "flaky":
            return [*[Transient("HTTP 503")] * script.n, ok]
        if script.kind == "down":
            return [Transient("HTTP 500")]
        if script.kind == "limited":
            return [*[Transient("HTTP 429 rate limited", script.retry_after)] * script.n, ok]
        if script.kind == "hang":
            return [*[Timeout()] * script.n, ok]
        if script.kind == "bad":
            return [Permanent("HTTP 400")]
        return [ok]

    @asynccontextmanager
    async def engine(self, scripts: Mapping[str, Script]) -> AsyncIterator[Executor]:
        default = self.outcomes(Script())[0]
        yield MemoryExecutor({d: self.outcomes(s) for d, s in scripts.items()}, default)
