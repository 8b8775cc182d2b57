"""The console's web application (aiohttp, Jinja2 templates, no script).

Every page but the login form needs a Kubernetes bearer token: the `Authorization: Bearer` header,
or the HttpOnly, SameSite=Strict cookie the login form sets. No token, or one the API server does
not accept: 401. An org the caller may not `get` and an org that does not exist give the same 403.
Forms that change something carry a CSRF token bound to the caller's token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from markupsafe import Markup
from orgpipeline_api import triggers
from orgpipeline_api.v1alpha1 import AnomalyDetection
from orgpipeline_api.v1alpha1_status import OrgPipelineStatus

from orgpipeline_console import data, kube, svg

log = logging.getLogger("orgpipeline.console")

HERE = Path(__file__).parent
COOKIE = "orgpipeline_token"
LOGIN_COOKIE = "orgpipeline_login"
ORGS_PAGE = 50
REJECTED_PAGE = 25
PUBLIC = ("/login", "/static/", "/healthz", "/favicon.ico")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KUBE: web.AppKey[kube.Kube] = web.AppKey("kube", kube.Kube)
SECRET: web.AppKey[bytes] = web.AppKey("secret", bytes)
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)


# --- helpers ---------------------------------------------------------------------------------


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["num"] = _num
    env.filters["pct"] = lambda v: "-" if v is None else f"{float(v):.1%}"
    env.filters["score"] = lambda v: "-" if v is None else f"{float(v):.3f}"
    env.filters["q"] = lambda v: quote(str(v), safe="")
    return env


def _when(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(request: web.Request, template: str, code: int = 200, /, **context: Any) -> web.Response:
    who = request.get("who")
    context.setdefault("title", "OrgPipelines console")
    body = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(who=who, csrf=request.get("csrf", ""), path=request.path, **context)
    )
    response = web.Response(text=body, status=code, content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


def csrf_for(secret: bytes, token: str) -> str:
    return hmac.new(secret, kube.token_key(token).encode(), hashlib.sha256).hexdigest()


def _token(request: web.Request) -> tuple[str | None, bool]:
    """The caller's bearer token and whether it came from the cookie."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip(), False
    cookie = request.cookies.get(COOKIE, "").strip()
    return (cookie or None), bool(cookie)


async def _thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


def _forbidden(request: web.Request) -> web.Response:
    # The same answer for an org that exists and one that does not: no hint either way.
    return render(request, "error.html", 403, heading="Forbidden", message="You may not see this org.")


# --- middleware ------------------------------------------------------------------------------


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none';"
        " base-uri 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/" or any(request.path.startswith(p) for p in PUBLIC):
        return await handler(request)
    token, from_cookie = _token(request)
    who = None
    if token is not None:
        try:
            who = await _thread(request.app[KUBE].review, token)
        except Exception as exc:
            log.warning("TokenReview failed: %s", exc)
            return render(
                request, "error.html", 503, heading="Unavailable", message="The API server did not answer."
            )
    if who is None:
        message = (
            "Sign in with a Kubernetes token." if token is None else "That token is not valid (any more)."
        )
        response = login_page(request, 401, message, request.path_qs if request.method == "GET" else "/orgs")
        response.headers["WWW-Authenticate"] = 'Bearer realm="orgpipeline-console"'
        if from_cookie:
            response.del_cookie(COOKIE, path="/")
        return response
    request["who"], request["token"], request["from_cookie"] = who, token, from_cookie
    request["csrf"] = csrf_for(request.app[SECRET], str(token))
    if request.method == "POST" and from_cookie:
        form = await request.post()
        if not hmac.compare_digest(str(form.get("csrf", "")), request["csrf"]):
            return render(
                request, "error.html", 403, heading="Forbidden", message="The form expired: reload the page."
            )
    return await handler(request)


# --- login -----------------------------------------------------------------------------------


