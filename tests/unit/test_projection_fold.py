"""The pure projection fold: position guard, field ownership, and order independence
(docs/architecture.md §6)."""

from __future__ import annotations

import copy
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.fold import (
    AUDIT_SNAPSHOTS,
    COLLECTIONS,
    CURSORS,
    DEADLETTERS,
    IMAGES,
    JOBS,
    RUNS,
    SCHEDULE_RUNS,
    SCHEDULES,
    SIMULATIONS,
    WINDOWS,
    DocUpdate,
    Position,
    State,
    accepts,
    apply_all,
    apply_in_place,
    apply_update,
    field_key,
    fold,
    fold_batch,
    image_fields,
    image_id,
    inventory_tombstone,
    source_key,
    unfield_key,
    window_bounds,
    window_id,
    window_view,
)
from projections.store import MemoryStore, Projector, page_of
from schemas.messages import (
    AdvisoryDelta,
    Attempt,
    Component,
    CursorUpdate,
    DeadLetter,
    Finding,
    ImageRemoved,
    Impact,
    ImpactBatch,
    Inventory,
    JobCommand,
    JobInputs,
    JobResult,
    Reason,
    RunEvent,
    RuntimeEvent,
    SlaBreach,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
W = 30
PARTITIONS = {
    "jobs": 3,
    "job-results": 3,
    "run-events": 2,
    "impacts": 2,
    "deadletter": 2,
    "advisories": 3,
    "sla": 2,
    "inventory": 3,
    "runtime": 2,
}


def partition_of(topic: str, key: str) -> int:
    # Kafka sends a key to one partition; any stable hash models that.
    return zlib.crc32(key.encode()) % PARTITIONS[topic]


def digest(i: int) -> str:
    return "sha256:" + f"{i:02x}" * 32


def command(job: int) -> JobCommand:
    """Everything about a job command follows from the job number, as content-hashed ids do in the system."""
    tenant = f"t{job % 2}"
    start = T0 + timedelta(seconds=W * (job % 3))
    return JobCommand(
        job_id=f"job{job}",
        run_id=f"run{job % 3}",
        tenant=tenant,
        image_digest=digest(job % 4),
        kind="reevaluate",
        priority="high" if job % 2 else "normal",
        window_start=start,
        window_end=start + timedelta(seconds=W),
        deadline=start + timedelta(hours=1),
        reasons=[Reason(source="advisory", id=f"GHSA-{job}")],
        inputs=JobInputs(policy_revision=job),
    )


def result(job: int, variant: int) -> JobResult:
    cmd = command(job)
    status = ("completed", "failed", "skipped")[variant % 3]
    return JobResult(
        job_id=cmd.job_id,
        run_id=cmd.run_id,
        tenant=cmd.tenant,
        image_digest=cmd.image_digest,
        priority=cmd.priority,
        status=status,
        finished_at=T0 + timedelta(minutes=variant),
        attempts=[Attempt(attempt=1, at=T0, outcome="ok" if status == "completed" else "permanent")],
        findings=[Finding(id=f"CVE-{variant}", package="pypi/x", severity="high")] if variant % 2 else [],
        verdict="fail" if variant % 2 else "pass",
        error="" if status == "completed" else "boom",
    )


def run_event(run: int, variant: int) -> RunEvent:
    return RunEvent(
        run_id=f"run{run}",
        tenant=f"t{run % 2}",
        state=("queued", "running", "completed")[variant % 3],
        at=T0 + timedelta(seconds=variant),
        jobs_total=3,
        jobs_done=variant % 4,
    )


def impact(i: int) -> Impact:
    return Impact(
        tenant=f"t{i % 2}",
        image_digest=digest(i % 4),
        event_time=T0 + timedelta(seconds=7 * i),
        reasons=[Reason(source="advisory", id=f"GHSA-{i}")],
    )


def deadletter(i: int) -> DeadLetter:
    return DeadLetter(
        source_topic=f"src{i % 2}", partition=i % 3, offset=i, reason="decode", error=f"e{i}", at=T0
    )


def advisory(i: int) -> AdvisoryDelta:
    return AdvisoryDelta(id=f"GHSA-{i % 5}", modified=T0 + timedelta(hours=i))


def breach(job: int) -> SlaBreach:
    cmd = command(job)
    return SlaBreach(
        job_id=cmd.job_id,
        run_id=cmd.run_id,
        tenant=cmd.tenant,
        image_digest=cmd.image_digest,
        priority=cmd.priority,
        deadline=cmd.deadline,
        at=cmd.deadline,
        reason="deadline",
    )


def inventory(i: int, variant: int) -> Inventory:
    return Inventory(
        tenant=f"t{i % 2}",
        image_digest=digest(i % 4),
        repository=f"registry.example/app{variant % 2}",
        tags=[f"v{variant}", "latest"],
        namespaces=[f"ns{variant % 3}"],
        labels={"app.kubernetes.io/name": f"app{i}", "tier": str(variant)},
        components=[Component(purl="pkg:npm/x@1.0.0", package="npm/x", version="1.0.0")] * (variant % 3),
        observed_at=T0 + timedelta(minutes=variant),
    )


def runtime(i: int, variant: int) -> RuntimeEvent:
    return RuntimeEvent(
        tenant=f"t{i % 2}",
        image_digest=digest(i % 4),
        cluster=f"eu.{variant % 2}",
        namespace=f"ns{variant % 3}",
        state="running" if variant % 2 == 0 else "stopped",
        observed_at=T0 + timedelta(minutes=variant),
    )


def keyed(kind: str, i: int, variant: int) -> tuple[str, str, object]:
    """(topic, key, message) the way producers key them."""
    if kind == "command":
        msg: Any = command(i)
        return "jobs", msg.image_digest, msg
    if kind == "result":
        msg = result(i, variant)
        return "job-results", msg.image_digest, msg
    if kind == "run":
        msg = run_event(i % 3, variant)
        return "run-events", msg.run_id, msg
    if kind == "impact":
        msg = impact(i)
        return "impacts", msg.tenant, msg
    if kind == "deadletter":
        msg = deadletter(i)
        return "deadletter", msg.source_topic, msg
    if kind == "advisory":
        msg = advisory(i)
        return "advisories", msg.id, msg
    if kind == "inventory":
        msg = inventory(i, variant)
        return "inventory", f"{msg.tenant}/{msg.image_digest}", msg
    if kind == "removed":
        msg = ImageRemoved(tenant=f"t{i % 2}", image_digest=digest(i % 4))
        return "inventory", f"{msg.tenant}/{msg.image_digest}", msg
    if kind == "runtime":
        msg = runtime(i, variant)
        return "runtime", msg.image_digest, msg
    msg = breach(i)
    return "sla", msg.image_digest, msg


KINDS = [
    "command",
    "result",
    "run",
    "impact",
    "deadletter",
    "advisory",
    "breach",
    "inventory",
    "removed",
    "runtime",
]
event_specs = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 7), st.integers(0, 5), st.integers(1, 4)),
    min_size=1,
    max_size=30,
)


