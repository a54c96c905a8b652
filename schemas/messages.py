"""Versioned message contracts for every topic (docs/architecture.md §1-7).

Each message carries ``schema`` = ``scheduler.<name>@<version>``; decoders dispatch on it and refuse any
version they do not know. Models are frozen and forbid unknown fields, so a producer's typo is an error at
the edge, not a silent drop. Timestamps are aware UTC datetimes and serialise as ``YYYY-MM-DDTHH:MM:SSZ``.
Numbers that end up in signed payloads are integers or strings (CVSS scores travel as strings).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, StrictBool

from schemas.canonical import format_time
from schemas.cron import check_cron, zone


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp needs a time zone (use Z for UTC)")
    utc = value.astimezone(UTC)
    # Most times are whole seconds already: no second copy (every timestamp of every decoded record).
    return utc.replace(microsecond=0) if utc.microsecond else utc


Timestamp = Annotated[datetime, AfterValidator(_to_utc), PlainSerializer(format_time, return_type=str)]

Severity = Literal["critical", "high", "medium", "low", "none", "unknown"]
PriorityClass = Literal["emergency", "high", "normal", "background"]
JobKind = Literal["reevaluate", "rescan"]
VexStatus = Literal["not_affected", "affected", "fixed", "under_investigation"]
ImpactSource = Literal[
    "advisory", "vex", "policy", "recheck", "runtime", "inventory", "schedule", "simulation"
]

SEVERITY_RANK: dict[str, int] = {"none": 0, "unknown": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
PRIORITY_RANK: dict[str, int] = {"background": 0, "normal": 1, "high": 2, "emergency": 3}


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------- inputs


class Component(Model):
    purl: str
    package: str = Field(description="package key: normalised purl type/namespace/name")
    version: str | None = None


class Inventory(Model):
    """An image's component list. Kafka key ``tenant/digest``; a null value (tombstone) removes it."""

    schema_id: Literal["scheduler.inventory@1"] = Field("scheduler.inventory@1", alias="schema")
    tenant: str
    image_digest: str
    repository: str = ""
    tags: list[str] = []
    namespaces: list[str] = []
    labels: dict[str, str] = {}
    components: list[Component]
    observed_at: Timestamp
    source: str = Field("", description="the SBOM document this came from (name or URN)")


class RangeEvent(Model):
    introduced: str | None = None
    fixed: str | None = None
    last_affected: str | None = None
    limit: str | None = None


class AffectedRange(Model):
    type: Literal["ECOSYSTEM", "SEMVER", "GIT"]
    events: list[RangeEvent]
    repo: str | None = Field(None, description="GIT ranges: the repository the commit hashes belong to")


class AffectedPackage(Model):
    package: str = Field(description="package key: normalised purl type/namespace/name")
    ecosystem: str
    name: str
    ranges: list[AffectedRange] = []
    versions: list[str] = []


class AdvisoryDelta(Model):
    """An OSV record as the scheduler needs it. Kafka key: advisory id."""

    schema_id: Literal["scheduler.advisory@1"] = Field("scheduler.advisory@1", alias="schema")
    id: str
    aliases: list[str] = []
    modified: Timestamp
    published: Timestamp | None = None
    withdrawn: Timestamp | None = None
    summary: str = ""
    severity: Severity = "unknown"
    cvss: str | None = Field(None, description="CVSS vector or score, as text")
    kev: StrictBool = False
    rescan: StrictBool = Field(
        False, description="the delta asks for a content refresh, not only re-evaluation"
    )
    affected: list[AffectedPackage] = []


class VexProduct(Model):
    purl: str | None = None
    package: str | None = None
    version: str | None = None
    image_digest: str | None = None


