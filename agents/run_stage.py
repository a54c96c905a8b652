"""The run-keyed stage: each run's lifecycle folded from its plan, its jobs' starts and results, and
cancellations (docs/architecture.md §4-5). Run events go to `run-events`; a cancel fans out to the queued
jobs."""

from __future__ import annotations

from typing import Any

import faust

from agents import observe
from agents.pipeline import Pipeline
from agents.shell import Output, apply_guarded
from schemas.messages import TERMINAL_RUN_STATES, JobCancel, RunCancelRequested
from streams.runs import apply, decode, encode


def register(pipe: Pipeline) -> None:
    app = pipe.app
    runs = pipe.table("runs")
    active: set[str] = set()  # this worker's view, for the runs-active gauge

    @app.agent(pipe.source("run-inputs"), name="runs")
    async def run_agent(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            decoded = await pipe.decode(event)
            if decoded is None:
                return
            message = decoded.model
            run_id = (event.key or b"").decode(errors="replace") or getattr(message, "run_id", "")

            def fold(state: bytes | None, message: Any = message) -> tuple[bytes | None, list[Output]]:
                current = decode(state) if state else None
                new_fold, events = apply(current, message)
                outputs = [pipe.out("run-events", e.run_id, e) for e in events]
                if isinstance(message, RunCancelRequested) and not (current and current.cancelled):
                    for job_id in sorted(new_fold.commands):
                        if new_fold.jobs.get(job_id) in (None, "queued"):
                            job = new_fold.commands[job_id]
                            cancel = JobCancel(
                                job_id=job_id,
                                run_id=job.run_id,
                                tenant=job.tenant,
                                image_digest=job.image_digest,
                                at=message.at,
                            )
                            outputs.append(pipe.out("job-attempts", job.image_digest, cancel))
                if events:
                    if new_fold.state in TERMINAL_RUN_STATES:
                        active.discard(new_fold.run_id)
                        if new_fold.finished_at is not None:
                            observe.run_finished(new_fold.created_at, new_fold.finished_at)
                    else:
                        active.add(new_fold.run_id)
                    observe.runs_active(len(active))
                return encode(new_fold), outputs

            await apply_guarded(runs, run_id, event, fold)

        await pipe.run(stream, "runs", handle, batched=True)