def positioned(specs: list[tuple[str, int, int, int]]) -> list[tuple[object, Position]]:
    """Give each message the next offset of its partition, with gaps of ``gap`` (offsets are not dense)."""
    next_offset: dict[tuple[str, int], int] = {}
    out: list[tuple[object, Position]] = []
    for kind, i, variant, gap in specs:
        topic, key, msg = keyed(kind, i, variant)
        partition = partition_of(topic, key)
        offset = next_offset.get((topic, partition), 0) + gap - 1
        next_offset[(topic, partition)] = offset + 1
        out.append((msg, Position(topic, partition, offset)))
    return out


def reference(log: list[tuple[object, Position]]) -> State:
    ordered = sorted({pos: msg for msg, pos in log}.items())
    return apply_all({}, [u for pos, msg in ordered for u in fold(msg, pos, window_seconds=W)])


@st.composite
def deliveries(draw: st.DrawFn, log: list[tuple[object, Position]]) -> list[tuple[object, Position]]:
    """An interleaving of partitions, each in order, with redeliveries of anything already delivered."""
    queues: dict[tuple[str, int], list[tuple[object, Position]]] = {}
    for msg, pos in log:
        queues.setdefault((pos.topic, pos.partition), []).append((msg, pos))
    delivered: list[tuple[object, Position]] = []
    out: list[tuple[object, Position]] = []
    while any(queues.values()):
        if delivered and draw(st.integers(0, 3)) == 0:
            out.append(delivered[draw(st.integers(0, len(delivered) - 1))])
            continue
        tp = draw(st.sampled_from(sorted(tp for tp, q in queues.items() if q)))
        item = queues[tp].pop(0)
        delivered.append(item)
        out.append(item)
    return out


