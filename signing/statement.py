"""in-toto Statement v1 payloads for the signed-events topic (docs/architecture.md §7).

The subject is what a consumer looks the event up by: the image digest for job completions and SLA breaches,
the run id for run completions, the simulation id for simulation completions. The predicate is the completion message itself, so a verifier needs nothing
but the envelope. Payload bytes come from the canonical encoder (sorted keys, no floats), which is what makes
replays reproduce payloads, event ids and Ed25519 signatures byte for byte.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from nacl.signing import SigningKey as _NaclSigningKey

from schemas.canonical import dumps
from schemas.messages import JobResult, RunEvent, SignedEnvelope, SimulationCompleted, SlaBreach
from signing.dsse import PAYLOAD_TYPE_INTOTO, sign
from signing.keys import SigningKey

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_JOB_COMPLETED = "https://stellaops.io/scheduler/job-completed/v1"
PREDICATE_RUN_COMPLETED = "https://stellaops.io/scheduler/run-completed/v1"
PREDICATE_SLA_BREACH = "https://stellaops.io/scheduler/sla-breach/v1"
PREDICATE_SIMULATION_COMPLETED = "https://stellaops.io/scheduler/simulation-completed/v1"

Completion = JobResult | RunEvent | SlaBreach | SimulationCompleted

_DIGEST = re.compile(r"^(?P<alg>[a-z0-9]+):(?P<hex>[0-9a-f]+)$")


def image_subject(image_digest: str) -> dict[str, Any]:
    """``sha256:<hex>`` -> ``{"name": digest, "digest": {"sha256": hex}}``."""
    match = _DIGEST.match(image_digest)
    if match is None:
        raise ValueError(f"not an image digest (algorithm:hex): {image_digest!r}")
    return {"name": image_digest, "digest": {match["alg"]: match["hex"]}}


def run_subject(run_id: str) -> dict[str, Any]:
    """A run has no content digest of its own, so its subject digest is the sha256 of the id's bytes."""
    return {"name": run_id, "digest": {"sha256": hashlib.sha256(run_id.encode("utf-8")).hexdigest()}}


def predicate_type_of(message: Completion) -> str:
    if isinstance(message, JobResult):
        return PREDICATE_JOB_COMPLETED
    if isinstance(message, RunEvent):
        return PREDICATE_RUN_COMPLETED
    if isinstance(message, SimulationCompleted):
        return PREDICATE_SIMULATION_COMPLETED
    return PREDICATE_SLA_BREACH


def build_statement(message: Completion) -> dict[str, Any]:
    if isinstance(message, RunEvent):
        subject = run_subject(message.run_id)
    elif isinstance(message, SimulationCompleted):
        subject = run_subject(message.simulation_id)  # like a run: no content digest of its own
    else:
        subject = image_subject(message.image_digest)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [subject],
        "predicateType": predicate_type_of(message),
        "predicate": message.model_dump(mode="json", by_alias=True),
    }


def statement_bytes(message: Completion) -> bytes:
    """Canonical payload bytes (raises ``CanonicalError`` on floats)."""
    return dumps(build_statement(message))


def event_id(payload: bytes) -> str:
    """Content id of a signed event: consumers dedupe on it, replays reproduce it."""
    return hashlib.sha256(payload).hexdigest()


def sign_completion(
    message: Completion, keys: Sequence[SigningKey | _NaclSigningKey]
) -> tuple[str, SignedEnvelope]:
    """``(event id, envelope)`` for a completion message."""
    payload = statement_bytes(message)
    return event_id(payload), sign(PAYLOAD_TYPE_INTOTO, payload, keys)
