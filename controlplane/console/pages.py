"""The console's pages. Every read goes through the API's own route functions (``routes_read``,
``routes_schedules``) and every button through the write routes (``routes_write``, ``routes_schedules``), with
the session's principal: the same queries, scopes and tenant rules as ``/api/v1``, defined once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast, get_args
from urllib.parse import parse_qs, quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from controlplane import routes_read, routes_schedules, routes_write
from controlplane.auth import Principal
from controlplane.console import evidence
from controlplane.console.session import (
    COOKIE,
    cookie_principal,
    cookie_token,
    csrf_ok,
    csrf_token,
    same_origin,
)
from controlplane.deps import MANAGE, READ
from controlplane.errors import ApiError
from controlplane.runtime import Runtime, runtime_of
from schemas.canonical import format_time
from schemas.messages import TERMINAL_RUN_STATES, RunState, ScheduleSpec
from streams.schedules import next_fires
from streams.simulation import is_simulation_run

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

PAGE = 25
RUN_STATES: tuple[str, ...] = get_args(RunState)
TRIGGERS: tuple[str, ...] = get_args(routes_read.RunTrigger)
NEXT_FIRES = 3


class NeedLogin(Exception):
    pass


def session(request: Request) -> Principal:
    principal = cookie_principal(request)
    if principal is None:
        raise NeedLogin
    if READ not in principal.scopes:
        raise ApiError(403, "forbidden", f"this token lacks the {READ} scope")
    return principal


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)


def render(
    request: Request, name: str, principal: Principal | None, status: int = 200, **context: Any
) -> HTMLResponse:
    token = cookie_token(request)
    base = {
        "principal": principal,
        "can_manage": principal is not None and MANAGE in principal.scopes,
        "csrf": csrf_token(token) if token and principal is not None else "",
        "notice": request.query_params.get("notice", ""),
        "problem": request.query_params.get("error", ""),
        "rendered_ms": int(datetime.now(UTC).timestamp() * 1000),
        "path": request.url.path,
    }
    response = templates.TemplateResponse(request, name, {**base, **context}, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )
    return response


def failed(request: Request, principal: Principal | None, exc: ApiError) -> HTMLResponse:
    return render(request, "error.html", principal, exc.status_code, code=exc.code, message=exc.message)


def signed_in(request: Request) -> Principal | Response:
    """The session's user, or the answer to send instead: the login page, or the error page."""
    try:
        return session(request)
    except NeedLogin:
        return to_login(request)
    except ApiError as exc:
        return failed(request, None, exc)


async def page(request: Request, name: str, build: Any) -> Response:
    """Render ``name`` with what ``build(principal, rt)`` returns; login and API errors handled once."""
    principal = signed_in(request)
    if isinstance(principal, Response):
        return principal
    try:
        context = await build(principal, runtime_of(request))
    except ApiError as exc:
        return failed(request, principal, exc)
    return render(request, name, principal, **context)


def short(ident: Any, n: int = 12) -> str:
    text = str(ident or "")
    return text if len(text) <= n + 1 else text[:n] + "…"


templates.env.filters["short"] = short


# ---------------------------------------------------------------- login


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
async def home() -> RedirectResponse:
    return RedirectResponse("/console/runs", status_code=303)


def safe_next(target: str) -> str:
    return target if target.startswith("/console/") and not target.startswith("//") else "/console/runs"


