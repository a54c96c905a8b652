"""Offline impact preview: the stream's pure functions driven in memory (docs/architecture.md §8,
``preview``).

The driver keeps one dict per table the stream would keep and routes every message through the same
functions, in a deterministic order:

1. state inputs: inventories (by observed_at, then tenant/digest) through ``index.apply_inventory`` into
   the registry, package index, directory and tenant catalog; runtime events into their sites state. A
   preview asks "what do these deltas touch in this estate", so the estate is loaded before any delta,
   whatever the timestamps say (an SBOM taken today still holds a package an old advisory names).
2. deltas: advisories, VEX statements, policy changes, rechecks and the runtime start-ups, ordered by event
   time (then kind, then canonical bytes), resolved to impacts and folded into per-tenant windows, which
   are flushed at the end.

Inventory "new image" impacts are left out by default: every image would get a job and drown the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from schemas.canonical import dumps
from schemas.messages import (
    AdvisoryDelta,
    Impact,
    Inventory,
    JobCommand,
    PolicyChange,
    PolicyRules,
    Recheck,
    RuntimeEvent,
    VexStatement,
)
from streams.evaluator import Evaluation, evaluate_explained
from streams.index import (
    ImageKey,
    ImageRecord,
    ImageRef,
    IndexUpdate,
    PackageEntry,
    SourcePosition,
    apply_index_updates,
    apply_inventory,
)
from streams.jobs import DEFAULT_CONFIG, JobConfig
from streams.knowledge import Knowledge
from streams.resolve import (
    AdvisoryPackages,
    AdvisorySpecs,
    Resolution,
    VersionCheck,
    resolve_advisory,
    resolve_policy,
    resolve_recheck,
    resolve_vex_package,
    split_advisory,
    vex_requests,
    with_image_package,
)
from streams.tenants import (
    RuntimeSites,
    TenantCatalog,
    apply_inventory_to_catalog,
    apply_runtime,
    set_running,
)
from streams.windows import DEFAULT_GRACE, WindowState, add_impact, flush_idle


@dataclass(frozen=True, slots=True)
class CheckLine:
    """One (advisory, package@version) decision for one image."""

    advisory_id: str
    package: str
    version: str
    status: str  # affected | not_affected | unknown | no_longer_affected | withdrawn
    reason: str


@dataclass(frozen=True, slots=True)
class PreviewResult:
    jobs: list[JobCommand]
    explanations: dict[str, list[CheckLine]]  # "tenant/digest" → sorted lines
    impacts: int = 0
    late: int = 0
    images: int = 0
    notes: list[str] = field(default_factory=list)


_KIND_ORDER = {"runtime": 0, "advisory": 1, "vex": 2, "policy": 3, "recheck": 4}

Delta = AdvisoryDelta | VexStatement | PolicyChange | Recheck | Impact


def _event_time(delta: Delta) -> datetime:
    if isinstance(delta, AdvisoryDelta):
        return delta.modified
    if isinstance(delta, VexStatement):
        return delta.timestamp
    if isinstance(delta, PolicyChange):
        return delta.activated_at
    if isinstance(delta, Recheck):
        return delta.requested_at
    return delta.event_time


def _kind(delta: Delta) -> str:
    if isinstance(delta, AdvisoryDelta):
        return "advisory"
    if isinstance(delta, VexStatement):
        return "vex"
    if isinstance(delta, PolicyChange):
        return "policy"
    if isinstance(delta, Recheck):
        return "recheck"
    return "runtime"


def _check_line(check: VersionCheck, withdrawn: bool) -> CheckLine:
    if check.impacted and check.now.affected:
        status = "withdrawn" if withdrawn else "affected"
        reason = check.now.reason
    elif check.impacted:
        status, reason = "no_longer_affected", check.now.reason
    else:
        status, reason = check.now.status, check.now.reason
    return CheckLine(check.advisory_id, check.package, check.version, status, reason)


class _Driver:
    def __init__(self, window: int, grace: int, config: JobConfig) -> None:
        self.window, self.grace, self.config = window, grace, config
        self.records: dict[str, ImageRecord] = {}
        self.entries: dict[str, PackageEntry] = {}
        self.directory: dict[int, ImageRef] = {}
        self.catalogs: dict[str, TenantCatalog] = {}
        self.sites: dict[str, RuntimeSites] = {}
        self.split_state: dict[str, AdvisoryPackages] = {}
        self.specs: dict[str, AdvisorySpecs] = {}
        self.windows: dict[str, WindowState] = {}
        self.jobs: list[JobCommand] = []
        self.explanations: dict[str, set[CheckLine]] = {}
        self.offset = 0
        self.impacts = 0

    def _position(self) -> SourcePosition:
        self.offset += 1
        return SourcePosition(0, self.offset)

    def lookup(self, image_id: int) -> ImageRef | None:
        ref = self.directory.get(image_id)
        if ref is None:
            return None
        sites = self.sites.get(ImageKey(ref.tenant, ref.digest).text)
        return replace(ref, running=sites.running) if sites else ref

    def inventory(self, inv: Inventory) -> Impact | None:
        key = ImageKey(inv.tenant, inv.image_digest).text
        indexed = with_image_package(inv)
        out = apply_inventory(self.records.get(key), indexed, source=self._position(), partitions=1)
        if out.record is not None:
            self.records[key] = out.record
        by_package: dict[str, list[IndexUpdate]] = {}
        for update in out.updates:
            by_package.setdefault(update.package, []).append(update)
        for package in sorted(by_package):
            self.entries[package] = apply_index_updates(self.entries.get(package), by_package[package])
        if out.directory is not None:
            image_id, ref = out.directory
            if ref is None:
                self.directory.pop(image_id, None)
            else:
                self.directory[image_id] = ref
        self.catalogs[inv.tenant] = apply_inventory_to_catalog(
            self.catalogs.get(inv.tenant), inv.image_digest, inv
        )
        return out.impact

    def runtime(self, event: RuntimeEvent) -> Impact | None:
        key = ImageKey(event.tenant, event.image_digest).text
        state, impact = apply_runtime(self.sites.get(key), event)
        self.sites[key] = state
        self.catalogs[event.tenant] = set_running(
            self.catalogs.get(event.tenant), event.image_digest, state.running
        )
        return impact

    def _explain(self, resolution: Resolution, withdrawn: bool) -> None:
        for check in resolution.checks:
            line = _check_line(check, withdrawn)
            for image_id in check.image_ids:
                ref = self.directory.get(image_id)
                if ref is not None:
                    self.explanations.setdefault(ImageKey(ref.tenant, ref.digest).text, set()).add(line)

    def resolve(self, delta: Delta) -> list[Impact]:
        if isinstance(delta, Impact):
            return [delta]
        impacts: list[Impact] = []
        if isinstance(delta, AdvisoryDelta):
            state, requests = split_advisory(self.split_state.get(delta.id), delta)
            if state is not None:
                self.split_state[delta.id] = state
            for request in requests:
                specs, resolution = resolve_advisory(
                    self.specs.get(request.package), request, self.entries.get(request.package), self.lookup
                )
                self.specs[request.package] = specs
                self._explain(resolution, request.withdrawn)
                impacts += resolution.impacts
        elif isinstance(delta, VexStatement):
            for vrequest in vex_requests(delta):
                impacts += resolve_vex_package(
                    vrequest, self.entries.get(vrequest.package), self.lookup
                ).impacts
        elif isinstance(delta, PolicyChange):
            impacts += resolve_policy(self.catalogs.get(delta.tenant), delta).impacts
        else:
            impacts += resolve_recheck(self.catalogs.get(delta.tenant), delta).impacts
        return impacts

    def fold(self, impact: Impact) -> None:
        self.impacts += 1
        state, jobs = add_impact(
            self.windows.get(impact.tenant), impact, self.window, self.grace, self.config
        )
        self.windows[impact.tenant] = state
        self.jobs += jobs

    def flush(self) -> int:
        late = 0
        for tenant in sorted(self.windows):
            state, jobs = flush_idle(self.windows[tenant], self.window, self.config)
            self.windows[tenant] = state
            self.jobs += jobs
            late += state.late
        return late


def preview(
    inventories: Sequence[Inventory],
    advisories: Sequence[AdvisoryDelta] = (),
    vex: Sequence[VexStatement] = (),
    policies: Sequence[PolicyChange] = (),
    rechecks: Sequence[Recheck] = (),
    runtime: Sequence[RuntimeEvent] = (),
    window: int = 30,
    *,
    grace: int = DEFAULT_GRACE,
    config: JobConfig = DEFAULT_CONFIG,
    include_inventory_impacts: bool = False,
) -> PreviewResult:
    """The jobs the stream would emit for these inputs, with a per-image explanation."""
    driver = _Driver(window, grace, config)
    deltas: list[Delta] = [*advisories, *vex, *policies, *rechecks]
    for inv in sorted(inventories, key=lambda i: (i.observed_at, i.tenant, i.image_digest, dumps(i))):
        impact = driver.inventory(inv)
        if impact is not None and include_inventory_impacts:
            deltas.append(impact)
    for event in sorted(runtime, key=lambda e: (e.observed_at, e.tenant, e.image_digest, dumps(e))):
        impact = driver.runtime(event)
        if impact is not None:
            deltas.append(impact)
    deltas.sort(key=lambda d: (_event_time(d), _KIND_ORDER[_kind(d)], dumps(d)))
    for delta in deltas:
        for impact in driver.resolve(delta):
            driver.fold(impact)
    late = driver.flush()
    jobs = sorted(driver.jobs, key=lambda j: (j.window_start, j.tenant, j.image_digest, j.kind))
    explanations = {
        key: sorted(lines, key=lambda c: (c.advisory_id, c.package, c.version))
        for key, lines in sorted(driver.explanations.items())
    }
    return PreviewResult(jobs, explanations, driver.impacts, late, len(driver.records))


def explain_estate(
    inventories: Sequence[Inventory],
    advisories: Sequence[AdvisoryDelta] = (),
    vex: Sequence[VexStatement] = (),
    policies: Sequence[PolicyChange] = (),
) -> dict[str, Evaluation]:
    """What the reference evaluator would answer for every image, with explain traces ("tenant/digest" →
    evaluation), from the same knowledge fold the worker keeps: latest inventory, advisory revision, VEX
    statement and policy revision win whatever the input order."""
    knowledge = Knowledge()
    for inv in inventories:
        knowledge.absorb_inventory(ImageKey(inv.tenant, inv.image_digest).text, inv)
    for adv in advisories:
        knowledge.absorb_advisory(adv)
    for statement in vex:
        knowledge.absorb_vex(statement)
    for change in policies:
        knowledge.absorb_policy(change)
    out: dict[str, Evaluation] = {}
    for tenant, digest in sorted(knowledge.inventories):
        inventory = knowledge.inventories[(tenant, digest)]
        found = knowledge.advisories_for(sorted({c.package for c in inventory.components}))
        ids = sorted({i for a in found for i in (a.id, *a.aliases)})
        rules = knowledge.rules(tenant) or PolicyRules()
        out[ImageKey(tenant, digest).text] = evaluate_explained(
            inventory, found, knowledge.vex_for(tenant, ids), rules
        )
    return out
