"""``Idempotency-Key`` under concurrency (issue 14 #7): the first request with a key runs; requests with the
same key that arrive while it runs wait for it and answer its response, instead of each producing a record.

The finished responses live in the runtime's ``IdempotencyCache``; this module only adds the in-flight
table beside it (one per cache)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from weakref import WeakKeyDictionary

from controlplane.errors import ApiError

Response = dict[str, Any]
_Key = tuple[str, str, str]
_inflight: WeakKeyDictionary[Any, dict[_Key, tuple[str, asyncio.Future[Response]]]] = WeakKeyDictionary()


def _conflict() -> ApiError:
    return ApiError(409, "idempotency_conflict", "Idempotency-Key was used with another request")


async def once(
    cache: Any,
    tenant: str,
    route: str,
    key: str | None,
    fingerprint: str,
    make: Callable[[], Awaitable[Response]],
) -> Response:
    """Run ``make()`` once per (tenant, route, key); a repeat, concurrent or later, with the same
    fingerprint answers the first response (``replayed: true``), with another fingerprint 409."""
    if not key:
        return await make()
    seen = cache.get(tenant, route, key)
    if seen is not None:
        if seen[0] != fingerprint:
            raise _conflict()
        return {**seen[1], "replayed": True}
    table = _inflight.setdefault(cache, {})
    running = table.get((tenant, route, key))
    if running is not None:
        if running[0] != fingerprint:
            raise _conflict()
        # shield: a waiter that disconnects must not cancel the first request's produce
        return {**(await asyncio.shield(running[1])), "replayed": True}
    future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
    table[(tenant, route, key)] = (fingerprint, future)
    try:
        response = await make()
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning when nobody waits
        raise
    else:
        cache.put(tenant, route, key, fingerprint, response)
        future.set_result(response)
        return response
    finally:
        table.pop((tenant, route, key), None)