@router.get("/login")
async def login_form(request: Request) -> HTMLResponse:
    return render(request, "login.html", None, next=safe_next(request.query_params.get("next", "")))


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form (the console posts nothing else), first value per field."""
    body = await request.body()
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20)
    return {k: v[0] for k, v in parsed.items()}


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await form(request)
    target = safe_next(fields.get("next", ""))
    if not same_origin(request):
        return render(request, "login.html", None, 403, next=target, problem="cross-origin login refused")
    token = fields.get("token", "").strip()
    principal = runtime_of(request).access.authenticate(token) if token else None
    if principal is None:
        return render(request, "login.html", None, 401, next=target, problem="That token is not valid.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
        max_age=12 * 3600,
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    fields = await form(request)
    if not same_origin(request) or not csrf_ok(request, fields.get("csrf", "")):
        return render(request, "error.html", None, 403, code="forbidden", message="CSRF check failed")
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


# ---------------------------------------------------------------- runs


def parse_local(text: str, name: str) -> datetime | None:
    """A datetime-local field (no zone; the form says UTC) or ISO 8601 with a zone."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, "validation_error", f"{name}: not a date and time: {text[:40]!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    return value if value in allowed else None


def run_trigger(run: dict[str, Any], scheduled: set[str]) -> str:
    """The same classification as ``routes_read.run_filter``."""
    if is_simulation_run(run["id"]):
        return "simulation"
    if run.get("retry_of"):
        return "retry"
    return "schedule" if run["id"] in scheduled else "event"


@router.get("/runs")
async def runs_page(request: Request) -> Response:
    q = request.query_params
    filters = {
        "state": choice(q.get("state"), RUN_STATES) or "",
        "trigger": choice(q.get("trigger"), TRIGGERS) or "",
        "schedule": q.get("schedule", "")[:200],
        "since": q.get("since", "")[:40],
        "until": q.get("until", "")[:40],
    }

    async def build(principal: Principal, rt: Runtime) -> dict[str, Any]:
        listing = await routes_read.list_runs(
            principal,
            rt,
            None,
            state=cast(RunState | None, filters["state"] or None),
            trigger=cast(routes_read.RunTrigger | None, filters["trigger"] or None),
            schedule_id=filters["schedule"] or None,
            since=parse_local(filters["since"], "since"),
            until=parse_local(filters["until"], "until"),
            order="desc",
            limit=PAGE,
            cursor=q.get("cursor") or None,
        )
        tenant = principal.tenant
        scheduled = set(await rt.db(lambda s: routes_read._schedule_run_ids(s, tenant, None)))
        runs = [{**r, "trigger": run_trigger(r, scheduled)} for r in listing["items"]]
        more = None
        if listing["next_cursor"]:
            more = "?" + urlencode(
                {**{k: v for k, v in filters.items() if v}, "cursor": listing["next_cursor"]}
            )
        return {
            "runs": runs,
            "filters": filters,
            "states": RUN_STATES,
            "triggers": TRIGGERS,
            "next_page": more,
            "first_page": not q.get("cursor"),
            "live": not any(filters.values()) and not q.get("cursor"),
        }

    return await page(request, "runs.html", build)


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    delta = job.get("delta") or {}
    return {
        **job,
        "attempt_count": len(job.get("attempts") or []),
        "added": delta.get("added") or [],
        "removed": delta.get("removed") or [],
        "changed": delta.get("changed") or [],
        "verdict_changed": bool(job.get("previous_verdict"))
        and job.get("previous_verdict") != job.get("verdict"),
        "sources": sorted({str(r.get("source")) for r in job.get("reasons") or []}),
    }


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str) -> Response:
    async def build(principal: Principal, rt: Runtime) -> dict[str, Any]:
        run = await routes_read.get_run(run_id, principal, rt, None)
        listing = await routes_read.list_jobs(
            principal, rt, None, run_id=run_id, status=None, image_digest=None, limit=1000, cursor=None
        )
        jobs = [job_view(j) for j in listing["items"]]
        return {
            "run": run,
            "jobs": jobs,
            "more_jobs": bool(listing["next_cursor"]),
            "summary": run.get("summary") or {},
            "terminal": run.get("state") in TERMINAL_RUN_STATES,
            "triggers": sorted({s for j in jobs for s in j["sources"]}),
        }

    return await page(request, "run.html", build)


# ---------------------------------------------------------------- images


@router.get("/images/{digest}")
async def image_page(request: Request, digest: str) -> Response:
    async def build(principal: Principal, rt: Runtime) -> dict[str, Any]:
        image = await routes_read.get_image(digest, principal, rt, None)
        listing = await routes_read.list_jobs(
            principal, rt, None, run_id=None, status=None, image_digest=digest, limit=1000, cursor=None
        )
        history = sorted(
            listing["items"], key=lambda j: (str(j.get("finished_at") or "~"), j["id"]), reverse=True
        )
        return {
            "image": image,
            "history": [job_view(j) for j in history],
            "findings": image.get("findings") or [],
        }

    return await page(request, "image.html", build)


# ---------------------------------------------------------------- schedules


def local_time(at: datetime, zone: str) -> str:
    return at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


@router.get("/schedules")
async def schedules_page(request: Request) -> Response:
    async def build(principal: Principal, rt: Runtime) -> dict[str, Any]:
        listing = await routes_schedules.list_schedules(principal, rt, None, limit=100, cursor=None)
        now = rt.clock()
        rows = []
        for doc in listing["items"]:
            if doc.get("status") == "deleted":
                continue
            spec = ScheduleSpec.model_validate(doc["spec"])
            fires = (
                [] if doc.get("status") == "paused" else next_fires(spec.cron, spec.timezone, now, NEXT_FIRES)
            )
            preview = await routes_schedules.preview_schedule(doc["schedule_id"], principal, rt, None)
            rows.append(
                {
                    "doc": doc,
                    "spec": spec,
                    "fires": [(format_time(f), local_time(f, spec.timezone)) for f in fires],
                    "preview": preview,
                    "missed": len((preview.get("missed") or {}).get("decisions") or []),
                }
            )
        return {"schedules": rows}

    return await page(request, "schedules.html", build)


