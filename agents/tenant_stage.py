"""The tenant-keyed stage: each tenant's image catalog and running state, policy / recheck resolution,
and the impact windows that coalesce impacts into job commands (docs/architecture.md §3)."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import faust
from aiokafka.errors import KafkaError

from agents import observe
from agents.pipeline import Pipeline
from agents.quiescence import UpstreamProbe
from agents.schedule_stage import ScheduleShell, register_report_feed
from agents.shell import (
    LastDecoded,
    Output,
    SplitFold,
    apply_guarded,
    apply_guarded_split,
    keys,
    partition_of,
    read,
)
from schemas.codec import encode
from schemas.messages import (
    ImageRemoved,
    Impact,
    ImpactBatch,
    Inventory,
    JobCommand,
    PolicyChange,
    Recheck,
    ReportSeen,
    RunPlanned,
    RuntimeEvent,
    ScheduleCommand,
    Tick,
)
from streams.guard import decode as unguard
from streams.jobs import run_retry_of
from streams.resolve import resolve_policy, resolve_recheck
from streams.tenants import (
    apply_inventory_to_catalog,
    apply_runtime,
    decode_catalog,
    decode_sites,
    encode_catalog,
    encode_sites,
    set_running,
)
from streams.windows import (
    FlushDecision,
    Needed,
    WindowIndex,
    WindowState,
    add_impacts,
    all_entries,
    covers,
    decode_index,
    entries_needed,
    flush_idle,
    fold_split,
    idle_flush,
    is_index_key,
    load_entries,
    store_changes,
)

log = logging.getLogger("stella.tenant")


def job_outputs(pipe: Pipeline, jobs: list[JobCommand]) -> list[Output]:
    """Job commands to the jobs topic, plus each run's plan (its complete job list) to the run stage."""
    outputs: list[Output] = []
    by_run: dict[str, list[tuple[JobCommand, bytes]]] = defaultdict(list)
    for job in jobs:
        value = encode(job)  # once: each job goes to two topics
        outputs.append(pipe.out("jobs", job.image_digest, value))
        by_run[job.run_id].append((job, value))
    for run_id in sorted(by_run):
        pairs = by_run[run_id]
        outputs.extend(pipe.out("run-inputs", run_id, value) for _, value in pairs)
        run_jobs = [job for job, _ in pairs]
        planned = RunPlanned(
            run_id=run_id,
            tenant=run_jobs[0].tenant,
            job_ids=sorted(j.job_id for j in run_jobs),
            at=max(j.window_end for j in run_jobs),
            retry_of=run_retry_of(run_jobs),
        )
        outputs.append(pipe.out("run-inputs", run_id, planned))
    observe.jobs_emitted(jobs)
    return outputs