class VexStatement(Model):
    """One VEX statement (one vulnerability, its products, one status). Kafka key: vulnerability id."""

    schema_id: Literal["scheduler.vex@1"] = Field("scheduler.vex@1", alias="schema")
    document_id: str
    statement_id: str
    vulnerability: str
    aliases: list[str] = []
    products: list[VexProduct]
    status: VexStatus
    justification: str | None = None
    timestamp: Timestamp
    tenant: str | None = Field(None, description="None: applies to every tenant")
    format: Literal["openvex", "cyclonedx", "csaf"] = "openvex"


class Selector(Model):
    """Which of a tenant's images something applies to. Empty lists mean 'no constraint'."""

    all: StrictBool = False
    namespaces: list[str] = []
    repositories: list[str] = []
    digests: list[str] = []
    labels: dict[str, str] = {}


class PolicyRules(Model):
    """The reference evaluator's policy: fail on severity >= threshold, on KEV, minus allow-listed ids."""

    severity_threshold: Severity = "high"
    fail_on_kev: StrictBool = True
    allow_ids: list[str] = []


class PolicyChange(Model):
    """Activation of a policy revision for a tenant. Kafka key: tenant."""

    schema_id: Literal["scheduler.policy@1"] = Field("scheduler.policy@1", alias="schema")
    tenant: str
    policy_id: str
    revision: int
    activated_at: Timestamp
    selector: Selector = Selector(all=True)
    rules: PolicyRules = PolicyRules()


class Recheck(Model):
    """A policy-triggered or manual recheck request. Kafka key: tenant."""

    schema_id: Literal["scheduler.recheck@1"] = Field("scheduler.recheck@1", alias="schema")
    tenant: str
    recheck_id: str
    requested_at: Timestamp
    selector: Selector
    reason: str = ""
    kind: JobKind = "reevaluate"
    priority: PriorityClass | None = None
    retry_of: str | None = Field(None, description="run id this recheck retries")


class RuntimeEvent(Model):
    """An image started or stopped running somewhere. Kafka key: image digest."""

    schema_id: Literal["scheduler.runtime@1"] = Field("scheduler.runtime@1", alias="schema")
    tenant: str
    image_digest: str
    cluster: str
    namespace: str
    state: Literal["running", "stopped"]
    observed_at: Timestamp


# ---------------------------------------------------------------- internal


class Reason(Model):
    source: ImpactSource
    id: str
    modified: Timestamp | None = None
    detail: str = ""


class Impact(Model):
    """One image touched by one delta. Kafka key: tenant."""

    schema_id: Literal["scheduler.impact@1"] = Field("scheduler.impact@1", alias="schema")
    tenant: str
    image_digest: str
    event_time: Timestamp
    reasons: list[Reason]
    severity: Severity = "unknown"
    kev: StrictBool = False
    running: StrictBool = False
    kind: JobKind = "reevaluate"
    priority: PriorityClass | None = Field(None, description="forced class (rechecks); else derived")
    policy_revision: int | None = None
    inventory_observed_at: Timestamp | None = Field(
        default=None, description="when the image's inventory was taken, if known: old ones ask for a rescan"
    )
    retry_of: str | None = Field(
        default=None, description="run id the recheck behind this impact retries (run management: retry)"
    )


class ImpactBatch(Model):
    """Impacts one input sends to one tenant partition, in one record (the batched shuffle into the tenant
    stage). Kafka key: the first impact's tenant; every impact's tenant maps to the record's partition."""

    schema_id: Literal["scheduler.impact-batch@1"] = Field("scheduler.impact-batch@1", alias="schema")
    impacts: list[Impact] = Field(min_length=1)


class AdvisoryInput(Model):
    id: str
    modified: Timestamp


def _absent(value: object) -> bool:
    return value is None


class SimulationInputs(Model):
    """What makes a job a simulation's: the candidate rules it is judged by instead of the tenant's."""

    simulation_id: str
    rules: PolicyRules


class JobInputs(Model):
    advisories: list[AdvisoryInput] = []
    vex: list[str] = []
    policy_revision: int | None = None
    # Left out when absent, so a live job's bytes (and ids, signatures) are what they were before
    # simulations existed.
    simulation: SimulationInputs | None = Field(
        None, exclude_if=_absent, description="set on a simulation run's jobs only (streams.simulation)"
    )


