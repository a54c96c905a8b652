"""Cron expressions and IANA time zones: the one place that says what a valid schedule time spec is.

Cron syntax is cronsim's (Debian cron semantics; an optional leading sixth field for seconds, plus ``L``,
``LW``, ``5L``, ``MON#1``). Zones are IANA names resolved with ``zoneinfo`` (the system tz database, or the
``tzdata`` package where the system has none).
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (``Europe/Berlin``, ``UTC``); ValueError naming it when unknown."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin or UTC)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin or UTC)") from None


def check_cron(expr: str) -> str:
    """``expr`` with its white space normalised; ValueError with cronsim's reason when it is invalid."""
    text = " ".join(expr.split())
    fields = len(text.split())
    if fields not in (5, 6):
        raise ValueError(
            f"cron expression {expr!r} has {fields} fields: want 5 (minute hour day month weekday) "
            "or 6 (second first)"
        )
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"cron expression {expr!r}: {exc}") from None
    return text