def register(pipe: Pipeline) -> None:
    app, settings = pipe.app, pipe.settings
    catalog = pipe.table("catalog")
    windows = pipe.table("windows")
    sites = pipe.table("sites")
    schedules = ScheduleShell(pipe, catalog, job_outputs, partition_of)
    register_report_feed(pipe)
    last_activity: dict[str, float] = {}
    generation = [-1]  # the consumer generation the idle clocks were measured in
    window, grace = settings.window_seconds, settings.grace_seconds

    def running_digests(data: bytes) -> frozenset[str]:
        return frozenset(digest for digest, meta in decode_catalog(data).images.items() if meta.running)

    running_cache = LastDecoded(running_digests)
    index_cache = LastDecoded(decode_index)

    def running_in(tenant: str) -> frozenset[str]:
        state = unguard(read(catalog, tenant)).state
        return running_cache(tenant, state) if state else frozenset()

    def split_fold(
        tenant: str,
        state: bytes | None,
        needed: Callable[[WindowIndex], Needed],
        step: Callable[[WindowState], tuple[WindowState, list[JobCommand]]],
    ) -> tuple[bytes | None, list[Output], list[tuple[str, bytes | None]]]:
        """One fold of a tenant's split windows (streams.windows): load the entries it reads, fold, and
        return the index, the jobs, and the other keys' writes and deletes."""
        index, carried = index_cache(tenant, state) if state else (WindowIndex(), {})

        def get(key: str) -> bytes | None:
            return read(windows, key)  # type: ignore[no-any-return]

        missing: list[str] = []
        loaded = load_entries(get, tenant, index, needed(index), carried, missing)
        if missing:
            observe.lost_window_chunks(len(missing))
            log.error(
                "tenant %s: %d window state chunk(s) the index counts are missing from the windows table "
                "(a lost table write), e.g. %r: folded without them, so their jobs lack those reasons",
                tenant,
                len(missing),
                missing[:3],
            )
        result = fold_split(index, loaded, step)
        *others, (_, encoded) = store_changes(tenant, result)
        assert encoded is not None
        index_cache.remember(tenant, encoded, (result.index, result.inline))
        observe.late(result.index.late - index.late)
        return encoded, job_outputs(pipe, result.jobs), others

    def fold_impacts(tenant: str, batches: list[list[Impact]]) -> SplitFold:
        def fold(
            state: bytes | None, fresh: list[int]
        ) -> tuple[bytes | None, list[Output], list[tuple[str, bytes | None]]]:
            impacts = [impact for i in fresh for impact in batches[i]]
            if any(not impact.running for impact in impacts):
                running = running_in(tenant)
                impacts = [
                    i.model_copy(update={"running": True})
                    if not i.running and i.image_digest in running
                    else i
                    for i in impacts
                ]
            return split_fold(
                tenant,
                state,
                lambda index: entries_needed(index, impacts, window, grace),
                lambda current: add_impacts(current, impacts, window, grace),
            )

        return fold

    async def fold_into_windows(tenant: str, records: list[tuple[faust.EventT[Any], list[Impact]]]) -> None:
        events = [event for event, _ in records]
        await apply_guarded_split(windows, tenant, events, fold_impacts(tenant, [i for _, i in records]))

    # Impacts held back in this batch, per tenant in record order: a burst of impact records is folded into
    # each tenant's windows once per batch (one decode, one encode, one table write), not once per record.
    # Any other record first folds what is held, so every handler sees the windows as of its record.
    pending: dict[str, list[tuple[faust.EventT[Any], list[Impact]]]] = {}

    def hold(tenant: str, event: faust.EventT[Any], impacts: list[Impact]) -> None:
        last_activity[tenant] = time.monotonic()
        held.pop(tenant, None)
        if impacts:
            pending.setdefault(tenant, []).append((event, impacts))

    def refold(
        tenant: str, event: faust.EventT[Any], impacts: list[Impact]
    ) -> Callable[[faust.EventT[Any]], Awaitable[None]]:
        async def one(_event: faust.EventT[Any]) -> None:
            await fold_into_windows(tenant, [(event, impacts)])

        return one

    async def fold_pending() -> None:
        try:
            for tenant in sorted(pending):
                records = pending[tenant]
                try:
                    await fold_into_windows(tenant, records)
                except KafkaError:
                    raise  # the batch is retried whole (Pipeline._until_done); nothing was written
                except Exception:
                    # One record's impacts cannot be folded (or its jobs not published): find it, one
                    # record at a time, so that only it is dead-lettered.
                    for event, impacts in records:
                        await pipe.handle_one("tenant", refold(tenant, event, impacts), event)
        finally:
            pending.clear()

    async def to_windows(tenant: str, event: faust.EventT[Any], impacts: list[Impact]) -> None:
        hold(tenant, event, impacts)
        await fold_pending()

    probe = UpstreamProbe(settings, app.conf.id)
    held: dict[str, float] = {}  # tenant → when its idle flush was first held back by the upstream
    # A tenant's idle flush happens on the first tick after it has been quiet for idle_flush_seconds, so the
    # interval is how late a flush may come: a quarter of the idle period (2.4 tick records/s at the default).
    tick_interval = max(0.5, settings.idle_flush_seconds / 4)

    def has_open_windows(tenant: str) -> bool:
        state = unguard(read(windows, tenant)).state
        if not state:
            return False
        index, inline = index_cache(tenant, state)
        return bool(index.open or inline)  # chunked windows, or inline ones

    async def on_tick(event: faust.EventT[Any], tick: Tick) -> None:
        await schedules.on_tick(event, tick)
        idle_after, max_idle = settings.idle_flush_seconds, settings.idle_flush_max_seconds
        partition, offset = event.message.partition, event.message.offset
        now = time.monotonic()
        if app.consumer_generation_id != generation[0]:
            # The group rebalanced: partitions upstream (index, ingest) may have moved and their impacts
            # be held up by the new owner's recovery. The quiescence gate below is what keeps those
            # impacts in their window; restarting the idle clocks also keeps the max-idle bound from
            # firing on a clock that ran while this worker did not own the tenants.
            generation[0] = app.consumer_generation_id
            last_activity.clear()
            held.clear()
        idle = [
            tenant
            for tenant in sorted(keys(windows))
            if is_index_key(tenant)
            and partition_of(tenant, settings.partitions) == partition
            # A tenant this process has not seen yet (after a restart or a rebalance) gets a full idle
            # period first: its windows may still be filling from the backlog.
            and now - last_activity.setdefault(tenant, now) >= idle_after
            and has_open_windows(tenant)
        ]
        if not idle:
            return
        snapshot = probe.snapshot
        if not covers(snapshot, partition, offset) and not app.rebalancing:
            # The cached snapshot predates this tick: it cannot tell whether impacts precede it.
            snapshot = await probe.refresh(min_interval=tick_interval / 2)
        if app.rebalancing or not covers(snapshot, partition, offset):
            snapshot = None  # cannot tell: only the max-idle bound may flush
        for tenant in idle:
            decision = idle_flush(
                now - last_activity[tenant], idle_after, max_idle, snapshot, partition, offset
            )
            if decision is FlushDecision.WAIT:
                held.setdefault(tenant, now)
                continue
            waited = now - held.pop(tenant, now)
            if decision is FlushDecision.FLUSH and waited >= idle_after:
                log.info(
                    "tenant %s: idle flush held %.1f s until the pipeline upstream of impacts drained",
                    tenant,
                    waited,
                    extra={"topic": event.message.topic, "partition": partition, "offset": offset},
                )
            if decision is FlushDecision.FORCE:
                log.warning(
                    "tenant %s idle for %.0f s (STELLA_IDLE_FLUSH_MAX_SECONDS=%d) while the pipeline upstream "
                    "of impacts has not drained (lagging: %s): flushing its windows anyway; an impact still "
                    "in flight lands in a later window",
                    tenant,
                    now - last_activity[tenant],
                    max_idle,
                    list(snapshot.lagging[:5]) if snapshot else "unknown",
                    extra={"topic": event.message.topic, "partition": partition, "offset": offset},
                )

            def flush(
                state: bytes | None, _fresh: list[int], tenant: str = tenant
            ) -> tuple[bytes | None, list[Output], list[tuple[str, bytes | None]]]:
                if not state:
                    return state, [], []
                return split_fold(tenant, state, all_entries, lambda current: flush_idle(current, window))

            await apply_guarded_split(windows, tenant, [event], flush)

    @app.agent(pipe.source("catalog-updates", "impacts", "policy", "rechecks", "schedules"), name="tenant")
    async def tenant_agent(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            decoded = await pipe.decode(event)
            if decoded is None:
                return
            model = decoded.model
            tenant = (event.key or b"").decode(errors="replace")
            if isinstance(model, Impact):
                hold(model.tenant, event, [model])
                return
            if isinstance(model, ImpactBatch):
                by_tenant: dict[str, list[Impact]] = {}
                for impact in model.impacts:
                    by_tenant.setdefault(impact.tenant, []).append(impact)
                for name in sorted(by_tenant):
                    hold(name, event, by_tenant[name])
                return
            await fold_pending()
            if isinstance(model, Tick):
                await on_tick(event, model)
            elif isinstance(model, Inventory | ImageRemoved):
                digest = model.image_digest
                inventory = model if isinstance(model, Inventory) else None

                def fold_catalog(
                    state: bytes | None, digest: str = digest, inventory: Inventory | None = inventory
                ) -> tuple[bytes | None, list[Output]]:
                    current = decode_catalog(state) if state else None
                    return encode_catalog(apply_inventory_to_catalog(current, digest, inventory)), []

                await apply_guarded(catalog, model.tenant, event, fold_catalog)
            elif isinstance(model, RuntimeEvent):
                await on_runtime(event, model)
            elif isinstance(model, ScheduleCommand):
                await schedules.on_command(event, model)
            elif isinstance(model, ReportSeen):
                await schedules.on_report(event, model)
            elif isinstance(model, PolicyChange | Recheck):
                raw = unguard(read(catalog, model.tenant)).state
                current_catalog = decode_catalog(raw) if raw else None
                resolution = (
                    resolve_policy(current_catalog, model)
                    if isinstance(model, PolicyChange)
                    else resolve_recheck(current_catalog, model)
                )
                observe.impacts_from(resolution.impacts)
                await to_windows(model.tenant or tenant, event, resolution.impacts)

        await pipe.run(stream, "tenant", handle, batched=True, flush=fold_pending)

    async def on_runtime(event: faust.EventT[Any], runtime: RuntimeEvent) -> None:
        key = f"{runtime.tenant}/{runtime.image_digest}"
        raw = unguard(read(sites, key)).state
        before = decode_sites(raw) if raw else None
        after, impact = apply_runtime(before, runtime)
        # Write order matters for crash safety: the consumer of derived data (windows) first, the state
        # it was derived from (sites) last, so a redelivery recomputes the same impact if needed.
        if impact is not None:
            observe.impacts_from([impact])
            await to_windows(runtime.tenant, event, [impact])
        if (before is None) or (before.running != after.running):

            def fold_running(state: bytes | None) -> tuple[bytes | None, list[Output]]:
                current = decode_catalog(state) if state else None
                return encode_catalog(set_running(current, runtime.image_digest, after.running)), []

            await apply_guarded(catalog, runtime.tenant, event, fold_running)
        await apply_guarded(sites, key, event, lambda _state: (encode_sites(after), []))

    @app.timer(interval=tick_interval, on_leader=True)
    async def send_ticks() -> None:
        # One tick per partition of the impacts topic; only the leader sends, so a tick is not multiplied
        # by the number of workers. Partitions with nothing open ignore it.
        at = datetime.now(UTC).replace(microsecond=0)
        topic = pipe.topics["impacts"]
        for partition in range(settings.partitions):
            tick = Tick(partition=partition, at=at)
            await topic.send(key=b"tick", value=pipe.out("impacts", None, tick).value, partition=partition)
