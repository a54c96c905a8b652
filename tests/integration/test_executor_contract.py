"""The Executor contract (tests/contracts/executor.py) against HttpExecutor and a real HTTP engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import pytest

from agents.executors import Executor, HttpExecutor
from schemas.messages import Finding
from tests.contracts.executor import ATTEMPT_TIMEOUT_S, ExecutorContract, Script
from tests.integration.executor_kit import FINDINGS, Behaviour, scripted_engine

pytestmark = pytest.mark.integration


class TestHttpExecutor(ExecutorContract):
    findings = [Finding.model_validate(f) for f in FINDINGS]

    @asynccontextmanager
    async def engine(self, scripts: Mapping[str, Script]) -> AsyncIterator[Executor]:
        behaviours = {
            d: Behaviour(s.kind, s.n, s.retry_after, hang_s=ATTEMPT_TIMEOUT_S + 1.0)
            for d, s in scripts.items()
        }
        with scripted_engine(behaviours) as srv:
            async with HttpExecutor(srv.url, timeout_s=ATTEMPT_TIMEOUT_S) as executor:
                yield executor
