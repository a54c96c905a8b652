"""The run-keyed stage: each run's lifecycle folded from its plan, its jobs' starts and results, and
cancellations (docs/architecture.md §4-5). Run events go to `run-events`; a cancel fans out to the queued
jobs.

A run planned with limits (a schedule's parallelism / rate) has its jobs released from here to `jobs` by its
gate (streams/run_gate.py, table `run-gates`), as its jobs finish and as event time passes. Event time comes
from ticks: while a gate on this worker holds jobs back, the worker sends a tick to that gate's `run-inputs`
partition every second (the wall clock decides *when* a tick is sent; the tick's instant, in the log, is
what the gate folds, so a replay releases the same jobs at the same points).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import faust

from agents import observe
from agents.job_stage import result_outputs
from agents.pipeline import Pipeline
from agents.shell import Output, apply_guarded, partition_of, read
from schemas.messages import TERMINAL_RUN_STATES, JobCancel, RunCancelRequested, RunPlanned, Tick
from streams import run_gate
from streams.findings import skipped_result
from streams.guard import decode as unguard
from streams.runs import apply, decode, encode

GATE_TICK_SECONDS = 1.0  # a rate is per second: a coarser tick would release in bursts of several seconds
CLOSED = b"closed"  # a gate that released (or dropped) everything: a redelivered plan must not reopen it


def register(pipe: Pipeline) -> None:
    app, settings = pipe.app, pipe.settings
    runs = pipe.table("runs")
    gates = pipe.table("run-gates")
    active: set[str] = set()  # this worker's view, for the runs-active gauge
    # Run ids of this worker's gates that hold jobs back: kept with every gate write and rebuilt when the table
    # is recovered (before the partitions resume), so ticks need not scan the closed gates, which stay.
    open_gates: set[str] = set()

    def is_open(state: bytes | None) -> bool:
        return state is not None and state != CLOSED

    @gates.on_recover
    async def rebuild_open_gates() -> None:
        open_gates.clear()
        open_gates.update(run_id for run_id, raw in list(gates.items()) if is_open(unguard(raw).state))

    def note(run_id: str) -> None:
        if is_open(unguard(read(gates, run_id)).state):
            open_gates.add(run_id)
        else:
            open_gates.discard(run_id)

    @app.agent(pipe.source("run-inputs"), name="runs")
    async def run_agent(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            decoded = await pipe.decode(event)
            if decoded is None:
                return
            message = decoded.model
            if isinstance(message, Tick):
                await on_tick(event, message)
                return
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
            await release(event, run_id, message)

        await pipe.run(stream, "runs", handle, batched=True)

    def gate_fold(run_id: str, message: Any) -> Any:
        def fold(state: bytes | None) -> tuple[bytes | None, list[Output]]:
            if state == CLOSED:
                return state, []
            raw = unguard(read(runs, run_id)).state
            if raw is None:
                return state, []
            run = decode(raw)
            now: datetime | None = None
            if state is not None:
                gate = run_gate.decode(state)
                now = message.at if isinstance(message, Tick) else None
            elif isinstance(message, RunPlanned) and message.limits is not None:
                gate = run_gate.open_gate(run_id, message.limits, message.job_ids, message.at)
            else:
                return state, []
            outputs: list[Output] = []
            if run.cancelled:
                gate, dropped = run_gate.drop(gate)
                at = message.at if isinstance(message, RunCancelRequested | Tick) else gate.clock
                for job_id in dropped:
                    command = run.commands.get(job_id)
                    if command is not None:  # never sent to `jobs`: skipped here, as the job stage would
                        outputs.extend(result_outputs(pipe, skipped_result(command, finished_at=at)))
            flying = run_gate.in_flight(run.planned_job_ids, run.jobs, gate)
            gate, released = run_gate.step(gate, now, flying, run.commands.keys())
            for job_id in released:
                command = run.commands[job_id]
                outputs.append(pipe.out("jobs", command.image_digest, command))
            return (run_gate.encode(gate) if gate.held else CLOSED), outputs

        return fold

    async def release(event: faust.EventT[Any], run_id: str, message: Any) -> None:
        state = unguard(read(gates, run_id)).state
        opens = isinstance(message, RunPlanned) and run_gate.limited(message.limits)
        if state == CLOSED or (state is None and not opens):
            return  # most runs have no gate: no table write
        await apply_guarded(gates, run_id, event, gate_fold(run_id, message))
        note(run_id)

    async def on_tick(event: faust.EventT[Any], tick: Tick) -> None:
        partition = event.message.partition
        for run_id in sorted(r for r in open_gates if partition_of(r, settings.partitions) == partition):
            await apply_guarded(gates, run_id, event, gate_fold(run_id, tick))
            note(run_id)

    @app.timer(interval=GATE_TICK_SECONDS)
    async def tick_gates() -> None:
        # Every worker, for the partitions whose gates it holds; nothing held back, no tick.
        held = {partition_of(run_id, settings.partitions) for run_id in open_gates}
        if not held:
            return
        at = datetime.now(UTC).replace(microsecond=0)
        topic = pipe.topics["run-inputs"]
        for partition in sorted(held):
            tick = Tick(partition=partition, at=at)
            await topic.send(key=b"tick", value=pipe.out("run-inputs", None, tick).value, partition=partition)