@settings(max_examples=200, deadline=None)
@given(data=st.data(), specs=event_specs)
def test_any_interleaving_with_redelivery_converges(data: st.DataObject, specs: list[Any]) -> None:
    log = positioned(specs)
    delivered = data.draw(deliveries(log))
    got = apply_all({}, [u for msg, pos in delivered for u in fold(msg, pos, window_seconds=W)])
    assert got == reference(log)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), specs=event_specs, batch=st.integers(1, 7))
def test_projector_with_checkpoints_converges(data: st.DataObject, specs: list[Any], batch: int) -> None:
    log = positioned(specs)
    delivered = data.draw(deliveries(log))
    store = MemoryStore()
    projector = Projector(store, "g", window_seconds=W)
    for start in range(0, len(delivered), batch):
        projector.process(delivered[start : start + batch])
    assert {k: v for k, v in store.state.items() if v} == reference(log)
    for _, pos in log:
        assert store.get_checkpoint("g", pos.topic, pos.partition) is not None


@settings(max_examples=200, deadline=None)
@given(data=st.data(), specs=event_specs)
def test_apply_in_place_is_apply_update_without_the_copy(data: st.DataObject, specs: list[Any]) -> None:
    """Any delivery (redeliveries and rejected updates included): the in-place fold the MemoryStore (and so
    a rebuild) uses gives the same documents as the copying one, and no document shares a container with
    an update (changing a folded document cannot change a later fold)."""
    updates = [
        u for msg, pos in data.draw(deliveries(positioned(specs))) for u in fold(msg, pos, window_seconds=W)
    ]
    snapshot = copy.deepcopy(updates)
    copied: State = {}
    in_place: State = {}
    for update in updates:
        docs = copied.setdefault(update.collection, {})
        before = docs.get(update.doc_id)
        frozen = copy.deepcopy(before)
        docs[update.doc_id] = apply_update(before, update)
        assert before == frozen  # apply_update leaves its input alone
        mine = in_place.setdefault(update.collection, {})
        mine[update.doc_id] = apply_in_place(mine.get(update.doc_id), update)
        assert in_place == copied
    for docs in in_place.values():
        for doc in docs.values():
            _scribble(doc)
    assert updates == snapshot


def _scribble(node: Any) -> None:
    """Change every container inside a document."""
    if isinstance(node, dict):
        for value in list(node.values()):
            _scribble(value)
        node["scribbled"] = True
    elif isinstance(node, list):
        for value in node:
            _scribble(value)
        node.append("scribbled")


# ---------------------------------------------------------------- examples


def pos(topic: str, offset: int, partition: int = 0) -> Position:
    return Position(topic, partition, offset)


def test_guard_applies_only_greater_offsets_and_tolerates_gaps() -> None:
    a = DocUpdate(RUNS, "r", "t:0", 10, set={"v": 1})
    b = DocUpdate(RUNS, "r", "t:0", 25, set={"v": 2})
    doc = apply_update(None, a)
    assert doc == {"_id": "r", "v": 1, "_pos": {"t:0": 10}}
    doc = apply_update(doc, b)  # a gap of 15 offsets is fine
    assert doc["v"] == 2
    assert apply_update(doc, a) == doc  # an older offset is ignored
    assert apply_update(doc, b) == doc  # the same offset too
    assert not accepts(doc, a)
    other = DocUpdate(RUNS, "r", "t:1", 3, set={"w": 1})
    assert accepts(doc, other)  # another partition at a lower offset is not older
    assert apply_update(doc, other)["_pos"] == {"t:0": 25, "t:1": 3}