# ---------------------------------------------------------------- dead letters


@router.get("/deadletters")
async def deadletters_page(request: Request) -> Response:
    cursor = request.query_params.get("cursor") or None

    async def build(principal: Principal, rt: Runtime) -> dict[str, Any]:
        listing = await routes_read.list_deadletters(principal, rt, None, limit=PAGE, cursor=cursor)
        more = "?" + urlencode({"cursor": listing["next_cursor"]}) if listing["next_cursor"] else None
        return {"letters": listing["items"], "next_page": more}

    return await page(request, "deadletters.html", build)


# ---------------------------------------------------------------- evidence


@router.get("/evidence")
async def evidence_page(request: Request) -> Response:
    subject = request.query_params.get("subject", "")[:300] or None

    async def build(principal: Principal, rt: Runtime) -> dict[str, Any]:
        items, bounded = await evidence.tenant_evidence(rt, principal.tenant, subject)
        keys, why = evidence.trusted_keys(rt)
        return {
            "items": items,
            "bounded": bounded,
            "subject": subject or "",
            "keyids": sorted(keys),
            "why": why,
        }

    return await page(request, "evidence.html", build)


@router.get("/evidence/{partition}/{offset}.json")
async def evidence_download(request: Request, partition: int, offset: int) -> Response:
    principal = signed_in(request)
    if isinstance(principal, Response):
        return principal
    found = await evidence.one_envelope(runtime_of(request), principal.tenant, partition, offset)
    if found is None:
        return failed(
            request, principal, ApiError(404, "not_found", f"signed event {partition}@{offset} not found")
        )
    _, value = found
    return Response(
        value,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="signed-event-{partition}-{offset}.json"'},
    )


# ---------------------------------------------------------------- buttons


async def act(request: Request, back: str, action: Any) -> Response:
    """A button: session, same origin, CSRF token and the manage scope, then the API's write route."""
    fields = await form(request)
    principal = signed_in(request)
    if isinstance(principal, Response):
        return principal
    if not same_origin(request) or not csrf_ok(request, fields.get("csrf", "")):
        return failed(
            request,
            principal,
            ApiError(403, "forbidden", "the form's CSRF token is missing or stale: reload the page"),
        )
    if MANAGE not in principal.scopes:
        return failed(request, principal, ApiError(403, "forbidden", f"this token lacks the {MANAGE} scope"))
    try:
        notice = await action(principal, runtime_of(request), fields)
    except ApiError as exc:
        return RedirectResponse(f"{back}?{urlencode({'error': exc.message})}", status_code=303)
    return RedirectResponse(f"{back}?{urlencode({'notice': notice})}", status_code=303)


@router.post("/runs/{run_id}/cancel")
async def cancel(request: Request, run_id: str) -> Response:
    async def do(principal: Principal, rt: Runtime, fields: dict[str, str]) -> str:
        body = routes_write.CancelRequest(
            reason=fields.get("reason", "")[:2000] or "cancelled in the console"
        )
        await routes_write.cancel_run(run_id, principal, rt, body)
        return "Cancel requested: queued jobs will be skipped."

    return await act(request, f"/console/runs/{quote(run_id, safe='')}", do)


@router.post("/runs/{run_id}/retry")
async def retry(request: Request, run_id: str) -> Response:
    async def do(principal: Principal, rt: Runtime, fields: dict[str, str]) -> str:
        body = routes_write.RetryRequest(reason=fields.get("reason", "")[:2000])
        written = await routes_write.retry_run(run_id, principal, rt, body, None)
        return f"Retry requested for {written['images']} image(s): a new run will appear."

    return await act(request, f"/console/runs/{quote(run_id, safe='')}", do)


@router.post("/schedules/{schedule_id}/{action}")
async def schedule_action(request: Request, schedule_id: str, action: str) -> Response:
    async def do(principal: Principal, rt: Runtime, fields: dict[str, str]) -> str:
        if action not in ("pause", "resume"):
            raise ApiError(404, "not_found", f"no schedule action {action!r}")
        handler = routes_schedules.pause_schedule if action == "pause" else routes_schedules.resume_schedule
        await handler(schedule_id, principal, rt, routes_schedules.Note(reason="console"), None)
        return f"{action.capitalize()} requested for {schedule_id}."

    return await act(request, "/console/schedules", do)


@router.post("/deadletters/{dl_id:path}/replay")
async def replay(request: Request, dl_id: str) -> Response:
    async def do(principal: Principal, rt: Runtime, fields: dict[str, str]) -> str:
        written = await routes_write.replay_deadletter(dl_id, principal, rt, request)
        return f"Replayed to {written['topic']} at {written['min_position']}."

    return await act(request, "/console/deadletters", do)
