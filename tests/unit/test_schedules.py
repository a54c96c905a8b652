"""The schedule core: fire times (DST both ways, month ends, leap day, steps), the command fold, missed-run
policies, pause / resume, selection and the determinism of run ids."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cli.schedules import main as schedules_cli
from schemas.messages import (
    Inventory,
    MissedRuns,
    OnlyIf,
    ScheduleCommand,
    ScheduleLimits,
    ScheduleSpec,
    Selector,
)
from streams.schedules import (
    ScheduleState,
    decode,
    due,
    encode,
    fire_times,
    next_fire,
    next_fires,
    on_command,
    on_tick,
    schedule_run_id,
    select_images,
)
from streams.tenants import TenantCatalog, meta_from_inventory

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def spec(cron: str = "0 * * * *", tz: str = "UTC", **kw: object) -> ScheduleSpec:
    return ScheduleSpec.model_validate({"cron": cron, "timezone": tz, **kw})


def cmd(action: str, at: datetime, s: ScheduleSpec | None = None, sid: str = "nightly") -> ScheduleCommand:
    return ScheduleCommand(action=action, tenant="acme", schedule_id=sid, at=at, spec=s)  # type: ignore[arg-type]


def created(s: ScheduleSpec, at: datetime = T0) -> ScheduleState:
    state = on_command(None, cmd("create", at, s), None).state
    assert state is not None
    return state


def catalog(n: int = 3) -> TenantCatalog:
    images = {}
    for i in range(n):
        inv = Inventory(
            tenant="acme",
            image_digest=f"sha256:{i:064x}",
            repository=f"reg/app{i % 2}",
            namespaces=["prod" if i % 2 == 0 else "dev"],
            labels={"team": "a" if i < 2 else "b"},
            components=[],
            observed_at=T0,
        )
        images[inv.image_digest] = meta_from_inventory(inv)
    return TenantCatalog(images)


# ---------------------------------------------------------------- DST


def test_spring_forward_berlin_0230_fires_once_after_the_gap() -> None:
    fires = next_fires("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 12), 3)
    assert fires == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    assert fires[1].astimezone(BERLIN).strftime("%H:%M %Z") == "03:00 CEST"


def test_fall_back_berlin_0230_fires_once_the_first_time() -> None:
    fires = next_fires("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 2)
    assert fires == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_fall_back_0130_berlin_is_ordinary_and_new_york_ambiguous_fires_once() -> None:
    # In Berlin the repeated hour is 02:00-03:00, so 01:30 is an ordinary time that day.
    assert next_fires("30 1 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 24, 23, 30),
        utc(2026, 10, 26, 0, 30),
    ]
    # In New York 01:30 happens twice on 2026-11-01: fired once, at 01:30 EDT.
    assert next_fires("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 2) == [
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 2, 6, 30),
    ]


def test_starting_inside_the_repeated_hour_does_not_refire_the_first_0230() -> None:
    # 01:10 UTC is 02:10 CET, after the first 02:30 (CEST, 00:30 UTC) already passed.
    assert next_fires("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 1, 10), 1) == [
        utc(2026, 10, 26, 1, 30)
    ]


def test_hourly_fires_on_both_repeated_0230s() -> None:
    fires = list(
        fire_times("30 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 45), until=utc(2026, 10, 25, 2, 0))
    )
    assert fires == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)]
    ids = {schedule_run_id("acme", "h", f) for f in fires}
    assert len(ids) == 2


# ---------------------------------------------------------------- calendar


def test_end_of_month_and_leap_day() -> None:
    assert next_fires("0 0 31 * *", "UTC", utc(2026, 1, 31, 1), 2) == [utc(2026, 3, 31), utc(2026, 5, 31)]
    assert next_fires("0 0 L * *", "UTC", utc(2026, 1, 31, 1), 2) == [utc(2026, 2, 28), utc(2026, 3, 31)]
    assert next_fires("0 12 29 2 *", "UTC", utc(2026, 1, 1), 2) == [
        utc(2028, 2, 29, 12),
        utc(2032, 2, 29, 12),
    ]


@given(n=st.integers(1, 30), start=st.datetimes(datetime(2020, 1, 1), datetime(2035, 1, 1)))
@settings(max_examples=60, deadline=None)
def test_minute_steps(n: int, start: datetime) -> None:
    fires = next_fires(f"*/{n} * * * *", "UTC", start.replace(tzinfo=UTC), 5)
    assert all(f.minute % n == 0 and f.second == 0 for f in fires)
    assert fires == sorted(set(fires))
    assert fires[0] > start.replace(tzinfo=UTC, microsecond=0)


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


@given(
    zone=st.sampled_from(ZONES),
    minute=st.integers(0, 59),
    hour=st.integers(0, 23),
    start=st.datetimes(datetime(2024, 1, 1), datetime(2030, 1, 1)),
)
@settings(max_examples=80, deadline=None)
def test_daily_fires_once_a_local_day_and_strictly_increasing(
    zone: str, minute: int, hour: int, start: datetime
) -> None:
    fires = next_fires(f"{minute} {hour} * * *", zone, start.replace(tzinfo=UTC), 8)
    assert all(a < b for a, b in itertools.pairwise(fires))
    days = [f.astimezone(ZoneInfo(zone)).date() for f in fires]
    assert len(set(days)) == len(days)
    for f in fires:
        local = f.astimezone(ZoneInfo(zone))
        wanted = datetime.combine(local.date(), time(hour, minute), tzinfo=ZoneInfo(zone))
        skipped_by_dst = wanted.astimezone(UTC).astimezone(ZoneInfo(zone)).replace(
            tzinfo=None
        ) != wanted.replace(tzinfo=None)
        # On time, or (the wall time did not exist that day) at the first instant after the gap.
        assert (local.hour, local.minute) == (hour, minute) or (skipped_by_dst and local > wanted)


def test_six_field_seconds() -> None:
    assert next_fires("*/20 * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 5), 3) == [
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 40),
        utc(2026, 1, 1, 0, 1, 0),
    ]


def test_invalid_cron_and_zone_are_clear_errors() -> None:
    with pytest.raises(ValidationError, match="Bad minute"):
        spec("61 * * * *")
    with pytest.raises(ValidationError, match="4 fields"):
        spec("* * * *")
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Base'"):
        spec(tz="Mars/Base")


# ---------------------------------------------------------------- the fold and missed runs


def test_on_time_tick_fires_once_and_a_repeated_tick_fires_nothing() -> None:
    state = created(spec("0 * * * *"))
    step = on_tick(state, utc(2026, 1, 1, 1, 0, 3), catalog())
    assert [r.nominal for r in step.runs] == [utc(2026, 1, 1, 1)]
    assert step.event is not None
    assert step.event.occurrences[0].why == "on-time"
    assert step.event.next_fire == utc(2026, 1, 1, 2)
    assert len(step.runs[0].jobs) == 3
    assert {j.priority for j in step.runs[0].jobs} == {"background"}
    assert step.state is not None
    again = on_tick(step.state, utc(2026, 1, 1, 1, 0, 8), catalog())
    assert again.runs == []
    assert again.event is None


@pytest.mark.parametrize(
    ("policy", "fired", "skipped"),
    [
        ("skip", [], [1, 2, 3]),
        ("latest", [3], [1, 2]),
        ("all", [2, 3], [1]),
    ],
)
def test_missed_policies(policy: str, fired: list[int], skipped: list[int]) -> None:
    s = spec("0 * * * *", missed=MissedRuns(policy=policy, max_catchup=2, grace_seconds=60))  # type: ignore[arg-type]
    state = created(s)
    step = on_tick(state, utc(2026, 1, 1, 3, 30), catalog())
    assert step.event is not None
    assert [o.nominal.hour for o in step.event.occurrences if o.fired] == fired
    assert [o.nominal.hour for o in step.event.occurrences if not o.fired] == skipped
    assert [r.nominal.hour for r in step.runs] == fired
    assert step.state is not None
    assert step.state.missed_total == len(skipped)


def test_latest_is_superseded_by_an_on_time_occurrence() -> None:
    state = created(spec("0 * * * *", missed=MissedRuns(policy="latest", grace_seconds=60)))
    step = on_tick(state, utc(2026, 1, 1, 3, 0, 10), None)
    assert step.event is not None
    assert [(o.nominal.hour, o.fired, o.why) for o in step.event.occurrences] == [
        (1, False, "missed-skipped"),
        (2, False, "missed-skipped"),
        (3, True, "on-time"),
    ]


def test_pause_across_an_occurrence_and_resume() -> None:
    state = created(spec("0 * * * *", missed=MissedRuns(policy="all", grace_seconds=60)))
    paused = on_command(state, cmd("pause", utc(2026, 1, 1, 0, 30)), None).state
    assert paused is not None
    assert next_fire(paused) is None
    assert on_tick(paused, utc(2026, 1, 1, 1, 0, 5), None).runs == []
    resumed = on_command(paused, cmd("resume", utc(2026, 1, 1, 1, 30)), None).state
    assert resumed is not None
    assert next_fire(resumed) == utc(2026, 1, 1, 2)
    step = on_tick(resumed, utc(2026, 1, 1, 2, 0, 5), None)
    assert step.event is not None
    assert [(o.nominal.hour, o.why) for o in step.event.occurrences] == [
        (2, "on-time")
    ]  # 01:00 never counted


def test_commands_that_cannot_apply_are_rejected_not_lost() -> None:
    assert on_command(None, cmd("pause", T0), None).event.rejected == "no schedule nightly"  # type: ignore[union-attr]
    state = created(spec())
    step = on_command(state, cmd("create", T0, spec()), None)
    assert step.state == state
    assert step.event is not None
    assert "exists" in step.event.rejected
    deleted = on_command(state, cmd("delete", T0), None).state
    assert deleted is not None
    assert deleted.status == "deleted"
    assert on_tick(deleted, utc(2026, 1, 2), None).runs == []
    assert on_command(deleted, cmd("create", utc(2026, 1, 3), spec()), None).state.status == "active"  # type: ignore[union-attr]


def test_update_starts_from_its_time() -> None:
    state = created(spec("0 * * * *"))
    updated = on_command(state, cmd("update", utc(2026, 1, 1, 5, 10), spec("*/30 * * * *")), None).state
    assert updated is not None
    assert next_fire(updated) == utc(2026, 1, 1, 5, 30)


def test_manual_run_has_its_own_id_and_does_not_move_the_cursor() -> None:
    state = created(spec("0 * * * *"))
    step = on_command(state, cmd("run", utc(2026, 1, 1, 0, 10)), catalog(2))
    assert [r.run_id for r in step.runs] == [
        schedule_run_id("acme", "nightly", utc(2026, 1, 1, 0, 10), "manual")
    ]
    assert step.state is not None
    assert step.state.cursor == state.cursor
    assert step.state.last_fired is None


@given(
    ticks=st.lists(st.integers(1, 6 * 3600), min_size=1, max_size=12),
    policy=st.sampled_from(["skip", "latest", "all"]),
)
@settings(max_examples=60, deadline=None)
def test_any_tick_sequence_decides_each_occurrence_exactly_once(ticks: list[int], policy: str) -> None:
    """However the ticks fall (restarts are gaps between them), each occurrence is decided once, fired or
    skipped, and re-running the same ticks gives the same run ids (replay)."""
    s = spec("*/10 * * * *", missed=MissedRuns(policy=policy, grace_seconds=120))  # type: ignore[arg-type]

    def play() -> tuple[list[str], list[datetime]]:
        state = created(s)
        now = T0
        ids: list[str] = []
        decided: list[datetime] = []
        for gap in ticks:
            now += timedelta(seconds=gap)
            step = on_tick(state, now, None)
            assert step.state is not None
            state = step.state
            if step.event:
                decided += [o.nominal for o in step.event.occurrences]
            ids += [r.run_id for r in step.runs]
        expected = list(fire_times("*/10 * * * *", "UTC", T0, until=now))
        assert decided == expected
        assert state.fired_total + state.missed_total == len(expected)
        return ids, decided

    first = play()
    assert first == play()
    assert len(set(first[0])) == len(first[0])


@given(
    tenant=st.text(min_size=1, max_size=8),
    sid=st.text(min_size=1, max_size=8),
    t=st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1)),
)
def test_run_ids_are_deterministic_and_distinct(tenant: str, sid: str, t: datetime) -> None:
    nominal = t.replace(tzinfo=UTC, microsecond=0)
    a = schedule_run_id(tenant, sid, nominal)
    assert a == schedule_run_id(tenant, sid, nominal)
    assert a != schedule_run_id(tenant, sid, nominal + timedelta(seconds=1))
    assert a != schedule_run_id(tenant, sid, nominal, "manual")
    assert a != schedule_run_id(tenant + "x", sid, nominal)


def test_state_codec_round_trips() -> None:
    state = on_tick(created(spec("0 * * * *", tz="Europe/Berlin")), utc(2026, 1, 1, 5), None).state
    assert state is not None
    assert decode(encode(state)) == state


def test_due_caps_a_huge_backlog() -> None:
    state = created(spec("* * * * * *"))  # every second
    result = due(state, T0 + timedelta(days=1))
    assert len(result.decisions) == 10_000
    assert not any(d.fire for d in result.decisions)
    assert result.cursor == T0 + timedelta(seconds=10_000)


# ---------------------------------------------------------------- selection


def test_selection_only_if_and_max_jobs() -> None:
    cat = catalog(4)
    digests = sorted(cat.images)
    now = utc(2026, 2, 1)
    assert select_images(spec(selection=Selector(namespaces=["prod"])), cat, now).selected == 2
    reports = {digests[0]: now - timedelta(days=1), digests[1]: now - timedelta(days=30)}
    sel = select_images(spec(only_if=OnlyIf(last_report_older_than_days=7)), cat, now, reports)
    assert (sel.selected, sel.filtered_only_if, [m.digest for m in sel.images]) == (4, 1, digests[1:])
    capped = select_images(spec(limits=ScheduleLimits(max_jobs=2)), cat, now, reports)
    # never reported first, then the oldest report
    assert [m.digest for m in capped.images] == digests[2:]
    assert capped.truncated == 2


def test_content_refresh_mode_makes_rescans_and_priority_override() -> None:
    s = spec(mode="content-refresh", priority="high")
    step = on_tick(created(s), utc(2026, 1, 1, 1), catalog(1))
    job = step.runs[0].jobs[0]
    assert (job.kind, job.priority, job.reasons[0].source) == ("rescan", "high", "schedule")
    assert job.deadline == utc(2026, 1, 1, 2)


# ---------------------------------------------------------------- CLI next


def test_cli_next_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = schedules_cli(
        [
            "next",
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--from",
            "2026-03-28T00:00:00Z",
            "--count",
            "2",
            "--json",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert '"utc":"2026-03-29T01:00:00Z"' in out
    assert '"local":"2026-03-29T03:00:00+02:00"' in out


def test_cli_next_bad_zone(capsys: pytest.CaptureFixture[str]) -> None:
    assert schedules_cli(["next", "--cron", "0 0 * * *", "--tz", "Nowhere/Land"]) == 2
    assert "unknown time zone" in capsys.readouterr().err


def test_stale_inventory_does_not_lift_a_sweep_out_of_background() -> None:
    step = on_tick(created(spec()), utc(2026, 6, 1, 1), catalog(1))  # inventory observed months earlier
    job = step.runs[0].jobs[0]
    assert (job.kind, job.priority) == ("reevaluate", "background")


def test_read_model_fold_of_schedule_events() -> None:
    from projections.fold import SCHEDULE_RUNS, SCHEDULES, Position, apply_all, fold

    state = created(spec("0 * * * *", missed=MissedRuns(policy="latest", grace_seconds=60)))
    step = on_tick(state, utc(2026, 1, 1, 2, 30), catalog(2))
    assert step.event is not None
    rejected = on_command(None, cmd("pause", T0, sid="ghost"), None).event
    assert rejected is not None
    docs = apply_all({}, fold(step.event, Position("schedule-events", 0, 5)))
    docs = apply_all(docs, fold(step.event, Position("schedule-events", 0, 5)))  # redelivery: no change
    docs = apply_all(docs, fold(rejected, Position("schedule-events", 0, 6)))
    doc = docs[SCHEDULES]["acme/nightly"]
    assert (doc["status"], doc["fired_total"], doc["missed_total"]) == ("active", 1, 1)
    assert (doc["last_fired"], doc["next_fire"]) == ("2026-01-01T02:00:00Z", "2026-01-01T03:00:00Z")
    runs = docs[SCHEDULE_RUNS]
    assert sorted((r["nominal"], r["fired"], r["why"], r["jobs"]) for r in runs.values()) == [
        ("2026-01-01T01:00:00Z", False, "missed-skipped", 0),
        ("2026-01-01T02:00:00Z", True, "missed-latest", 2),
    ]
    assert docs[SCHEDULES]["acme/ghost"]["last_rejected"]["why"] == "no schedule ghost"


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["tick", "pause", "resume"]), st.integers(1, 3 * 3600)),
        min_size=1,
        max_size=15,
    )
)
@settings(max_examples=60, deadline=None)
def test_nothing_fires_or_is_missed_while_paused(steps: list[tuple[str, int]]) -> None:
    state = created(spec("*/15 * * * *", missed=MissedRuns(policy="all", max_catchup=1000, grace_seconds=60)))
    now = T0
    paused_since: datetime | None = None
    paused_spans: list[tuple[datetime, datetime]] = []
    decided: list[datetime] = []
    for action, gap in steps:
        now += timedelta(seconds=gap)
        if action == "tick":
            step = on_tick(state, now, None)
        else:
            step = on_command(state, cmd(action, now), None)
            if action == "pause" and paused_since is None and step.event and not step.event.rejected:
                paused_since = now
            if action == "resume" and paused_since is not None and step.event and not step.event.rejected:
                paused_spans.append((paused_since, now))
                paused_since = None
        assert step.state is not None
        state = step.state
        if step.event:
            decided += [o.nominal for o in step.event.occurrences]
    assert len(set(decided)) == len(decided)
    # Exactly the occurrences outside the pauses, up to the last instant anything was decided at.
    horizon = paused_since or state.cursor
    expected = [
        n
        for n in fire_times("*/15 * * * *", "UTC", T0, until=horizon)
        if not any(start < n <= end for start, end in paused_spans)
    ]
    assert decided == expected
