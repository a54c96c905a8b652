"""``stella-sched``: one CLI for publishing inputs, previews, keys, verification, replay and the services.

Only the parser lives here; each subcommand's module is imported when it runs, so ``--help`` stays fast.
Exit codes: 0 ok, 1 rejected input / failed verification, 2 usage error, 3 Kafka or MongoDB unreachable.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cli.output import EXIT_INFRA, EXIT_USAGE, CliError
from ingest.kinds import KINDS

PROG = "stella-sched"


@dataclass(frozen=True)
class Command:
    """A subcommand and the module that implements it, imported only when it runs.

    Most are parsed here (so ``--help`` stays fast) and run as ``module.run(args)``. Those that parse
    their own options (``own_parser``) get their raw arguments as ``module.main(argv)``, with the
    subcommand name first when ``pass_name`` (one module serving several subcommands)."""

    module: str
    help: str = ""
    own_parser: bool = False
    pass_name: bool = False


COMMANDS: dict[str, Command] = {
    "publish": Command("cli.publish"),
    "preview": Command("cli.preview"),
    "keys": Command("cli.keys"),
    "verify": Command("cli.verify"),
    "replay": Command("cli.replay"),
    "worker": Command("agents.worker", "run a stream-processing worker (faust)", own_parser=True),
    "api": Command("controlplane.server", "run the HTTP control plane", own_parser=True),
    "demo": Command("cli.demo", "run the end-to-end demo", own_parser=True),
    "rebuild": Command("cli.rebuild", "rebuild the MongoDB read models from offset 0", own_parser=True),
    "tail": Command("cli.consume", "follow signed completion events, verifying each", True, True),
    "query": Command("cli.consume", "read the MongoDB read models (runs, jobs, images, ...)", True, True),
    "deadletter": Command("cli.deadletter", "list, show and replay dead letters", own_parser=True),
    "audit": Command("cli.audit", "verify, export and prove the hash-chained audit ledger", own_parser=True),
    "schedules": Command(
        "cli.schedules", "cron sweeps: next fire times, schedules, catch-up", own_parser=True
    ),
    "explain": Command("cli.explain", "why an image has a finding: range, VEX, policy rule", own_parser=True),
    "simulate": Command(
        "cli.simulate", "what a candidate policy would change (nothing live written)", own_parser=True
    ),
    "simulations": Command("cli.simulations", "list, show and cancel policy simulations", own_parser=True),
}

TOP_EPILOG = """\
exit codes: 0 ok, 1 rejected input or failed verification, 2 usage error,
            3 Kafka / MongoDB unreachable (start them with `make up`)

environment: KAFKA_BOOTSTRAP (default 127.0.0.1:9092), STELLA_TOPIC_PREFIX, MONGO_URL,
             STELLA_MONGO_DB, STELLA_PUBLIC_KEYS

examples:
  stella-sched publish osv tests/data/osv/ghsa/
  stella-sched publish sbom --tenant acme --image-digest sha256:<hex> bom.json
  stella-sched preview --sbom bom.json --image-digest sha256:<hex> --advisory advisories/
  stella-sched replay --group stella-sched --to earliest --dry-run
  stella-sched <command> --help      (every command explains itself)
"""

PUBLISH_EPILOG = """\
kinds and the topic each goes to (key in brackets):
  sbom     CycloneDX / SPDX JSON      -> inventory  [tenant/image digest]
  osv      OSV / GHSA JSON, PyPA YAML -> advisories [advisory id]
  vex      OpenVEX, CycloneDX VEX, CSAF -> vex      [vulnerability id]
  policy   PolicyChange JSON/YAML     -> policy     [tenant]
  runtime  RuntimeEvent JSON/YAML     -> runtime    [image digest]
  recheck  Recheck JSON/YAML          -> rechecks   [tenant]
Folders are read recursively (*.json, *.yaml, *.yml). Valid messages are sent even when other files are
rejected; the exit code is then 1 and the summary lists every rejection as file: field: message.

examples:
  stella-sched publish osv --dry-run tests/data/osv/
  stella-sched publish osv --kev-file known_exploited_vulnerabilities.json advisories/
  stella-sched publish sbom --tenant acme sboms/
  stella-sched publish sbom --tenant acme --image-digest sha256:<64 hex> --repository reg/app bom.json
  stella-sched publish vex --json vex/ | jq .messages
"""

PREVIEW_EPILOG = """\
Nothing is read from or written to Kafka: the same pure functions the stream uses run in memory, and the
output lists the jobs (ids, priority class, kind, reasons) the stream would emit, plus per-image checks
(affected / not_affected and why).

