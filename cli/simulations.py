"""``stella-sched simulations list|show|cancel``: the simulations read model, and cancelling a queued one.

A queued simulation is a run (its id is the run id), so cancelling it is cancelling that run: a
``RunCancelRequested`` on ``run-inputs``; its queued jobs are skipped and it completes ``cancelled`` with
the images evaluated so far (docs/simulation.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from cli.output import EXIT_OK, EXIT_REJECTED, CliError, mongo_client, parse_args, print_json

EPILOG = """\
examples:
  stella-sched simulations list --tenant acme
  stella-sched simulations show sim-0123... --json        (the result; while running: the run's progress)
  stella-sched simulations cancel sim-0123... --tenant acme --reason "wrong policy file"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stella-sched simulations",
        description="List, show and cancel policy simulations (the simulations read model).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    for name, text in (
        ("list", "the tenant's simulations"),
        ("show", "one simulation"),
        ("cancel", "cancel one"),
    ):
        p = sub.add_parser(
            name, help=text, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        if name != "list":
            p.add_argument("simulation_id", help="the simulation id (sim-...)")
        p.add_argument("--tenant", required=name != "show", help="whose simulations")
        p.add_argument("--json", action="store_true", help="JSON output")
        p.add_argument("--mongo-url", help="MongoDB URL (default $MONGO_URL)")
        p.add_argument("--db", help="database (default $STELLA_MONGO_DB)")
        if name == "cancel":
            p.add_argument("--reason", default="", help="recorded with the cancel request")
            p.add_argument("--bootstrap", help="Kafka bootstrap servers (default $KAFKA_BOOTSTRAP)")
            p.add_argument("--topic-prefix", help="topic prefix (default $STELLA_TOPIC_PREFIX)")
    return parser


def _view(store: Any, doc: dict[str, Any]) -> dict[str, Any]:
    from projections.fold import RUNS

    view = {k: v for k, v in doc.items() if k not in ("_id", "_pos")}
    view["simulation_id"] = doc["_id"]
    run = store.get(RUNS, doc["_id"])
    if run is not None:
        view["run"] = {
            k: run.get(k) for k in ("state", "jobs_total", "jobs_done", "jobs_failed", "jobs_skipped")
        }
    return view


def _get(store: Any, simulation_id: str, tenant: str | None) -> dict[str, Any]:
    from projections.fold import SIMULATIONS

    doc = store.get(SIMULATIONS, simulation_id)
    if doc is None or (tenant is not None and doc.get("tenant") != tenant):
        raise CliError(
            f"simulation {simulation_id!r} not found" + (f" for tenant {tenant}" if tenant else "")
        )
    return dict(doc)


def list_simulations(store: Any, tenant: str) -> list[dict[str, Any]]:
    from projections.fold import SIMULATIONS

    docs: list[dict[str, Any]] = []
    after = None
    while True:
        page = store.find(SIMULATIONS, {"tenant": tenant}, after=after, limit=1000)
        docs += page.items
        if page.next_after is None:
            return [_view(store, d) for d in docs]
        after = page.next_after


def cancel(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    from datetime import UTC, datetime

    from cli.kafka_io import default_bootstrap, default_prefix, producer, require_topics, run
    from projections.simulation import TERMINAL_SIMULATION_STATES
    from schemas.codec import encode
    from schemas.keys import message_key
    from schemas.messages import RunCancelRequested

    doc = _get(store, args.simulation_id, args.tenant)
    if doc.get("state") in TERMINAL_SIMULATION_STATES:
        raise CliError(f"simulation {args.simulation_id} is already {doc['state']}")
    if doc.get("mode") != "queue":
        raise CliError(
            f"simulation {args.simulation_id} was computed from the read models: nothing to cancel"
        )
    message = RunCancelRequested(
        run_id=args.simulation_id,
        tenant=args.tenant,
        at=datetime.now(UTC).replace(microsecond=0),
        reason=args.reason,
        requested_by="cli",
    )
    bootstrap = default_bootstrap(args.bootstrap)
    prefix = default_prefix(args.topic_prefix)
    topic = prefix + "run-inputs"

    async def send() -> str:
        await require_topics(bootstrap, [topic], prefix)
        async with producer(bootstrap) as client:
            meta = await client.send_and_wait(topic, encode(message), key=message_key(message))
            return f"{topic}:{meta.partition}:{meta.offset}"

    return {"simulation_id": args.simulation_id, "cancel": "requested", "position": run(send(), bootstrap)}


def print_text(action: str, out: Any) -> None:
    w = sys.stdout.write
    if action == "list":
        for sim in out:
            totals = sim.get("totals") or {}
            progress = sim.get("run") or {}
            done = f"{progress.get('jobs_done', 0)}/{progress.get('jobs_total', sim.get('image_count', '?'))}"
            w(
                f"{sim['simulation_id']}  {sim.get('state', '?'):<9} {sim.get('mode', '?'):<10} "
                f"jobs {done:<9} to_fail {totals.get('to_fail', '-')} to_pass {totals.get('to_pass', '-')}\n"
            )
        if not out:
            w("no simulations\n")
    elif action == "show":
        from cli.simulate import print_text as print_simulation

        if "totals" in out:
            print_simulation({"simulation": out})
        else:
            run = out.get("run") or {}
            w(
                f"simulation {out['simulation_id']} {out.get('state')}: "
                f"{run.get('jobs_done', 0)}/{run.get('jobs_total', out.get('image_count', '?'))} job(s) done\n"
            )
    else:
        w(f"cancel of simulation {out['simulation_id']} requested ({out['position']})\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    try:
        from agents.settings import Settings
        from projections.mongo_store import MongoStore

        settings = Settings.from_env()
        with mongo_client(args.mongo_url or settings.mongo_url) as client:
            store = MongoStore.open_active(client, args.db or settings.mongo_db)
            out: Any
            if args.action == "list":
                out = list_simulations(store, args.tenant)
            elif args.action == "show":
                out = _view(store, _get(store, args.simulation_id, args.tenant))
            else:
                out = cancel(store, args)
    except CliError as exc:
        sys.stderr.write(f"stella-sched: error: {exc.message}\n")
        return exc.code
    if args.json:
        print_json(out)
    else:
        print_text(args.action, out)
    if args.action == "show" and out.get("state") in ("cancelled", "error"):
        return EXIT_REJECTED
    return EXIT_OK
