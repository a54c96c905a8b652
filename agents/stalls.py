"""Which agents cannot publish right now, so a stall is an alert and not a silent retry loop.

An agent whose outputs the broker does not acknowledge must not commit its input, so it keeps retrying; while
it does, the ``scheduler_publish_stalled{agent}`` gauge is 1 and the worker's ``/readyz`` says not ready with
the reason. The first successful batch clears it."""

from __future__ import annotations

import logging

from agents import observe

log = logging.getLogger("stella.stalls")
_stalled: dict[str, str] = {}


def mark(agent: str, detail: str) -> None:
    if agent not in _stalled:
        log.error("%s: cannot publish its outputs: %s (input not committed; retrying)", agent, detail)
    _stalled[agent] = detail
    observe.publish_stalled(agent, True)


def clear(agent: str) -> None:
    if _stalled.pop(agent, None) is not None:
        log.warning("%s: publishing again", agent)
        observe.publish_stalled(agent, False)


def current() -> dict[str, str]:
    return dict(_stalled)


async def readiness() -> tuple[bool, str]:
    """A ``telemetry.health`` check: not ready while any agent is stalled."""
    if not _stalled:
        return True, "publishing"
    return False, "; ".join(f"{agent}: {detail}" for agent, detail in sorted(_stalled.items()))
