"""``stella-sched explain``: why an image's last evaluation reports (or VEX-suppresses) a vulnerability.

Reads the images read model, like ``stella-sched query``; the answer is the one the API's
``GET /api/v1/images/{digest}/findings/{vuln}/explain`` gives (``projections.explain``). The text
renderer here is shared with ``stella-sched preview --explain``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
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
The answer names the advisory (id, modified), the component (purl, version), the affected range as the
advisory wrote it and as walked, the event pair containing the version (introduced / fixed /
last_affected / limit), the VEX statements that applied (winner first, each with why) and the policy rule
that decided. Exit code 1 when the image or the vulnerability is not found.

examples:
  stella-sched explain --tenant acme --image sha256:<64 hex> --vuln GHSA-xxxx-xxxx-xxxx
  stella-sched explain --image sha256:<64 hex> --vuln CVE-2024-1234 --json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stella-sched explain",
        description="Explain one finding of an image from the read models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", required=True, metavar="DIGEST", help="image digest (sha256:<hex>)")
    parser.add_argument(
        "--vuln", required=True, metavar="ID", help="advisory id or alias (GHSA-..., CVE-...)"
    )
    parser.add_argument("--tenant", help="the image's tenant (needed when several tenants hold the digest)")
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.add_argument("--mongo-url", help="MongoDB URL (default $MONGO_URL)")
    parser.add_argument("--db", help="database (default $STELLA_MONGO_DB)")
    return parser


def pair_text(rng: Mapping[str, Any]) -> str:
    """The range event pair containing the version, e.g. ``[introduced 0, fixed 4.17.21)``."""
    if rng.get("kind") == "versions":
        return f"listed version {rng.get('listed')}"
    if rng.get("kind") == "matcher":
        return "decided by an injected matcher (no range)"
    opening = f"[introduced {rng.get('introduced')}, "
    if rng.get("fixed") is not None:
        text = opening + f"fixed {rng['fixed']})"
    elif rng.get("last_affected") is not None:
        text = opening + f"last_affected {rng['last_affected']}]"
    else:
        text = opening + "no upper bound)"
    if rng.get("limit") is not None:
        text += f" below limit {rng['limit']}"
    return text


def _events(events: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{k}={v}" for ev in events for k, v in ev.items() if v is not None) or "-"


def trace_lines(trace: Mapping[str, Any], indent: str = "") -> list[str]:
    """Human-readable lines for one explain trace."""
    rng: Mapping[str, Any] = trace.get("range") or {}
    aliases = f" (aliases {', '.join(trace['aliases'])})" if trace.get("aliases") else ""
    version = trace.get("version") or "-"
    lines = [
        f"{trace['id']}{aliases}  modified {trace.get('modified')}  severity {trace.get('severity')}"
        f"  kev {'yes' if trace.get('kev') else 'no'}  -> {trace.get('outcome')}",
        f"  component  {trace.get('purl')}  ({trace.get('package')} {version})",
    ]
    if rng.get("kind") in ("ECOSYSTEM", "SEMVER"):
        lines += [
            f"  range      {rng['kind']} as written: {_events(rng.get('written') or [])}",
            f"             normalised ({rng.get('scheme')}): {_events(rng.get('normalised') or [])}",
        ]
    lines.append(f"  contains   {version} in {pair_text(rng)}")
    lines += [f"  refused    {text}" for text in rng.get("refused") or []]
    for vex in trace.get("vex") or []:
        just = f" ({vex['justification']})" if vex.get("justification") else ""
        lines.append(
            f"  vex        {vex['outcome']:<10} {vex['document_id']} / {vex['statement_id']}: "
            f"{vex['status']}{just} at {vex['timestamp']} for {vex['product']}: {vex['why']}"
        )
    policy: Mapping[str, Any] = trace.get("policy") or {}
    lines.append(f"  policy     {policy.get('rule')} -> {policy.get('effect')}: {policy.get('detail')}")
    return [indent + line for line in lines]


def _lookup(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    from projections.explain import finding_explain
    from projections.fold import IMAGES, image_id

    if args.tenant:
        doc = store.get(IMAGES, image_id(args.tenant, args.image))
        docs = [doc] if doc is not None else []
    else:
        docs = list(store.find(IMAGES, {"image_digest": args.image}, limit=100).items)
        tenants = sorted({str(d.get("tenant")) for d in docs})
        if len(tenants) > 1:
            raise UsageError(f"image {args.image} is held by tenants {', '.join(tenants)}: pass --tenant")
    if not docs:
        where = f" for tenant {args.tenant!r}" if args.tenant else ""
        raise CliError(f"image {args.image!r} not found{where}")
    answer = finding_explain(docs[0], args.vuln)
    if answer is None:
        omitted = docs[0].get("traces_omitted") or 0
        why = f" ({omitted} trace(s) were left out of that result for size)" if omitted else ""
        raise CliError(
            f"image {args.image} has no trace for {args.vuln!r}: its last evaluation matched no component "
            f"against it, or it has not been evaluated since traces were introduced{why}"
        )
    return answer


def _explain(args: argparse.Namespace) -> int:

    from agents.settings import Settings
    from projections.mongo_store import MongoStore

    settings = Settings.from_env()
    url = args.mongo_url or settings.mongo_url
    with mongo_client(url) as client:
        answer = _lookup(MongoStore.open_active(client, args.db or settings.mongo_db), args)
    if args.json:
        print_json(answer)
        return EXIT_OK
    out = sys.stdout
    out.write(
        f"image {answer['tenant']}/{answer['image_digest']}  verdict {answer['verdict']}  "
        f"(evaluated {answer['evaluated_at']} by job {answer['evaluated_job_id']})\n"
    )
    for trace in answer["traces"]:
        out.write("\n" + "\n".join(trace_lines(trace)) + "\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    try:
        return _explain(args)
    except CliError as exc:
        sys.stderr.write(f"stella-sched: error: {exc.message}\n")
        return exc.code
