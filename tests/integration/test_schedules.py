"""A schedule fires on a real worker; the worker is killed across at least two occurrences and restarted;
the runs that result are exactly what the `latest` missed-run policy says, each once, and the read models
show them.

The cron has a seconds field (`*/10 * * * * *`, every 10 s) so the test does not wait minutes; the worker
ticks every 0.75 s (STELLA_IDLE_FLUSH_SECONDS=3). Which occurrences fall into the outage depends on the
machine's speed, so the test checks the rule, not fixed times: every occurrence from creation to the end is
decided exactly once (fired or skipped), the outage's occurrences are decided by the first tick after the
restart as the pure core says (`streams.schedules.due`), and every fired occurrence became one planned run
with the catalog's jobs, and a completed run in the read models.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from cli.schedules import main as schedules_main
from schemas.canonical import dumps
from schemas.messages import MissedRuns, OnlyIf, ScheduleEvent, ScheduleSpec, Selector
from streams.schedules import ScheduleState, due, fire_times, schedule_run_id
from tests.integration.pipeline_kit import Deployment, inventories

CRON = "*/10 * * * * *"
GRACE = 8


async def _events(pipe: Any, schedule_id: str = "sweep") -> list[ScheduleEvent]:
    """The schedule's events in order, at-least-once repeats (byte-identical) dropped."""
    records = await pipe.records("schedule-events", timeout=15.0)
    seen: set[bytes] = set()
    out = []
    for r in records:
        if r.value not in seen:
            seen.add(r.value)
            event = ScheduleEvent.model_validate_json(r.value)
            if event.schedule_id == schedule_id:
                out.append(event)
    return out


async def _wait(
    pipe: Any, what: str, check: Any, timeout: float = 180.0, schedule_id: str = "sweep"
) -> list[ScheduleEvent]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pipe.alive()
        events = await _events(pipe, schedule_id)
        if check(events):
            return events
        await asyncio.sleep(1.0)
    logs = "\n".join(w.output()[-3000:] for w in pipe.workers)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def _fired(events: list[ScheduleEvent]) -> list[datetime]:
    return [o.nominal for e in events for o in e.occurrences if o.fired]


def cli(pipe: Any, action: str, *args: str) -> int:
    infra = ["--tenant", "acme", "--bootstrap", pipe.bootstrap, "--topic-prefix", pipe.prefix]
    infra += ["--mongo-url", pipe.mongo_url, "--db", pipe.db]
    return schedules_main([action, *args, *infra])


