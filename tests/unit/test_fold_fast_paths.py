"""The rebuild's fast paths (issue 15) against the code they replaced: the same documents, the same errors.

Each ``_ref_*`` below is the implementation as it was before the fast path, kept here only as the oracle.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.fold import (
    IMAGES,
    JOBS,
    POS,
    DocUpdate,
    Position,
    _fold_result,
    _paths_conflict,
    _ts,
    accepts,
    apply_in_place,
    copy_tree,
    source_key,
)
from projections.store import MemoryStore, Projector
from schemas.canonical import CanonicalError, format_time
from schemas.codec import _plan, models_for
from schemas.messages import (
    AdvisoryInput,
    Attempt,
    Finding,
    FindingChange,
    FindingsDelta,
    FindingTrace,
    JobInputs,
    JobResult,
    PolicyRules,
    PolicyTrace,
    RangeEvent,
    RangeTrace,
    SeverityCounts,
    SimulationImage,
    SimulationInputs,
    VexConsidered,
    _to_utc,
    schema_id_of,
)
from tests.unit.test_projection_fold import W, deliveries, event_specs, positioned

# ---------------------------------------------------------------- the oracles


def _ref_paths_conflict(paths: list[str]) -> str | None:
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            return repr(path)
        seen.add(path)
    for path in paths:
        dot = path.find(".")
        while dot != -1:
            if path[:dot] in seen:
                return f"{path[:dot]!r} / {path!r}"
            dot = path.find(".", dot + 1)
    return None


def _ref_get_path(doc: Any, path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _ref_has_path(doc: Any, path: str) -> bool:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _ref_set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = copy.deepcopy(value)


def _ref_accepts(doc: dict[str, Any] | None, update: DocUpdate) -> bool:
    if doc is None:
        return True
    last = _ref_get_path(doc, f"{POS}.{update.source}")
    return last is None or last < update.offset


def _ref_apply(doc: dict[str, Any] | None, update: DocUpdate) -> dict[str, Any]:
    if doc is None:
        new: dict[str, Any] = {"_id": update.doc_id}
        for path, value in update.insert_fields().items():
            _ref_set_path(new, path, value)
        return new
    if not _ref_accepts(doc, update):
        return doc
    for path, value in update.set.items():
        _ref_set_path(doc, path, value)
    for path, value in update.max.items():
        if not _ref_has_path(doc, path) or _ref_get_path(doc, path) < value:
            _ref_set_path(doc, path, value)
    for path, value in update.min.items():
        if not _ref_has_path(doc, path) or _ref_get_path(doc, path) > value:
            _ref_set_path(doc, path, value)
    _ref_set_path(doc, f"{POS}.{update.source}", update.offset)
    return doc


def _ref_dumps(msg: JobResult) -> dict[str, Any]:
    """The values ``_fold_result`` wrote before it sliced one dump: a dump per field and per finding."""
    return {
        "finished_at": _ts(msg.finished_at),
        "attempts": msg.model_dump(mode="json", by_alias=True, include={"attempts"})["attempts"],
        "delta": msg.delta.model_dump(mode="json"),
        "counts": msg.counts.model_dump(mode="json"),
        "result_inputs": msg.inputs.model_dump(mode="json"),
        "findings": [
            f.model_dump(mode="json") for f in sorted(msg.findings, key=lambda f: (f.id, f.package))
        ],
        "traces": [t.model_dump(mode="json") for t in msg.traces],
        "simulation": None if msg.simulation is None else msg.simulation.model_dump(mode="json"),
    }


# ---------------------------------------------------------------- strategies

# Few names, so that paths collide, nest under each other and meet the reserved ones.
names = st.sampled_from(["a", "b", "c", "_id", "_pos", "_x", "a.b", "t:0", "t.x:1", ""])
paths = st.lists(names, min_size=1, max_size=3).map(".".join)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=3))
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "t:0"]), inner, max_size=3)
    ),
    max_leaves=8,
)
comparable = st.one_of(st.integers(-3, 3))  # max / min compare like values only
sources = st.sampled_from(["t:0", "t:1", "u%2Ev:0", "dotted.src:0"])


@st.composite
def updates(draw: st.DrawFn) -> DocUpdate | None:
    """A DocUpdate, or None when its paths are refused (the refusal itself is tested separately)."""
    try:
        return DocUpdate(
            "jobs",
            "d",
            draw(sources),
            draw(st.integers(0, 6)),
            set=draw(st.dictionaries(paths, trees, max_size=4)),
            set_on_insert=draw(st.dictionaries(paths, trees, max_size=2)),
            max=draw(st.dictionaries(paths, comparable, max_size=2)),
            min=draw(st.dictionaries(paths, comparable, max_size=2)),
        )
    except ValueError:
        return None


docs = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "_pos"]),
        st.one_of(
            trees,
            # A realistic guard map, sometimes with a nested one where a dotted source would look.
            st.fixed_dictionaries(
                {},
                optional={
                    "t:0": st.integers(0, 6),
                    "t:1": st.integers(0, 6),
                    "u%2Ev:0": st.integers(0, 6),
                    "dotted": st.one_of(
                        st.integers(0, 6), st.dictionaries(st.just("src:0"), st.integers(0, 6))
                    ),
                },
            ),
        ),
        max_size=4,
    ).map(lambda d: {"_id": "d", **d}),
)


# ---------------------------------------------------------------- the tests


@settings(max_examples=400)
@given(st.lists(paths, max_size=8))
def test_paths_conflict_is_the_old_check(found: list[str]) -> None:
    assert _paths_conflict(found) == _ref_paths_conflict(found)


# Also names the joined-string test of DocUpdate might misread: line breaks before an underscore or a dot.
check_names = st.sampled_from(["a", "b", "_id", "_pos", "_x", "a.b", "t:0", "", "\n_id", "x\n", "\n", "_"])
check_paths = check_names | st.lists(check_names, min_size=2, max_size=3).map(".".join)
path_maps = st.dictionaries(check_paths, scalars, max_size=3)


@settings(max_examples=600)
@given(path_maps, path_maps, path_maps, path_maps, sources)
def test_docupdate_refuses_exactly_what_it_refused(
    set_: dict[str, Any], on_insert: dict[str, Any], max_: dict[str, Any], min_: dict[str, Any], source: str
) -> None:
    every = [*set_, *on_insert, *max_, *min_, f"{POS}.{source}"]
    conflict = _ref_paths_conflict(every)
    reserved = any(
        p[:1] == "_" and (p in ("_id", POS) or p.startswith(("_id.", POS + "."))) for p in every[:-1]
    )

    def make() -> DocUpdate:
        return DocUpdate("jobs", "d", source, 1, set=set_, set_on_insert=on_insert, max=max_, min=min_)

    if conflict is not None:
        with pytest.raises(ValueError, match="overlapping paths " + re.escape(conflict)):
            make()
    elif reserved:
        with pytest.raises(ValueError, match="_id or _pos"):
            make()
    else:
        make()


def _both(doc: dict[str, Any] | None, update: DocUpdate) -> None:
    accepts(doc, update)
    apply_in_place(doc, update)


@settings(max_examples=500)
@given(docs, st.lists(updates(), min_size=1, max_size=4))
def test_apply_in_place_is_the_old_apply(doc: dict[str, Any] | None, batch: list[DocUpdate | None]) -> None:
    mine = copy.deepcopy(doc)
    theirs = copy.deepcopy(doc)
    for update in batch:
        if update is None:
            continue
        try:
            accepted = _ref_accepts(theirs, update)
            theirs = _ref_apply(theirs, update)
        except TypeError:  # a guard or max / min over values that do not compare: refused alike
            with pytest.raises(TypeError):
                _both(mine, update)
            return
        assert accepts(mine, update) == accepted
        mine = apply_in_place(mine, update)
        assert mine == theirs
        assert repr(mine) == repr(theirs)  # same key order too: documents are compared as bytes


@given(trees)
def test_copy_tree_is_a_deep_copy_sharing_no_container(value: Any) -> None:
    copied = copy_tree(value)
    assert copied == value
    assert repr(copied) == repr(value)

    def containers(node: Any) -> list[int]:
        if isinstance(node, dict):
            return [id(node), *(i for v in node.values() for i in containers(v))]
        if isinstance(node, list):
            return [id(node), *(i for v in node for i in containers(v))]
        return []

    assert not set(containers(copied)) & set(containers(value))


def test_source_key_cache_keeps_bool_and_int_apart() -> None:
    assert source_key("t.x", 1) == "t%2Ex:1"
    assert source_key("t.x", True) == "t%2Ex:True"  # as uncached: an f-string of the value given


zones = st.sampled_from(
    [
        UTC,
        timezone(timedelta(0), "Z0"),  # UTC, but not the UTC object: not cached
        timezone(timedelta(hours=2)),
        timezone(timedelta(hours=-5, minutes=-30)),
        ZoneInfo("Europe/Berlin"),
        ZoneInfo("America/New_York"),
    ]
)
times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones, allow_imaginary=True
)


@settings(max_examples=500)
@given(times, st.booleans())
def test_format_time_is_strftime_of_utc_cached_or_not(value: datetime, fold: bool) -> None:
    value = value.replace(fold=int(fold))
    expected = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert format_time(value) == expected
    assert format_time(value) == expected  # a second time: from the cache when UTC
    utc = value.astimezone(UTC)
    assert format_time(utc) == format_time(utc) == utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_format_time_keeps_the_two_instants_of_a_dst_fold_apart() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    first = datetime(2026, 10, 25, 2, 30, tzinfo=berlin)
    second = first.replace(fold=1)
    assert first == second  # same zone: compared by wall time, so a cache keyed by them would collide
    assert format_time(first) == "2026-10-25T00:30:00Z"
    assert format_time(second) == "2026-10-25T01:30:00Z"
    assert format_time(first) == "2026-10-25T00:30:00Z"


def test_format_time_refuses_naive_times_also_when_an_equal_aware_one_is_cached() -> None:
    format_time(datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(CanonicalError):
        format_time(datetime(2026, 1, 1))


@settings(max_examples=300)
@given(times)
def test_to_utc_is_the_old_normalisation(value: datetime) -> None:
    expected = value.astimezone(UTC).replace(microsecond=0)
    got = _to_utc(value)
    assert got == expected
    assert got.tzinfo is UTC
    assert repr(got) == repr(expected)


TOPICS = [
    "impacts",
    "jobs",
    "job-results",
    "run-events",
    "inventory",
    "catalog-updates",
    "run-inputs",
    "nope",
]


@pytest.mark.parametrize("topic", [*TOPICS, "audit-snapshots", "audit-facts", "job-attempts"])
def test_decode_plan_chooses_models_as_the_linear_scan_did(topic: str) -> None:
    models = models_for(topic)
    plan = _plan(topic)
    assert plan.models == models
    assert plan.expected == " | ".join(schema_id_of(m) for m in models)
    if not models or "schema_id" not in models[0].model_fields:
        assert plan.by_schema is None
        return
    assert plan.by_schema is not None
    every = {schema_id_of(m) for name in TOPICS for m in models_for(name)} | {"x@1", ""}
    for found in every:
        assert plan.by_schema.get(found) is next((m for m in models if schema_id_of(m) == found), None)


# ---------------------------------------------------------------- job results: one dump, sliced

instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
severities = st.sampled_from(["critical", "high", "medium", "low", "none", "unknown"])
words = st.sampled_from(["a", "b", "CVE-1", "npm/x", "x.y", ""])
findings = st.builds(
    Finding,
    id=words,  # few ids and packages: equal sort keys keep their order (a stable sort)
    package=words,
    version=st.none() | words,
    severity=severities,
    kev=st.booleans(),
    aliases=st.lists(words, max_size=2),
)
range_events = st.builds(RangeEvent, introduced=st.none() | words, fixed=st.none() | words)
traces = st.builds(
    FindingTrace,
    id=words,
    aliases=st.lists(words, max_size=2),
    modified=instants,
    package=words,
    purl=words,
    version=st.none() | words,
    severity=severities,
    kev=st.booleans(),
    outcome=st.sampled_from(["reported", "suppressed"]),
    range=st.builds(
        RangeTrace,
        package=words,
        ecosystem=words,
        kind=st.sampled_from(["versions", "ECOSYSTEM", "SEMVER", "matcher"]),
        written=st.lists(range_events, max_size=2),
        fixed=st.none() | words,
    ),
    vex=st.lists(
        st.builds(
            VexConsidered,
            document_id=words,
            statement_id=words,
            status=st.sampled_from(["not_affected", "affected", "fixed", "under_investigation"]),
            timestamp=instants,
            format=words,
            product=words,
            outcome=st.sampled_from(["won", "overridden"]),
            why=words,
        ),
        max_size=2,
    ),
    policy=st.builds(
        PolicyTrace,
        rule=st.sampled_from(["allow_ids", "fail_on_kev", "severity_threshold", "vex"]),
        effect=st.sampled_from(["fail", "pass"]),
        detail=words,
    ),
)
job_results = st.builds(
    JobResult,
    job_id=words,
    run_id=words,
    tenant=words,
    image_digest=words,
    priority=st.sampled_from(["emergency", "high", "normal", "background"]),
    status=st.sampled_from(["completed", "failed", "skipped"]),
    finished_at=instants,
    attempts=st.lists(
        st.builds(
            Attempt,
            attempt=st.integers(1, 5),
            at=instants,
            outcome=st.sampled_from(["ok", "transient", "permanent", "timeout"]),
            error=words,
            retry_after_s=st.none() | st.integers(0, 60),
        ),
        max_size=3,
    ),
    findings=st.lists(findings, max_size=6),
    verdict=st.sampled_from(["pass", "fail", "unknown"]),
    previous_verdict=st.sampled_from(["pass", "fail", "unknown"]),
    delta=st.builds(
        FindingsDelta,
        status=st.sampled_from(["changed", "no_change"]),
        added=st.lists(findings, max_size=2),
        removed=st.lists(findings, max_size=2),
        changed=st.lists(
            st.builds(FindingChange, id=words, package=words, before=severities, after=severities), max_size=2
        ),
    ),
    counts=st.builds(SeverityCounts, critical=st.integers(0, 9), high=st.integers(0, 9)),
    kev_hits=st.integers(0, 9),
    inputs=st.builds(
        JobInputs,
        advisories=st.lists(st.builds(AdvisoryInput, id=words, modified=instants), max_size=2),
        vex=st.lists(words, max_size=2),
        policy_revision=st.none() | st.integers(0, 9),
        simulation=st.none()
        | st.builds(
            SimulationInputs, simulation_id=words, rules=st.builds(PolicyRules, allow_ids=st.lists(words))
        ),
    ),
    error=words,
    sla_breached=st.booleans(),
    traces=st.lists(traces, max_size=3),
    traces_omitted=st.integers(0, 3),
    simulation=st.none()
    | st.builds(
        SimulationImage,
        image_digest=words,
        live_verdict=st.sampled_from(["pass", "fail", "unknown"]),
        simulated_verdict=st.sampled_from(["pass", "fail", "unknown"]),
        newly_failing=st.lists(words, max_size=2),
        job_status=st.none() | st.sampled_from(["completed", "failed", "skipped"]),
    ),
)


def _shared_containers(updates: list[DocUpdate]) -> set[int]:
    """Ids of the containers that more than one update, or two fields of one, hold."""
    seen: dict[int, int] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict | list):
            seen[id(node)] = seen.get(id(node), 0) + 1
            for child in node.values() if isinstance(node, dict) else node:
                walk(child)

    for update in updates:
        for part in (update.set, update.set_on_insert, update.max, update.min):
            for value in part.values():
                walk(value)
    return {key for key, count in seen.items() if count > 1}


@settings(max_examples=300)
@given(job_results, st.integers(0, 10**6))
def test_fold_result_writes_the_dump_per_field(msg: JobResult, offset: int) -> None:
    updates = _fold_result(msg, Position("job-results", 2, offset))
    old = _ref_dumps(msg)

    def same(doc: Mapping[str, Any], *names: str) -> None:
        for name in names:  # repr: the same values with their keys in the same order (documents are bytes)
            assert repr(doc[name]) == repr(old[name]), name

    job = updates[0]
    same(job.set, "finished_at", "attempts", "delta", "counts", "result_inputs")
    if msg.simulation is not None:
        assert [u.collection for u in updates] == [JOBS]
        same(job.set, "simulation")
    else:
        assert [u.collection for u in updates] == [JOBS, IMAGES]
        image = updates[1].set
        same(image, "finished_at")
        if msg.status == "completed":
            same(image, "findings", "counts", "traces")
        else:
            assert "findings" not in image
    assert not _shared_containers(updates)


# ---------------------------------------------------------------- a store that takes the fold's values


def _containers(node: Any, into: dict[int, int]) -> None:
    if isinstance(node, dict | list):
        into[id(node)] = into.get(id(node), 0) + 1
        for child in node.values() if isinstance(node, dict) else node:
            _containers(child, into)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), specs=event_specs, batch=st.integers(1, 7), results=st.lists(job_results, max_size=3))
def test_a_store_taking_the_folds_values_ends_as_the_copying_one(
    data: st.DataObject, specs: list[Any], batch: int, results: list[JobResult]
) -> None:
    """Any delivery, redeliveries included, through the projector: the same documents as with copies, and
    no container held twice (by two documents, or twice by one), so changing one document changes no other."""
    log = positioned(specs) + [(r, Position("job-results", 9, i)) for i, r in enumerate(results)]
    delivered = data.draw(deliveries(log))
    taking, copying = MemoryStore(take_updates=True), MemoryStore()
    for store in (taking, copying):
        projector = Projector(store, "g", window_seconds=W)
        for start in range(0, len(delivered), batch):
            projector.process(delivered[start : start + batch])
    assert taking.state == copying.state
    assert repr(taking.state) == repr(copying.state)
    held: dict[int, int] = {}
    for docs in taking.state.values():
        for doc in docs.values():
            _containers(doc, held)
    assert all(count == 1 for count in held.values())