def test_max_min_and_set_on_insert() -> None:
    first = DocUpdate(CURSORS, "c", "a:0", 1, set_on_insert={"d": "x"}, max={"m": "b"}, min={"n": "b"})
    second = DocUpdate(CURSORS, "c", "a:1", 1, set_on_insert={"d": "y"}, max={"m": "a"}, min={"n": "a"})
    one = apply_all({}, [first, second])[CURSORS]["c"]
    two = apply_all({}, [second, first])[CURSORS]["c"]
    assert one["m"] == two["m"] == "b"
    assert one["n"] == two["n"] == "a"
    assert one["d"] == "x"
    assert two["d"] == "y"  # set_on_insert is a default: only an owner's set makes it order-free


def test_overlapping_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="overlapping"):
        DocUpdate(JOBS, "j", "s:0", 1, set={"a": 1, "a.b": 2})
    with pytest.raises(ValueError, match="overlapping"):
        DocUpdate(JOBS, "j", "s:0", 1, set={"a": 1}, set_on_insert={"a": 2})
    with pytest.raises(ValueError, match="_pos"):
        DocUpdate(JOBS, "j", "s:0", 1, set={"_pos": {}})
    DocUpdate(JOBS, "j", "s:0", 1, set={"a": 1, "a-b": 2, "ab.c": 3})


def test_field_and_source_keys_are_mongo_safe() -> None:
    assert field_key("a.b") == "a%2Eb"
    assert field_key("$x%") == "%24x%25"
    assert field_key("%2E") != field_key(".")
    assert source_key("events.signed", 3) == "events%2Esigned:3"


def test_job_result_before_command_ends_like_command_before_result() -> None:
    cmd, res = command(1), result(1, 0)
    c_then_r = fold(cmd, pos("jobs", 5)) + fold(res, pos("job-results", 2))
    r_then_c = fold(res, pos("job-results", 2)) + fold(cmd, pos("jobs", 5))
    state = apply_all({}, c_then_r)
    assert state == apply_all({}, r_then_c)
    job = state[JOBS]["job1"]
    assert job["status"] == "completed"
    assert job["window_start"] == "2025-03-01T12:00:30Z"
    assert job["_pos"] == {"jobs:0": 5, "job-results:0": 2}
    queued = apply_all({}, fold(cmd, pos("jobs", 5)))[JOBS]["job1"]
    assert queued["status"] == "queued"


def test_failed_result_keeps_last_evaluation_of_the_image() -> None:
    ok = result(1, 3)  # completed, one finding, verdict fail
    failed = result(1, 1)  # failed
    state = apply_all({}, fold(ok, pos("job-results", 1)) + fold(failed, pos("job-results", 2)))
    image = state[IMAGES][image_id(ok.tenant, ok.image_digest)]
    assert image["status"] == "failed"
    assert image["verdict"] == "fail"
    assert image["findings"][0]["id"] == "CVE-3"
    assert image["evaluated_at"] == "2025-03-01T12:03:00Z"


def test_windows_count_jobs_images_and_impacts_once() -> None:
    cmds = [command(0), command(3), command(6)]  # t0 at window 0 (jobs 0, 6), t1 at window 0 (3)
    updates = []
    for n, cmd in enumerate(cmds + cmds):
        updates += fold(cmd, pos("jobs", n, partition=n % 3))
    imp = impact(0)
    updates += fold(imp, pos("impacts", 1)) + fold(imp, pos("impacts", 9))  # redelivered at a new offset
    state = apply_all({}, updates)
    view = window_view(state[WINDOWS][window_id("t0", T0)])
    assert view["job_count"] == 2
    assert view["image_count"] == 2
    assert view["impact_count"] == 1
    assert view["window_end"] == "2025-03-01T12:00:30Z"
    assert view["run_ids"] == ["run0"]


