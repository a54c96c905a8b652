"""FastAPI dependencies: the caller's principal with a required scope, and read-your-writes waits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Query, Request

from controlplane.auth import Principal
from controlplane.errors import ApiError
from controlplane.paging import parse_min_position
from controlplane.runtime import Runtime, runtime_of

READ = "scheduler.runs.read"
WRITE = "scheduler.runs.write"
MANAGE = "scheduler.runs.manage"

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="stella-sched"'}


def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(401, "unauthorized", "missing bearer token", _CHALLENGE)
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "expected 'Authorization: Bearer <token>'", _CHALLENGE)
    principal = runtime_of(request).access.authenticate(token.strip())
    if principal is None:
        raise ApiError(401, "unauthorized", "invalid bearer token", _CHALLENGE)
    request.state.principal = principal
    return principal


def require(scope: str) -> Callable[[Request], Principal]:
    def dependency(request: Request) -> Principal:
        principal = authenticate(request)
        if scope not in principal.scopes:
            raise ApiError(403, "forbidden", f"this token lacks the {scope} scope")
        return principal

    return dependency


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
Reader = Annotated[Principal, Depends(require(READ))]
Writer = Annotated[Principal, Depends(require(WRITE))]
Manager = Annotated[Principal, Depends(require(MANAGE))]


def consistent() -> Callable[..., Awaitable[None]]:
    async def dependency(
        request: Request,
        min_position: Annotated[
            list[str] | None,
            Query(
                description="topic:partition:offset (repeatable): wait until the read models include it",
                max_length=20,
            ),
        ] = None,
    ) -> None:
        positions = [parse_min_position(text) for text in (min_position or [])]
        await runtime_of(request).wait_for(positions)

    return dependency


Consistent = Depends(consistent())