class JobCommand(Model):
    """A deterministic unit of work. Kafka key: image digest."""

    schema_id: Literal["scheduler.job-command@1"] = Field("scheduler.job-command@1", alias="schema")
    job_id: str
    run_id: str
    tenant: str
    image_digest: str
    kind: JobKind
    priority: PriorityClass
    window_start: Timestamp
    window_end: Timestamp
    deadline: Timestamp
    reasons: list[Reason]
    inputs: JobInputs
    retry_of: str | None = Field(
        default=None,
        description="what this job retries: the run id of a retried run (from a retry recheck), or, for jobs "
        "re-issued by streams.runs.retry_run, the job id they replace",
    )


class Finding(Model):
    id: str
    package: str
    version: str | None = None
    severity: Severity
    kev: StrictBool = False
    aliases: list[str] = []


# ---------------------------------------------------------------- explain traces (why a finding exists)


class RangeTrace(Model):
    """Where the component's version fell inside the advisory's affected entry."""

    package: str
    ecosystem: str
    kind: Literal["versions", "ECOSYSTEM", "SEMVER", "matcher"] = Field(
        description="versions: an explicit list matched; matcher: an injected matcher decided (no span)"
    )
    scheme: str = Field("", description="version scheme used to compare (univers class name)")
    written: list[RangeEvent] = Field(default=[], description="the range's events as the advisory wrote them")
    normalised: list[RangeEvent] = Field(
        default=[], description="the same events in walk order, bounds as the scheme renders them"
    )
    introduced: str | None = Field(None, description="the event pair containing the version: its opening")
    fixed: str | None = None
    last_affected: str | None = None
    limit: str | None = Field(None, description="the limit event capping the range above the version")
    listed: str | None = Field(None, description="kind versions: the listed version the component equals")
    refused: list[str] = Field(default=[], description="ranges of the entry not evaluated (GIT), and why")
    reason: str = ""


class VexConsidered(Model):
    """One VEX statement that applied to the finding, and whether it governed it."""

    document_id: str
    statement_id: str
    status: VexStatus
    justification: str | None = None
    timestamp: Timestamp
    format: str
    product: str = Field(description="the statement's product that named the image or component")
    outcome: Literal["won", "overridden"]
    why: str


class PolicyTrace(Model):
    """The policy rule that decided how the finding counts toward the verdict."""

    rule: Literal["allow_ids", "fail_on_kev", "severity_threshold", "vex"]
    effect: Literal["fail", "pass"]
    detail: str


class FindingTrace(Model):
    """Why one (advisory, component) match is, or is not, a finding (explain traces)."""

    id: str
    aliases: list[str] = []
    modified: Timestamp
    package: str
    purl: str
    version: str | None = None
    severity: Severity
    kev: bool = False
    outcome: Literal["reported", "suppressed"] = Field(description="suppressed: a VEX statement won")
    range: RangeTrace
    vex: list[VexConsidered] = Field(default=[], description="winner first, then by precedence")
    policy: PolicyTrace


class FindingChange(Model):
    id: str
    package: str
    before: Severity
    after: Severity


class FindingsDelta(Model):
    status: Literal["changed", "no_change"]
    added: list[Finding] = []
    removed: list[Finding] = []
    changed: list[FindingChange] = []


class SeverityCounts(Model):
    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    unknown: int = 0


class Attempt(Model):
    attempt: int
    at: Timestamp
    outcome: Literal["ok", "transient", "permanent", "timeout"]
    error: str = ""
    retry_after_s: int | None = Field(
        default=None, description="server's Retry-After hint (429), whole seconds; a floor for the next retry"
    )


JobStatus = Literal["queued", "running", "completed", "failed", "skipped"]
JobResultStatus = Literal["completed", "failed", "skipped"]
TERMINAL_JOB_STATUSES: frozenset[str] = frozenset(get_args(JobResultStatus))


