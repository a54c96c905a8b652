"""Job execution end to end (issue 5): a real worker process with ``STELLA_EXECUTOR=http`` against a real
HTTP Scanner / Policy Engine on 127.0.0.1 that misbehaves per image, on the real broker and FerretDB.

Checked from the outside only: the ``job-attempts``, ``job-results``, ``deadletter``, ``sla-breaches`` and
``events.signed`` topics, the MongoDB read models and what the remote engine saw (request arrival times).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from schemas.messages import DeadLetter, JobAttempt, JobCommand, JobResult, SlaBreach
from signing.dsse import verify
from signing.keys import load_public_keys
from signing.statement import PREDICATE_SLA_BREACH
from tests.integration.executor_kit import Behaviour, digest, http_env, inventory, scripted_engine
from tests.integration.pipeline_kit import T0, Deployment, Pipeline

TENANT = "acme"
FLAKY, DOWN, LIMITED, HANG, BAD, OK = (digest(n) for n in range(1, 7))
BEHAVIOURS = {
    FLAKY: Behaviour("flaky", n=2),  # 503, 503, then 200
    DOWN: Behaviour("down"),  # 500 forever
    LIMITED: Behaviour("limited", n=1, retry_after=3),  # 429 Retry-After: 3, then 200
    HANG: Behaviour("hang", n=1, hang_s=5.0),  # first call outlives the 2 s timeout, then 200
    BAD: Behaviour("bad"),  # 400: permanent
    OK: Behaviour("ok"),
}


def decoded(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def by_digest(results: list[JobResult]) -> dict[str, JobResult]:
    out: dict[str, JobResult] = {}
    for r in results:
        assert r.image_digest not in out, f"two results for {r.image_digest}: {out[r.image_digest]} / {r}"
        out[r.image_digest] = r
    return out


async def test_remote_executor_retries_dead_letters_and_breaches(
    deployment: Deployment,
    prefix: str,
    tmp_path: Path,
) -> None:
    pipe = deployment()
    with scripted_engine(BEHAVIOURS) as engine:
        try:
            await pipe.start(extra_env=http_env(engine))
            await pipe.publish([inventory(TENANT, d, T0) for d in BEHAVIOURS])
            await wait_for_jobs(pipe, len(BEHAVIOURS))
            await pipe.settle(timeout=150)

            jobs = [JobCommand.model_validate(d) for d in decoded(await pipe.records("jobs"))]
            assert sorted(j.image_digest for j in jobs) == sorted(BEHAVIOURS)
            job_of = {j.image_digest: j for j in jobs}
            results = by_digest(
                [JobResult.model_validate(d) for d in decoded(await pipe.records("job-results"))]
            )
            outcomes = {d: [a.outcome for a in r.attempts] for d, r in results.items()}

            # Fails twice, then succeeds on the third attempt; the result carries the whole history.
            assert results[FLAKY].status == "completed", results[FLAKY].error
            assert outcomes[FLAKY] == ["transient", "transient", "ok"]
            assert [a.attempt for a in results[FLAKY].attempts] == [1, 2, 3]
            assert [f.id for f in results[FLAKY].findings] == ["CVE-2026-0001"]
            assert engine.arrivals_for(FLAKY) == 3
            # Retries were scheduled through the job-attempts topic, attempt history growing each time.
            reports = [JobAttempt.model_validate(d) for d in decoded(await pipe.records("job-attempts"))]
            flaky_reports = sorted(len(r.attempts) for r in reports if r.image_digest == FLAKY)
            assert flaky_reports == [1, 2]
            # Event time moves on by the backoff: each attempt is later than the previous one.
            ats = [a.at for a in results[FLAKY].attempts]
            assert ats[0] == job_of[FLAKY].window_end
            assert ats[0] < ats[1] < ats[2]

            # Always 500: the budget (4 attempts) is spent, the job fails, dead letter + SLA breach.
            down = results[DOWN]
            assert down.status == "failed"
            assert outcomes[DOWN] == ["transient"] * 4
            assert down.sla_breached
            assert "budget-exhausted" in down.error
            assert engine.arrivals_for(DOWN) == 4
            letters = [DeadLetter.model_validate(d) for d in decoded(await pipe.records("deadletter"))]
            job_letters = {lt.job.image_digest: lt for lt in letters if lt.job is not None}
            letter = job_letters[DOWN]
            assert letter.reason == "job-failed"
            assert letter.job == job_of[DOWN]
            assert [a.outcome for a in letter.attempts] == ["transient"] * 4
            assert all("HTTP 500" in a.error for a in letter.attempts)
            assert letter.source_topic == f"{prefix}jobs"
            breaches = [SlaBreach.model_validate(d) for d in decoded(await pipe.records("sla-breaches"))]
            assert [b.image_digest for b in breaches] == [DOWN]
            assert breaches[0].job_id == job_of[DOWN].job_id
            assert breaches[0].reason.startswith("budget-exhausted")
            assert len(breaches[0].attempts) == 4
            # ... and the breach is signed on events.signed with the sla-breach predicate.
            keys = load_public_keys(tmp_path / "keys" / "test.pub.json")
            statements = []
            for record in await pipe.records("events.signed"):
                envelope = orjson.loads(record.value)
                assert verify(envelope, keys).ok
                statements.append(orjson.loads(base64.b64decode(envelope["payload"])))
            signed_breaches = [s for s in statements if s["predicateType"] == PREDICATE_SLA_BREACH]
            assert len(signed_breaches) == 1
            assert signed_breaches[0]["predicate"]["job_id"] == job_of[DOWN].job_id
            assert signed_breaches[0]["predicate"]["image_digest"] == DOWN

            # 429: Retry-After (3 s) is honoured: in event time and on the remote side's wall clock.
            assert results[LIMITED].status == "completed"
            assert outcomes[LIMITED] == ["transient", "ok"]
            assert results[LIMITED].attempts[0].retry_after_s == 3
            first, second = results[LIMITED].attempts
            assert second.at - first.at >= timedelta(seconds=3)
            calls = engine.calls_for(LIMITED)
            assert [c.status for c in calls] == [429, 200]
            assert calls[1].at - calls[0].at >= 3.0

            # Hang: the first attempt times out (2 s), the retry succeeds.
            assert results[HANG].status == "completed"
            assert outcomes[HANG] == ["timeout", "ok"]
            assert "2s" in results[HANG].attempts[0].error

            # 400: permanent, never retried, dead-lettered, but not an SLA breach.
            bad = results[BAD]
            assert bad.status == "failed"
            assert outcomes[BAD] == ["permanent"]
            assert "HTTP 400" in bad.attempts[0].error
            assert not bad.sla_breached
            assert engine.arrivals_for(BAD) == 1
            assert job_letters[BAD].reason == "job-failed"
            assert "permanent-error" in job_letters[BAD].error
            assert not any(r.image_digest == BAD for r in reports)

            assert outcomes[OK] == ["ok"]
            assert sorted(job_letters) == sorted([DOWN, BAD])

            # Read models: one terminal document per job, the history and breach included.
            docs = {d["image_digest"]: d for d in pipe.mongo().jobs.find({})}
            assert sorted(docs) == sorted(BEHAVIOURS)
            assert docs[DOWN]["status"] == "failed"
            assert docs[DOWN]["sla_breached"] is True
            assert docs[DOWN]["sla_breach"]["reason"].startswith("budget-exhausted")
            assert len(docs[DOWN]["attempts"]) == 4
            assert [a["outcome"] for a in docs[FLAKY]["attempts"]] == ["transient", "transient", "ok"]
            pipe.alive()
        finally:
            pipe.stop()


async def wait_for_jobs(pipe: Pipeline, count: int, timeout: float = 90) -> None:
    """The worker plans the jobs once it is up and the window has idled: wait for that before settle()."""

    async def planned() -> bool:
        return len(await pipe.records("jobs", timeout=0.5)) >= count

    await _wait_for(planned, timeout, f"{count} jobs on the jobs topic", pipe)


async def _wait_for(predicate: Any, timeout: float, what: str, pipe: Pipeline) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        pipe.alive()
        await asyncio.sleep(0.3)
    logs = "\n".join(w.output()[-3000:] for w in pipe.workers)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


async def test_restart_with_pending_retries_loses_none(
    deployment: Deployment,
) -> None:
    """SIGKILL the worker while every failing job has a retry pending (due seconds ahead), start a new
    one: each job still ends terminal exactly once and the attempt count carries on from the table."""
    flaky = [digest(100 + n) for n in range(4)]
    down = digest(200)
    behaviours = {d: Behaviour("flaky", n=2) for d in flaky} | {down: Behaviour("down")}
    pipe = deployment()
    # Base 6 s: the first retry is due 3-6 s after the first failure, the second 6-12 s after that.
    env_overrides = {
        "STELLA_RETRY_BASE_SECONDS": "6",
        "STELLA_RETRY_MAX_SECONDS": "12",
        "STELLA_RETRY_MAX_ATTEMPTS": "3",
    }
    with scripted_engine(behaviours) as engine:
        try:
            env = http_env(engine, **env_overrides)
            await pipe.start(extra_env=env)
            await pipe.publish([inventory(TENANT, d, T0) for d in behaviours])

            async def first_failures_reported() -> bool:
                reports = decoded(await pipe.records("job-attempts", timeout=0.5))
                return {r["image_digest"] for r in reports} == set(behaviours)

            await _wait_for(first_failures_reported, 90, "every job's first failure on job-attempts", pipe)
            killed_at = time.monotonic()
            pipe.workers[0].kill()
            # Every job has failed exactly once and none has been retried yet: all retries are pending.
            assert {d: engine.arrivals_for(d) for d in behaviours} == dict.fromkeys(behaviours, 1)
            reports = [JobAttempt.model_validate(d) for d in decoded(await pipe.records("job-attempts"))]
            assert all(len(r.attempts) == 1 for r in reports)

            pipe.add_worker(env)
            await pipe.settle(timeout=150)

            results = [JobResult.model_validate(d) for d in decoded(await pipe.records("job-results"))]
            final = by_digest(results)  # exactly one result per job, even across the crash
            assert sorted(final) == sorted(behaviours)
            for d in flaky:
                # Attempts continued (1, 2 before... 3 after), never restarted from 1.
                assert [a.outcome for a in final[d].attempts] == ["transient", "transient", "ok"], final[d]
                assert [a.attempt for a in final[d].attempts] == [1, 2, 3]
                assert final[d].status == "completed"
                assert engine.arrivals_for(d) == 3
                retried = [c for c in engine.calls_for(d)][1:]
                assert all(c.at > killed_at for c in retried)
            assert final[down].status == "failed"
            assert [a.attempt for a in final[down].attempts] == [1, 2, 3]
            assert engine.arrivals_for(down) == 3
            breaches = decoded(await pipe.records("sla-breaches"))
            assert [b["image_digest"] for b in breaches] == [down]

            # Read models: every job terminal, exactly once (one document each), attempts carried on.
            async def projected() -> bool:
                docs = list(pipe.mongo().jobs.find({}))
                return len(docs) == len(behaviours) and all("attempts" in d for d in docs)

            await _wait_for(projected, 30, "the jobs read model", pipe)
            docs = list(pipe.mongo().jobs.find({}))
            assert Counter(d["image_digest"] for d in docs) == Counter(list(behaviours))
            assert all(d["status"] in ("completed", "failed") for d in docs)
            assert all(len(d["attempts"]) == 3 for d in docs)
            run_docs = list(pipe.mongo().runs.find({}))
            assert run_docs
            assert all(r["state"] in ("completed", "error") for r in run_docs)
            pipe.alive()
        finally:
            pipe.stop()
