"""Tripwires for the recovery stop found with chaos seed 447750 (docs/partitioning.md, failure table; not
fixed yet): a step of faust's recovery that outlives `broker_request_timeout` stops the recovery loop for
good. When these fail, faust or mode changed that behaviour: re-read the failure and its planned fix."""

from __future__ import annotations

import asyncio
import inspect

from faust.tables import recovery
from mode import Service


def test_wait_first_reports_a_timeout_as_a_stop() -> None:
    async def run() -> bool:
        service = Service()
        never = asyncio.Event()
        result = await service.wait_first(never.wait(), timeout=0.05)
        return bool(result.stopped)

    assert asyncio.run(run()), "mode's wait_first no longer reports a timeout as stopped"


def test_recovery_turns_that_stop_into_the_end_of_its_loop() -> None:
    wait = inspect.getsource(recovery.Recovery._wait)
    assert "if wait_result.stopped:" in wait
    assert "raise ServiceStopped()" in wait
    source = inspect.getsource(recovery)  # _restart_recovery is a mode ServiceTask: read it in the module
    loop = source.split("async def _restart_recovery", 1)[1].split("\n    async def ", 1)[0]
    assert "except ServiceStopped" in loop
    after = loop.split("except ServiceStopped", 1)[1].split("except", 1)[0]
    assert "break" in after, "faust's recovery loop no longer ends on ServiceStopped"
    completed = inspect.getsource(recovery.Recovery.on_recovery_completed)
    assert "timeout=self.app.conf.broker_request_timeout" in completed
