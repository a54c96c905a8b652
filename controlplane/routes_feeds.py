"""Feed webhooks: advisory (OSV) and VEX exports, authenticated by HMAC-SHA256 over the raw body and
rate-limited per source."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from controlplane.auth import SIGNATURE_HEADER
from controlplane.deps import RuntimeDep
from controlplane.errors import ApiError
from controlplane.webhook_sig import WINDOW_SECONDS
from ingest.detect import parse_file
from ingest.result import IngestResult
from schemas.codec import encode
from schemas.keys import message_key
from schemas.messages import AdvisoryDelta, VexStatement

router = APIRouter(prefix="/api/v1")

FeedKind = Literal["advisories", "vex"]
REFUSED = {
    "signature": f"missing or invalid {SIGNATURE_HEADER} (t=<unix seconds>,n=<nonce>,sha256=<hmac hex of "
    "'<t>.<n>.<kind>.' + body>)",
    "stale": f"the {SIGNATURE_HEADER} timestamp is outside the {WINDOW_SECONDS} s window",
    "replayed": "this request was already received (nonce reused)",
}
_PARSE_KIND = {"advisories": "osv", "vex": "vex"}


@router.post("/feeds/{kind}", status_code=202)
async def feed_webhook(kind: FeedKind, request: Request, rt: RuntimeDep) -> dict[str, Any]:
    body = await request.body()  # the body limit middleware stops oversized bodies while reading
    now = rt.clock().timestamp()
    source, why = rt.access.webhook_source(kind, body, request.headers.get(SIGNATURE_HEADER), now)
    if source is None:
        rt.metrics.webhook_rejected.labels(why).inc()
        # Failed signatures are rate-limited too (per client address), so guessing costs time.
        client = request.client.host if request.client else "unknown"
        wait = rt.access.failed_signatures.take(client)
        if wait:
            raise ApiError(429, "rate_limited", "too many failed signatures", {"Retry-After": str(wait)})
        raise ApiError(401, "unauthorized", REFUSED[why])
    wait = rt.limiter.take(source.source)
    if wait:
        rt.metrics.webhook_rejected.labels("rate_limited").inc()
        raise ApiError(
            429,
            "rate_limited",
            f"source {source.source!r} is over its rate limit",
            {"Retry-After": str(wait)},
        )
    label = f"webhook:{source.source}"
    result: IngestResult[Any] = await run_in_threadpool(parse_file, _PARSE_KIND[kind], body, label)
    problems = [{"field": e.field, "message": e.message, "level": e.level} for e in result.errors]
    records: list[tuple[str, str, bytes | None, bytes | None]] = []
    for message in result.messages:
        if isinstance(message, AdvisoryDelta):
            records.append(("advisories", rt.topic("advisories"), message_key(message), encode(message)))
        elif isinstance(message, VexStatement):
            records.append(("vex", rt.topic("vex"), message_key(message), encode(message)))
    if not records:
        rt.metrics.webhook_rejected.labels("invalid").inc()
        first = problems[0]["message"] if problems else "the document holds no usable records"
        raise ApiError(422, "invalid_document", first, details=problems[:50])
    produced = await rt.produce(records)
    last: dict[tuple[str, int], int] = {}
    for p in produced:
        last[(p.topic, p.partition)] = max(last.get((p.topic, p.partition), -1), p.offset)
    positions = [{"topic": t, "partition": n, "offset": o} for (t, n), o in sorted(last.items())]
    return {
        "source": source.source,
        "accepted": len(records),
        "format": result.format,
        "problems": problems[:50],
        "positions": positions,
        "min_position": [f"{p['topic']}:{p['partition']}:{p['offset']}" for p in positions],
    }