examples:
  stella-sched preview --sbom bom.json --image-digest sha256:<64 hex> --advisory tests/data/osv/ghsa/
  stella-sched preview --tenant acme --sbom sboms/ --advisory osv/ --vex vex/ --json
  stella-sched preview --sbom bom.json --image-digest sha256:<64 hex> --advisory osv/ --explain --json
"""

KEYS_EPILOG = """\
examples:
  stella-sched keys generate --out keys/ --name signer-2025
  stella-sched keys show keys/            (every *.json public key in the folder)
  stella-sched keys show keys/signer-2025.pub.json
"""

VERIFY_EPILOG = """\
Each event is reported with its id (sha256 of the payload bytes), the keyid that verified it, its subject
(image digest or run id), its predicate type and ok / the failure reason (bad-signature, unknown-keyid,
malformed, payload-type). The exit code is 1 when any event fails.

examples:
  stella-sched verify --file envelopes.jsonl --public-keys keys/
  stella-sched verify --topic --from-beginning --max 100 --public-keys keys/signer.pub.json --json
"""

REPLAY_EPILOG = """\
The group must be stopped (no live members): replay refuses otherwise. It prints, per partition, the
current committed offset, the target and the lag (end offset - target); --dry-run stops there. Without
--yes it asks for confirmation on stdin. --topic takes full topic names (with any prefix); by default the
topics the group has committed offsets for.

examples:
  stella-sched replay --group stella-sched-projector --to earliest --dry-run
  stella-sched replay --group stella-sched --to timestamp:2025-01-31T12:00:00Z --topic advisories --yes
  stella-sched replay --group g1 --to offset:42 --topic demo.jobs
