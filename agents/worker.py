"""`stella-sched worker`: one process running every stage of the topology (docs/architecture.md §2).

Run several with the same STELLA_APP_ID to scale out: faust spreads the partitions of every co-partitioned
topic group over them (docs/partitioning.md)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import faust

from agents import (
    audit_stage,
    index_stage,
    ingest_stage,
    job_stage,
    observe,
    run_stage,
    signer_stage,
    simulation_stage,
    stalls,
    tenant_stage,
    watchdog,
)
from agents.executors import Executor, HttpExecutor, ReferenceExecutor
from agents.knowledge import KnowledgeView
from agents.local_state import LocalState
from agents.pipeline import Pipeline
from agents.projector import ProjectorService
from agents.settings import Settings
from signing.keys import ENV_VAR, SigningKey, generate_keypair, load_signing_key

log = logging.getLogger("stella.worker")


def signing_key(settings: Settings) -> SigningKey:
    """The configured key; for local runs without one, a development key under run/keys (0600)."""
    if settings.signing_key:
        return load_signing_key(settings.signing_key)
    if os.environ.get(ENV_VAR):
        return load_signing_key()
    private = Path(settings.data_dir).parent / "keys" / "dev-signing.json"
    if private.exists():
        return load_signing_key(private)
    private.parent.mkdir(parents=True, exist_ok=True)
    log.warning("no signing key configured: generated a development key in %s", private.parent)
    return generate_keypair(private, private.parent / "dev-signing.pub.json")


def make_executor(settings: Settings, knowledge: KnowledgeView) -> Executor:
    if settings.executor == "http":
        if not settings.executor_url:
            raise SystemExit("configuration error: STELLA_EXECUTOR=http needs STELLA_EXECUTOR_URL")
        return HttpExecutor(settings.executor_url, timeout_s=settings.executor_timeout_seconds)
    if settings.executor != "reference":
        raise SystemExit(f"configuration error: STELLA_EXECUTOR={settings.executor!r} (reference | http)")
    return ReferenceExecutor(knowledge)


def build(settings: Settings) -> Pipeline:
    pipe = Pipeline.create(settings)
    ingest_stage.register(pipe)
    index_stage.register(pipe)
    tenant_stage.register(pipe)
    run_stage.register(pipe)
    simulation_stage.register(pipe)
    key = signing_key(settings)
    signer_stage.register(pipe, key)
    audit_stage.register(pipe, key)

    knowledge = KnowledgeView(settings)
    executor = make_executor(settings, knowledge)

    async def wait_for_knowledge(_job: Any) -> None:
        # A job is produced after its delta was folded upstream, so once the view has read up to the
        # current end offsets it knows everything the job is about. No time limit: see agents/knowledge.py.
        await knowledge.wait_caught_up()

    before = wait_for_knowledge if isinstance(executor, ReferenceExecutor) else None
    job_stage.register(pipe, executor, before)
    projector = ProjectorService(settings)

    @pipe.app.task
    async def knowledge_feed() -> None:
        await knowledge.run()

    @pipe.app.task
    async def project() -> None:
        await projector.run_on_own_loop()

    watchdog.register(pipe)
    _health_pages(pipe, projector)
    return pipe


WORKER_PATHS = ("/healthz", "/readyz", "/metrics")


def _health_pages(pipe: Pipeline, projector: ProjectorService) -> None:
    from telemetry import health, metrics

    app, settings = pipe.app, pipe.settings
    tables: Any = app.tables  # TableManager; its `recovery` is not on the public type

    def recovered() -> bool:
        return bool(tables.recovery.completed.is_set())

    readiness = health.Readiness()
    readiness.add("kafka", lambda: health.kafka_reachable(settings.kafka_bootstrap))
    readiness.add("mongo", lambda: health.mongo_reachable(settings.mongo_url))
    readiness.add(
        "tables_recovered",
        health.flag_check(
            lambda: recovered() and not app.rebalancing,
            "recovered",
            "recovering or rebalancing",
        ),
    )
    readiness.add("projector", health.flag_check(projector.ready.is_set, "assigned", "starting"))
    readiness.add("publishing", stalls.readiness)

    # The flags in Settings.faust_config switch faust's views off except its "/" index, which no flag
    # covers; drop every built-in blueprint so the port serves exactly WORKER_PATHS.
    web: Any = app.web
    web.blueprints._enabled = [
        (prefix, bp) for prefix, bp in web.blueprints._enabled if not str(bp).startswith("faust.web.")
    ]

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        ok, body = health.liveness()
        return web.json(body, status=health.status_code(ok))

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ok, body = await health.check(readiness)
        metrics.set_tables_recovered(recovered())
        return web.json(body, status=health.status_code(ok))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        body, content_type = metrics.render()
        return web.bytes(body, content_type=content_type.split(";")[0])


class JsonLogWorker(faust.Worker):
    """faust's worker with the project's structured JSON logs (telemetry.logs) instead of its console
    format: one line per record, tenant / run / job / topic / partition / offset as fields, secrets
    redacted. With ``local_state``, the data directory is marked clean once faust has stopped without a
    crash (agents/local_state.py)."""

    local_state: LocalState | None = None

    def stop_and_shutdown(self) -> None:
        super().stop_and_shutdown()  # re-raises the worker's crash reason, if any: the mark stays then
        crashed = getattr(self.app, "crash_reason", None) is not None  # the app's own crash
        if self.local_state is not None and not crashed:
            self.local_state.release_clean()

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        from telemetry.logs import configure_logging, is_stella_handler

        super().on_setup_root_logger(logger, level)
        configure_logging(logging.getLevelName(level))
        for handler in list(logger.handlers):
            if not is_stella_handler(handler):
                logger.removeHandler(handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stella-sched worker",
        description="Run the scheduler's stream processing: ingest, index, impact windows, jobs, runs, "
        "signing and MongoDB projections, in one process. Start several with the same STELLA_APP_ID "
        "to share the partitions.",
        epilog="Configuration comes from the environment (README, 'Configuration'): KAFKA_BOOTSTRAP, "
        "MONGO_URL, STELLA_APP_ID, STELLA_TOPIC_PREFIX, STELLA_EXECUTOR, STELLA_SIGNING_KEY_FILE...\n"
        "Example: KAFKA_BOOTSTRAP=127.0.0.1:9092 stella-sched worker --web-port 6066",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--web-port", type=int, help="port for /healthz, /readyz and /metrics (0: off)")
    parser.add_argument("--loglevel", default=None, help="debug | info | warning | error")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.web_port is not None:
        overrides["web_port"] = args.web_port
    settings = Settings.from_env(**overrides)
    pipe = build(settings)
    local = LocalState(Path(pipe.app.conf.datadir), Path(pipe.app.conf.tabledir))
    local.claim()
    if os.environ.get("STELLA_TRACE_RECORDS") in ("1", "2"):
        logging.getLogger("stella.handled").setLevel(logging.DEBUG)  # agents.pipeline.trace
        logging.getLogger("stella.rewind").setLevel(logging.DEBUG)  # committed offsets at every seek
    if os.environ.get("STELLA_TRACE_RECORDS") == "2":  # and every fetch and delivery (diagnostics)
        logging.getLogger("stella.fetchtrace").setLevel(logging.DEBUG)
    worker = JsonLogWorker(pipe.app, loglevel=(args.loglevel or settings.log_level).lower())
    worker.local_state = local
    observe.worker_up(True)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
