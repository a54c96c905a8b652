"""The image-keyed job stage: a durable job queue (table), a fair in-memory runner that executes jobs by
priority class, and SLA-aware retries (docs/architecture.md §4-5).

The queue table is written only by the agent (faust forbids table writes outside stream iteration): the
runner reports back through topics (`job-attempts` for a scheduled retry, `job-results` for an outcome),
co-partitioned with `jobs`, and the agent folds those into the table. A restart therefore loses no
queued job and no pending retry: the table is recovered from its changelog and re-offered to the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import faust

from agents import observe
from agents.executors import Executor, Ok, attempt_of, execute_with_timeout
from agents.pipeline import OutputTooLarge, Pipeline
from agents.shell import Output, apply_guarded, defer, publish, read
from schemas.canonical import dumps
from schemas.codec import dead_letter
from schemas.messages import Attempt, JobAttempt, JobCancel, JobCommand, JobResult, JobStarted
from streams.fairness import Caps, QueueState, RunningState, admit
from streams.findings import completed_result, failed_result, skipped_result
from streams.guard import decode as unguard
from streams.job_queue import (
    DONE,
    Entry,
    ImageKey,
    enqueue,
    first_of_image,
    image_key,
    job_order,
    longer_history,
    queued,
    record_attempt,
    scaled_caps,
)
from streams.retry import GiveUp, RetryPolicy, next_attempt, sla_breach
from streams.simulation import image_result, is_simulation

log = logging.getLogger("stella.jobs")


class Runner:
    """Executes queued jobs, highest class first, within per-class and per-tenant caps."""

    def __init__(
        self, pipe: Pipeline, executor: Executor, caps: Caps, policy: RetryPolicy, before_execute: Any = None
    ) -> None:
        self.pipe = pipe
        self.executor = executor
        self.caps = caps
        self.policy = policy
        self.before_execute = before_execute
        self.entries: dict[str, Entry] = {}
        self.by_image: dict[ImageKey, set[str]] = {}  # the known live jobs of each image (job_queue rule)
        self.recovered: set[str] = set()  # known from a recovered table, not offered yet (see `know`)
        self.started: set[str] = set()  # admitted at least once and not forgotten: its image waits for it
        self.queue = QueueState()
        self.running = RunningState()
        self.waiting: list[tuple[float, str]] = []  # (monotonic due, job id) of retries not yet due
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.last: Any = None  # the `last` table, set by register()

    def know(self, entry: Entry) -> None:
        """A job of a recovered table: it holds back the later jobs of its image at once, but is only
        offered by the reconcile timer, once the agent has had time to fold the attempt reports still
        ahead of it on `job-attempts` (offered at once, it re-ran an attempt the table had not folded)."""
        job_id = entry.job.job_id
        if job_id in self.entries or job_id in self.running.jobs:
            return
        self._register(entry)
        self.recovered.add(job_id)
        self._hold_later(entry.job)

    def offer(self, entry: Entry) -> None:
        job_id = entry.job.job_id
        if job_id in self.running.jobs:
            return
        self.recovered.discard(job_id)
        self._register(entry)
        self.queue.remove(job_id)
        if not self._may_start(entry.job):
            return  # offered again when the job before it is forgotten
        self._hold_later(entry.job)
        delay = (entry.due_at - datetime.now(UTC)).total_seconds() if entry.due_at else 0.0
        if delay > 0:
            heapq.heappush(self.waiting, (time.monotonic() + delay, job_id))
        else:
            self.queue.enqueue(entry.job)
        self.wake.set()

    def forget(self, job_id: str) -> None:
        """The job is done (its result folded): the next job of its image may start."""
        entry = self._drop(job_id)
        if entry is None:
            return
        waiting = [e for e in self._same_image(entry.job) if e.job.job_id not in self.running.jobs]
        if waiting:
            following = min(waiting, key=lambda e: job_order(e.job))
            if following.job.job_id not in self.recovered:  # those the reconcile timer offers, from the table
                self.offer(following)

    def revoke(self) -> None:
        """A rebalance: forget every job not running. The recovered table brings back those still ours
        (`know`, then the reconcile timer); a stale one kept here would run against a stale `last-results`,
        or, its result folded by the partition's new owner, hold its image's later jobs back for good."""
        for job_id in [j for j in self.entries if j not in self.running.jobs]:
            self._drop(job_id)

    def _register(self, entry: Entry) -> None:
        self.entries[entry.job.job_id] = entry
        key = image_key(entry.job)
        if key is not None:
            self.by_image.setdefault(key, set()).add(entry.job.job_id)

    def _hold_later(self, job: JobCommand) -> None:
        # Jobs of the image offered before this one, which comes first: out of the queue until it is done.
        for later in self._same_image(job):
            if job_order(later.job) > job_order(job) and later.job.job_id not in self.running.jobs:
                self.queue.remove(later.job.job_id)

    def _drop(self, job_id: str) -> Entry | None:
        self.recovered.discard(job_id)
        self.started.discard(job_id)
        entry = self.entries.pop(job_id, None)
        self.queue.remove(job_id)
        key = image_key(entry.job) if entry is not None else None
        if key is not None:
            ids = self.by_image.get(key, set())
            ids.discard(job_id)
            if not ids:
                self.by_image.pop(key, None)
        return entry

    def _same_image(self, job: JobCommand) -> list[Entry]:
        key = image_key(job)
        if key is None:
            return []
        ids = self.by_image.get(key, set())
        return [self.entries[i] for i in sorted(ids) if i != job.job_id and i in self.entries]

    def _may_start(self, job: JobCommand) -> bool:
        return first_of_image(job, [o.job for o in self._same_image(job)], self.started)

    def backlog(self) -> dict[str, int]:
        return {cls: self.queue.depth(cls) for cls in ("emergency", "high", "normal", "background")}

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            while self.waiting and self.waiting[0][0] <= now:
                _, job_id = heapq.heappop(self.waiting)
                entry = self.entries.get(job_id)
                if entry is not None and job_id not in self.running.jobs and self._may_start(entry.job):
                    self.queue.enqueue(entry.job)
            while (job := admit(self.queue, self.running, self.caps)) is not None:
                self.started.add(job.job_id)
                task = asyncio.create_task(self._execute(job))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            observe.backlog(self.backlog())
            timeout = 1.0
            if self.waiting:
                timeout = max(0.01, min(timeout, self.waiting[0][0] - time.monotonic()))
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def _execute(self, job: JobCommand) -> None:
        retry: Entry | None = None
        try:
            entry = self.entries.get(job.job_id) or Entry(job)
            retry = await self._attempt(entry)
        except Exception:
            log.exception(
                "job %s: attempt crashed; it stays queued", job.job_id, extra={"job_id": job.job_id}
            )
            self._drop(job.job_id)  # the reconcile loop re-offers it from the table; the jobs after it wait
        finally:
            self.running.finish(job.job_id)
            self.wake.set()
        if retry is not None:
            # Only once the job has left `running`: offer() ignores a job that is still running, so
            # offering the retry from inside the attempt silently dropped it.
            self.offer(retry)

    async def _attempt(self, entry: Entry) -> Entry | None:
        """One attempt; returns the entry to re-offer when a retry was scheduled."""
        job, pipe = entry.job, self.pipe
        at = entry.next_at or job.window_end  # event time: replays decide and record identically
        announced: asyncio.Future[None] | None = None
        if not entry.attempts:
            started = JobStarted(job_id=job.job_id, run_id=job.run_id, tenant=job.tenant, at=at)
            # Acked while the executor runs, and always before the attempt publishes its outcome (the run
            # must see the start before the result): waiting for the ack first cost every job a round trip.
            announced = asyncio.ensure_future(publish([pipe.out("run-inputs", job.run_id, started)]))
        try:
            return await self._run_attempt(entry, at, announced)
        finally:
            if announced is not None:
                _settle_early(announced)

    async def _run_attempt(
        self, entry: Entry, at: datetime, announced: asyncio.Future[None] | None
    ) -> Entry | None:
        job, pipe = entry.job, self.pipe
        number = len(entry.attempts) + 1
        done = self._previous(job)
        if done is not None and done.job_id == job.job_id:
            # Already completed: a crash after `last-results` took the result but before the queue entry
            # became DONE. Re-executing would diff against this very result (a second, different result
            # for one job id); republishing the stored one is idempotent.
            if announced is not None:
                await announced
            await publish(result_outputs(pipe, done))
            return None
        if self.before_execute is not None:
            await self.before_execute(job)
        clock = time.perf_counter()
        outcome = await execute_with_timeout(
            self.executor, job, self.pipe.settings.executor_timeout_seconds + 5
        )
        kind = None if isinstance(outcome, Ok) else type(outcome).__name__.lower()
        observe.executor(type(self.executor).__name__, kind, time.perf_counter() - clock)
        if announced is not None:
            await announced
        attempts = [*entry.attempts, attempt_of(outcome, number, at)]
        previous = self._previous(job)
        if isinstance(outcome, Ok):
            result = completed_result(
                job,
                outcome.findings,
                outcome.verdict,
                previous_findings=previous.findings if previous else None,
                previous_verdict=previous.verdict if previous else "unknown",
                attempts=attempts,
                finished_at=at,
                traces=outcome.traces,
            )
            result = image_result(result, previous)
            try:
                outputs = result_outputs(pipe, result)
            except OutputTooLarge as exc:
                # A result that can never be published would leave the job queued and re-run forever:
                # it fails for good (its failed result carries no findings, so it fits) and is dead-lettered.
                await self._give_up(job, attempts, GiveUp("permanent-error", str(exc)), at, previous)
                return None
            await publish(outputs)
            return None
        decision = next_attempt(job, attempts, at, self.policy)
        if isinstance(decision, GiveUp):
            await self._give_up(job, attempts, decision, at, previous)
            return None
        observe.retry(job.priority)
        due = datetime.now(UTC) + timedelta(seconds=decision.delay_s)
        message = JobAttempt(
            job_id=job.job_id,
            tenant=job.tenant,
            image_digest=job.image_digest,
            attempts=attempts,
            next_at=decision.at,
            due_at=due,
        )
        await publish([pipe.out("job-attempts", job.image_digest, message)])
        return Entry(job, attempts, decision.at, due)

    async def _give_up(
        self, job: JobCommand, attempts: list[Attempt], decision: GiveUp, at: datetime, previous: Any
    ) -> None:
        pipe = self.pipe
        breached = decision.reason != "permanent-error" and not is_simulation(job)
        result = failed_result(
            job,
            attempts=attempts,
            finished_at=at,
            error=f"{decision.reason}: {decision.detail}",
            previous_verdict=previous.verdict if previous else "unknown",
            sla_breached=breached,
        )
        result = image_result(result, previous)
        outputs = result_outputs(pipe, result)
        if breached:
            breach = sla_breach(job, attempts, decision, at)
            outputs.append(pipe.out("sla-breaches", job.image_digest, breach))
        from schemas.codec import Rejected

        letter = dead_letter(
            Rejected(
                "jobs", "job-failed", f"{decision.reason}: {decision.detail}", "scheduler.job-command@1"
            ),
            pipe.settings.topic("jobs"),
            -1,
            -1,
            job.image_digest.encode(),
            dumps(job),
            at,
        ).model_copy(update={"job": job, "attempts": attempts})
        outputs.append(pipe.out("deadletter", pipe.settings.topic("jobs"), letter))
        await publish(outputs)
        observe.dead_letter("jobs", "job-failed")  # scheduler_deadletters_total counts these too

    def _previous(self, job: JobCommand) -> JobResult | None:
        if self.last is None:
            return None
        state = unguard(read(self.last, f"{job.tenant}/{job.image_digest}")).state
        return JobResult.model_validate_json(state) if state else None


def _settle_early(announced: asyncio.Future[None]) -> None:
    """An attempt that ended before awaiting its JobStarted (it crashed, or the worker stops) does not wait
    for that ack: the job stays queued without attempts, so its next attempt announces it again."""
    if not announced.done():
        announced.cancel()
    elif not announced.cancelled():
        announced.exception()  # retrieved: the attempt's own error is the one reported


def result_outputs(pipe: Pipeline, result: JobResult) -> list[Output]:
    # A simulation's results never reach job-results: no live read model, signature or table sees them.
    results = "simulation-results" if is_simulation(result) else "job-results"
    return [
        pipe.out(results, result.image_digest, result),
        pipe.out("run-inputs", result.run_id, result),
    ]


def register(pipe: Pipeline, executor: Executor, before_execute: Any = None) -> Runner:
    app, settings = pipe.app, pipe.settings
    queue = pipe.table("queue")
    last = pipe.table("last-results")
    caps = scaled_caps(settings.executor_concurrency)
    policy = RetryPolicy(
        base_delay_s=settings.retry_base_seconds,
        max_delay_s=max(settings.retry_base_seconds, settings.retry_max_seconds),
        max_attempts=settings.retry_max_attempts,
    )
    runner = Runner(pipe, executor, caps, policy, before_execute)
    runner.last = last

    def current(job_id: str) -> bytes | None:
        return unguard(read(queue, job_id)).state

    @app.agent(pipe.source("jobs", "job-attempts", "job-results", "simulation-results"), name="jobs")
    async def job_agent(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            decoded = await pipe.decode(event)
            if decoded is None:
                return
            model = decoded.model
            if isinstance(model, JobCommand):
                job = model

                def fold_job(state: bytes | None, job: JobCommand = job) -> tuple[bytes | None, list[Output]]:
                    return enqueue(state, job), []

                if current(job.job_id) is None:
                    await apply_guarded(queue, job.job_id, event, fold_job)
                    entry = queued(current(job.job_id))
                    if entry is not None:
                        defer(partial(runner.offer, entry))
            elif isinstance(model, JobAttempt):
                attempt = model

                def retry(
                    state: bytes | None, attempt: JobAttempt = attempt
                ) -> tuple[bytes | None, list[Output]]:
                    return record_attempt(state, attempt), []

                await apply_guarded(queue, attempt.job_id, event, retry)
                # After a restart the reconcile timer may have offered the recovered entry before this
                # report was folded: re-offer the longer history so attempts continue, not restart at 1.
                folded = longer_history(current(attempt.job_id), runner.entries.get(attempt.job_id))
                if folded is not None:
                    defer(partial(runner.offer, folded))
            elif isinstance(model, JobCancel):
                cancel = model
                entry = None if cancel.job_id in runner.running.jobs else queued(current(cancel.job_id))
                if entry is not None:
                    defer(partial(runner.forget, cancel.job_id))
                    skipped = image_result(
                        skipped_result(entry.job, finished_at=cancel.at), runner._previous(entry.job)
                    )

                    def skip(
                        _state: bytes | None, skipped: JobResult = skipped
                    ) -> tuple[bytes | None, list[Output]]:
                        return DONE, result_outputs(pipe, skipped)

                    await apply_guarded(queue, cancel.job_id, event, skip)
            elif isinstance(model, JobResult):
                result = model
                if result.status == "completed" and not is_simulation(result):
                    latest = result.model_dump_json(by_alias=True).encode()

                    def remember(
                        _state: bytes | None, latest: bytes = latest
                    ) -> tuple[bytes | None, list[Output]]:
                        return latest, []

                    await apply_guarded(last, f"{result.tenant}/{result.image_digest}", event, remember)
                await apply_guarded(queue, result.job_id, event, lambda _s: (DONE, []))
                defer(partial(runner.forget, result.job_id))
                observe.job_result(result)

        # Batched (agents/shell.py): one wait for the outputs' acks per fetched batch. The runner learns
        # of queue changes (`defer`) only once the batch's table writes are applied, so its reconcile
        # timer never sees a job the table still calls queued after the runner was told it is done.
        await pipe.run(stream, "jobs", handle, batched=True)

    @app.task
    async def run_jobs() -> None:
        await runner.run()

    def recovered_entries() -> list[Entry]:
        # After a restart or a rebalance the recovered table holds jobs the runner has never offered.
        found = []
        for job_id, raw in list(queue.items()):
            if job_id in runner.running.jobs or (job_id in runner.entries and job_id not in runner.recovered):
                continue  # offered: not decoded again every tick
            entry = queued(unguard(raw).state)
            if entry is not None:
                found.append(entry)
        return found

    @queue.on_recover
    async def recovered() -> None:
        # Before the partitions resume: a new command for an image must find the image's recovered jobs
        # known, or it could start ahead of them (the job_queue rule).
        for entry in recovered_entries():
            runner.know(entry)

    async def revoked(_sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        # aiokafka's rebalance is eager: every partition is revoked, then the new assignment recovered.
        runner.revoke()

    app.on_partitions_revoked.connect(revoked)

    @app.timer(interval=2.0)
    async def reconcile() -> None:
        for entry in recovered_entries():
            runner.offer(entry)

    return runner