class SimulationImage(Model):
    """One image under a candidate policy: its live verdict, the simulated one, and the findings that flip."""

    image_digest: str
    live_verdict: Literal["pass", "fail", "unknown"]
    simulated_verdict: Literal["pass", "fail", "unknown"]
    newly_failing: list[str] = Field(
        default=[], description="'id package' of findings that would start failing"
    )
    newly_passing: list[str] = Field(
        default=[], description="'id package' of findings that would stop failing"
    )
    job_status: Literal["completed", "failed", "skipped"] | None = Field(
        None, exclude_if=_absent, description="queue mode: how the image's simulation job ended"
    )


class JobResult(Model):
    """Outcome of a job. Kafka key: image digest."""

    schema_id: Literal["scheduler.job-result@1"] = Field("scheduler.job-result@1", alias="schema")
    job_id: str
    run_id: str
    tenant: str
    image_digest: str
    priority: PriorityClass
    status: JobResultStatus
    finished_at: Timestamp
    attempts: list[Attempt] = []
    findings: list[Finding] = []
    verdict: Literal["pass", "fail", "unknown"] = "unknown"
    previous_verdict: Literal["pass", "fail", "unknown"] = "unknown"
    delta: FindingsDelta = FindingsDelta(status="no_change")
    counts: SeverityCounts = SeverityCounts()
    kev_hits: int = 0
    inputs: JobInputs = JobInputs()
    error: str = ""
    sla_breached: StrictBool = False
    traces: list[FindingTrace] = Field(
        default=[], description="explain traces of the findings (and VEX-suppressed matches), sorted"
    )
    traces_omitted: int = Field(0, description="traces left out to keep the result under the size budget")
    simulation: SimulationImage | None = Field(
        None, exclude_if=_absent, description="a simulation job's image: live verdict -> simulated, flips"
    )


class ExecutorReport(Model):
    """The 2xx body an HTTP executor (``POST {base}/reports``) answers with. ``findings`` and ``traces``
    are optional; an executor that explains its findings returns its own traces in this shape."""

    schema_id: Literal["scheduler.executor-report@1"] = Field("scheduler.executor-report@1", alias="schema")
    verdict: Literal["pass", "fail", "unknown"]
    findings: list[Finding] = []
    traces: list[FindingTrace] = []


class DeltaSummary(Model):
    images: int = 0
    changed: int = 0
    no_change: int = 0
    failed: int = 0
    added: int = 0
    removed: int = 0
    severity_changed: int = 0
    new_critical: int = 0
    new_high: int = 0
    kev_hits: int = 0
    verdict_to_fail: int = 0
    verdict_to_pass: int = 0
    new_findings: list[str] = Field(default=[], description="ids of findings added in any image, sorted")


RunState = Literal["planning", "queued", "running", "completed", "cancelled", "error"]
TERMINAL_RUN_STATES: frozenset[str] = frozenset({"completed", "cancelled", "error"})


class RunEvent(Model):
    """A run's state after a change. Kafka key: run id."""

    schema_id: Literal["scheduler.run-event@1"] = Field("scheduler.run-event@1", alias="schema")
    run_id: str
    tenant: str
    state: RunState
    at: Timestamp
    jobs_total: int = 0
    jobs_done: int = 0
    jobs_failed: int = 0
    jobs_skipped: int = 0
    summary: DeltaSummary = DeltaSummary()
    retry_of: str | None = None


class SlaBreach(Model):
    schema_id: Literal["scheduler.sla-breach@1"] = Field("scheduler.sla-breach@1", alias="schema")
    job_id: str
    run_id: str
    tenant: str
    image_digest: str
    priority: PriorityClass
    deadline: Timestamp
    at: Timestamp
    reason: str
    attempts: list[Attempt] = []


class OriginalRef(Model):
    """A dead-lettered record kept by reference: it stays at its source position; these identify it."""

    value_size: int
    value_sha256: str
    value_head_b64: str = Field(description="the first bytes of the value, base64")
    key_size: int = 0
    key_sha256: str | None = None


