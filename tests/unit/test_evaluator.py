from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.messages import (
    AdvisoryDelta,
    AffectedPackage,
    Component,
    Inventory,
    PolicyRules,
    VexStatement,
)
from streams.evaluator import evaluate, verdict_for

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def listed_only(affected: AffectedPackage, version: str | None) -> bool:
    """Test double for streams.versions: explicit version lists only."""
    return version is not None and version in affected.versions


def inv(*components: tuple[str, str | None], tenant: str = "t1") -> Inventory:
    return Inventory(
        schema="scheduler.inventory@1",
        source="",
        tenant=tenant,
        image_digest=DIGEST,
        components=[
            Component(
                purl=f"pkg:{pkg}@{ver}" if ver else f"pkg:{pkg}",
                package=pkg,
                version=ver,
            )
            for pkg, ver in components
        ],
        observed_at=T0,
    )


def adv(vid: str, pkg: str, versions: list[str], **kw: Any) -> AdvisoryDelta:
    eco = {"npm": "npm", "pypi": "PyPI"}[pkg.split("/")[0]]
    return AdvisoryDelta(
        id=vid,
        modified=kw.pop("modified", T0),
        affected=[AffectedPackage(package=pkg, ecosystem=eco, name=pkg.split("/")[-1], versions=versions)],
        **kw,
    )


def vex(vid: str, status: str, at: datetime = T0, sid: str = "s1", **product: Any) -> VexStatement:
    return VexStatement.model_validate(
        {
            "document_id": "d1",
            "statement_id": sid,
            "vulnerability": vid,
            "products": [product],
            "status": status,
            "timestamp": at,
            "tenant": product.pop("tenant", None),
        }
    )


RULES = PolicyRules()


def test_match_by_package_then_version() -> None:
    image = inv(("npm/lodash", "4.17.20"), ("npm/left-pad", "1.0.0"), ("pypi/requests", "2.0"))
    advisories = [
        adv("GHSA-1", "npm/lodash", ["4.17.20"], severity="high"),
        adv("GHSA-2", "npm/lodash", ["4.17.21"], severity="critical"),
        adv("PYSEC-1", "pypi/requests", ["2.0"], severity="medium", aliases=["CVE-9"]),
    ]
    findings, verdict = evaluate(image, advisories, [], RULES, matcher=listed_only)
    assert [(f.id, f.package) for f in findings] == [("GHSA-1", "npm/lodash"), ("PYSEC-1", "pypi/requests")]
    assert findings[1].aliases == ["CVE-9"]
    assert verdict == "fail"


def test_real_version_ranges_via_streams_versions() -> None:
    image = inv(("npm/lodash", "4.17.20"), ("npm/other", "2.0.0"))
    advisory = AdvisoryDelta.model_validate(
        {
            "id": "GHSA-r",
            "modified": T0,
            "severity": "critical",
            "affected": [
                {
                    "package": "npm/lodash",
                    "ecosystem": "npm",
                    "name": "lodash",
                    "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "4.17.21"}]}],
                },
                {
                    "package": "npm/other",
                    "ecosystem": "npm",
                    "name": "other",
                    "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.5.0"}]}],
                },
            ],
        }
    )
    findings, verdict = evaluate(image, [advisory], [], RULES)
    assert [(f.id, f.package) for f in findings] == [("GHSA-r", "npm/lodash")]
    assert verdict == "fail"


def test_withdrawn_and_superseded_advisories() -> None:
    image = inv(("npm/a", "1.0"))
    old = adv("GHSA-1", "npm/a", ["1.0"], severity="low")
    withdrawn = adv("GHSA-1", "npm/a", ["1.0"], modified=T0 + timedelta(days=1), withdrawn=T0)
    assert evaluate(image, [old], [], RULES, matcher=listed_only)[0] != []
    assert evaluate(image, [old, withdrawn], [], RULES, matcher=listed_only) == ([], "pass")
    assert evaluate(image, [withdrawn, old], [], RULES, matcher=listed_only) == ([], "pass")


def test_component_without_version_is_not_a_finding() -> None:
    image = inv(("npm/a", None))
    assert evaluate(image, [adv("GHSA-1", "npm/a", ["1.0"])], [], RULES, matcher=listed_only) == ([], "pass")


def test_vex_not_affected_by_digest_purl_package_and_alias() -> None:
    image = inv(("npm/a", "1.0"))
    a = [adv("GHSA-1", "npm/a", ["1.0"], aliases=["CVE-1"], severity="critical")]
    suppressing: list[dict[str, Any]] = [
        {"image_digest": DIGEST},
        {"purl": f"pkg:oci/app@{DIGEST}"},
        {"purl": "pkg:npm/a@1.0"},
        {"purl": "pkg:npm/a"},
        {"package": "npm/a", "version": "1.0"},
        {"package": "npm/a"},
    ]
    for product in suppressing:
        assert evaluate(image, a, [vex("CVE-1", "not_affected", **product)], RULES, matcher=listed_only) == (
            [],
            "pass",
        ), product
    other: list[dict[str, Any]] = [
        {"image_digest": "sha256:other"},
        {"purl": "pkg:npm/a@2.0"},
        {"package": "npm/b"},
    ]
    for product in other:
        findings, _ = evaluate(image, a, [vex("CVE-1", "fixed", **product)], RULES, matcher=listed_only)
        assert len(findings) == 1, product


