"""Policy simulation: what would activating a candidate policy change? Pure (docs/architecture.md §10).

The reference evaluator's findings do not depend on the policy (the rules only judge them), so an image's
simulated verdict is its findings judged by the candidate rules (``streams.evaluator.verdict_for``), and a
finding *flips* when ``policy_decision`` gives it another effect under the candidate than under the rules
that produced the live verdict. An image never evaluated has no live verdict to compare with: it is counted
as ``not_evaluated``, never guessed. What failed live is read from the evaluation's explain traces (the
policy rule recorded per finding), so no assumption about the live rules is needed when traces exist.

Deterministic: images are sorted by digest, flip lists by id then package, and the simulation id is a hash
of what was asked, so the same request over the same state gives the same bytes (and signature).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from schemas.canonical import dumps
from schemas.messages import (
    Finding,
    PolicyRules,
    Selector,
    SimulationCompleted,
    SimulationImage,
    SimulationTotals,
)
from streams.evaluator import policy_decision, verdict_for

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
    return "sim-" + hashlib.sha256(body).hexdigest()[:32]


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
    for image in images:
        count += 1
        newly_failing += len(image.newly_failing)
        newly_passing += len(image.newly_passing)
        if image.live_verdict == "unknown":
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