"""


def _timestamp(text: str) -> datetime:
    from schemas.canonical import parse_time

    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time (like 2025-01-31T12:00:00Z): {text!r}"
        ) from None


def _digest(text: str) -> str:
    from schemas.digest import digest_problem

    problem = digest_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _replay_target(text: str) -> Any:
    from cli.replay import parse_target

    return parse_target(text)


def _kafka_options(parser: argparse.ArgumentParser, *, prefix: bool = True) -> None:
    group = parser.add_argument_group("Kafka")
    group.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap (default $KAFKA_BOOTSTRAP)")
    if prefix:
        group.add_argument(
            "--topic-prefix", metavar="P", help="topic name prefix (default $STELLA_TOPIC_PREFIX, empty)"
        )


def _sub(subs: Any, name: str, help_text: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subs.add_parser(
        name,
        help=help_text,
        description=textwrap.fill(description, 100),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Event-sourced re-evaluation scheduler for container security (Kafka stream processor).",
        epilog=TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _sub(
        subs,
        "publish",
        "parse input files or folders and produce them to their Kafka topic",
        "Parse SBOMs, advisories, VEX, policy changes, runtime events or rechecks; validate them; produce "
        "each message with its key (acks=all, idempotent) to the kind's topic. Shows a progress bar for "
        "folders and prints a summary.",
        PUBLISH_EPILOG,
    )
    p.add_argument("kind", choices=KINDS, help="what the files are")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files and/or folders (read recursively)")
    p.add_argument("--tenant", help="tenant the SBOMs belong to (required for sbom; optional scope for vex)")
    p.add_argument("--image-digest", type=_digest, metavar="sha256:HEX", help="image digest of a single SBOM")
    p.add_argument("--repository", help="image repository of a single SBOM (default: from the document)")
    p.add_argument("--observed-at", type=_timestamp, metavar="TS", help="SBOM observation time (ISO 8601)")
    p.add_argument("--kev-file", metavar="F", help="CISA KEV catalog JSON, a JSON list or one id a line")
    p.add_argument("--dry-run", action="store_true", help="validate only, never connect to Kafka")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="list warnings, not only count them")
    _kafka_options(p)

    p = _sub(
        subs,
        "preview",
        "offline impact preview from files: which images, which jobs, and why",
        "Compute, offline, the jobs the stream would emit for these SBOMs and deltas, with per-image "
        "explanations.",
        PREVIEW_EPILOG,
    )
    p.add_argument("--sbom", nargs="+", required=True, metavar="PATH", help="SBOM files or folders")
    p.add_argument("--advisory", nargs="+", required=True, metavar="PATH", help="OSV files or folders")
    p.add_argument("--vex", nargs="+", metavar="PATH", help="VEX files or folders")
    p.add_argument("--policy", nargs="+", metavar="PATH", help="PolicyChange files")
    p.add_argument("--runtime", nargs="+", metavar="PATH", help="RuntimeEvent files (running images)")
    p.add_argument("--tenant", help="tenant of the SBOMs (default 'default')")
    p.add_argument("--image-digest", type=_digest, metavar="sha256:HEX", help="image digest of a single SBOM")
    p.add_argument("--repository", help="image repository of a single SBOM")
    p.add_argument("--window", type=_positive, default=30, metavar="SECONDS", help="impact window (30)")
    p.add_argument(
        "--explain",
        action="store_true",
        help="also evaluate each image: per affected component the range event pair, VEX and policy rule",
    )
    p.add_argument("--json", action="store_true", help="canonical JSON output")

    p = _sub(
        subs,
        "keys",
        "generate or show Ed25519 signing keys",
        "Manage the signer's Ed25519 keys.",
        KEYS_EPILOG,
    )
    ksubs = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    kg = _sub(
        ksubs,
        "generate",
        "write a new key pair",
        "Write NAME.key (private, JSON, mode 0600) and NAME.pub.json (public) into DIR; print the keyid and "
        "the paths, never the key.",
        "example:\n  stella-sched keys generate --out keys/ --name signer-2025\n",
    )
    kg.add_argument("--out", required=True, metavar="DIR", help="folder for the key files (created)")
    kg.add_argument("--name", default="stella-sched", help="file name stem (default stella-sched)")
    kg.add_argument("--force", action="store_true", help="overwrite existing files")
    kg.add_argument("--json", action="store_true", help="JSON output")
    ks = _sub(
        ksubs,
        "show",
        "list the keyids of public keys",
        "Print the keyid (hex sha256 of the raw public key) of each public key in a file or folder.",
        "examples:\n  stella-sched keys show keys/\n  stella-sched keys show keys/signer.pub.json --json\n",
    )
    ks.add_argument("path", metavar="PUBLIC_FILE_OR_DIR")
    ks.add_argument("--json", action="store_true", help="JSON output")

    p = _sub(
        subs,
        "verify",
        "verify DSSE envelopes from a file or the events.signed topic",
        "Verify DSSE envelopes (Ed25519 over PAE) against trusted public keys.",
        VERIFY_EPILOG,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", metavar="PATH", help="a JSON envelope, a JSON list of them, or JSONL")
    src.add_argument("--topic", action="store_true", help="read the events.signed topic")
    p.add_argument("--public-keys", required=True, metavar="PATH", help="public key file or folder")
    p.add_argument("--from-beginning", action="store_true", help="--topic: start at the oldest record")
    p.add_argument("--max", type=_positive, metavar="N", help="--topic: stop after N records")
    p.add_argument(
        "--timeout", type=_positive_float, default=5.0, metavar="S", help="--topic: stop after S idle s (5)"
    )
    p.add_argument("--json", action="store_true", help="JSON output")
    _kafka_options(p)

    p = _sub(
        subs,
        "replay",
        "rewind a stopped consumer group (with a dry run that shows lag)",
        "Move a stopped consumer group's committed offsets to earliest, latest, a time or an offset.",
        REPLAY_EPILOG,
    )
    p.add_argument("--group", required=True, metavar="G", help="consumer group id")
    p.add_argument(
        "--to",
        required=True,
        type=_replay_target,
        metavar="TARGET",
        help="earliest | latest | timestamp:ISO8601 | offset:N",
    )
    p.add_argument("--topic", action="append", metavar="T", help="topic to rewind (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="JSON output")
    _kafka_options(p, prefix=False)

    for name, command in COMMANDS.items():
        if not command.own_parser:
            continue
        ext = subs.add_parser(
            name,
            help=command.help,
            add_help=False,
            description=f"{command.help} (implemented in {command.module}; `{PROG} {name} --help` for "
            "its options)",
        )
        ext.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _dispatch(name: str, args: argparse.Namespace | None, rest: list[str]) -> int:
    """The one way a subcommand runs: import its module, then ``run(args)`` or ``main(argv)``."""
    command = COMMANDS[name]
    try:
        module = importlib.import_module(command.module)
    except ImportError as exc:
        print(
            f"{PROG} {name}: not available: cannot import {command.module} ({exc}). "
            "Is the project installed (`make venv`) and is that module part of this checkout?",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if command.own_parser:
        main_of: Callable[[list[str]], int | None] = module.main
        result = main_of([name, *rest] if command.pass_name else rest)
    else:
        assert args is not None  # parsed here: main() passes the namespace
        run_of: Callable[[argparse.Namespace], int | None] = module.run
        result = run_of(args)
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        first = COMMANDS.get(args_list[0]) if args_list else None
        if first is not None and first.own_parser:
            # Before parsing here: its options are its own (argparse would reject them as unknown).
            return _dispatch(args_list[0], None, args_list[1:])
        parser = build_parser()
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help (0) or a usage error (2)
            return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
        return _dispatch(args.command, args, [])
    except CliError as exc:
        print(f"{PROG}: error: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_INFRA if isinstance(exc, ConnectionError) else 1


if __name__ == "__main__":
    sys.exit(main())
