"""Signs completion events (job completed or failed, run finished, SLA breach, simulation completed) as
in-toto statements in DSSE envelopes and publishes them to `events.signed`, keyed `tenant/subject`
(docs/architecture.md §7).

Stateless and deterministic: Ed25519 signatures and canonical payloads make a redelivered or replayed
completion produce the very same envelope, so consumers dedupe by event id (sha256 of the payload)."""

from __future__ import annotations

import logging
from typing import Any

import faust

from agents import observe
from agents.pipeline import Pipeline
from agents.shell import publish
from schemas.canonical import dumps
from schemas.messages import TERMINAL_RUN_STATES, JobResult, RunEvent, SimulationCompleted, SlaBreach
from signing.keys import SigningKey
from signing.statement import predicate_type_of, sign_completion

log = logging.getLogger("stella.signer")


def subject_of(message: JobResult | RunEvent | SlaBreach | SimulationCompleted) -> str:
    if isinstance(message, RunEvent):
        return message.run_id
    if isinstance(message, SimulationCompleted):
        return message.simulation_id
    return message.image_digest


def signable(message: Any) -> bool:
    if isinstance(message, JobResult):
        return message.status in ("completed", "failed")
    if isinstance(message, RunEvent):
        return message.state in TERMINAL_RUN_STATES
    return isinstance(message, SlaBreach | SimulationCompleted)


def register(pipe: Pipeline, key: SigningKey) -> None:
    @pipe.app.agent(pipe.source("job-results", "run-events", "sla-breaches", "simulations"), name="signer")
    async def signer_agent(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            decoded = await pipe.decode(event)
            if decoded is None or not signable(decoded.model):
                return
            message = decoded.model
            assert isinstance(message, JobResult | RunEvent | SlaBreach | SimulationCompleted)
            _event_id, envelope = sign_completion(message, [key])
            await publish(
                [pipe.out("events.signed", f"{message.tenant}/{subject_of(message)}", dumps(envelope))]
            )
            observe.signed(predicate_type_of(message))

        await pipe.run(stream, "signer", handle, batched=True)
