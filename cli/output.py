"""Exit codes, the CLI's error types, and printing helpers (tables, canonical JSON, progress bars).

Exit codes: 0 ok, 1 rejected input or failed verification, 2 usage error, 3 infrastructure unreachable.
Results go to stdout; progress bars, warnings and errors go to stderr, so ``--json`` output stays parseable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_INFRA = 3

T = TypeVar("T")


class CliError(Exception):
    """A failure with a user-facing message and an exit code; ``main`` prints it to stderr."""

    def __init__(self, message: str, code: int = EXIT_REJECTED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class InfraError(CliError):
    """Kafka or MongoDB cannot be reached; the message says how to start it or which variable to set."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_INFRA)


def kafka_hint(bootstrap: str, exc: BaseException | None = None) -> str:
    cause = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return (
        f"Kafka is not reachable at {bootstrap}{cause}.\n"
        "Start the local broker with `make up`, or point the CLI at yours with --bootstrap or the "
        "KAFKA_BOOTSTRAP environment variable."
    )


def mongo_hint(url: str, exc: BaseException | None = None) -> str:
    cause = f" ({type(exc).__name__})" if exc is not None else ""
    return (
        f"MongoDB is not reachable at {url}{cause}.\n"
        "Start the local FerretDB with `make up`, or set the MONGO_URL environment variable (or --mongo-url)."
    )


@contextmanager
def mongo_client(url: str) -> Iterator[Any]:
    """A pymongo client that answered a ping (else InfraError with the hint above), closed on exit. Every
    read-model command opens its client here, imported lazily so ``--help`` stays fast."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        try:
            client.admin.command("ping")
        except PyMongoError as exc:
            raise InfraError(mongo_hint(url, exc)) from None
        yield client
    finally:
        client.close()


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code argparse chose (``--help`` 0, a usage error 2) so a
    command's ``main`` returns it instead of raising ``SystemExit`` through ``cli.main``."""
    try:
        return parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE


def print_json(value: Any, file: TextIO | None = None) -> None:
    """Canonical JSON (sorted keys, UTC timestamps) on one line."""
    from schemas.canonical import dumps

    out = file or sys.stdout
    out.write(dumps(value, allow_floats=True).decode("utf-8") + "\n")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain left-aligned text table; numbers are right-aligned."""
    text_rows = [["" if c is None else str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    numeric = [
        bool(text_rows) and all(row[i].lstrip("-").isdigit() or row[i] in ("", "-") for row in text_rows)
        for i in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(row) for row in text_rows]
    return "\n".join(out)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], file: TextIO | None = None) -> None:
    (file or sys.stdout).write(format_table(headers, rows) + "\n")


def eprint(*parts: object) -> None:
    print(*parts, file=sys.stderr)


def progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def progress(
    items: Iterable[T], *, total: int | None, desc: str, quiet: bool = False, unit: str = "file"
) -> Iterator[T]:
    """A tqdm bar on stderr, shown only on a terminal and without --quiet."""
    if not progress_enabled(quiet):
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
