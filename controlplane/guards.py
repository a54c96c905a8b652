"""The API's edge, before any route sees a request (issue 14): a write is authenticated before its body is
looked at, and a JSON body is parsed once, strictly, with limits, so no route meets input its code was not
written for (lone surrogates, nesting deeper than ``MAX_JSON_DEPTH``, numbers out of range).

Scopes are still checked by the routes' dependencies (``controlplane.deps``); feed webhooks authenticate by
HMAC over the raw body (``routes_feeds``), so they only get the JSON checks of their own parsers."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.errors import ApiError, error_response

MAX_JSON_DEPTH = 64
INT_RANGE = (-(2**63), 2**63 - 1)
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_UNGUARDED_PREFIXES = ("/api/v1/feeds/",)


def json_problem(body: bytes) -> str | None:
    """Why ``body`` is not acceptable JSON for the API, or None. Pure; empty bodies are the routes' call."""
    if not body.strip():
        return None
    try:
        doc = orjson.loads(body)  # refuses invalid UTF-8, lone surrogates, NaN/Infinity
    except orjson.JSONDecodeError as exc:
        return f"the body is not valid JSON: {exc}"
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"the body nests deeper than {MAX_JSON_DEPTH} levels"
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(value, int) and not isinstance(value, bool):
            if not INT_RANGE[0] <= value <= INT_RANGE[1]:
                return "the body holds an integer outside the signed 64-bit range"
        elif isinstance(value, float) and value.is_integer() and abs(value) >= 2**63:
            return "the body holds a number outside the signed 64-bit range"
    return None


class EdgeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if (
            scope["type"] != "http"
            or scope.get("method") not in _WRITES
            or not path.startswith("/api/v1/")
            or path.startswith(_UNGUARDED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        from controlplane.deps import authenticate  # late: deps imports the app module

        try:
            authenticate(Request(scope))
        except ApiError as exc:
            await error_response(exc.status_code, exc.code, exc.message, exc.headers)(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            try:
                message = await receive()
            except ApiError as exc:  # the body limit stops a streamed body here (413)
                await error_response(exc.status_code, exc.code, exc.message, exc.headers)(
                    scope, receive, send
                )
                return
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnected: let the app see it
                return
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        problem = json_problem(body)
        if problem is not None:
            await error_response(422, "invalid_json", problem)(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