def test_an_impact_batch_folds_like_its_impacts_one_update_per_window() -> None:
    impacts = [impact(i) for i in range(12)]
    one_by_one = apply_all({}, [u for n, i in enumerate(impacts) for u in fold(i, pos("impacts", n))])
    updates = fold(ImpactBatch(impacts=impacts), pos("impacts", 0))
    assert len({u.doc_id for u in updates}) == len(updates)
    batched = apply_all({}, updates)
    for doc_id, doc in one_by_one[WINDOWS].items():
        assert window_view(batched[WINDOWS][doc_id]) == window_view(doc)
    assert batched[WINDOWS].keys() == one_by_one[WINDOWS].keys()


def test_window_bounds() -> None:
    start, end = window_bounds(datetime(2025, 1, 1, 0, 0, 59, tzinfo=UTC), 30)
    assert (start.second, end.second) == (30, 0)


def test_cursor_update_and_advisories_fold_into_cursors() -> None:
    cur = CursorUpdate(source="vex", last_id="s9", modified=T0, partition=2, offset=41)
    a1, a2 = advisory(1), advisory(3)
    state = apply_all(
        {},
        fold(cur, pos("cursors", 4))
        + fold(a2, pos("advisories", 7, partition=1))
        + fold(a1, pos("advisories", 9, partition=0)),
    )
    assert state[CURSORS]["vex"]["partitions"]["2"] == {
        "last_id": "s9",
        "modified": "2025-03-01T12:00:00Z",
        "offset": 41,
    }
    adv = state[CURSORS]["advisories"]
    assert adv["modified"] == "2025-03-01T15:00:00Z"  # max, although the older one came last
    assert adv["partitions"]["advisories:0"]["last_id"] == "GHSA-1"


def test_deadletters_keyed_by_source_position() -> None:
    dl = deadletter(4)
    doc = apply_all({}, fold(dl, pos("deadletter", 0)))[DEADLETTERS]["src0/1/4"]
    assert doc["reason"] == "decode"
    assert "schema" not in doc


def test_unknown_messages_fold_to_nothing_but_advance_checkpoints() -> None:
    updates, cps = fold_batch([("noise", pos("x", 3)), ("noise", pos("x", 8))], {}, group="g")
    assert updates == []
    assert [(c.topic, c.partition, c.offset) for c in cps] == [("x", 0, 8)]
    updates, cps = fold_batch([(command(1), pos("jobs", 3))], {("jobs", 0): 3}, group="g")
    assert (updates, cps) == ([], [])


def test_run_documents() -> None:
    updates = fold(run_event(1, 2), pos("run-events", 4)) + fold(run_event(1, 0), pos("run-events", 2))
    doc = apply_all({}, updates)[RUNS]["run1"]
    assert doc["state"] == "completed"  # offset 2 arrived late and was refused
    assert doc["completed_at"] == "2025-03-01T12:00:02Z"
    assert doc["created_at"] == "2025-03-01T12:00:02Z"
    assert "schema" not in doc