async def test_schedule_fires_and_catches_up_after_a_restart(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = deployment()
    await pipe.start(workers=1)
    try:
        await pipe.publish(inventories())
        spec = ScheduleSpec(
            name="sweep",
            cron=CRON,
            selection=Selector(all=True),
            missed=MissedRuns(policy="latest", grace_seconds=GRACE),
        )
        spec_file = pipe.home / "sweep.json"
        spec_file.write_bytes(dumps(spec))
        # The CLI runs its own event loop: off this test's loop.
        assert await asyncio.to_thread(cli, pipe, "create", "sweep", "--spec", str(spec_file)) == 0
        # A second schedule only for images without a report in the last day: once the inventories' first
        # evaluations completed (their results re-keyed to the tenant's partition), it selects none.
        stale = spec.model_copy(update={"name": "stale", "only_if": OnlyIf(last_report_older_than_days=1)})
        stale_file = pipe.home / "stale.json"
        stale_file.write_bytes(dumps(stale))
        assert await asyncio.to_thread(cli, pipe, "create", "stale", "--spec", str(stale_file)) == 0
        created = await _wait(pipe, "the schedule", lambda ev: bool(ev))
        assert created[0].status == "active"
        created_at = created[0].at

        await _wait(pipe, "two fired occurrences", lambda ev: len(_fired(ev)) >= 2)
        pipe.workers[-1].kill()
        killed_at = datetime.now(UTC)
        # Down across at least two occurrences, each older than the grace period by the restart.
        await asyncio.sleep(30)
        pipe.add_worker()
        before = len(await _events(pipe))
        events = await _wait(
            pipe,
            "two occurrences fired after the restart",
            lambda ev: len(ev) > before and len(_fired(ev[before:])) >= 2,
        )
        end = max(o.nominal for e in events for o in e.occurrences)

        # Every occurrence from creation to the last one decided, exactly once.
        decided = [o.nominal for e in events for o in e.occurrences]
        assert sorted(decided) == list(fire_times(CRON, "UTC", created_at, until=end))
        assert len(set(decided)) == len(decided)

        # The outage: the first event after the restart decided the missed occurrences as the policy says.
        catchup = next(e for e in events if any(o.nominal > killed_at for o in e.occurrences))
        outage = [o for o in catchup.occurrences if o.why != "on-time"]
        assert len(outage) >= 2, catchup
        previous = max(o.nominal for e in events[: events.index(catchup)] for o in e.occurrences)
        replay = due(
            ScheduleState(
                tenant="acme",
                schedule_id="sweep",
                spec=spec,
                created_at=created_at,
                updated_at=created_at,
                cursor=previous,
            ),
            catchup.at,
        )
        assert [(d.nominal, d.fire, d.why) for d in replay.decisions] == [
            (o.nominal, o.fired, o.why) for o in catchup.occurrences
        ]
        assert sum(o.fired for o in outage) == (
            0 if any(o.why == "on-time" for o in catchup.occurrences) else 1
        )

        # Each fired occurrence is one planned run (deterministic id) with the tenant's one image.
        fired = _fired(events)
        want_runs = {schedule_run_id("acme", "sweep", n) for n in fired}
        plans = [orjson.loads(r.value) for r in await pipe.records("run-inputs", timeout=60.0)]
        planned = [
            p for p in plans if p.get("schema") == "scheduler.run-planned@1" and p["run_id"] in want_runs
        ]
        assert {p["run_id"] for p in planned} == want_runs
        skipped = {o.run_id for e in events for o in e.occurrences if not o.fired}
        assert not skipped & {p["run_id"] for p in plans}
        jobs = [orjson.loads(r.value) for r in await pipe.records("jobs", timeout=60.0)]
        sched_jobs = [j for j in jobs if j["run_id"] in want_runs]
        assert {j["run_id"] for j in sched_jobs} == want_runs
        assert {j["priority"] for j in sched_jobs} == {"background"}
        assert {j["tenant"] for j in sched_jobs} == {"acme"}

        # Read models: the schedule, its decided occurrences, and the fired runs completed.
        db = pipe.mongo()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            doc = db.schedules.find_one({"_id": "acme/sweep"}) or {}
            occurrences = {d["_id"]: d for d in db.schedule_runs.find({"schedule_id": "sweep"})}
            runs = {d["_id"]: d.get("state") for d in db.runs.find({"_id": {"$in": sorted(want_runs)}})}
            if (
                doc.get("fired_total", 0) >= len(fired)
                and want_runs <= occurrences.keys()
                and set(runs) == want_runs
                and set(runs.values()) == {"completed"}
            ):
                break
            await asyncio.sleep(1.0)
        else:
            raise AssertionError(f"read models incomplete: schedule {doc}, runs {runs}")
        assert doc["status"] == "active"
        assert doc["missed_total"] >= 1
        assert doc["next_fire"] > doc["last_fired"]
        assert {k for k, v in occurrences.items() if v["fired"]} >= want_runs

        # onlyIf at firing time: both of acme's images have a fresh report, so the sweep selects none.
        def all_filtered(ev: list[ScheduleEvent]) -> bool:
            return any(
                o.fired and o.selected == 2 and o.filtered_only_if == 2 and o.jobs == 0
                for e in ev
                for o in e.occurrences
            )

        await _wait(pipe, "an onlyIf-filtered occurrence", all_filtered, schedule_id="stale")

        # The CLI reads the same read models: show, and a catch-up dry run (nothing missed while running).
        capsys.readouterr()
        assert cli(pipe, "show", "sweep", "--json") == 0
        shown = orjson.loads(capsys.readouterr().out)
        assert shown["status"] == "active"
        assert {r["run_id"] for r in shown["recent"]} <= set(occurrences)
        assert cli(pipe, "catchup", "sweep", "--dry-run", "--json") == 0
        dry = orjson.loads(capsys.readouterr().out)
        assert dry["policy"] == "latest"
        assert len(dry["would_fire"]) <= 1
        print(f"fired {len(fired)}, outage decided {[(o.nominal, o.fired, o.why) for o in outage]}")
    finally:
        pipe.stop()
