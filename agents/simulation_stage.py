"""The simulation stage (pure core: streams/simulation.py, docs/simulation.md).

One agent over the three topics keyed by run id that a queued simulation's facts arrive on: its request
(`simulation-requests`), its run's inputs (`run-inputs`: the jobs' results) and its run's events
(`run-events`: the terminal state). The request fans out into the run's plan and jobs (the same path as any
run: jobs topic, run stage); the results and the terminal event fold into the `simulations` table, which
emits the `SimulationCompleted` once (to `simulations`, where the signer signs it and the projector keeps
it). Records of other runs are skipped by their key before any decoding (simulation ids have a prefix).
"""

from __future__ import annotations

from typing import Any

import faust

from agents.pipeline import Pipeline
from agents.shell import Output, apply_guarded
from agents.tenant_stage import job_outputs
from schemas.messages import JobResult, RunEvent, SimulationRequest
from streams.simulation import apply, decode_fold, encode_fold, is_simulation_run, plan


def register(pipe: Pipeline) -> None:
    table = pipe.table("simulations")

    @pipe.app.agent(pipe.source("simulation-requests", "run-inputs", "run-events"), name="simulations")
    async def simulation_agent(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            key = (event.key or b"").decode(errors="replace")
            if not is_simulation_run(key):
                return
            decoded = await pipe.decode(event)
            if decoded is None:
                return
            message = decoded.model
            if not isinstance(message, SimulationRequest | JobResult | RunEvent):
                return
            if isinstance(message, JobResult) and message.simulation is None:
                return

            def fold(state: bytes | None, message: Any = message) -> tuple[bytes | None, list[Output]]:
                current = decode_fold(state) if state else None
                new, done = apply(current, message)
                outputs: list[Output] = []
                if isinstance(message, SimulationRequest) and (current is None or current.request is None):
                    planned, jobs = plan(message)
                    outputs += job_outputs(pipe, jobs)
                    if not jobs:  # an empty selection is still a run: planned empty, it completes at once
                        outputs.append(pipe.out("run-inputs", planned.run_id, planned))
                outputs += [pipe.out("simulations", d.tenant, d) for d in done]
                return encode_fold(new), outputs

            await apply_guarded(table, key, event, fold)

        await pipe.run(stream, "simulations", handle, batched=True)