class DeadLetter(Model):
    """A message the scheduler could not use, with everything needed to replay it. Key: source topic."""

    schema_id: Literal["scheduler.dead-letter@1"] = Field("scheduler.dead-letter@1", alias="schema")
    source_topic: str
    partition: int
    offset: int
    key_b64: str | None = None
    value_b64: str | None = None
    original: OriginalRef | None = Field(
        None,
        description="set when the original was too large to copy (value_b64 is then null): what identifies "
        "it at source_topic / partition / offset",
    )
    expected_schema: str = ""
    reason: str = Field(
        description="short code: decode, validate, oversized, schema-unknown, processing-error, job-failed, "
        "unpublishable"
    )
    error: str
    at: Timestamp
    job: JobCommand | None = None
    attempts: list[Attempt] = []


class CursorUpdate(Model):
    """How far a source feed has been folded (advisories, VEX, policy, ...). Kafka key: source name.

    ``partition``/``offset`` name the source-topic position the cursor reached, which can differ from the
    position of this message itself on its own topic.
    """

    schema_id: Literal["scheduler.cursor@1"] = Field("scheduler.cursor@1", alias="schema")
    source: str
    last_id: str = ""
    modified: Timestamp | None = None
    partition: int | None = None
    offset: int | None = None
    at: Timestamp | None = None


class ImageRemoved(Model):
    """An inventory tombstone, forwarded to the tenant-keyed stage. Kafka key: tenant."""

    schema_id: Literal["scheduler.image-removed@1"] = Field("scheduler.image-removed@1", alias="schema")
    tenant: str
    image_digest: str


class Tick(Model):
    """Wall-clock heartbeat sent to every partition of a windowed topic so quiet streams still close
    their windows. It decides only *when* an idle window closes, never what it contains."""

    schema_id: Literal["scheduler.tick@1"] = Field("scheduler.tick@1", alias="schema")
    partition: int
    at: Timestamp


class JobAttempt(Model):
    """A failed attempt and the retry it scheduled. Kafka key: image digest (co-partitioned with jobs)."""

    schema_id: Literal["scheduler.job-attempt@1"] = Field("scheduler.job-attempt@1", alias="schema")
    job_id: str
    tenant: str
    image_digest: str
    attempts: list[Attempt]
    next_at: Timestamp = Field(description="event-time instant of the next attempt (deterministic)")
    due_at: Timestamp = Field(description="wall-clock instant the worker dispatches it")


class JobCancel(Model):
    """Skip a queued job because its run was cancelled. Kafka key: image digest."""

    schema_id: Literal["scheduler.job-cancel@1"] = Field("scheduler.job-cancel@1", alias="schema")
    job_id: str
    run_id: str
    tenant: str
    image_digest: str
    at: Timestamp


class RunLimits(Model):
    """How fast the run stage releases a run's jobs to the queue (streams/run_gate.py)."""

    parallelism: int | None = Field(None, ge=1, description="at most this many of the run's jobs in flight")
    rate_per_second: int | None = Field(
        None, ge=1, description="at most this many released per second of event time (burst: one second's)"
    )


class RunPlanned(Model):
    """The planner closed a run's window: these are all of its jobs. Kafka key: run id.

    With ``limits``, the planner sent the job commands to the run stage only, and the run stage releases them
    to `jobs` within the limits; without, they went to `jobs` at once."""

    schema_id: Literal["scheduler.run-planned@1"] = Field("scheduler.run-planned@1", alias="schema")
    run_id: str
    tenant: str
    job_ids: list[str]
    at: Timestamp
    retry_of: str | None = None
    limits: RunLimits | None = None


class JobStarted(Model):
    """A worker began executing a job (its first attempt). Kafka key: run id."""

    schema_id: Literal["scheduler.job-started@1"] = Field("scheduler.job-started@1", alias="schema")
    job_id: str
    run_id: str
    tenant: str
    at: Timestamp
    attempt: int = 1


