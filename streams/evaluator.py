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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from schemas.messages import (
    SEVERITY_RANK,
    AdvisoryDelta,
    AffectedPackage,
    Component,
    Finding,
    Inventory,
    PolicyRules,
    VexProduct,
    VexStatement,
)
from schemas.purl import Purl, normalise
from streams.findings import sort_findings

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


def _default_matcher() -> VersionMatcher:
    # Imported lazily so tests (and callers) can inject a matcher without the univers-backed module.
    from streams.versions import affected_versions_match

    return affected_versions_match


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


def vex_decision(
    hit_ids: frozenset[str], statements: list[VexStatement], inventory: Inventory, component: Component
) -> VexStatement | None:
    """The statement that governs a finding, or None when no statement applies."""
    applicable = [
        s
        for s in statements
        if hit_ids & {s.vulnerability, *s.aliases}
        and any(product_matches(p, inventory, component) for p in s.products)
    ]
    return max(applicable, key=_vex_order, default=None)


def _fails(finding: Finding, rules: PolicyRules) -> bool:
    allowed = set(rules.allow_ids)
    if finding.id in allowed or allowed.intersection(finding.aliases):
        return False
    if rules.fail_on_kev and finding.kev:
        return True
    return SEVERITY_RANK[finding.severity] >= SEVERITY_RANK[rules.severity_threshold]


def verdict_for(findings: Iterable[Finding], rules: PolicyRules) -> Verdict:
    return "fail" if any(_fails(f, rules) for f in findings) else "pass"


def evaluate(
    inventory: Inventory,
    advisories: Iterable[AdvisoryDelta],
    vex: Iterable[VexStatement],
    rules: PolicyRules,
    *,
    matcher: VersionMatcher | None = None,
) -> tuple[list[Finding], Verdict]:
    """Findings (sorted, one per vulnerability/package/version) and the policy verdict."""
    match = matcher or _default_matcher()
    index = _candidates(advisories)
    statements = [s for s in vex if s.tenant is None or s.tenant == inventory.tenant]
    found: dict[tuple[str, str, str], Finding] = {}
    for component in inventory.components:
        for adv, affected in index.get(component.package, ()):
            key = (adv.id, component.package, component.version or "")
            if key in found or not match(affected, component.version):
                continue
            hit = _Hit(adv, component)
            decision = vex_decision(hit.vuln_ids, statements, inventory, component)
            if decision is not None and decision.status in SUPPRESSING:
                continue
            found[key] = Finding(
                id=adv.id,
                package=component.package,
                version=component.version,
                severity=adv.severity,
                kev=adv.kev,
                aliases=sorted(set(adv.aliases)),
            )
    findings = sort_findings(found.values())
    return findings, verdict_for(findings, rules)