def _secure(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/orgs")


def login_page(request: web.Request, status: int, message: str, target: str) -> web.Response:
    """The sign-in form with its login CSRF nonce (a cookie and a hidden field that must match): the
    browser's nonce when it has one, so that a page's other requests (a favicon) keep it valid."""
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    nonce = nonce if 20 <= len(nonce) <= 64 else secrets.token_urlsafe(24)
    response = render(
        request, "login.html", status, message=message, login_csrf=nonce, next=target, title="Sign in"
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        path="/",
        max_age=900,
    )
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    return login_page(request, 200, "", request.query.get("next", "/orgs"))


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(str(form.get("login_csrf", "")), nonce):
        return login_page(request, 403, "The form expired: try again.", "/orgs")
    token = str(form.get("token", "")).strip()
    who = await _thread(request.app[KUBE].review, token) if token else None
    if who is None:
        return login_page(request, 401, "That token is not valid.", str(form.get("next") or "/orgs"))
    target = str(form.get("next") or "/orgs")
    # Only a path of this site: "//host" and "/\\host" are other sites to a browser.
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = "/orgs"
    response = web.HTTPSeeOther(target)
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=_secure(request), path="/")
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    return response


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def favicon(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)


# --- orgs ------------------------------------------------------------------------------------


def orgs_page(k: kube.Kube, who: kube.Identity, q: str, ready: str, alerts: str, page: int) -> kube.Page:
    """What /orgs renders: the caller's orgs, filtered, one page (the part the bench times)."""
    _, rows = k.catalog()
    found = kube.filter_orgs(k.visible(who, rows), q, ready, alerts)
    result = kube.paginate(found, page, ORGS_PAGE)
    result.params = {k_: v for k_, v in (("q", q), ("ready", ready), ("alerts", alerts)) if v}
    return result


async def orgs(request: web.Request) -> web.StreamResponse:
    q = request.query.get("q", "")[:100]
    ready = request.query.get("ready", "")
    ready = ready if ready in ("True", "False", "Unknown") else ""
    alerts = request.query.get("alerts", "")
    alerts = alerts if alerts in ("yes", "no") else ""
    page = _int(request.query.get("page"), 1)
    started = time.perf_counter()
    result = await _thread(orgs_page, request.app[KUBE], request["who"], q, ready, alerts, page)
    response = render(
        request,
        "orgs.html",
        result=result,
        q=q,
        ready=ready,
        alerts=alerts,
        urlencode=urlencode,
        title="Orgs",
    )
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


def _int(text: str | None, default: int) -> int:
    try:
        return max(1, int(text or default))
    except ValueError:
        return default


async def _org(request: web.Request) -> dict[str, Any] | None:
    """The OrgPipeline of the path, when the caller may get it."""
    k, name = request.app[KUBE], request.match_info["name"]
    if not await _thread(k.allowed, request["who"], "get", name):
        return None
    return await _thread(k.get, name)


def _status(obj: dict[str, Any]) -> OrgPipelineStatus | None:
    try:
        return OrgPipelineStatus.model_validate(obj.get("status") or {})
    except ValueError:
        return None


async def org(request: web.Request) -> web.StreamResponse:
    obj = await _org(request)
    if obj is None:
        return _forbidden(request)
    spec = obj.get("spec") or {}
    org_id = str(spec.get("orgId"))
    runs, error = [], ""
    try:
        runs = await _thread(data.org_runs, org_id)
    except data.DataUnavailable as exc:
        error = str(exc)
    status = _status(obj)
    by_table = {t.name: t for t in (status.tables if status else [])}
    return render(
        request,
        "org.html",
        obj=obj,
        name=obj["metadata"]["name"],
        org_id=org_id,
        spec=spec,
        status=status,
        row=kube.org_row(obj),
        tables=[(t, by_table.get(t["name"])) for t in spec.get("tables") or []],
        runs=runs,
        error=error,
        pending=_pending(obj),
        title=f"Org {obj['metadata']['name']}",
    )


