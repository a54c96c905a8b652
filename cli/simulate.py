"""``stella-sched simulate``: what would activating a candidate policy change? Nothing is written.

This is the read-model simulation: each selected image's live findings (from its last evaluation) judged by
the candidate rules; what failed live is read from the evaluation's explain traces. The queue-backed run
that re-evaluates with the worker's current knowledge is not part of this command yet.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cli.output import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    UsageError,
    mongo_client,
    print_json,
)

EPILOG = """\
The policy file is JSON or YAML: either PolicyRules ({"severity_threshold": "medium", "fail_on_kev": true,
"allow_ids": [...]}) or a PolicyChange document (its rules, and its selector unless selector flags are given).
Without selector flags or a selector in the file, every image of the tenant is simulated.

Output: per image the verdict live -> simulated and the findings that would newly fail or pass, and totals.
The same state and request give the same bytes. With --sign-key the result is also printed as a DSSE
envelope (predicate simulation-completed), which `stella-sched verify --file` checks.

examples:
  stella-sched simulate --tenant acme --policy stricter.yaml
  stella-sched simulate --tenant acme --policy stricter.json --namespace prod --json
  stella-sched simulate --tenant acme --policy p.json --sign-key keys/signer.key --json > sim.json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stella-sched simulate",
        description="Simulate a candidate policy over the tenant's images, from the read models.",
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
    parser.add_argument("--sign-key", metavar="FILE", help="also sign the result (Ed25519 private key file)")
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.add_argument("--mongo-url", help="MongoDB URL (default $MONGO_URL)")
    parser.add_argument("--db", help="database (default $STELLA_MONGO_DB)")
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


def run_simulation(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The simulation (and, with --sign-key, its envelope) over a projection store."""
    from projections.fold import IMAGES
    from projections.simulation import simulate_documents

    rules, file_selector = load_policy(args.policy)
    selector = selector_of(args, file_selector)
    docs: list[dict[str, Any]] = []
    after = None
    while True:  # every page of the tenant's images
        page = store.find(IMAGES, {"tenant": args.tenant}, after=after, limit=1000)
        docs += page.items
        if page.next_after is None:
            break
        after = page.next_after
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


def print_text(out: dict[str, Any]) -> None:
    sim = out["simulation"]
    w = sys.stdout.write
    w(f"simulation {sim['simulation_id']} for tenant {sim['tenant']} ({sim['mode']}, as of {sim['at']})\n")
    for image in sim["images"]:
        flip = "" if image["live_verdict"] == image["simulated_verdict"] else "   <- changes"
        w(f"  {image['image_digest']}  {image['live_verdict']:>7} -> {image['simulated_verdict']:<7}{flip}\n")
        for label in image["newly_failing"]:
            w(f"      would fail: {label}\n")
        for label in image["newly_passing"]:
            w(f"      would pass: {label}\n")
    t = sim["totals"]
    w(
        f"totals: {t['images']} image(s): {t['to_fail']} to fail, {t['to_pass']} to pass, "
        f"{t['unchanged']} unchanged, {t['not_evaluated']} not evaluated yet; "
        f"{t['newly_failing']} finding(s) newly failing, {t['newly_passing']} newly passing\n"
    )
    if "event_id" in out:
        w(f"signed: event {out['event_id']}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        from agents.settings import Settings
        from projections.mongo_store import MongoStore

        load_policy(args.policy)  # a bad file is a usage problem: report it before connecting
        settings = Settings.from_env()
        url = args.mongo_url or settings.mongo_url
        with mongo_client(url) as client:
            out = run_simulation(MongoStore.open_active(client, args.db or settings.mongo_db), args)
    except CliError as exc:
        sys.stderr.write(f"stella-sched: error: {exc.message}\n")
        return exc.code
    if args.json:
        print_json(out)
    else:
        print_text(out)
    return EXIT_OK
