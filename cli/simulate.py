"""``stella-sched simulate``: what would activating a candidate policy change? Nothing live is written.

By default a queued simulation (docs/simulation.md): the selected images (from the images read model) go
to ``simulation-requests``; the worker re-evaluates each with its current knowledge and the candidate rules
as a background run in the queue's simulation lane, and emits the signed result. ``--wait`` follows it to
its terminal state (progress on stderr). ``--read-model``: the selected images' live findings judged by the
candidate rules, computed here at once (what failed live is read from the explain traces).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cli.output import (
    EXIT_OK,
    CliError,
    UsageError,
    mongo_client,
    parse_args,
    print_json,
)

EPILOG = """\
The policy file is JSON or YAML: either PolicyRules ({"severity_threshold": "medium", "fail_on_kev": true,
"allow_ids": [...]}) or a PolicyChange document (its rules, and its selector unless selector flags are given).
Without selector flags or a selector in the file, every image of the tenant is simulated.

Queued (default): prints the simulation id (= its run id) and sends the request; with --wait it follows the
run (progress on stderr) and prints the result; exit 1 when the simulation was cancelled or every job failed,
3 when it is not done within --timeout. `stella-sched simulations list|show|cancel` manage them later.
The same --idempotency-key repeats the same simulation (same id) instead of starting another.

Output: per image the verdict live -> simulated and the findings that would newly fail or pass, and totals.
With --read-model the same request over the same state gives the same bytes, and --sign-key also prints
the result as a DSSE envelope (predicate simulation-completed), which `stella-sched verify --file` checks.

examples:
  stella-sched simulate --tenant acme --policy stricter.yaml --wait
  stella-sched simulate --tenant acme --policy stricter.json --namespace prod --wait --json
  stella-sched simulate --tenant acme --policy stricter.yaml --read-model
  stella-sched simulate --tenant acme --policy p.json --read-model --sign-key keys/signer.key --json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stella-sched simulate",
        description="Simulate a candidate policy over the tenant's images: a queued run, or from the read models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--policy", required=True, metavar="FILE", help="candidate PolicyRules / PolicyChange"
    )
    parser.add_argument("--tenant", required=True, help="whose images")
    sel = parser.add_argument_group("selector (any given: every criterion must hold)")
    sel.add_argument("--all", action="store_true", help="every image of the tenant")
    sel.add_argument("--digest", action="append", default=[], metavar="D", help="image digest (repeatable)")
    sel.add_argument("--namespace", action="append", default=[], metavar="N", help="namespace (repeatable)")
    sel.add_argument("--repository", action="append", default=[], metavar="GLOB", help="repository glob")
    sel.add_argument("--label", action="append", default=[], metavar="K=V", help="label (repeatable)")
    parser.add_argument("--idempotency-key", default="", metavar="K", help="distinguishes repeated requests")
    parser.add_argument(
        "--wait", action="store_true", help="queued: follow the run to its end, then print it"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, metavar="S", help="--wait: give up after S seconds (3600)"
    )
    parser.add_argument(
        "--read-model", action="store_true", help="judge the live findings at once instead of queueing a run"
    )
    parser.add_argument("--sign-key", metavar="FILE", help="--read-model: also sign the result (Ed25519 key)")
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.add_argument("--mongo-url", help="MongoDB URL (default $MONGO_URL)")
    parser.add_argument("--db", help="database (default $STELLA_MONGO_DB)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default $KAFKA_BOOTSTRAP)")
    parser.add_argument("--topic-prefix", help="topic prefix (default $STELLA_TOPIC_PREFIX)")
    return parser


def load_policy(path: str) -> tuple[Any, Any]:
    """(PolicyRules, Selector | None) from a file; errors name the file and the field."""
    from pydantic import ValidationError

    from ingest.detect import validation_errors
    from ingest.document import load_json_or_yaml
    from schemas.messages import PolicyRules, Selector

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"--policy {path}: {exc.strerror or exc}") from None
    doc = load_json_or_yaml(data, path)
    if not isinstance(doc, Mapping):
        what = doc.message if hasattr(doc, "message") else f"expected an object, got {type(doc).__name__}"
        raise CliError(f"{path}: {what}")
    is_change = "rules" in doc
    try:
        rules = PolicyRules.model_validate(doc["rules"] if is_change else doc)
        selector = Selector.model_validate(doc["selector"]) if is_change and "selector" in doc else None
    except ValidationError as exc:
        prefix = "rules" if is_change else ""
        problems = "; ".join(f"{e.field}: {e.message}" for e in validation_errors(exc, path, prefix))
        raise CliError(f"{path}: {problems}") from None
    return rules, selector