class RunCancelRequested(Model):
    """Operator asked to cancel a run. Kafka key: run id."""

    schema_id: Literal["scheduler.run-cancel@1"] = Field("scheduler.run-cancel@1", alias="schema")
    run_id: str
    tenant: str
    at: Timestamp
    reason: str = ""
    requested_by: str = ""


# ---------------------------------------------------------------- schedules


def _cron(value: str) -> str:
    return check_cron(value)


def _zone(value: str) -> str:
    zone(value)
    return value


CronExpr = Annotated[str, AfterValidator(_cron)]
ZoneName = Annotated[str, AfterValidator(_zone)]
ScheduleMode = Literal["analysis-only", "content-refresh"]
MissedPolicy = Literal["skip", "latest", "all"]


class OnlyIf(Model):
    last_report_older_than_days: int | None = Field(
        None, ge=0, description="select an image only when its last report is older than this (or absent)"
    )


class ScheduleLimits(Model):
    max_jobs: int | None = Field(None, ge=1, description="at most this many jobs per occurrence")
    rate_per_second: int | None = Field(None, ge=1, description="dispatch rate cap for the run's jobs")
    parallelism: int | None = Field(None, ge=1, description="jobs of the run executing at once")


class MissedRuns(Model):
    """What to do with occurrences that were not fired on time (the workers were down)."""

    policy: MissedPolicy = "latest"
    max_catchup: int = Field(10, ge=1, le=1000, description="`all`: fire at most this many missed ones")
    grace_seconds: int = Field(
        300, ge=1, description="an occurrence fired later than this after its nominal time counts as missed"
    )


class ScheduleSpec(Model):
    """What a schedule is: when (cron in an IANA zone), what (selection, mode, onlyIf) and how much."""

    name: str = ""
    cron: CronExpr
    timezone: ZoneName = "UTC"
    mode: ScheduleMode = "analysis-only"
    selection: Selector = Selector(all=True)
    only_if: OnlyIf = OnlyIf()
    limits: ScheduleLimits = ScheduleLimits()
    missed: MissedRuns = MissedRuns()
    priority: PriorityClass = "background"


ScheduleAction = Literal["create", "update", "pause", "resume", "delete", "run"]


class ScheduleCommand(Model):
    """A change to a schedule, or a manual run. Kafka key: tenant (co-partitioned with the catalog)."""

    schema_id: Literal["scheduler.schedule-command@1"] = Field("scheduler.schedule-command@1", alias="schema")
    action: ScheduleAction
    tenant: str = Field(min_length=1)
    schedule_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    at: Timestamp
    spec: ScheduleSpec | None = Field(None, description="create / update: the whole new spec")
    requested_by: str = ""
    reason: str = ""


class ReportSeen(Model):
    """An image got a report (a completed job result), re-keyed by tenant onto `catalog-updates` so the
    schedules beside the catalog know each image's last report (``onlyIf``). Kafka key: tenant."""

    schema_id: Literal["scheduler.report-seen@1"] = Field("scheduler.report-seen@1", alias="schema")
    tenant: str
    image_digest: str
    at: Timestamp


ScheduleStatus = Literal["active", "paused", "deleted"]


class ScheduleOccurrence(Model):
    """One occurrence decided: fired (a run was planned) or skipped (missed, by the policy)."""

    nominal: Timestamp = Field(description="the cron time (or the manual request time) the run stands for")
    trigger: Literal["cron", "manual"] = "cron"
    fired: bool
    run_id: str
    why: str = Field(description="on-time | missed-latest | missed-catchup | missed-skipped | manual")
    jobs: int = 0
    selected: int = 0
    filtered_only_if: int = 0
    truncated: int = 0


