"""Policy simulation: what would activating a candidate policy change? Pure (docs/architecture.md §10).

The reference evaluator's findings do not depend on the policy (the rules only judge them), so an image's
simulated verdict is its findings judged by the candidate rules (``streams.evaluator.verdict_for``), and a
finding *flips* when ``policy_decision`` gives it another effect under the candidate than under the rules
that produced the live verdict. An image never evaluated has no live verdict to compare with: it is counted
as ``not_evaluated``, never guessed. What failed live is read from the evaluation's explain traces (the
policy rule recorded per finding), so no assumption about the live rules is needed when traces exist.

Deterministic: images are sorted by digest, flip lists by id then package, and the simulation id is a hash
of what was asked, so the same request over the same state gives the same bytes (and signature).

Queue mode (docs/simulation.md): a ``SimulationRequest`` is a run whose id is the simulation id, with one
``background`` job per selected image (``plan``) carrying the candidate rules (``JobInputs.simulation``).
Those jobs run in their own lane of the queue (``streams.fairness``), are evaluated with the worker's
current knowledge and the candidate rules, and their results (``image_result``: the image's live state is
its last live result) go only to the run and to this fold (``apply``), never to a live read model. When the
run is terminal and every job's result is in, the fold emits the ``SimulationCompleted`` once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from schemas.canonical import dumps, loads
from schemas.messages import (
    TERMINAL_RUN_STATES,
    Finding,
    JobCommand,
    JobInputs,
    JobResult,
    Model,
    PolicyRules,
    Reason,
    RunEvent,
    RunPlanned,
    Selector,
    SimulationCompleted,
    SimulationImage,
    SimulationInputs,
    SimulationRequest,
    SimulationTotals,
    Timestamp,
)
from streams.evaluator import policy_decision, verdict_for

SIMULATION_PREFIX = "sim-"
SIMULATION_END = "sim."  # the first string after every "sim-…" id: a key range of simulation runs
# A simulation job has no live SLA; its deadline only bounds its retries (streams.retry gives up after it).
SIMULATION_DEADLINE = timedelta(hours=24)

Verdict = Literal["pass", "fail", "unknown"]


@dataclass(frozen=True, slots=True)
class LiveImage:
    """An image's live state: its last completed evaluation (``verdict`` unknown when there is none).

    ``failing``: the findings ('id package') the live policy made fail, as the evaluation's explain traces
    recorded them; None when the evaluation has no traces, and then the caller's live rules judge them."""

    digest: str
    verdict: Verdict
    findings: tuple[Finding, ...] = ()
    failing: frozenset[str] | None = None


def simulation_id(tenant: str, selector: Selector, rules: PolicyRules, nonce: str = "") -> str:
    """Same tenant, selection, candidate rules (and idempotency key) → same id."""
    body = dumps(
        {
            "tenant": tenant,
            "selector": selector.model_dump(mode="json"),
            "rules": rules.model_dump(mode="json"),
            "nonce": nonce,
        }
    )
    return SIMULATION_PREFIX + hashlib.sha256(body).hexdigest()[:32]


def finding_label(finding_id: str, package: str) -> str:
    return f"{finding_id} {package}"


def _label(finding: Finding) -> str:
    return finding_label(finding.id, finding.package)


def _failing(findings: Iterable[Finding], rules: PolicyRules) -> set[str]:
    return {_label(f) for f in findings if policy_decision(f, rules).effect == "fail"}


def simulate_image(
    live: LiveImage,
    live_rules: PolicyRules,
    candidate: PolicyRules,
    simulated: Sequence[Finding] | None = None,
) -> SimulationImage:
    """``simulated``: the findings a re-evaluation produced (queue mode); default: the live findings."""
    if live.verdict == "unknown" and simulated is None:
        return SimulationImage(image_digest=live.digest, live_verdict="unknown", simulated_verdict="unknown")
    after = list(live.findings if simulated is None else simulated)
    before_failing = live.failing if live.failing is not None else _failing(live.findings, live_rules)
    after_failing = _failing(after, candidate)
    return SimulationImage(
        image_digest=live.digest,
        live_verdict=live.verdict,
        simulated_verdict=verdict_for(after, candidate),
        newly_failing=sorted(after_failing - before_failing),
        newly_passing=sorted(before_failing - after_failing),
    )


