"""Executor adapters (the imperative shell around job execution, docs/architecture.md §1 and §4).

An executor turns a JobCommand into one attempt's outcome. It never retries by itself: the retry core
(``streams.retry``) decides what follows, so retry behaviour is identical for every executor and survives
restarts. Outcomes are classified here, at the edge, because only the adapter knows what an error means:

- ``Ok``: findings, verdict and explain traces (the HTTP body may carry its own, else none);
- ``Transient``: worth retrying (5xx, 429 with its Retry-After, connection failures, lookup errors);
- ``Permanent``: retrying cannot help (4xx other than 429, malformed success body, unknown image,
  evaluator crash on deterministic input);
- ``Timeout``: the attempt exceeded its time limit (retried like a transient error).
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, Protocol

import httpx
from pydantic import ValidationError

from schemas.messages import (
    AdvisoryDelta,
    Attempt,
    Finding,
    FindingTrace,
    Inventory,
    JobCommand,
    PolicyRules,
    VexStatement,
)
from streams.evaluator import VersionMatcher, evaluate_explained
from streams.findings import sort_findings, sort_traces

Verdict = Literal["pass", "fail", "unknown"]


@dataclass(frozen=True)
class Ok:
    findings: list[Finding]
    verdict: Verdict
    traces: list[FindingTrace] = field(default_factory=list)


@dataclass(frozen=True)
class Transient:
    error: str
    retry_after_s: int | None = None


@dataclass(frozen=True)
class Permanent:
    error: str


@dataclass(frozen=True)
class Timeout:
    error: str = "timeout"


ExecOutcome = Ok | Transient | Permanent | Timeout


class Executor(Protocol):
    async def execute(self, job: JobCommand) -> ExecOutcome: ...


def attempt_of(outcome: ExecOutcome, number: int, at: datetime) -> Attempt:
    """The Attempt record the retry core and the JobResult keep for one outcome."""
    if isinstance(outcome, Ok):
        return Attempt(attempt=number, at=at, outcome="ok")
    if isinstance(outcome, Transient):
        return Attempt(
            attempt=number,
            at=at,
            outcome="transient",
            error=outcome.error,
            retry_after_s=outcome.retry_after_s,
        )
    if isinstance(outcome, Permanent):
        return Attempt(attempt=number, at=at, outcome="permanent", error=outcome.error)
    return Attempt(attempt=number, at=at, outcome="timeout", error=outcome.error)


async def execute_with_timeout(executor: Executor, job: JobCommand, timeout_s: float) -> ExecOutcome:
    """Bound any executor by the attempt timeout of the job's class (``RetryPolicy.timeout_for``)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await executor.execute(job)
    except TimeoutError:
        return Timeout(f"attempt exceeded {timeout_s:g}s")


# ---------------------------------------------------------------- reference evaluator


class EvaluationLookup(Protocol):
    """What the reference executor needs from the worker's tables (or any store)."""

    async def inventory(self, tenant: str, image_digest: str) -> Inventory | None: ...

    async def advisories_for(self, packages: Sequence[str]) -> Sequence[AdvisoryDelta]: ...

    async def vex_for(self, tenant: str, vulnerabilities: Sequence[str]) -> Sequence[VexStatement]: ...

    async def rules(self, tenant: str, policy_revision: int | None) -> PolicyRules | None: ...


@dataclass
class InMemoryLookup:
    """EvaluationLookup over plain dicts; for tests and the offline ``preview``."""

    inventories: dict[tuple[str, str], Inventory] = field(default_factory=dict)
    advisories: list[AdvisoryDelta] = field(default_factory=list)
    vex: list[VexStatement] = field(default_factory=list)
    tenant_rules: dict[str, PolicyRules] = field(default_factory=dict)

    def add_inventory(self, inventory: Inventory) -> None:
        self.inventories[(inventory.tenant, inventory.image_digest)] = inventory

    async def inventory(self, tenant: str, image_digest: str) -> Inventory | None:
        return self.inventories.get((tenant, image_digest))

    async def advisories_for(self, packages: Sequence[str]) -> Sequence[AdvisoryDelta]:
        wanted = set(packages)
        return [a for a in self.advisories if any(p.package in wanted for p in a.affected)]

    async def vex_for(self, tenant: str, vulnerabilities: Sequence[str]) -> Sequence[VexStatement]:
        wanted = set(vulnerabilities)
        return [
            s
            for s in self.vex
            if (s.tenant is None or s.tenant == tenant) and wanted & {s.vulnerability, *s.aliases}
        ]

    async def rules(self, tenant: str, policy_revision: int | None) -> PolicyRules | None:
        return self.tenant_rules.get(tenant)


class ReferenceExecutor:
    """Runs ``streams.evaluator`` on the image's inventory, the advisories / VEX held, the tenant's rules."""

    def __init__(self, lookup: EvaluationLookup, *, matcher: VersionMatcher | None = None) -> None:
        self._lookup = lookup
        self._matcher = matcher

    async def execute(self, job: JobCommand) -> ExecOutcome:
        try:
            inventory = await self._lookup.inventory(job.tenant, job.image_digest)
            if inventory is None:
                return Permanent(f"no inventory for image {job.image_digest}")
            packages = sorted({c.package for c in inventory.components})
            advisories = list(await self._lookup.advisories_for(packages))
            vuln_ids = sorted({i for a in advisories for i in (a.id, *a.aliases)})
            vex = list(await self._lookup.vex_for(job.tenant, vuln_ids)) if vuln_ids else []
            simulation = job.inputs.simulation  # a simulation judges by its candidate rules
            live = None if simulation else await self._lookup.rules(job.tenant, job.inputs.policy_revision)
            rules = simulation.rules if simulation else live or PolicyRules()
        except Exception as exc:  # a store hiccup: the same lookup may well succeed later
            return Transient(f"lookup failed: {type(exc).__name__}: {exc}")
        try:
            result = evaluate_explained(inventory, advisories, vex, rules, matcher=self._matcher)
        except Exception as exc:  # same inputs give the same crash: retrying only burns the budget
            return Permanent(f"evaluator failed: {type(exc).__name__}: {exc}")
        return Ok(result.findings, result.verdict, result.traces)


