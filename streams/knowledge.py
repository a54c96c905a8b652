"""What the reference evaluator knows: the latest inventory per image, advisory per id, VEX statement per
id and policy per tenant, folded from the source topics.

It is a plain in-memory fold (no I/O): the worker feeds it records from the source topics, `preview` and
tests feed it messages directly. Newer wins by the message's own time or revision, never by arrival, so
any interleaving of partitions folds to the same knowledge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.messages import AdvisoryDelta, Inventory, PolicyChange, PolicyRules, VexStatement


@dataclass
class Knowledge:
    inventories: dict[tuple[str, str], Inventory] = field(default_factory=dict)
    advisories: dict[str, AdvisoryDelta] = field(default_factory=dict)
    by_package: dict[str, set[str]] = field(default_factory=dict)
    vex: dict[str, VexStatement] = field(default_factory=dict)
    by_vulnerability: dict[str, set[str]] = field(default_factory=dict)
    policies: dict[str, PolicyChange] = field(default_factory=dict)

    # ---------------------------------------------------------------- folding

    def absorb_inventory(self, key: str, inventory: Inventory | None) -> None:
        """`key` is the inventory topic's key `tenant/digest`; None is its tombstone."""
        tenant, _, digest = key.rpartition("/")
        if inventory is None:
            self.inventories.pop((tenant, digest), None)
            return
        current = self.inventories.get((inventory.tenant, inventory.image_digest))
        if current is None or inventory.observed_at >= current.observed_at:
            self.inventories[(inventory.tenant, inventory.image_digest)] = inventory

    def absorb_advisory(self, advisory: AdvisoryDelta) -> None:
        current = self.advisories.get(advisory.id)
        if current is not None and advisory.modified < current.modified:
            return
        if current is not None:
            for affected in current.affected:
                self.by_package.get(affected.package, set()).discard(advisory.id)
        self.advisories[advisory.id] = advisory
        for affected in advisory.affected:
            self.by_package.setdefault(affected.package, set()).add(advisory.id)

    def absorb_vex(self, statement: VexStatement) -> None:
        current = self.vex.get(statement.statement_id)
        if current is not None and statement.timestamp < current.timestamp:
            return
        self.vex[statement.statement_id] = statement
        for vuln in (statement.vulnerability, *statement.aliases):
            self.by_vulnerability.setdefault(vuln, set()).add(statement.statement_id)

    def absorb_policy(self, change: PolicyChange) -> None:
        current = self.policies.get(change.tenant)
        if current is None or change.revision >= current.revision:
            self.policies[change.tenant] = change

    # ---------------------------------------------------------------- queries

    def inventory(self, tenant: str, digest: str) -> Inventory | None:
        return self.inventories.get((tenant, digest))

    def advisories_for(self, packages: Sequence[str]) -> list[AdvisoryDelta]:
        ids = sorted({i for p in packages for i in self.by_package.get(p, ())})
        return [self.advisories[i] for i in ids]

    def vex_for(self, tenant: str, vulnerabilities: Sequence[str]) -> list[VexStatement]:
        ids = sorted({i for v in vulnerabilities for i in self.by_vulnerability.get(v, ())})
        return [s for s in (self.vex[i] for i in ids) if s.tenant is None or s.tenant == tenant]

    def rules(self, tenant: str, revision: int | None = None) -> PolicyRules | None:
        change = self.policies.get(tenant)
        return change.rules if change is not None else None

    def policy_revision(self, tenant: str) -> int | None:
        change = self.policies.get(tenant)
        return change.revision if change is not None else None