def totals(images: Iterable[SimulationImage]) -> SimulationTotals:
    count = to_fail = to_pass = unchanged = not_evaluated = newly_failing = newly_passing = 0
    failed = skipped = 0
    for image in images:
        count += 1
        newly_failing += len(image.newly_failing)
        newly_passing += len(image.newly_passing)
        if image.job_status == "failed":
            failed += 1
        elif image.job_status == "skipped":
            skipped += 1
        elif image.live_verdict == "unknown":
            not_evaluated += 1
        elif image.simulated_verdict == image.live_verdict:
            unchanged += 1
        elif image.simulated_verdict == "fail":
            to_fail += 1
        else:
            to_pass += 1
    return SimulationTotals(
        images=count,
        to_fail=to_fail,
        to_pass=to_pass,
        unchanged=unchanged,
        not_evaluated=not_evaluated,
        newly_failing=newly_failing,
        newly_passing=newly_passing,
        failed=failed,
        skipped=skipped,
    )


def simulate(
    tenant: str,
    selector: Selector,
    candidate: PolicyRules,
    live_rules: PolicyRules,
    images: Iterable[LiveImage],
    *,
    at: datetime,
    nonce: str = "",
) -> SimulationCompleted:
    """The completed simulation of ``candidate`` over ``images`` (already selected), judged from their live
    state. ``at`` is the event time the caller stands for (the request's), never the wall clock here."""
    by_digest = {i.digest: i for i in images}
    results = [simulate_image(by_digest[d], live_rules, candidate) for d in sorted(by_digest)]
    return SimulationCompleted(
        simulation_id=simulation_id(tenant, selector, candidate, nonce),
        tenant=tenant,
        at=at,
        mode="read-model",
        selector=selector,
        rules=candidate,
        images=results,
        totals=totals(results),
    )


# ---------------------------------------------------------------- queue mode


def is_simulation(message: JobCommand | JobResult) -> bool:
    """A simulation run's job (or its result): it takes the simulation lane and touches nothing live."""
    return message.inputs.simulation is not None


def is_simulation_run(run_id: str) -> bool:
    """Cheap test on a record key: simulation ids (= their run ids) carry a prefix no other run id has."""
    return run_id.startswith(SIMULATION_PREFIX)


def request(
    tenant: str,
    selector: Selector,
    rules: PolicyRules,
    images: Iterable[str],
    *,
    at: datetime,
    nonce: str,
    requested_by: str = "",
) -> SimulationRequest:
    """The queued simulation of ``rules`` over ``images`` (the selector's images, resolved by the caller).
    ``nonce``: the request id (an idempotency key): the same one repeats the same simulation."""
    return SimulationRequest(
        simulation_id=simulation_id(tenant, selector, rules, nonce),
        tenant=tenant,
        at=at,
        selector=selector,
        rules=rules,
        images=sorted(set(images)),
        requested_by=requested_by,
    )


def simulation_job_id(simulation: str, digest: str) -> str:
    return hashlib.sha256(f"simulation|{simulation}|{digest}".encode()).hexdigest()


def plan(req: SimulationRequest) -> tuple[RunPlanned, list[JobCommand]]:
    """The run of a request: one background job per image, ids from the simulation id and the digest."""
    inputs = JobInputs(simulation=SimulationInputs(simulation_id=req.simulation_id, rules=req.rules))
    reason = Reason(source="simulation", id=req.simulation_id, modified=req.at, detail="policy simulation")
    jobs = [
        JobCommand(
            job_id=simulation_job_id(req.simulation_id, digest),
            run_id=req.simulation_id,
            tenant=req.tenant,
            image_digest=digest,
            kind="reevaluate",
            priority="background",
            window_start=req.at,
            window_end=req.at,
            deadline=req.at + SIMULATION_DEADLINE,
            reasons=[reason],
            inputs=inputs,
        )
        for digest in req.images
    ]
    planned = RunPlanned(
        run_id=req.simulation_id, tenant=req.tenant, job_ids=sorted(j.job_id for j in jobs), at=req.at
    )
    return planned, jobs