class ScheduleEvent(Model):
    """A schedule's state after a command or a firing decision. Kafka key: tenant."""

    schema_id: Literal["scheduler.schedule-event@1"] = Field("scheduler.schedule-event@1", alias="schema")
    tenant: str
    schedule_id: str
    status: ScheduleStatus
    spec: ScheduleSpec | None = None
    at: Timestamp = Field(description="the command's time or the firing tick's time (planned at)")
    next_fire: Timestamp | None = None
    decided_until: Timestamp | None = Field(None, description="every occurrence up to here is decided")
    last_fired: Timestamp | None = None
    fired_total: int = 0
    missed_total: int = 0
    occurrences: list[ScheduleOccurrence] = []
    rejected: str = Field("", description="why a command changed nothing (unknown schedule, exists, ...)")


# ---------------------------------------------------------------- policy simulation


class SimulationTotals(Model):
    images: int = 0
    to_fail: int = 0
    to_pass: int = 0
    unchanged: int = 0
    not_evaluated: int = Field(0, description="selected images without a live evaluation to compare with")
    newly_failing: int = 0
    newly_passing: int = 0
    failed: int = Field(
        0, description="queue mode: images whose simulation job failed (no simulated verdict)"
    )
    skipped: int = Field(0, description="queue mode: images not evaluated because the run was cancelled")


class SimulationRequest(Model):
    """A queued simulation: a run (id = ``simulation_id``) of one background job per selected image,
    judged by ``rules``. The images are resolved when the request is made (``streams.simulation``).
    Kafka key: simulation id (co-partitioned with the run's ``run-inputs``)."""

    schema_id: Literal["scheduler.simulation-request@1"] = Field(
        "scheduler.simulation-request@1", alias="schema"
    )
    simulation_id: str
    tenant: str
    at: Timestamp
    selector: Selector
    rules: PolicyRules
    images: list[str] = Field(description="the selected image digests, sorted")
    requested_by: str = ""


class SimulationCompleted(Model):
    """What activating a candidate policy would change, computed without changing anything. Key: tenant."""

    schema_id: Literal["scheduler.simulation-completed@1"] = Field(
        "scheduler.simulation-completed@1", alias="schema"
    )
    simulation_id: str
    tenant: str
    state: Literal["completed", "cancelled", "error"] = "completed"
    at: Timestamp
    mode: Literal["read-model", "queue"] = Field(
        description="read-model: live findings re-judged by the candidate rules; queue: re-evaluated by jobs"
    )
    selector: Selector
    rules: PolicyRules
    images: list[SimulationImage] = []
    totals: SimulationTotals = SimulationTotals()


class Signature(Model):
    keyid: str
    sig: str


class SignedEnvelope(Model):
    """DSSE envelope (docs/architecture.md §7). Kafka key: ``tenant/subject``."""

    payloadType: str  # field names are the DSSE spec's
    payload: str
    signatures: list[Signature]


SOURCE_MODELS: dict[str, type[Model]] = {
    "inventory": Inventory,
    "advisories": AdvisoryDelta,
    "vex": VexStatement,
    "policy": PolicyChange,
    "rechecks": Recheck,
    "runtime": RuntimeEvent,
}

ALL_MODELS: list[type[BaseModel]] = [
    Inventory,
    AdvisoryDelta,
    VexStatement,
    PolicyChange,
    Recheck,
    RuntimeEvent,
    Impact,
    ImpactBatch,
    JobCommand,
    JobResult,
    ExecutorReport,
    RunEvent,
    SlaBreach,
    DeadLetter,
    CursorUpdate,
    ImageRemoved,
    Tick,
    JobAttempt,
    JobCancel,
    RunPlanned,
    JobStarted,
    RunCancelRequested,
    ScheduleCommand,
    ScheduleEvent,
    ReportSeen,
    SimulationRequest,
    SimulationCompleted,
    SignedEnvelope,
]


@functools.cache  # every decode asks (codec.decode); a class's schema id never changes
def schema_id_of(model: type[BaseModel]) -> str:
    field = model.model_fields.get("schema_id")
    if field is None:
        return "dsse.envelope@1"
    default = field.default
    assert isinstance(default, str)
    return default
