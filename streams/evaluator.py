"""The reference evaluator: an image's inventory against the advisories and VEX the scheduler holds. Pure.

Matching (docs/architecture.md §2): each component is a candidate for an advisory when their package keys
are equal; the exact version check (``streams.versions.affected_versions_match``) decides. A component without a
version, or one whose version the ecosystem cannot parse, is not a finding: the scheduler reports what it
can prove. Withdrawn advisories produce no findings; when the same advisory id appears more than once the
most recently modified record is used.

VEX: a statement applies to a finding when its vulnerability (or one of its aliases) is the advisory's id
or one of the advisory's aliases, and one of its products names either the image (``image_digest``, or an
``oci`` purl pinned by that digest) or the component (purl or package key; a product without a version
covers every version). Statements scoped to another tenant are ignored. Among the statements that apply,
the latest wins, ordered by timestamp then statement id so equal timestamps still have one answer.
``not_affected`` and ``fixed`` suppress the finding; ``affected`` and ``under_investigation`` keep it.

Policy (``PolicyRules``): the verdict is ``fail`` when at least one remaining finding whose id and aliases
are all absent from ``allow_ids`` has a severity ranked at or above ``severity_threshold``
(none < unknown < low < medium < high < critical), or is a KEV entry while ``fail_on_kev`` is set.
Otherwise ``pass``, including an image with no findings at all. Allow-listed findings are still reported;
they only stop counting toward the verdict.

Explain traces (``evaluate_explained``): every finding, and every match a VEX statement suppressed, carries a
``FindingTrace``: the advisory (id, modified), the range event pair (or listed version) that contains the
component's version, the VEX statements that applied (winner first, each with why) and the policy rule that
decided how it counts. The precedence and policy rules above are defined here once (``applicable_vex``,
``policy_decision``); the verdict and the traces are computed by the same functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from schemas.messages import (
    SEVERITY_RANK,
    AdvisoryDelta,
    AffectedPackage,
    Component,
    Finding,
    FindingTrace,
    Inventory,
    PolicyRules,
    PolicyTrace,
    RangeEvent,
    RangeTrace,
    VexConsidered,
    VexProduct,
    VexStatement,
)
from schemas.purl import Purl, normalise
from streams.findings import sort_findings, sort_traces

if TYPE_CHECKING:
    from streams.versions import MatchResult

Verdict = Literal["pass", "fail"]
VersionMatcher = Callable[[AffectedPackage, str | None], bool]

SUPPRESSING: frozenset[str] = frozenset({"not_affected", "fixed"})


@dataclass(frozen=True)
class _Hit:
    advisory: AdvisoryDelta
    component: Component

    @property
    def vuln_ids(self) -> frozenset[str]:
        return frozenset([self.advisory.id, *self.advisory.aliases])


def latest_advisories(advisories: Iterable[AdvisoryDelta]) -> list[AdvisoryDelta]:
    """One record per advisory id, the latest by ``modified`` (ties: the later one in the input)."""
    latest: dict[str, AdvisoryDelta] = {}
    for adv in advisories:
        seen = latest.get(adv.id)
        if seen is None or adv.modified >= seen.modified:
            latest[adv.id] = adv
    return [latest[k] for k in sorted(latest)]


def _candidates(
    advisories: Iterable[AdvisoryDelta],
) -> dict[str, list[tuple[AdvisoryDelta, AffectedPackage]]]:
    index: dict[str, list[tuple[AdvisoryDelta, AffectedPackage]]] = {}
    for adv in latest_advisories(advisories):
        if adv.withdrawn is not None:
            continue
        for affected in adv.affected:
            index.setdefault(affected.package, []).append((adv, affected))
    return index


@lru_cache(maxsize=16384)  # the same VEX products are matched against every finding of every job
def _parsed(purl: str | None) -> Purl | None:
    if not purl:
        return None
    result = normalise(purl)
    return result if isinstance(result, Purl) else None


def product_matches(product: VexProduct, inventory: Inventory, component: Component) -> bool:
    if product.image_digest and product.image_digest == inventory.image_digest:
        return True
    purl = _parsed(product.purl)
    if purl is not None:
        if purl.image_digest is not None:
            return purl.image_digest == inventory.image_digest
        component_purl = _parsed(component.purl)
        component_version = component.version or (component_purl.version if component_purl else None)
        return purl.package_key == component.package and (
            purl.version is None or purl.version == component_version
        )
    if product.package and product.package == component.package:
        return product.version is None or product.version == component.version
    return False


def _vex_order(statement: VexStatement) -> tuple[object, str]:
    return (statement.timestamp, statement.statement_id)


def _product_label(product: VexProduct) -> str:
    if product.image_digest:
        return product.image_digest
    if product.purl:
        return product.purl
    return f"{product.package}@{product.version}" if product.version else str(product.package)


VexIndex = dict[str, list[int]]


def index_vex(statements: list[VexStatement]) -> VexIndex:
    """Vulnerability id or alias → positions of the statements naming it, ascending. Built once per
    evaluation: scanning every statement for every finding was quadratic, and with a 20,000-statement
    VEX document held one job's evaluation on the worker's event loop for 10-50 s (docs/partitioning.md,
    failure modes)."""
    index: VexIndex = {}
    for position, s in enumerate(statements):
        for vuln in sorted({s.vulnerability, *s.aliases}):
            index.setdefault(vuln, []).append(position)
    return index


def applicable_vex(
    hit_ids: frozenset[str],
    statements: list[VexStatement],
    inventory: Inventory,
    component: Component,
    index: VexIndex | None = None,
) -> list[tuple[VexStatement, VexProduct]]:
    """The statements that apply to a finding, each with the product that matched, by precedence: the
    first one governs (latest timestamp, then highest statement id). `index`: `index_vex(statements)`,
    when the caller looks up many findings in the same statements."""
    by_vuln = index if index is not None else index_vex(statements)
    candidates = sorted({position for vuln in hit_ids for position in by_vuln.get(vuln, ())})
    applicable: list[tuple[VexStatement, VexProduct]] = []
    for s in (statements[position] for position in candidates):
        product = next((p for p in s.products if product_matches(p, inventory, component)), None)
        if product is not None:
            applicable.append((s, product))
    return sorted(applicable, key=lambda sp: _vex_order(sp[0]), reverse=True)


def vex_decision(
    hit_ids: frozenset[str], statements: list[VexStatement], inventory: Inventory, component: Component
) -> VexStatement | None:
    """The statement that governs a finding, or None when no statement applies."""
    ordered = applicable_vex(hit_ids, statements, inventory, component)
    return ordered[0][0] if ordered else None


def _vex_trace(ordered: list[tuple[VexStatement, VexProduct]]) -> list[VexConsidered]:
    out: list[VexConsidered] = []
    winner = ordered[0][0] if ordered else None
    for statement, product in ordered:
        assert winner is not None
        effect = "suppresses the finding" if statement.status in SUPPRESSING else "keeps the finding"
        if statement is winner:
            outcome = "won"
            why = f"latest applicable statement (timestamp, then statement id): {statement.status} {effect}"
        else:
            outcome = "overridden"
            tie = statement.timestamp == winner.timestamp
            why = f"overridden by {winner.statement_id}: " + (
                "same timestamp, its statement id sorts later" if tie else "later timestamp"
            )
        out.append(
            VexConsidered(
                document_id=statement.document_id,
                statement_id=statement.statement_id,
                status=statement.status,
                justification=statement.justification,
                timestamp=statement.timestamp,
                format=statement.format,
                product=_product_label(product),
                outcome=outcome,  # type: ignore[arg-type]
                why=why,
            )
        )
    return out


def policy_decision(finding: Finding, rules: PolicyRules) -> PolicyTrace:
    """The rule that decides whether ``finding`` makes the image fail (the only place the rules live)."""
    allowed = sorted({finding.id, *finding.aliases} & set(rules.allow_ids))
    if allowed:
        return PolicyTrace(
            rule="allow_ids", effect="pass", detail=f"{allowed[0]} is allow-listed: reported, not counted"
        )
    if rules.fail_on_kev and finding.kev:
        return PolicyTrace(
            rule="fail_on_kev", effect="fail", detail="known exploited (KEV) and fail_on_kev is set"
        )
    rank, threshold = SEVERITY_RANK[finding.severity], SEVERITY_RANK[rules.severity_threshold]
    if rank >= threshold:
        detail = f"severity {finding.severity} is at or above the threshold {rules.severity_threshold}"
        return PolicyTrace(rule="severity_threshold", effect="fail", detail=detail)
    detail = f"severity {finding.severity} is below the threshold {rules.severity_threshold}"
    return PolicyTrace(rule="severity_threshold", effect="pass", detail=detail)


def _fails(finding: Finding, rules: PolicyRules) -> bool:
    return policy_decision(finding, rules).effect == "fail"


def verdict_for(findings: Iterable[Finding], rules: PolicyRules) -> Verdict:
    return "fail" if any(_fails(f, rules) for f in findings) else "pass"


@dataclass(frozen=True)
class Evaluation:
    findings: list[Finding]
    verdict: Verdict
    traces: list[FindingTrace]


def _events(pairs: Iterable[tuple[str, str]]) -> list[RangeEvent]:
    return [RangeEvent.model_validate({kind: value}) for kind, value in pairs]


def range_trace(affected: AffectedPackage, result: MatchResult) -> RangeTrace:
    """The trace of an affected match (``streams.versions.match_affected``'s span)."""
    span = result.span
    if span is None:
        return RangeTrace(
            package=affected.package, ecosystem=affected.ecosystem, kind="matcher", reason=result.reason
        )
    return RangeTrace(
        package=affected.package,
        ecosystem=affected.ecosystem,
        kind=span.kind,  # type: ignore[arg-type]
        scheme=span.scheme,
        written=_events(span.written),
        normalised=_events(span.normalised),
        introduced=span.introduced,
        fixed=span.fixed,
        last_affected=span.last_affected,
        limit=span.limit,
        listed=span.listed,
        refused=list(span.refused),
        reason=result.reason,
    )


def _match(
    affected: AffectedPackage, version: str | None, matcher: VersionMatcher | None
) -> RangeTrace | None:
    if matcher is not None:
        if not matcher(affected, version):
            return None
        return RangeTrace(
            package=affected.package,
            ecosystem=affected.ecosystem,
            kind="matcher",
            reason="the matcher said so",
        )
    from streams.versions import match_affected

    result = match_affected(affected, version)
    return range_trace(affected, result) if result.affected else None


def evaluate_explained(
    inventory: Inventory,
    advisories: Iterable[AdvisoryDelta],
    vex: Iterable[VexStatement],
    rules: PolicyRules,
    *,
    matcher: VersionMatcher | None = None,
) -> Evaluation:
    """Findings (sorted, one per vulnerability/package/version), the verdict, and the explain traces."""
    index = _candidates(advisories)
    statements = [s for s in vex if s.tenant is None or s.tenant == inventory.tenant]
    by_vuln = index_vex(statements)
    found: dict[tuple[str, str, str], Finding] = {}
    traces: dict[tuple[str, str, str], FindingTrace] = {}
    for component in inventory.components:
        for adv, affected in index.get(component.package, ()):
            key = (adv.id, component.package, component.version or "")
            if key in found:
                continue
            matched = _match(affected, component.version, matcher)
            if matched is None:
                continue
            hit = _Hit(adv, component)
            ordered = applicable_vex(hit.vuln_ids, statements, inventory, component, by_vuln)
            decision = ordered[0][0] if ordered else None
            finding = Finding(
                id=adv.id,
                package=component.package,
                version=component.version,
                severity=adv.severity,
                kev=adv.kev,
                aliases=sorted(set(adv.aliases)),
            )
            suppressed = decision is not None and decision.status in SUPPRESSING
            if suppressed:
                assert decision is not None
                policy = PolicyTrace(
                    rule="vex",
                    effect="pass",
                    detail=f"suppressed by VEX {decision.statement_id} ({decision.status}): not a finding",
                )
            else:
                policy = policy_decision(finding, rules)
            trace = FindingTrace(
                id=adv.id,
                aliases=finding.aliases,
                modified=adv.modified,
                package=component.package,
                purl=component.purl,
                version=component.version,
                severity=adv.severity,
                kev=adv.kev,
                outcome="suppressed" if suppressed else "reported",
                range=matched,
                vex=_vex_trace(ordered),
                policy=policy,
            )
            if suppressed:
                traces.setdefault(key, trace)
                continue
            found[key] = finding
            traces[key] = trace
    findings = sort_findings(found.values())
    return Evaluation(findings, verdict_for(findings, rules), sort_traces(traces.values()))


def evaluate(
    inventory: Inventory,
    advisories: Iterable[AdvisoryDelta],
    vex: Iterable[VexStatement],
    rules: PolicyRules,
    *,
    matcher: VersionMatcher | None = None,
) -> tuple[list[Finding], Verdict]:
    """Findings (sorted, one per vulnerability/package/version) and the policy verdict."""
    result = evaluate_explained(inventory, advisories, vex, rules, matcher=matcher)
    return result.findings, result.verdict