def test_vex_latest_wins_and_tenant_scope() -> None:
    image = inv(("npm/a", "1.0"))
    a = [adv("GHSA-1", "npm/a", ["1.0"], severity="high")]
    na = vex("GHSA-1", "not_affected", T0, "s1", image_digest=DIGEST)
    aff = vex("GHSA-1", "affected", T0 + timedelta(hours=1), "s2", image_digest=DIGEST)
    assert len(evaluate(image, a, [na, aff], RULES, matcher=listed_only)[0]) == 1
    assert len(evaluate(image, a, [aff, na], RULES, matcher=listed_only)[0]) == 1
    later_na = vex("GHSA-1", "not_affected", T0 + timedelta(hours=2), "s0", image_digest=DIGEST)
    assert evaluate(image, a, [aff, later_na], RULES, matcher=listed_only)[0] == []
    # same timestamp: the greater statement id decides, whatever the input order
    tie_a = vex("GHSA-1", "under_investigation", T0, "s9", image_digest=DIGEST)
    assert len(evaluate(image, a, [na, tie_a], RULES, matcher=listed_only)[0]) == 1
    assert len(evaluate(image, a, [tie_a, na], RULES, matcher=listed_only)[0]) == 1
    other_tenant = vex("GHSA-1", "not_affected", image_digest=DIGEST, tenant="t2")
    assert len(evaluate(image, a, [other_tenant], RULES, matcher=listed_only)[0]) == 1


def test_policy_threshold_kev_and_allow_list() -> None:
    image = inv(("npm/a", "1.0"))
    medium_kev = [adv("GHSA-1", "npm/a", ["1.0"], severity="medium", kev=True, aliases=["CVE-1"])]
    assert evaluate(image, medium_kev, [], RULES, matcher=listed_only)[1] == "fail"
    no_kev = PolicyRules(fail_on_kev=False)
    assert evaluate(image, medium_kev, [], no_kev, matcher=listed_only)[1] == "pass"
    low_bar = PolicyRules(fail_on_kev=False, severity_threshold="medium")
    assert evaluate(image, medium_kev, [], low_bar, matcher=listed_only)[1] == "fail"
    allowed = PolicyRules(allow_ids=["CVE-1"])
    findings, verdict = evaluate(image, medium_kev, [], allowed, matcher=listed_only)
    assert (len(findings), verdict) == (1, "pass")  # still reported, no longer failing
    assert verdict_for([], RULES) == "pass"


def test_deterministic_order_independent_of_input_order() -> None:
    image = inv(("npm/b", "1"), ("npm/a", "1"), ("pypi/c", "1"))
    advisories = [adv(f"X-{p}", f"{p}", ["1"]) for p in ("npm/b", "npm/a", "pypi/c")]
    one = evaluate(image, advisories, [], RULES, matcher=listed_only)
    two = evaluate(image, list(reversed(advisories)), [], RULES, matcher=listed_only)
    assert one == two
    assert [f.package for f in one[0]] == ["npm/a", "npm/b", "pypi/c"]


# ---------------------------------------------------------------- ReferenceExecutor (agents.executors)


def _job(digest: str = DIGEST) -> Any:
    from schemas.messages import JobCommand, JobInputs

    return JobCommand(
        schema="scheduler.job-command@1",
        job_id="j1",
        run_id="r1",
        tenant="t1",
        image_digest=digest,
        kind="reevaluate",
        priority="normal",
        window_start=T0,
        window_end=T0,
        deadline=T0 + timedelta(hours=4),
        reasons=[],
        inputs=JobInputs(policy_revision=2),
    )


async def test_reference_executor_uses_lookup() -> None:
    from agents.executors import InMemoryLookup, Ok, ReferenceExecutor

    lookup = InMemoryLookup()
    lookup.add_inventory(inv(("npm/a", "1.0"), ("npm/b", "2.0")))
    lookup.advisories = [
        adv("GHSA-1", "npm/a", ["1.0"], severity="medium", aliases=["CVE-1"]),
        adv("GHSA-2", "npm/b", ["2.0"], severity="critical"),
        adv("GHSA-3", "npm/zzz", ["1.0"], severity="critical"),
    ]
    lookup.vex = [vex("CVE-1", "not_affected", image_digest=DIGEST)]
    lookup.tenant_rules["t1"] = PolicyRules(allow_ids=["GHSA-2"])
    outcome = await ReferenceExecutor(lookup, matcher=listed_only).execute(_job())
    assert isinstance(outcome, Ok)
    assert [f.id for f in outcome.findings] == ["GHSA-2"]
    assert outcome.verdict == "pass"


async def test_reference_executor_failures_are_classified() -> None:
    from agents.executors import InMemoryLookup, Permanent, ReferenceExecutor, Transient

    lookup = InMemoryLookup()
    assert isinstance(await ReferenceExecutor(lookup).execute(_job()), Permanent)  # unknown image

    class Broken(InMemoryLookup):
        async def advisories_for(self, packages: Any) -> Any:
            raise ConnectionError("store down")

    broken = Broken()
    broken.add_inventory(inv(("npm/a", "1.0")))
    outcome = await ReferenceExecutor(broken).execute(_job())
    assert isinstance(outcome, Transient)
    assert "store down" in outcome.error

    def crash(affected: AffectedPackage, version: str | None) -> bool:
        raise RuntimeError("bug")

    ok_lookup = InMemoryLookup(advisories=[adv("GHSA-1", "npm/a", ["1.0"])])
    ok_lookup.add_inventory(inv(("npm/a", "1.0")))
    assert isinstance(await ReferenceExecutor(ok_lookup, matcher=crash).execute(_job()), Permanent)