def selector_of(args: argparse.Namespace, from_file: Any) -> Any:
    from schemas.messages import Selector

    labels: dict[str, str] = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    if args.all or args.digest or args.namespace or args.repository or labels:
        return Selector(
            all=args.all,
            digests=sorted(set(args.digest)),
            namespaces=sorted(set(args.namespace)),
            repositories=sorted(set(args.repository)),
            labels=labels,
        )
    return from_file if from_file is not None else Selector(all=True)


def _images(store: Any, tenant: str) -> list[dict[str, Any]]:
    from projections.fold import IMAGES

    docs: list[dict[str, Any]] = []
    after = None
    while True:  # every page of the tenant's images
        page = store.find(IMAGES, {"tenant": tenant}, after=after, limit=1000)
        docs += page.items
        if page.next_after is None:
            return docs
        after = page.next_after


def run_simulation(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The read-model simulation (and, with --sign-key, its envelope) over a projection store."""
    from projections.simulation import simulate_documents

    rules, file_selector = load_policy(args.policy)
    selector = selector_of(args, file_selector)
    docs = _images(store, args.tenant)
    result = simulate_documents(docs, args.tenant, selector, rules, nonce=args.idempotency_key)
    out: dict[str, Any] = {"simulation": result.model_dump(mode="json", by_alias=True)}
    if args.sign_key:
        from signing.keys import KeyFileError, load_signing_key
        from signing.statement import sign_completion

        try:
            key = load_signing_key(args.sign_key)
        except KeyFileError as exc:
            raise CliError(str(exc)) from None
        event_id, envelope = sign_completion(result, [key])
        out["event_id"] = event_id
        out["envelope"] = envelope.model_dump(mode="json")
    return out


def queue_request(store: Any, args: argparse.Namespace) -> Any:
    """The SimulationRequest of the selected images (queued mode)."""
    import uuid
    from datetime import UTC, datetime

    from projections.simulation import request_documents

    rules, file_selector = load_policy(args.policy)
    selector = selector_of(args, file_selector)
    return request_documents(
        _images(store, args.tenant),
        args.tenant,
        selector,
        rules,
        at=datetime.now(UTC).replace(microsecond=0),
        nonce=args.idempotency_key or uuid.uuid4().hex,
        requested_by="cli",
    )


def send_request(args: argparse.Namespace, req: Any) -> str:
    """Produce the request (key: its id); returns its position ``topic:partition:offset``."""
    from cli.kafka_io import default_bootstrap, default_prefix, producer, require_topics, run
    from schemas.codec import encode
    from schemas.keys import message_key

    bootstrap = default_bootstrap(args.bootstrap)
    prefix = default_prefix(args.topic_prefix)
    topic = prefix + "simulation-requests"

    async def send() -> str:
        await require_topics(bootstrap, [topic], prefix)
        async with producer(bootstrap) as client:
            meta = await client.send_and_wait(topic, encode(req), key=message_key(req))
            return f"{topic}:{meta.partition}:{meta.offset}"

    return run(send(), bootstrap)


def wait_for(store: Any, simulation_id: str, timeout: float, *, poll: float = 1.0) -> dict[str, Any]:
    """Follow a queued simulation until it is terminal; progress (jobs done / total) on stderr."""
    import time

    from tqdm import tqdm

    from projections.fold import RUNS, SIMULATIONS
    from projections.simulation import completed_of

    deadline = time.monotonic() + timeout
    with tqdm(desc=f"simulation {simulation_id[:16]}", unit="job", file=sys.stderr, leave=False) as bar:
        while True:
            doc = store.get(SIMULATIONS, simulation_id)
            done = completed_of(doc) if doc is not None else None
            if done is not None:
                result: dict[str, Any] = done.model_dump(mode="json", by_alias=True)
                return result
            run = store.get(RUNS, simulation_id) or {}
            total, finished = int(run.get("jobs_total") or 0), int(run.get("jobs_done") or 0)
            if total and bar.total != total:
                bar.total = total
            bar.n = finished
            bar.set_postfix_str(str(run.get("state") or (doc or {}).get("state") or "requested"))
            bar.refresh()
            if time.monotonic() > deadline:
                from cli.output import InfraError

                raise InfraError(
                    f"simulation {simulation_id} not finished after {timeout:g}s "
                    f"(run {run.get('state') or 'not started'}): is a worker running?"
                )
            time.sleep(poll)


def queued(store: Any, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """Request a queued simulation and, with --wait, follow it; (output, exit code)."""
    from cli.output import EXIT_REJECTED

    req = queue_request(store, args)
    position = send_request(args, req)
    out: dict[str, Any] = {
        "simulation_id": req.simulation_id,
        "run_id": req.simulation_id,
        "images": len(req.images),
        "position": position,
    }
    if not args.wait:
        return out, EXIT_OK
    if not args.json:
        sys.stderr.write(f"simulation {req.simulation_id}: {len(req.images)} image(s) queued\n")
    out["simulation"] = wait_for(store, req.simulation_id, args.timeout)
    return out, EXIT_OK if out["simulation"]["state"] == "completed" else EXIT_REJECTED


def print_text(out: dict[str, Any]) -> None:
    if "simulation" not in out:
        sys.stdout.write(
            f"simulation {out['simulation_id']} queued: {out['images']} image(s), run {out['run_id']}\n"
            f"follow it: stella-sched simulations show {out['simulation_id']}\n"
        )
        return
    sim = out["simulation"]
    w = sys.stdout.write
    state = "" if sim.get("state", "completed") == "completed" else f" {sim['state'].upper()},"
    w(
        f"simulation {sim['simulation_id']} for tenant {sim['tenant']} ({state}{sim['mode']}, as of {sim['at']})\n"
    )
    for image in sim["images"]:
        flip = "" if image["live_verdict"] == image["simulated_verdict"] else "   <- changes"
        status = image.get("job_status")
        if status in ("failed", "skipped"):
            flip = f"   (job {status})"
        w(f"  {image['image_digest']}  {image['live_verdict']:>7} -> {image['simulated_verdict']:<7}{flip}\n")
        for label in image["newly_failing"]:
            w(f"      would fail: {label}\n")
        for label in image["newly_passing"]:
            w(f"      would pass: {label}\n")
    t = sim["totals"]
    w(
        f"totals: {t['images']} image(s): {t['to_fail']} to fail, {t['to_pass']} to pass, "
        f"{t['unchanged']} unchanged, {t['not_evaluated']} not evaluated yet; "
        f"{t['newly_failing']} finding(s) newly failing, {t['newly_passing']} newly passing"
        + (
            f"; {t['failed']} job(s) failed, {t['skipped']} skipped"
            if t.get("failed") or t.get("skipped")
            else ""
        )
        + "\n"
    )
    if "event_id" in out:
        w(f"signed: event {out['event_id']}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    try:
        from agents.settings import Settings
        from projections.mongo_store import MongoStore

        load_policy(args.policy)  # a bad file is a usage problem: report it before connecting
        if args.sign_key and not args.read_model:
            raise UsageError(
                "--sign-key goes with --read-model (a queued simulation is signed by the worker)"
            )
        settings = Settings.from_env()
        url = args.mongo_url or settings.mongo_url
        code = EXIT_OK
        with mongo_client(url) as client:
            store = MongoStore.open_active(client, args.db or settings.mongo_db)
            if args.read_model:
                out = run_simulation(store, args)
            else:
                out, code = queued(store, args)
    except CliError as exc:
        sys.stderr.write(f"stella-sched: error: {exc.message}\n")
        return exc.code
    if args.json:
        print_json(out)
    else:
        print_text(out)
    return code