def test_memory_pagination_is_deterministic() -> None:
    docs = [{"_id": f"d{i}", "k": i % 3, "tenant": "a" if i < 8 else "b"} for i in range(10)]
    docs.append({"_id": "nok", "tenant": "a"})
    seen = []
    after = None
    while True:
        page = page_of(docs, {"tenant": "a"}, "k", after, 3)
        seen += [d["_id"] for d in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ["d0", "d3", "d6", "d1", "d4", "d7", "d2", "d5"]


def test_collections_are_known() -> None:
    assert set(COLLECTIONS) == {
        RUNS,
        JOBS,
        IMAGES,
        WINDOWS,
        CURSORS,
        DEADLETTERS,
        AUDIT_SNAPSHOTS,
        SCHEDULES,
        SCHEDULE_RUNS,
        SIMULATIONS,
    }


# ---------------------------------------------------------------- images: inventory and runtime


def test_inventory_fills_image_metadata_and_tombstone_marks_it_removed() -> None:
    inv = inventory(1, 2)
    doc = apply_all({}, fold(inv, pos("inventory", 4)))[IMAGES][image_id("t1", digest(1))]
    assert doc["repository"] == "registry.example/app0"
    assert doc["tags"] == ["latest", "v2"]
    assert doc["namespaces"] == ["ns2"]
    assert doc["labels"] == [
        {"key": "app.kubernetes.io/name", "value": "app1"},
        {"key": "tier", "value": "2"},
    ]
    assert doc["component_count"] == 2
    assert doc["inventory_observed_at"] == "2025-03-01T12:02:00Z"
    assert doc["removed"] is False
    assert image_fields(doc)["labels"] == {"app.kubernetes.io/name": "app1", "tier": "2"}

    # a result (another topic and partition) and the inventory own disjoint paths: both survive, any order
    res = result(1, 0)
    assert res.image_digest == digest(1)
    both = [(inv, pos("inventory", 4)), (res, pos("job-results", 9, 1))]
    one = apply_all({}, [u for m, p in both for u in fold(m, p)])
    other = apply_all({}, [u for m, p in reversed(both) for u in fold(m, p)])
    assert one == other
    merged = one[IMAGES][image_id("t1", digest(1))]
    assert merged["repository"] == "registry.example/app0"
    assert merged["verdict"] == res.verdict

    removed = ImageRemoved(tenant="t1", image_digest=digest(1))
    gone = apply_all(one, fold(removed, pos("inventory", 7)))[IMAGES][image_id("t1", digest(1))]
    assert gone["removed"] is True
    assert gone["repository"] == "registry.example/app0"  # the last metadata stays readable
    # a redelivered (older) inventory does not resurrect it; a newer one does
    again = apply_all({IMAGES: {gone["_id"]: gone}}, fold(inv, pos("inventory", 4)))
    assert again[IMAGES][gone["_id"]]["removed"] is True
    back = apply_all({IMAGES: {gone["_id"]: gone}}, fold(inv, pos("inventory", 8)))
    assert back[IMAGES][gone["_id"]]["removed"] is False


def test_inventory_tombstone_key() -> None:
    assert inventory_tombstone(b"acme/sha256:abc") == ImageRemoved(tenant="acme", image_digest="sha256:abc")
    assert inventory_tombstone(None) is None
    assert inventory_tombstone(b"no-slash") is None
    assert inventory_tombstone(b"/sha256:abc") is None


def test_runtime_sites_derive_running() -> None:
    started = runtime(0, 0)  # eu.0 / ns0 running
    other = runtime(0, 4)  # eu.0 / ns1 running
    stopped = runtime(0, 3)  # eu.1 / ns0 stopped
    stop_first = started.model_copy(update={"state": "stopped", "observed_at": T0 + timedelta(minutes=9)})
    log = [(started, pos("runtime", 1)), (other, pos("runtime", 2)), (stopped, pos("runtime", 3))]
    state = apply_all({}, [u for m, p in log for u in fold(m, p)])
    doc = state[IMAGES][image_id("t0", digest(0))]
    assert set(doc["sites"]) == {field_key("eu.0/ns0"), field_key("eu.0/ns1"), field_key("eu.1/ns0")}
    assert image_fields(doc)["running_sites"] == ["eu.0/ns0", "eu.0/ns1"]
    assert image_fields(doc)["running"] is True
    assert doc["runtime_observed_at"] == "2025-03-01T12:04:00Z"
    state = apply_all(state, fold(stop_first, pos("runtime", 4)))
    state = apply_all(state, fold(other.model_copy(update={"state": "stopped"}), pos("runtime", 5)))
    doc = state[IMAGES][image_id("t0", digest(0))]
    assert image_fields(doc) == {"labels": {}, "running": False, "running_sites": []}
    assert doc["runtime_observed_at"] == "2025-03-01T12:09:00Z"
    # redelivery of the first "running" is refused by the guard
    assert apply_all(state, fold(started, pos("runtime", 1))) == state


def test_unfield_key_inverts_field_key() -> None:
    for text in ["a.b", "$x.y", "50%.x", "%2E", "plain", "eu-1/prod.ns"]:
        assert unfield_key(field_key(text)) == text