class MemoryExecutor:
    """The in-memory twin of a remote engine: per image digest, the outcomes of its successive calls (the
    last one repeats; ``default`` for digests without a script). Records every call's job id."""

    def __init__(
        self,
        scripts: Mapping[str, Sequence[ExecOutcome]] | None = None,
        default: ExecOutcome = Ok([], "pass"),
    ) -> None:
        self.scripts = {digest: list(outcomes) for digest, outcomes in (scripts or {}).items()}
        self.default = default
        self.calls: list[tuple[str, str]] = []  # (image digest, job id)

    async def execute(self, job: JobCommand) -> ExecOutcome:
        nth = sum(1 for digest, _ in self.calls if digest == job.image_digest)
        self.calls.append((job.image_digest, job.job_id))
        script = self.scripts.get(job.image_digest)
        if not script:
            return self.default
        return script[min(nth, len(script) - 1)]


# ---------------------------------------------------------------- remote scanner / policy engine


def parse_retry_after(value: str | None, now: datetime | None = None) -> int | None:
    """Retry-After as whole seconds: delta-seconds or an HTTP-date (relative to ``now``, else the clock)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)
    return max(0, int((when - reference).total_seconds() + 0.999))


def _server_now(response: httpx.Response) -> datetime | None:
    # Prefer the server's own clock for an HTTP-date Retry-After: both dates then come from one clock.
    date = response.headers.get("date")
    if not date:
        return None
    try:
        return email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HttpExecutor:
    """``POST {base_url}/reports`` on a Scanner / Policy Engine and classify the answer.

    ``timeout_s`` is one number for every job or a per-class mapping (the retry policy's attempt
    timeouts), and bounds the whole attempt, not only each socket read. The job id travels as the
    ``Idempotency-Key`` header so the remote side can dedupe a retried request.
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float | Mapping[str, float] = 30.0,
        client: httpx.AsyncClient | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/reports"
        self._timeout = timeout_s
        self._own_client = client is None
        self._client = client or httpx.AsyncClient()
        self._headers = dict(headers or {})

    def timeout_for(self, job: JobCommand) -> float:
        if isinstance(self._timeout, Mapping):
            return float(self._timeout.get(job.priority, 30.0))
        return float(self._timeout)

    @staticmethod
    def request_body(job: JobCommand) -> dict[str, object]:
        body: dict[str, object] = {
            "image_digest": job.image_digest,
            "mode": "content-refresh" if job.kind == "rescan" else "analysis-only",
            "policy_revision": job.inputs.policy_revision,
            "job_id": job.job_id,
        }
        if job.inputs.simulation is not None:
            # A simulation: judge by these candidate rules, and keep the verdict out of any live state.
            body["simulation"] = job.inputs.simulation.model_dump(mode="json")
        return body

    async def execute(self, job: JobCommand) -> ExecOutcome:
        timeout = self.timeout_for(job)
        try:
            async with asyncio.timeout(timeout):
                response = await self._client.post(
                    self._url,
                    json=self.request_body(job),
                    headers={**self._headers, "Idempotency-Key": job.job_id},
                    timeout=timeout,
                )
        except (TimeoutError, httpx.TimeoutException):
            return Timeout(f"no answer from {self._url} within {timeout:g}s")
        except httpx.TransportError as exc:
            return Transient(f"{type(exc).__name__}: {exc}")
        return self.classify(response)

    @staticmethod
    def classify(response: httpx.Response) -> ExecOutcome:
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"), _server_now(response))
            return Transient("HTTP 429 rate limited", retry_after)
        if status >= 500:
            return Transient(f"HTTP {status}: {_short(response.text)}")
        if status >= 400:
            return Permanent(f"HTTP {status}: {_short(response.text)}")
        if not 200 <= status < 300:
            return Permanent(f"HTTP {status}: unexpected status")
        return _ok_from_body(response)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> HttpExecutor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


_VERDICTS: frozenset[str] = frozenset({"pass", "fail", "unknown"})


def _ok_from_body(response: httpx.Response) -> ExecOutcome:
    # A 2xx the scheduler cannot read would be read the same way next time: permanent, not transient.
    try:
        body = response.json()
    except ValueError:
        return Permanent("2xx response is not JSON")
    if not isinstance(body, dict) or body.get("verdict") not in _VERDICTS:
        return Permanent("2xx response lacks a verdict of pass | fail | unknown")
    raw = body.get("findings", [])
    if not isinstance(raw, list):
        return Permanent("2xx response: findings is not a list")
    try:
        findings = [Finding.model_validate(item) for item in raw]
    except ValidationError as exc:
        return Permanent(f"2xx response: invalid finding: {_short(str(exc))}")
    # Traces are optional (schemas/json/scheduler.executor-report.v1.json); malformed ones are refused
    # like a malformed finding, since the same body would be malformed on every retry.
    raw_traces = body.get("traces", [])
    if not isinstance(raw_traces, list):
        return Permanent("2xx response: traces is not a list")
    try:
        traces = [FindingTrace.model_validate(item) for item in raw_traces]
    except ValidationError as exc:
        return Permanent(f"2xx response: invalid trace: {_short(str(exc))}")
    verdict: Verdict = body["verdict"]
    return Ok(sort_findings(findings), verdict, sort_traces(traces))
