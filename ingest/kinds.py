"""The input kinds ``parse_file`` and ``stella-sched publish`` accept, and the logical topic each is
produced to (agents.topology). Plain data: the CLI parser imports it without loading the parsers."""

from __future__ import annotations

KIND_TOPICS: dict[str, str] = {
    "sbom": "inventory",
    "osv": "advisories",
    "vex": "vex",
    "policy": "policy",
    "runtime": "runtime",
    "recheck": "rechecks",
}
KINDS: tuple[str, ...] = tuple(KIND_TOPICS)
