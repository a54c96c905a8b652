"""Console sessions: the bearer token in an HttpOnly, SameSite=Strict cookie, and a CSRF token per session.

The cookie holds the token itself (the API's access file keeps only its sha256, so there is nothing else to
look it up by); it is HttpOnly (no script reads it) and SameSite=Strict (no other site's page sends it). Every
form that changes something also carries ``csrf``: an HMAC of the token's sha256 under a per-process secret,
checked in constant time, and the request's Origin, when the browser sends one, must be this server."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request

from controlplane.auth import Principal, token_hash
from controlplane.deps import READ, authenticate
from controlplane.errors import ApiError
from controlplane.runtime import runtime_of

COOKIE = "stella_console"
SESSION_SECRET = secrets.token_bytes(32)  # per process: a restart asks open pages to reload their forms


def cookie_token(request: Request) -> str:
    return request.cookies.get(COOKIE, "").strip()


def cookie_principal(request: Request) -> Principal | None:
    token = cookie_token(request)
    if not token:
        return None
    return runtime_of(request).access.authenticate(token)


def csrf_token(token: str) -> str:
    return hmac.new(SESSION_SECRET, token_hash(token).encode("ascii"), hashlib.sha256).hexdigest()


def csrf_ok(request: Request, presented: str) -> bool:
    token = cookie_token(request)
    if not token or not presented:
        return False
    return hmac.compare_digest(csrf_token(token).encode("ascii"), presented.encode("ascii", "replace"))


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def stream_principal(request: Request) -> Principal:
    """The live feed's caller: a bearer token (API clients), else the console's cookie (EventSource cannot
    set headers). Either way it needs the read scope. The cookie is accepted on this read-only route only."""
    if request.headers.get("authorization"):
        principal = authenticate(request)
    else:
        found = cookie_principal(request)
        if found is None:
            raise ApiError(401, "unauthorized", "missing bearer token or console session")
        principal = found
    if READ not in principal.scopes:
        raise ApiError(403, "forbidden", f"this token lacks the {READ} scope")
    return principal