def _pending(obj: dict[str, Any]) -> dict[str, str] | None:
    """A run-now request the operator has not taken yet."""
    notes = (obj.get("metadata") or {}).get("annotations") or {}
    table = notes.get(triggers.ANNOTATION_RUN_NOW)
    if not table:
        return None
    return {
        "table": table,
        "requester": notes.get(triggers.ANNOTATION_RUN_NOW_REQUESTER, ""),
        "reason": notes.get(triggers.ANNOTATION_RUN_NOW_REASON, ""),
    }


def _table_spec(obj: dict[str, Any], table: str) -> dict[str, Any] | None:
    return next((t for t in (obj.get("spec") or {}).get("tables") or [] if t.get("name") == table), None)


async def table(request: web.Request) -> web.StreamResponse:
    obj = await _org(request)
    if obj is None:
        return _forbidden(request)
    name, table_name = obj["metadata"]["name"], request.match_info["table"]
    tspec = _table_spec(obj, table_name)
    if tspec is None:
        return render(request, "error.html", 404, heading="Not found", message="The org has no such table.")
    org_id = str(obj["spec"]["orgId"])
    try:
        settings = AnomalyDetection.model_validate(tspec.get("anomalyDetection") or {})
    except ValueError:
        settings = AnomalyDetection()
    page = _int(request.query.get("page"), 1)
    file = request.query.get("file") or None
    k = request.app[KUBE]
    try:
        found = await _thread(
            data.table_data,
            org_id,
            table_name,
            tspec,
            settings,
            page,
            REJECTED_PAGE,
            file,
        )
    except data.DataUnavailable as exc:
        return render(request, "error.html", 503, heading="Unavailable", message=str(exc))
    may_run = await _thread(k.allowed, request["who"], "patch", name)
    jobs = await _thread(k.jobs, org_id, table_name)
    days = [d["day"] for d in found.trend]
    quality_svg = svg.chart(
        "quality",
        f"Overall quality per day of {table_name}, last {data.DAYS} days",
        days,
        [d["overall_quality_score"] for d in found.trend],
        "line",
        0.0,
        1.0,
        (found.quality_band.low, found.quality_band.high) if found.quality_band else None,
        percent=True,
    )
    volume_svg = svg.chart(
        "volume",
        f"Rows read per day of {table_name}, last {data.DAYS} days",
        days,
        [float(found.volume.get(d, 0)) for d in days],
        "bars",
        band=(found.volume_band.low, found.volume_band.high) if found.volume_band else None,
    )
    pages = max(1, -(-found.rejected_total // REJECTED_PAGE))
    status = _status(obj)
    tstatus = next((t for t in (status.tables if status else []) if t.name == table_name), None)
    return render(
        request,
        "table.html",
        name=name,
        org_id=org_id,
        table=table_name,
        tspec=tspec,
        tstatus=tstatus,
        alerts=[a for a in (status.alerts if status else []) if a.table == table_name],
        found=found,
        settings=settings,
        quality_svg=Markup(quality_svg),
        volume_svg=Markup(volume_svg),
        page=min(page, pages),
        pages=pages,
        file=file or "",
        may_run=may_run,
        jobs=jobs,
        pending=_pending(obj),
        requested=request.query.get("requested") == "1",
        title=f"{table_name} of org {name}",
    )


async def rejected_csv(request: web.Request) -> web.StreamResponse:
    obj = await _org(request)
    if obj is None:
        return _forbidden(request)
    table_name = request.match_info["table"]
    tspec = _table_spec(obj, table_name)
    if tspec is None:
        return render(request, "error.html", 404, heading="Not found", message="The org has no such table.")
    file = request.query.get("file") or None
    from orgpipeline_cli.manage.common import UserError

    try:
        spooled = await _thread(data.rejected_csv, str(obj["spec"]["orgId"]), table_name, tspec, file)
    except UserError as exc:
        return render(request, "error.html", 409, heading="Cannot make one CSV file", message=str(exc))
    except data.DataUnavailable as exc:
        return render(request, "error.html", 503, heading="Unavailable", message=str(exc))
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{table_name}_rejected.csv"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    try:
        while chunk := spooled.read(1 << 16):
            await response.write(chunk.encode())
    finally:
        spooled.close()
    await response.write_eof()
    return response


async def history(request: web.Request) -> web.StreamResponse:
    obj = await _org(request)
    if obj is None:
        return _forbidden(request)
    name, table_name = obj["metadata"]["name"], request.match_info["table"]
    if _table_spec(obj, table_name) is None:
        return render(request, "error.html", 404, heading="Not found", message="The org has no such table.")
    key = request.query.get("key", "").strip()
    versions: list[dict[str, Any]] = []
    if key:
        try:
            tspec = _table_spec(obj, table_name) or {}
            versions = await _thread(data.record_history, str(obj["spec"]["orgId"]), table_name, tspec, key)
        except data.DataUnavailable as exc:
            return render(request, "error.html", 503, heading="Unavailable", message=str(exc))
    return render(
        request,
        "history.html",
        name=name,
        table=table_name,
        key=key,
        versions=versions,
        title=f"Record history, {table_name} of org {name}",
    )


async def run_now(request: web.Request) -> web.StreamResponse:
    obj = await _org(request)
    if obj is None:
        return _forbidden(request)
    name, table_name = obj["metadata"]["name"], request.match_info["table"]
    k = request.app[KUBE]
    if _table_spec(obj, table_name) is None:
        return render(request, "error.html", 404, heading="Not found", message="The org has no such table.")
    if not await _thread(k.allowed, request["who"], "patch", name):
        return render(
            request, "error.html", 403, heading="Forbidden", message="You may not start runs of this org."
        )
    form = await request.post()
    reason = str(form.get("reason", "")).strip() or None
    try:
        await _thread(k.run_now, request["token"], request["who"], name, table_name, reason)
    except Exception as exc:
        status = getattr(exc, "status", None)
        text = getattr(exc, "reason", None) or type(exc).__name__
        log.warning("run-now of %s/%s refused: %s %s", name, table_name, status, text)
        return render(
            request,
            "error.html",
            403 if status in (401, 403) else 502,
            heading="Run not requested",
            message=f"The API server refused the request: {text}.",
        )
    raise web.HTTPSeeOther(f"/orgs/{quote(name)}/tables/{quote(table_name)}?requested=1#run")


# --- the application -------------------------------------------------------------------------


def make_app(k: kube.Kube, secret: bytes | None = None) -> web.Application:
    app = web.Application(middlewares=[security_headers, authenticate], client_max_size=64 * 1024)
    app[KUBE] = k
    app[SECRET] = (
        secret or os.environ.get("ORGPIPELINE_CONSOLE_SECRET", "").encode() or secrets.token_bytes(32)
    )
    app[TEMPLATES] = _templates()
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/orgs", orgs)
    app.router.add_get("/orgs/{name}", org)
    app.router.add_get("/orgs/{name}/tables/{table}", table)
    app.router.add_get("/orgs/{name}/tables/{table}/rejected.csv", rejected_csv)
    app.router.add_get("/orgs/{name}/tables/{table}/history", history)
    app.router.add_post("/orgs/{name}/tables/{table}/run-now", run_now)
    app.router.add_static("/static/", HERE / "static", show_index=False)
    app.on_startup.append(_warm)
    app.on_cleanup.append(_close)
    return app


async def _warm(app: web.Application) -> None:
    """Lists the OrgPipelines once at start, in the background: the first caller does not wait
    for thousands of them (a failure is logged; the first request lists again)."""

    def warm() -> None:
        try:
            app[KUBE].catalog()
        except Exception as exc:
            log.warning("cannot list the OrgPipelines at start: %s", exc)

    threading.Thread(target=warm, daemon=True).start()


async def _close(app: web.Application) -> None:
    app[KUBE].close()
