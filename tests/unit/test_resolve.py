"""Delta → impacted images: advisories (incl. withdrawn / narrowed), VEX, policy, rechecks, runtime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.messages import (
    AdvisoryDelta,
    Inventory,
    PolicyChange,
    Recheck,
    RuntimeEvent,
    Selector,
    VexStatement,
)
from streams.index import ImageRef, PackageEntry, SourcePosition, apply_index_updates, apply_inventory
from streams.resolve import (
    AdvisorySpecs,
    decode_advisory_requests,
    decode_specs,
    decode_vex_package_requests,
    encode_requests,
    encode_specs,
    resolve_advisory,
    resolve_policy,
    resolve_recheck,
    resolve_vex_package,
    split_advisory,
    split_vex,
    vex_requests,
    with_image_package,
)
from streams.tenants import (
    TenantCatalog,
    apply_inventory_to_catalog,
    apply_runtime,
    decode_catalog,
    encode_catalog,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class Estate:
    """A tiny in-memory index built through the real functions."""

    def __init__(self, images: dict[tuple[str, str], dict[str, str]], **meta: dict[str, object]) -> None:
        self.entries: dict[str, PackageEntry] = {}
        self.refs: dict[int, ImageRef] = {}
        self.catalogs: dict[str, TenantCatalog] = {}
        for offset, ((tenant, digest), comps) in enumerate(sorted(images.items())):
            inv = Inventory.model_validate(
                {
                    "tenant": tenant,
                    "image_digest": digest,
                    "components": [
                        {"purl": f"pkg:{p}@{v}", "package": p, "version": v} for p, v in comps.items()
                    ],
                    "observed_at": T0,
                    **meta.get(digest, {}),
                }
            )
            indexed = with_image_package(inv)
            out = apply_inventory(None, indexed, source=SourcePosition(0, offset), partitions=1)
            for u in out.updates:
                self.entries[u.package] = apply_index_updates(self.entries.get(u.package), [u])
            assert out.directory is not None
            assert out.directory[1] is not None
            self.refs[out.directory[0]] = out.directory[1]
            self.catalogs[tenant] = apply_inventory_to_catalog(self.catalogs.get(tenant), digest, inv)

    def lookup(self, image_id: int) -> ImageRef | None:
        return self.refs.get(image_id)

    def advisory(self, specs: dict[str, AdvisorySpecs], delta: AdvisoryDelta) -> list[tuple[str, str, str]]:
        _, requests = split_advisory(None, delta)
        out = []
        for req in requests:
            new, res = resolve_advisory(
                specs.get(req.package), req, self.entries.get(req.package), self.lookup
            )
            specs[req.package] = new
            out += [(i.tenant, i.image_digest, i.severity) for i in res.impacts]
        return sorted(out)


def advisory(
    fixed: str, *, modified: datetime = T0, withdrawn: bool = False, kev: bool = False
) -> AdvisoryDelta:
    return AdvisoryDelta.model_validate(
        {
            "id": "GHSA-xxxx",
            "modified": modified,
            "withdrawn": modified if withdrawn else None,
            "severity": "high",
            "kev": kev,
            "affected": [
                {
                    "package": "npm/a",
                    "ecosystem": "npm",
                    "name": "a",
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
                }
            ],
        }
    )


ESTATE = {
    ("t1", "sha256:old"): {"npm/a": "1.0.0", "npm/z": "1.0.0"},
    ("t1", "sha256:mid"): {"npm/a": "2.0.0"},
    ("t2", "sha256:new"): {"npm/a": "3.0.0"},
    ("t2", "sha256:none"): {"npm/b": "1.0.0"},
}


def test_advisory_hits_only_matching_versions_across_tenants() -> None:
    estate = Estate(ESTATE)
    assert estate.advisory({}, advisory("2.5.0")) == [
        ("t1", "sha256:mid", "high"),
        ("t1", "sha256:old", "high"),
    ]


def test_narrowed_ranges_still_reach_images_of_the_previous_spec() -> None:
    estate = Estate(ESTATE)
    specs: dict[str, AdvisorySpecs] = {}
    estate.advisory(specs, advisory("2.5.0"))
    later = advisory("1.5.0", modified=T0 + timedelta(days=1))
    assert estate.advisory(specs, later) == [("t1", "sha256:mid", "none"), ("t1", "sha256:old", "high")]


def test_withdrawn_advisory_reaches_previously_affected_images_without_severity() -> None:
    estate = Estate(ESTATE)
    specs: dict[str, AdvisorySpecs] = {}
    estate.advisory(specs, advisory("2.5.0", kev=True))
    gone = estate.advisory(
        specs, advisory("2.5.0", modified=T0 + timedelta(days=1), withdrawn=True, kev=True)
    )
    assert gone == [("t1", "sha256:mid", "none"), ("t1", "sha256:old", "none")]


def test_reapplying_a_delta_changes_nothing_and_resolves_the_same() -> None:
    estate = Estate(ESTATE)
    specs: dict[str, AdvisorySpecs] = {}
    estate.advisory(specs, advisory("2.5.0"))
    second = advisory("1.5.0", modified=T0 + timedelta(days=1))
    first_time = estate.advisory(specs, second)
    state = encode_specs(specs["npm/a"])
    assert estate.advisory(specs, second) == first_time
    assert encode_specs(specs["npm/a"]) == state
    assert decode_specs(state) == specs["npm/a"]


def test_an_older_revision_replayed_late_changes_nothing() -> None:
    estate = Estate(ESTATE)
    specs: dict[str, AdvisorySpecs] = {}
    estate.advisory(specs, advisory("2.5.0", modified=T0 + timedelta(days=1)))
    state = encode_specs(specs["npm/a"])
    assert estate.advisory(specs, advisory("9.0.0", modified=T0)) == []
    assert encode_specs(specs["npm/a"]) == state


def test_a_package_dropped_by_a_revision_is_still_resolved() -> None:
    first = advisory("2.5.0")
    second = AdvisoryDelta.model_validate(
        {**first.model_dump(by_alias=True), "modified": T0 + timedelta(days=1), "affected": []}
    )
    state, _ = split_advisory(None, first)
    state, requests = split_advisory(state, second)
    assert [(r.package, r.affected) for r in requests] == [("npm/a", [])]
    estate = Estate(ESTATE)
    specs: dict[str, AdvisorySpecs] = {}
    estate.advisory(specs, first)
    _new, res = resolve_advisory(specs["npm/a"], requests[0], estate.entries["npm/a"], estate.lookup)
    assert [(i.image_digest, i.severity) for i in res.impacts] == [
        ("sha256:mid", "none"),
        ("sha256:old", "none"),
    ]


def _vex(products: list[dict[str, str]], tenant: str | None = None) -> VexStatement:
    return VexStatement.model_validate(
        {
            "document_id": "doc",
            "statement_id": "doc#1",
            "vulnerability": "CVE-2024-1",
            "products": products,
            "status": "not_affected",
            "timestamp": T0,
            "tenant": tenant,
        }
    )


def test_vex_by_purl_with_and_without_version_and_by_digest() -> None:
    estate = Estate(ESTATE)
    statement = _vex([{"purl": "pkg:npm/a@2.0.0"}, {"purl": "pkg:npm/z"}, {"image_digest": "sha256:new"}])
    by_pkg, _ = split_vex(statement)
    assert [(r.package, r.version) for r in by_pkg] == [("npm/a", "2.0.0"), ("npm/z", None)]
    hits = []
    for r in by_pkg:
        hits += [
            i.image_digest
            for i in resolve_vex_package(r, estate.entries.get(r.package), estate.lookup).impacts
        ]
    assert sorted(hits) == ["sha256:mid", "sha256:old"]
    by_digest = [r for r in vex_requests(statement) if r not in by_pkg]
    assert [
        i.image_digest
        for r in by_digest
        for i in resolve_vex_package(r, estate.entries.get(r.package), estate.lookup).impacts
    ] == ["sha256:new"]


def test_vex_scoped_to_a_tenant() -> None:
    estate = Estate(ESTATE)
    by_pkg, _ = split_vex(_vex([{"package": "npm/a"}], tenant="t2"))
    res = resolve_vex_package(by_pkg[0], estate.entries["npm/a"], estate.lookup)
    assert [(i.tenant, i.image_digest) for i in res.impacts] == [("t2", "sha256:new")]


def test_policy_and_recheck_follow_the_selector() -> None:
    estate = Estate(
        ESTATE,
        **{
            "sha256:old": {"namespaces": ["prod"], "labels": {"team": "a"}},
            "sha256:mid": {"namespaces": ["dev"]},
        },
    )
    catalog = estate.catalogs["t1"]
    assert decode_catalog(encode_catalog(catalog)) == catalog
    change = PolicyChange.model_validate(
        {
            "tenant": "t1",
            "policy_id": "p",
            "revision": 3,
            "activated_at": T0,
            "selector": {"namespaces": ["prod"]},
        }
    )
    res = resolve_policy(catalog, change)
    assert [(i.image_digest, i.policy_revision) for i in res.impacts] == [("sha256:old", 3)]
    everything = resolve_policy(catalog, change.model_copy(update={"selector": Selector(all=True)}))
    assert [i.image_digest for i in everything.impacts] == ["sha256:mid", "sha256:old"]
    recheck = Recheck.model_validate(
        {
            "tenant": "t1",
            "recheck_id": "r1",
            "requested_at": T0,
            "selector": {"labels": {"team": "a"}},
            "kind": "rescan",
            "priority": "high",
        }
    )
    got = resolve_recheck(catalog, recheck).impacts
    assert [(i.image_digest, i.kind, i.priority) for i in got] == [("sha256:old", "rescan", "high")]
    assert resolve_recheck(catalog, recheck.model_copy(update={"selector": Selector()})).impacts == []
    assert got[0].retry_of is None
    retry = recheck.model_copy(update={"retry_of": "run-old"})
    assert [i.retry_of for i in resolve_recheck(catalog, retry).impacts] == ["run-old"]


def test_runtime_start_is_an_impact_once() -> None:
    event = RuntimeEvent.model_validate(
        {
            "tenant": "t1",
            "image_digest": "sha256:old",
            "cluster": "c",
            "namespace": "n",
            "state": "running",
            "observed_at": T0,
        }
    )
    state, impact = apply_runtime(None, event)
    assert impact is not None
    assert impact.running
    state, again = apply_runtime(state, event)
    assert again is None
    state, _ = apply_runtime(state, event.model_copy(update={"state": "stopped"}))
    assert not state.running


def test_batched_requests_round_trip() -> None:
    delta = advisory("2.5.0").model_copy(
        update={
            "affected": [
                *advisory("2.5.0").affected,
                advisory("1.0.0").affected[0].model_copy(update={"package": "npm/b"}),
            ]
        }
    )
    _, requests = split_advisory(None, delta)
    assert len(requests) == 2
    assert decode_advisory_requests(encode_requests(requests)) == requests
    vex = vex_requests(_vex([{"purl": "pkg:npm/a@1.0.0"}, {"purl": "pkg:npm/b"}]))
    assert vex
    assert decode_vex_package_requests(encode_requests(vex)) == vex
