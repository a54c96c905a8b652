"""The per-tenant window fold: coalescing, closing on the watermark, late events, idle flush."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.canonical import dumps
from schemas.messages import Impact
from streams.windows import (
    WindowState,
    add_impact,
    add_impacts,
    decode_windows,
    encode_windows,
    flush_idle,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)  # a multiple of 30 s


def impact(
    digest: str,
    at: int,
    *,
    source: str = "advisory",
    rid: str = "GHSA-1",
    severity: str = "medium",
    **extra: object,
) -> Impact:
    return Impact.model_validate(
        {
            "tenant": "t1",
            "image_digest": digest,
            "event_time": T0 + timedelta(seconds=at),
            "reasons": [{"source": source, "id": rid, "modified": T0, "detail": f"{digest} {rid}"}],
            "severity": severity,
            **extra,
        }
    )


def run(impacts: list[Impact], grace: int = 10) -> tuple[WindowState, list[bytes]]:
    state = None
    out = []
    for i in impacts:
        state, jobs = add_impact(state, i, 30, grace)
        out += [dumps(j) for j in jobs]
    final, jobs = flush_idle(state, 30)
    return final, out + [dumps(j) for j in jobs]


def test_one_job_per_image_per_window_with_everything_merged() -> None:
    _state, jobs = run(
        [
            impact("d1", 1, rid="A", severity="medium"),
            impact("d1", 5, rid="B", severity="critical", kev=True),
            impact("d1", 9, source="recheck", rid="r", severity="unknown", kind="rescan"),
            impact("d2", 2, rid="A"),
        ]
    )
    assert len(jobs) == 2
    from schemas.canonical import loads

    d1 = loads(jobs[0])
    assert d1["image_digest"] == "d1"
    assert d1["kind"] == "rescan"
    assert d1["priority"] == "emergency"
    assert [r["id"] for r in d1["reasons"]] == ["A", "B", "r"]
    assert d1["window_start"] == "2024-01-01T00:00:00Z"
    assert d1["window_end"] == "2024-01-01T00:00:30Z"
    assert d1["deadline"] == "2024-01-01T00:15:30Z"


def test_windows_close_when_the_watermark_passes_end_plus_grace() -> None:
    state, jobs = add_impact(None, impact("d1", 1), 30, 10)
    assert jobs == []
    state, jobs = add_impact(state, impact("d2", 39), 30, 10)
    assert jobs == []  # watermark 39 - grace 10 = 29 < 30
    state, jobs = add_impact(state, impact("d2", 40), 30, 10)
    assert [j.image_digest for j in jobs] == ["d1"]


def test_late_impacts_go_to_the_next_open_window_and_are_counted() -> None:
    state, _ = add_impact(None, impact("d1", 1), 30, 10)
    state, closed = add_impact(state, impact("d2", 45), 30, 10)
    assert [j.image_digest for j in closed] == ["d1"]
    state, _ = add_impact(state, impact("d3", 2), 30, 10)  # its window [0,30) is closed
    assert state.late == 1
    _, jobs = flush_idle(state, 30)
    late_job = next(j for j in jobs if j.image_digest == "d3")
    assert late_job.window_start == T0 + timedelta(seconds=30)


def test_flush_idle_closes_everything_and_later_stragglers_are_late() -> None:
    state, _ = add_impact(None, impact("d1", 1), 30, 10)
    state, jobs = flush_idle(state, 30)
    assert [j.image_digest for j in jobs] == ["d1"]
    assert state.windows == {}
    state, _ = add_impact(state, impact("d1", 2), 30, 10)
    assert state.late == 1
    _, again = flush_idle(state, 30)
    assert again[0].window_start == T0 + timedelta(seconds=30)
    assert again[0].job_id != jobs[0].job_id


def test_state_round_trips() -> None:
    state, _ = add_impact(
        None, impact("d1", 1, kev=True, running=True, policy_revision=4, inventory_observed_at=T0), 30, 10
    )
    state, _ = add_impact(state, impact("d2", 31), 30, 10)
    assert decode_windows(encode_windows(state)) == state


many = st.lists(
    st.tuples(
        st.sampled_from(["d1", "d2", "d3"]),
        st.integers(0, 29),
        st.sampled_from(["advisory", "vex", "policy", "recheck"]),
        st.sampled_from(["A", "B", "C"]),
        st.sampled_from(["low", "medium", "high", "critical", "unknown"]),
        st.booleans(),
        st.booleans(),
    ),
    min_size=1,
    max_size=15,
)


@settings(max_examples=60)
@given(many, st.data())
def test_order_within_a_window_does_not_change_the_jobs(rows: list[tuple], data: st.DataObject) -> None:  # type: ignore[type-arg]
    impacts = [
        impact(d, at, source=src, rid=rid, severity=sev, kev=kev, running=running)
        for d, at, src, rid, sev, kev, running in rows
    ]
    shuffled = data.draw(st.permutations(impacts))
    assert run(impacts)[1] == run(list(shuffled))[1]


@settings(max_examples=30)
@given(many)
def test_redelivering_impacts_changes_nothing(rows: list[tuple]) -> None:  # type: ignore[type-arg]
    impacts = [impact(d, at, source=src, rid=rid, severity=sev) for d, at, src, rid, sev, _, _ in rows]
    assert run(impacts)[1] == run(impacts + impacts)[1]


@given(st.lists(st.tuples(st.sampled_from(["d1", "d2", "d3"]), st.integers(0, 200)), max_size=40), st.data())
def test_folding_a_batch_equals_folding_one_at_a_time(
    rows: list[tuple[str, int]], data: st.DataObject
) -> None:
    """The tenant stage folds a whole batch of impacts at once (add_impacts); split anywhere, the state
    and the jobs equal the one-at-a-time fold, late impacts included (rows are not in time order)."""
    impacts = [impact(d, at, rid=f"A{at % 7}") for d, at in rows]
    one_state, one_jobs = None, []
    for i in impacts:
        one_state, jobs = add_impact(one_state, i, 30, 10)
        one_jobs += [dumps(j) for j in jobs]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(impacts)), max_size=4)))
    state, out = None, []
    for begin, end in zip([0, *cuts], [*cuts, len(impacts)], strict=True):
        state, jobs = add_impacts(state, impacts[begin:end], 30, 10)
        out += [dumps(j) for j in jobs]
    assert out == one_jobs
    if one_state is not None:
        assert state is not None
        assert encode_windows(state) == encode_windows(one_state)
