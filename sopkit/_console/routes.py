"""The web console of `sopkit serve` (docs/console.md): server-rendered pages at `/`.

Sign-in takes an API key once and keeps a session id in an HttpOnly, SameSite=Strict
cookie. Every POST carries the session's CSRF token and must come from this origin. Pages
are Jinja2 with autoescape on: customer data is always text, never markup.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import anyio.to_thread
import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from sopkit._console.data import Console
from sopkit._console.i18n import pick, words
from sopkit._console.search import MAX_MATCHES, MAX_QUERY, Busy, PhoneSearch, phone_digits
from sopkit._console.session import COOKIE, LIFETIME, Session, Sessions, same_origin, token_ok
from sopkit._console.sims import MAX_UPLOAD, Simulations
from sopkit._errors import SopkitError
from sopkit._mask import mask_text
from sopkit._serve.auth import Keys
from sopkit._serve.reads import Reads
from sopkit._serve.service import ServedLoop

HERE = Path(__file__).parent
STATIC = {"console.js": "text/javascript; charset=utf-8",
          "console.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
MAX_FORM = 16_384  # bytes: the console's forms are a few fields
# an uploaded playbook's form: its text URL-encoded (at most 3 bytes a byte) and the rest
MAX_UPLOAD_FORM = 3 * MAX_UPLOAD + MAX_FORM
HEADERS = {  # what every console page is sent with
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY", "Cache-Control": "no-store"}

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)


class Denied(Exception):
    """A console request turned away: a page saying why, with this status."""

    def __init__(self, status: int, key: str) -> None:
        super().__init__(key)
        self.status = status
        self.key = key


Page = Callable[[Request, Session], Awaitable[Response]]


def console_router(loop: ServedLoop, reads: Reads, keys: Keys, histories: Path | None = None,
                   wall: Callable[[], float] = time.time) -> APIRouter:
    """The console's routes over a served loop (mounted by sopkit._serve.app)."""
    router = APIRouter(include_in_schema=False)
    sessions = Sessions(keys, wall)
    data = Console(loop, reads, wall)
    sims = Simulations(reads.loaded, histories)
    search = PhoneSearch(reads)

    def said(request: Request, key: str) -> str:
        """A message in the browser's language."""
        return words(pick(request.headers.get("accept-language")))[key].replace(
            "{kb}", str(MAX_UPLOAD // 1024))

    def render(request: Request, template: str, status: int = 200,
               session: Session | None = None, **values: Any) -> HTMLResponse:
        language = pick(request.headers.get("accept-language"))
        t = words(language)
        page = _ENV.get_template(template).render(
            t=t, lang="zh-CN" if language == "zh" else "en", session=session,
            admin=session is not None and session.may("admin"), path=request.url.path,
            playbook=reads.loaded.name, **values)
        return HTMLResponse(page, status_code=status,
                            headers={**HEADERS, "Content-Language": language,
                                     "Vary": "Accept-Language, Cookie"})

    def current(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(COOKIE))

    def page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
        """A GET page: signed in (or sent to sign in first), errors shown as pages."""
        async def run(request: Request) -> Response:
            session = current(request)
            if session is None and keys.open:
                return signed_in(request, "", request.url.path + (
                    f"?{request.url.query}" if request.url.query else ""))
            if session is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query
                                             else "")
                return RedirectResponse("/sign-in?next=" + quote(target, safe=""), 303,
                                        headers=HEADERS)
            try:
                return await handler(request, session)
            except Denied as exc:
                return render(request, "error.html", exc.status, session,
                              message=said(request, exc.key))
        return run

    async def form_of(request: Request, needed: str = "read",
                      limit: int = MAX_FORM) -> tuple[Session, dict[str, str]]:
        """A POST's form after the checks: session, same origin, scope, size, CSRF token."""
        session = current(request)
        if session is None:
            raise Denied(401, "wrong_key")
        if not same_origin(request.headers.get("origin"), request.headers.get("referer"),
                           request.headers.get("host")):
            raise Denied(403, "csrf")
        if not session.may(needed):
            raise Denied(403, "admin_only")
        form = await _read_form(request, limit)
        if form is None and limit > MAX_FORM:
            raise Denied(413, "upload_too_big")
        if form is None or not token_ok(session, form.get("csrf")):
            raise Denied(403, "csrf")
        return session, form

    def post(handler: Callable[[Request, Session, dict[str, str]], Awaitable[Response]],
             needed: str = "read",
             limit: int = MAX_FORM) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                session, form = await form_of(request, needed, limit)
            except Denied as exc:
                return render(request, "error.html", exc.status, current(request),
                              message=said(request, exc.key))
            return await handler(request, session, form)
        return run

    def signed_in(request: Request, key: str, target: str) -> Response:
        made = sessions.sign_in(key)
        if made is None:
            return render(request, "signin.html", 401, error=True, throttled=False,
                          next=target)
        sid, _ = made
        response = RedirectResponse(_local(target), 303, headers=HEADERS)
        response.set_cookie(COOKIE, sid, max_age=LIFETIME, path="/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    # ---- sign-in ----------------------------------------------------------------------------

    @router.get("/sign-in")
    async def sign_in_page(request: Request) -> Response:
        return render(request, "signin.html", error=False, throttled=False,
                      next=_local(request.query_params.get("next", "/")))

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        if not same_origin(request.headers.get("origin"), request.headers.get("referer"),
                           request.headers.get("host")):
            return render(request, "error.html", 403, message=words(pick(
                request.headers.get("accept-language")))["csrf"])
        client = request.client.host if request.client else ""
        if sessions.throttled(client):
            return render(request, "signin.html", 429, error=True, throttled=True,
                          next="/")
        form = await _read_form(request) or {}
        response = signed_in(request, form.get("key", ""), form.get("next", "/"))
        if response.status_code == 401:
            sessions.failed(client)
        return response

    async def sign_out(request: Request, session: Session, form: dict[str, str]) -> Response:
        sessions.sign_out(request.cookies.get(COOKIE))
        response = RedirectResponse("/sign-in", 303, headers=HEADERS)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    router.add_api_route("/sign-out", post(sign_out), methods=["POST"])

    # ---- overview and dead letters ----------------------------------------------------------

    async def overview_values(session: Session) -> dict[str, Any]:
        admin = session.may("admin")
        return await anyio.to_thread.run_sync(lambda: {
            "o": data.overview(), "days": data.by_day(), "dead": data.dead_letters(False),
            "jailed": data.quarantined()} | {"can_retry": admin})

    async def overview(request: Request, session: Session) -> Response:
        values = await overview_values(session)
        return render(request, "overview.html", session=session,
                      notice=request.query_params.get("notice", ""), **values)

    async def overview_part(request: Request, session: Session) -> Response:
        values = await overview_values(session)
        return render(request, "overview_part.html", session=session, **values)

    async def retry(request: Request, session: Session, form: dict[str, str]) -> Response:
        ids = [int(i) for i in form.get("id", "").split(",") if i.strip().isdigit()]
        count, due = await anyio.to_thread.run_sync(lambda: data.retry(ids or None))
        t = words(pick(request.headers.get("accept-language")))
        notice = (t["retried"].format(n=count, due=due) if count else t["nothing_retried"])
        return RedirectResponse("/?notice=" + quote(notice, safe=""), 303, headers=HEADERS)

    router.add_api_route("/", page(overview), methods=["GET"])
    router.add_api_route("/parts/overview", page(overview_part), methods=["GET"])
    router.add_api_route("/outbox/retry", post(retry, "admin"), methods=["POST"])

    # ---- customers --------------------------------------------------------------------------

    async def customer(request: Request, session: Session) -> Response:
        wanted = request.query_params.get("id", "").strip()
        show = request.query_params.get("unmasked") == "1" and session.may("admin")
        found, timeline, error = None, None, ""
        if wanted:
            found = await anyio.to_thread.run_sync(lambda: reads.customer(wanted, show))
        if found is not None:
            try:
                timeline = await anyio.to_thread.run_sync(lambda: data.timeline(wanted, show))
            except SopkitError as exc:
                error = mask_text(str(exc))
        return render(request, "customer.html", 404 if wanted and found is None else 200,
                      session, wanted=wanted, c=found, unmasked=show, timeline=timeline,
                      timeline_error=error, search=None, phone_error="")

    async def by_phone(request: Request, session: Session, form: dict[str, str]) -> Response:
        """Customers by a profile phone number, sent in a POST form (never in a URL)."""
        show = form.get("unmasked") == "1" and session.may("admin")
        wanted = phone_digits(form.get("phone", "")[:MAX_QUERY])
        values: dict[str, Any] = {"wanted": "", "c": None, "unmasked": show, "timeline": None,
                                  "timeline_error": "", "search": None, "phone_error": "",
                                  "max_matches": MAX_MATCHES}
        if wanted is None:
            return render(request, "customer.html", 400, session,
                          **values | {"phone_error": said(request, "bad_phone")})
        try:
            found = await anyio.to_thread.run_sync(lambda: search.find(wanted, show))
        except Busy:
            return render(request, "customer.html", 409, session,
                          **values | {"phone_error": said(request, "search_busy")})
        except SopkitError as exc:
            return render(request, "customer.html", 500, session,
                          **values | {"phone_error": mask_text(str(exc))})
        return render(request, "customer.html", session=session, **values | {"search": found})

    router.add_api_route("/customers", page(customer), methods=["GET"])
    router.add_api_route("/customers/search", post(by_phone), methods=["POST"])

    # ---- campaigns --------------------------------------------------------------------------

    async def campaigns(request: Request, session: Session) -> Response:
        names = [c.name for c in reads.loaded.model.campaigns]
        upcoming, past, error, past_error = [], [], "", ""
        if names:
            try:
                upcoming = await anyio.to_thread.run_sync(data.upcoming)
            except SopkitError as exc:
                error = mask_text(str(exc))
            try:
                past = await anyio.to_thread.run_sync(lambda: data.results(False))
            except SopkitError as exc:
                past_error = mask_text(str(exc))
        return render(request, "campaigns.html", session=session, names=names,
                      upcoming=upcoming, error=error, past=past, past_error=past_error,
                      now=data.when(data.now())[:16])

    async def campaign_preview(request: Request, session: Session) -> Response:
        name = request.query_params.get("name", "")
        at = request.query_params.get("at", "").strip()
        names = [c.name for c in reads.loaded.model.campaigns]
        if name not in names:
            return render(request, "error.html", 404, session,
                          message=f"unknown campaign {name!r}")
        try:
            when = data.calendar.parse(at) if at else data.now()
        except ValueError:
            return render(request, "error.html", 400, session, message=words(pick(
                request.headers.get("accept-language")))["bad_time"].format(text=at))
        try:
            found = await anyio.to_thread.run_sync(lambda: data.preview(name, when, False))
        except SopkitError as exc:
            return render(request, "error.html", 409, session, message=mask_text(str(exc)))
        return render(request, "preview.html", session=session, p=found, name=name,
                      at=at or data.when(when)[:16])

    router.add_api_route("/campaigns", page(campaigns), methods=["GET"])
    router.add_api_route("/campaigns/preview", page(campaign_preview), methods=["GET"])

    # ---- hand-over, playbook ----------------------------------------------------------------

    async def handover(request: Request, session: Session) -> Response:
        try:
            total, staff, waiting = await anyio.to_thread.run_sync(
                lambda: data.handover(False))
            error = ""
        except SopkitError as exc:
            total, staff, waiting, error = 0, [], [], mask_text(str(exc))
        return render(request, "handover.html", session=session, total=total, staff=staff,
                      waiting=waiting, error=error)

    async def playbook(request: Request, session: Session) -> Response:
        pb, findings = await anyio.to_thread.run_sync(
            lambda: (data.playbook(), data.findings()))
        return render(request, "playbook.html", session=session, pb=pb, findings=findings)

    router.add_api_route("/handover", page(handover), methods=["GET"])
    router.add_api_route("/playbook", page(playbook), methods=["GET"])

    # ---- simulations ------------------------------------------------------------------------

    def sims_page(request: Request, session: Session, status: int = 200, error: str = "",
                  problems: list[dict[str, Any]] | None = None,
                  upload: str = "") -> Response:
        jobs = [j.to_json() for j in sorted(sims.jobs.values(), key=lambda j: -j.id)]
        return render(request, "simulations.html", status, session, files=sims.files(),
                      offered=sims.histories is not None, jobs=jobs, error=error,
                      problems=problems or [], upload=upload,
                      upload_kb=MAX_UPLOAD // 1024)

    async def simulations(request: Request, session: Session) -> Response:
        return sims_page(request, session, error=request.query_params.get("error", ""))

    async def start_upload(request: Request, session: Session,
                           form: dict[str, str]) -> Response:
        """An uploaded playbook: checked (problems shown, nothing run), then simulated."""
        text = form.get("playbook", "")
        if len(text.encode("utf-8")) > MAX_UPLOAD:
            return sims_page(request, session, 413, said(request, "upload_too_big"))
        if not text.strip():
            return sims_page(request, session, 400, said(request, "upload_empty"))
        loaded, problems = await anyio.to_thread.run_sync(lambda: sims.check_upload(text))
        if loaded is None:
            return sims_page(request, session, 400, said(request, "upload_invalid"),
                             problems, text)
        try:
            sims.start(form.get("events", ""), form.get("profiles") or None, loaded)
        except ValueError as exc:
            return sims_page(request, session, 409, str(exc), upload=text)
        return RedirectResponse("/simulations", 303, headers=HEADERS)

    async def start(request: Request, session: Session, form: dict[str, str]) -> Response:
        try:
            sims.start(form.get("events", ""), form.get("profiles") or None)
        except ValueError as exc:
            return RedirectResponse("/simulations?error=" + quote(str(exc), safe=""), 303,
                                    headers=HEADERS)
        return RedirectResponse("/simulations", 303, headers=HEADERS)

    async def progress(request: Request, session: Session) -> Response:
        return JSONResponse({"jobs": [j.to_json() for j in sims.jobs.values()]},
                            headers={"Cache-Control": "no-store"})

    async def report(request: Request, session: Session) -> Response:
        job = sims.jobs.get(_int(request.path_params.get("job")))
        if job is None or job.state != "done" or job.report is None:
            raise Denied(404, "no_page")
        return FileResponse(job.report, media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-store",
                                     "X-Content-Type-Options": "nosniff"})

    router.add_api_route("/simulations", page(simulations), methods=["GET"])
    router.add_api_route("/simulations", post(start), methods=["POST"])
    router.add_api_route("/simulations/upload", post(start_upload, "admin", MAX_UPLOAD_FORM),
                         methods=["POST"])
    router.add_api_route("/simulations/progress", page(progress), methods=["GET"])
    router.add_api_route("/simulations/{job}/report", page(report), methods=["GET"])

    # ---- static files -----------------------------------------------------------------------

    @router.get("/favicon.ico")
    async def favicon() -> Response:
        return await static("favicon.svg")

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            return Response(status_code=404)
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name],
                        headers={"X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "max-age=300"})

    return router


async def _read_form(request: Request, limit: int = MAX_FORM) -> dict[str, str] | None:
    """A console form's fields; None for a body over `limit` bytes (not read further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return _form(bytes(body))


def _form(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body: the last value of each field."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


def _local(target: str) -> str:
    """A redirect target on this site (a path), or `/`."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


def _int(value: Any) -> int:
    return int(value) if str(value).isdigit() else -1
