"""Job commands: content-derived ids, priority classes, deadlines, stale inventories, canonical bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.canonical import dumps
from schemas.messages import Impact
from streams.jobs import (
    JobConfig,
    decode_pending,
    encode_pending,
    job_id_for,
    make_job,
    merge_impact,
    run_id_for,
    run_retry_of,
)
from streams.sla import classify

T0 = datetime(2024, 1, 1, tzinfo=UTC)
W = timedelta(seconds=30)


def imp(**extra: object) -> Impact:
    base: dict[str, object] = {
        "tenant": "t1",
        "image_digest": "sha256:aa",
        "event_time": T0,
        "reasons": [{"source": "advisory", "id": "GHSA-1", "modified": T0}],
    }
    return Impact.model_validate({**base, **extra})


def test_ids_are_content_hashes() -> None:
    job = make_job(merge_impact(None, imp()), T0, W)
    assert job.job_id == job_id_for("t1", T0, "sha256:aa", "reevaluate")
    assert len(job.job_id) == 64
    assert job.run_id == run_id_for("t1", T0)
    assert job.run_id.startswith("run-")
    assert make_job(merge_impact(None, imp()), T0, W).job_id == job.job_id
    assert job_id_for("t1", T0, "sha256:aa", "rescan") != job.job_id
    assert run_id_for("t2", T0) != job.run_id


@pytest.mark.parametrize(
    ("extra", "expected", "sla"),
    [
        ({"kev": True}, "emergency", timedelta(minutes=15)),
        ({"severity": "critical", "running": True}, "emergency", timedelta(minutes=15)),
        ({"severity": "critical"}, "high", timedelta(hours=1)),
        ({"severity": "low", "running": True}, "high", timedelta(hours=1)),
        ({"severity": "medium"}, "normal", timedelta(hours=4)),
        ({"reasons": [{"source": "recheck", "id": "r"}]}, "background", timedelta(hours=24)),
        ({"reasons": [{"source": "recheck", "id": "r"}], "priority": "high"}, "high", timedelta(hours=1)),
        ({"reasons": [{"source": "recheck", "id": "r"}], "running": True}, "background", timedelta(hours=24)),
    ],
)
def test_priority_classes_and_deadlines(extra: dict[str, object], expected: str, sla: timedelta) -> None:
    job = make_job(merge_impact(None, imp(**extra)), T0, W)
    assert job.priority == expected
    assert job.deadline == T0 + W + sla


def test_forced_priority_is_a_floor() -> None:
    assert (
        classify(severity="high", kev=True, running=False, sources={"recheck"}, forced="normal")
        == "emergency"
    )


def test_rescan_when_asked_or_stale() -> None:
    assert make_job(merge_impact(None, imp(kind="rescan")), T0, W).kind == "rescan"
    stale = imp(inventory_observed_at=T0 - timedelta(days=8))
    job = make_job(merge_impact(None, stale), T0, W)
    assert job.kind == "rescan"
    assert any(r.id == "stale" for r in job.reasons)
    assert make_job(merge_impact(None, stale), T0, W, JobConfig(max_inventory_age=None)).kind == "reevaluate"
    fresh = merge_impact(merge_impact(None, stale), imp(inventory_observed_at=T0))
    assert make_job(fresh, T0, W).kind == "reevaluate"


def test_inputs_collect_advisories_vex_and_policy() -> None:
    pending = merge_impact(None, imp())
    pending = merge_impact(
        pending, imp(reasons=[{"source": "vex", "id": "doc#2"}, {"source": "vex", "id": "doc#1"}])
    )
    pending = merge_impact(pending, imp(reasons=[{"source": "policy", "id": "p@3"}], policy_revision=3))
    job = make_job(pending, T0, W)
    assert [(a.id, a.modified) for a in job.inputs.advisories] == [("GHSA-1", T0)]
    assert job.inputs.vex == ["doc#1", "doc#2"]
    assert job.inputs.policy_revision == 3


def test_merge_order_gives_byte_identical_jobs() -> None:
    a = imp(severity="high", reasons=[{"source": "advisory", "id": "B", "modified": T0}])
    b = imp(kev=True)
    c = imp(reasons=[{"source": "vex", "id": "v"}], kind="rescan")
    one = make_job(merge_impact(merge_impact(merge_impact(None, a), b), c), T0, W)
    two = make_job(merge_impact(merge_impact(merge_impact(None, c), a), b), T0, W)
    assert dumps(one) == dumps(two)


def test_retry_of_travels_from_impact_to_job_and_run_plan() -> None:
    """A retry recheck's run id survives coalescing (any order) into the job and the run's plan."""
    retry = imp(reasons=[{"source": "recheck", "id": "r1", "modified": T0}], retry_of="run-old")
    plain = imp()
    other = imp(retry_of="run-older")
    for order in ([retry, plain], [plain, retry]):
        pending = None
        for impact in order:
            pending = merge_impact(pending, impact)
        assert pending is not None
        assert pending.retry_of == "run-old"
        job = make_job(pending, T0, W)
        assert job.retry_of == "run-old"
    both = merge_impact(merge_impact(None, retry), other)
    assert both == merge_impact(merge_impact(None, other), retry)
    assert both.retry_of == "run-old"  # the smallest id, whichever came first
    assert make_job(merge_impact(None, plain), T0, W).retry_of is None

    jobs = [make_job(merge_impact(None, plain), T0, W), make_job(merge_impact(None, retry), T0, W)]
    assert run_retry_of(jobs) == "run-old"
    assert run_retry_of(jobs[:1]) is None
    assert run_retry_of([]) is None


def test_pending_rows_round_trip_and_old_rows_decode() -> None:
    pending = merge_impact(None, imp(retry_of="run-old"))
    assert decode_pending(encode_pending(pending)) == pending
    old_row = encode_pending(pending)[:11]  # written before retry_of existed
    assert decode_pending(old_row).retry_of is None


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["advisory", "vex", "policy"]),
            st.sampled_from(["A", "B"]),
            st.none() | st.integers(0, 3),
            st.sampled_from(["x", "y"]),
        ),
        max_size=30,
    )
)
def test_sorted_reasons_is_the_reason_order(rows: list[tuple[str, str, int | None, str]]) -> None:
    from streams.jobs import reason_order, sorted_reasons

    assert sorted_reasons(rows) == sorted(rows, key=reason_order)