def live_of(digest: str, previous: JobResult | None) -> LiveImage:
    """An image's live state from its last live result (what failed: the policy rule in its traces)."""
    if previous is None or previous.status != "completed":
        return LiveImage(digest, "unknown")
    failing = None
    if previous.traces or not previous.findings:
        failing = frozenset(
            finding_label(t.id, t.package)
            for t in previous.traces
            if t.outcome == "reported" and t.policy.effect == "fail"
        )
    return LiveImage(digest, previous.verdict, tuple(previous.findings), failing)


def image_result(result: JobResult, previous: JobResult | None) -> JobResult:
    """A simulation job's result with its image's comparison attached (live -> simulated, flips).
    ``previous``: the image's last live result. Results of live jobs are returned unchanged."""
    sim = result.inputs.simulation
    if sim is None:
        return result
    live = live_of(result.image_digest, previous)
    if result.status == "completed":
        image = simulate_image(live, PolicyRules(), sim.rules, simulated=result.findings)
        image = image.model_copy(update={"job_status": "completed"})
    else:
        image = SimulationImage(
            image_digest=result.image_digest,
            live_verdict=live.verdict,
            simulated_verdict="unknown",
            job_status=result.status,
        )
    return result.model_copy(update={"simulation": image})


class SimulationFold(Model):
    """Table value of one queued simulation (key: its id = run id)."""

    simulation_id: str
    request: SimulationRequest | None = None
    images: dict[str, SimulationImage] = {}
    run_state: str | None = None  # the run's state once terminal with every job done
    run_jobs: int = 0
    finished_at: Timestamp | None = None
    emitted: bool = False


SimulationInput = SimulationRequest | JobResult | RunEvent


def apply(
    fold: SimulationFold | None, event: SimulationInput
) -> tuple[SimulationFold, list[SimulationCompleted]]:
    """Fold one input; emits the ``SimulationCompleted`` once the request is known, the run is terminal
    with every job done (a cancelled run settles when its last running job ends) and every job's result
    is in. The three inputs come from different topics, in any order; the outcome does not depend on it."""
    key = event.simulation_id if isinstance(event, SimulationRequest) else event.run_id
    current = fold or SimulationFold(simulation_id=key)
    update: dict[str, object] = {}
    if isinstance(event, SimulationRequest):
        if current.request is None:
            update["request"] = event
    elif isinstance(event, JobResult):
        if event.simulation is not None and event.image_digest not in current.images:
            update["images"] = {**current.images, event.image_digest: event.simulation}
    elif (
        event.state in TERMINAL_RUN_STATES
        and event.jobs_done == event.jobs_total
        and current.run_state is None
    ):
        update.update(run_state=event.state, run_jobs=event.jobs_total, finished_at=event.at)
    if not update:
        return current, []
    new = current.model_copy(update=update)
    if new.emitted or new.request is None or new.run_state is None or len(new.images) < new.run_jobs:
        return new, []
    assert new.finished_at is not None
    done = completed(new.request, list(new.images.values()), new.run_state, new.finished_at)
    return new.model_copy(update={"emitted": True}), [done]


def completed(
    req: SimulationRequest, images: Sequence[SimulationImage], run_state: str, at: datetime
) -> SimulationCompleted:
    ordered = sorted(images, key=lambda i: i.image_digest)
    state = "cancelled" if run_state == "cancelled" else "error" if run_state == "error" else "completed"
    return SimulationCompleted(
        simulation_id=req.simulation_id,
        tenant=req.tenant,
        state=state,
        at=at,
        mode="queue",
        selector=req.selector,
        rules=req.rules,
        images=ordered,
        totals=totals(ordered),
    )


def encode_fold(fold: SimulationFold) -> bytes:
    return dumps(fold)


def decode_fold(data: bytes) -> SimulationFold:
    return SimulationFold.model_validate(loads(data))
