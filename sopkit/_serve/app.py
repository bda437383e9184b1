"""The HTTP API of `sopkit serve` (FastAPI): ingest, reads, health and metrics; the
operate endpoints are in operate.py.

Every ingest endpoint answers `202 Accepted` only after its records are committed to the
store's inbox; errors are `application/problem+json` (RFC 9457). See docs/http.md.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sopkit import _json
from sopkit._io import _DECODER
from sopkit._live.inbox import Entry, Inbox, InboxFull
from sopkit._live.store import StoreError
from sopkit._mask import mask_text
from sopkit._serve import contract as c
from sopkit._serve.auth import Keys, allows, presented_key
from sopkit._serve.committer import Committer
from sopkit._serve.ingest import MAX_BODY, BadInput, Mapper, lone_surrogate
from sopkit._serve.reads import MAX_ROWS, Reads
from sopkit._serve.service import ServedLoop, status_lines

log = logging.getLogger("sopkit.serve")

PROBLEM = "application/problem+json"
RETRY_AFTER = 1  # seconds a client waits after a 429 before retrying


def problem(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    """An RFC 9457 problem response; `errors` lists the bad items by JSON Pointer."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


class Refused(Exception):
    """A request refused before its body is read (auth): a problem response."""

    def __init__(self, status: int, title: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.response = problem(status, title, detail, headers=headers)


def build_app(loop: ServedLoop, inbox: Inbox, mapper: Mapper, keys: Keys,
              reads: Reads | None = None, wall: Callable[[], float] = time.time,
              environ: Mapping[str, str] | None = None,
              histories: Path | None = None) -> FastAPI:
    """The FastAPI application over a running loop and the inbox it reads; with `reads`,
    the web console at `/` too (simulations over the files in `histories`)."""
    app = FastAPI(title="sopkit", version="1", docs_url=None, redoc_url=None)
    counters = loop.counters
    committer = Committer(inbox)  # the ingest endpoints' appends, committed together

    def authorize(request: Request, needed: str) -> set[str]:
        """The caller's scopes, or Refused (401 without a known key, 403 without `needed`)."""
        if keys.open:
            return {"admin"}
        key = presented_key(request.headers.get("authorization"))
        challenge = {"WWW-Authenticate": 'Bearer, Basic realm="sopkit"'}
        if key is None:
            raise Refused(401, "Unauthorized", "send an API key: `Authorization: Bearer "
                          "KEY` or HTTP Basic with the key as user name", challenge)
        scopes = keys.scopes_of(key)
        if not scopes:
            raise Refused(401, "Unauthorized", "unknown API key", challenge)
        if not allows(scopes, needed):
            either = f"'{needed}' or 'admin'" if needed != "admin" else "'admin'"
            raise Refused(403, "Forbidden", f"this key's scope ({', '.join(sorted(scopes))}) "
                          f"does not allow this; it needs {either}")
        return scopes

    def unmasked(request: Request, needed: str) -> bool:
        """Whether to show personal data: `?unmasked=true` from an admin key (403 else)."""
        scopes = authorize(request, needed)
        if request.query_params.get("unmasked", "").lower() not in ("1", "true", "yes"):
            return False
        if "admin" not in scopes:
            raise Refused(403, "Forbidden", "unmasked personal data needs an 'admin' key")
        return True

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        counters.add(counters.refused, str(exc.response.status_code))
        return exc.response

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return problem(exc.status_code, str(exc.detail), str(exc.detail),
                       headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"pointer": "/" + "/".join(str(p) for p in e.get("loc", ())[1:]),
                   "detail": str(e.get("msg", ""))} for e in exc.errors()]
        return problem(400, "Invalid request", "the request is not valid", errors)

    async def body_of(request: Request) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise BadInput(413, "Body too large", f"the body has {declared} bytes; the most "
                           f"is {MAX_BODY}")
        raw = await request.body()
        if request.headers.get("content-encoding", "").lower() == "gzip":
            try:  # decoded no further than the limit: a small bomb stays small
                raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, MAX_BODY + 1)
            except zlib.error:
                raise BadInput(400, "Bad body", "the gzip body cannot be decoded") from None
        if len(raw) > MAX_BODY:
            raise BadInput(413, "Body too large", f"the body has {len(raw)} bytes; the most "
                           f"is {MAX_BODY}")
        try:
            body = _json.loads(raw.decode("utf-8"), _DECODER)  # orjson where exact
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadInput(400, "Bad JSON", f"the body is not JSON: {exc}") from None
        if b"\\u" in raw and (at := lone_surrogate(body)):  # only an escape makes one
            raise BadInput(400, "Bad JSON", "a string holds a lone UTF-16 surrogate (an "
                           "unpaired \\uD800-\\uDFFF escape): it is not text",
                           [{"pointer": at, "detail": "unpaired surrogate"}])
        return body

    async def accept(endpoint: str, entries: list[Entry]) -> Response:
        try:
            last = await committer.append(entries, int(wall()), loop.position,
                                          loop.options.max_inbox)
        except InboxFull as exc:
            counters.add(counters.refused, "429")
            return problem(429, "Too many unapplied records", f"{exc}; retry later",
                           headers={"Retry-After": str(RETRY_AFTER)})
        except StoreError:
            log.exception("the inbox refused a request")
            return problem(503, "Store unavailable", "the store did not take the records; "
                           "retry later", headers={"Retry-After": str(RETRY_AFTER)})
        loop.wake.set()
        taken = sum(1 for e in entries if e.reason is None)
        counters.add(counters.accepted, endpoint, len(entries))
        return JSONResponse({"success": True, "accepted": taken,
                             "quarantined": len(entries) - taken, "last_seq": last},
                            status_code=202)

    async def ingest(request: Request, endpoint: str,
                     parse: Callable[[Any], list[Entry]]) -> Response:
        authorize(request, "ingest")
        try:
            entries = parse(await body_of(request))
        except BadInput as exc:
            counters.add(counters.refused, str(exc.status))
            return problem(exc.status, exc.title, exc.detail, exc.errors)
        return await accept(endpoint, entries)

    @app.post("/v1/events", status_code=202, summary="Ingest sopkit events",
              responses=c.INGEST, openapi_extra=c.body(("application/json", c.ref("Events"))))
    async def events(request: Request) -> Response:
        """One sopkit event (an object) or an array of them."""
        return await ingest(request, "events", mapper.events)

    @app.post("/v1/track", status_code=202, summary="Ingest a Segment track call",
              responses=c.INGEST,
              openapi_extra=c.body(("application/json", c.ref("SegmentTrack"))))
    async def track(request: Request) -> Response:
        """A Segment `track` call."""
        return await ingest(request, "track", lambda b: mapper.segment_calls(b, "track"))

    @app.post("/v1/identify", status_code=202, summary="Ingest a Segment identify call",
              responses=c.INGEST,
              openapi_extra=c.body(("application/json", c.ref("SegmentIdentify"))))
    async def identify(request: Request) -> Response:
        """A Segment `identify` call."""
        return await ingest(request, "identify",
                            lambda b: mapper.segment_calls(b, "identify"))

    @app.post("/v1/batch", status_code=202, summary="Ingest a Segment batch",
              responses=c.INGEST,
              openapi_extra=c.body(("application/json", c.ref("SegmentBatch"))))
    async def batch(request: Request) -> Response:
        """A Segment batch of track and identify calls."""
        return await ingest(request, "batch", lambda b: mapper.segment_calls(b, None))

    @app.post("/v1/cloudevents", status_code=202, summary="Ingest CloudEvents",
              responses={**c.INGEST, **c.problems(415)}, openapi_extra=c.CLOUDEVENTS)
    async def cloudevents(request: Request) -> Response:
        """CloudEvents: structured, batched, or in binary mode (ce-* headers)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        headers = request.headers

        def parse(body: Any) -> list[Entry]:
            if kind == "application/cloudevents-batch+json":
                if not isinstance(body, list):
                    raise BadInput(400, "Bad batch", "a CloudEvents batch is a JSON array")
                return mapper.cloudevents(body, batch=True)
            if kind == "application/cloudevents+json":
                return mapper.cloudevents([body], batch=False)
            event = {name[3:]: value for name, value in headers.items()
                     if name.lower().startswith("ce-")}
            if "specversion" not in event:
                raise BadInput(415, "Not a CloudEvent", "send application/cloudevents+json, "
                               "application/cloudevents-batch+json, or binary mode with "
                               "ce-* headers")
            event["data"] = body
            return mapper.cloudevents([event], batch=False)

        return await ingest(request, "cloudevents", parse)

    @app.get("/healthz", summary="Liveness", responses=c.answer(200, "The process answers",
             c.ref("Health")))
    async def healthz() -> Response:
        """The process answers."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", summary="Readiness",
             responses={**c.answer(200, "Ready, with the committed inbox position",
                                   c.ref("Ready")),
                        **c.problems(503, s503="The store does not answer, or the loop "
                                     "does not run")})
    async def readyz() -> Response:
        """The store answers and the live loop runs."""
        try:
            await anyio.to_thread.run_sync(inbox.ping)
        except Exception as exc:  # any failure of the store is "not ready"
            return problem(503, "Not ready", f"the store does not answer: {exc}")
        if not loop.alive():
            return problem(503, "Not ready", "the live loop is not running"
                           + (f": {mask_text(str(loop.error))}" if loop.error else ""))
        return JSONResponse({"status": "ready", "position": loop.position})

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
             responses={**c.answer(200, "Prometheus text exposition", {"type": "string"},
                                   "text/plain"), **c.problems(401, 403)})
    async def metrics(request: Request) -> Response:
        """Prometheus text: records accepted and quarantined, actions, outbox, loop lag."""
        authorize(request, "read")
        lines = await anyio.to_thread.run_sync(lambda: status_lines(loop, inbox, int(wall())))
        return PlainTextResponse("\n".join(lines) + "\n",
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    if reads is not None:
        from sopkit._serve.operate import operate_routes

        _read_routes(app, reads, unmasked)
        operate_routes(app, loop, reads, authorize, unmasked, environ or {}, wall)
        from sopkit._console.routes import console_router

        app.include_router(console_router(loop, reads, keys, histories, wall))
    c.install(app)
    return app


def _limit(request: Request) -> int:
    text = request.query_params.get("limit", "100")
    # ASCII digits only ('²' is a digit to str.isdigit, not to int) and few of them
    if not (text.isascii() and text.isdigit() and len(text) <= 6) \
            or not 1 <= int(text) <= MAX_ROWS:
        raise BadInput(400, "Bad limit", f"limit must be 1 to {MAX_ROWS}",
                       [{"parameter": "limit", "detail": f"expected 1 to {MAX_ROWS}"}])
    return int(text)


def _read_routes(app: FastAPI, reads: Reads, unmasked: Callable[[Request, str], bool]) -> None:
    """GET /v1/customers/{id}, /v1/outbox and /v1/quarantine (scope read)."""

    @app.exception_handler(BadInput)
    async def _bad(request: Request, exc: BadInput) -> Response:
        return problem(exc.status, exc.title, exc.detail, exc.errors)

    @app.get("/v1/customers/{customer_id}", summary="A customer's state",
             responses={**c.answer(200, "Facts, tags, stage, scores, profile, pending "
                                   "actions (masked)", c.ref("Customer")),
                        **c.problems(401, 403, 404)},
             openapi_extra={"parameters": [c.UNMASKED]})
    async def customer(customer_id: str, request: Request) -> Response:
        """A customer's facts, tags, stage, scores and pending actions."""
        show = unmasked(request, "read")
        found = await anyio.to_thread.run_sync(lambda: reads.customer(customer_id, show))
        if found is None:
            return problem(404, "Not found", "the store holds no customer with this id")
        return JSONResponse(found)

    @app.get("/v1/outbox", summary="Outbox rows",
             responses={**c.answer(200, "Rows by id (masked)", c.ref("OutboxRows")),
                        **c.READ},
             openapi_extra={"parameters": [c.STATUS, c.CUSTOMER, c.LIMIT, c.UNMASKED]})
    async def outbox(request: Request) -> Response:
        """Outbox rows by id; filters `status`, `customer_id`, `limit`."""
        show = unmasked(request, "read")
        limit = _limit(request)
        query = request.query_params
        try:
            rows = await anyio.to_thread.run_sync(
                lambda: reads.outbox(query.get("status"), query.get("customer_id"), limit,
                                     show))
        except ValueError as exc:
            return problem(400, "Bad status", str(exc),
                           [{"parameter": "status", "detail": str(exc)}])
        return JSONResponse({"rows": rows})

    @app.get("/v1/quarantine", summary="Quarantined records",
             responses={**c.answer(200, "The last records, oldest first (masked)",
                                   c.ref("Quarantined")), **c.READ},
             openapi_extra={"parameters": [c.LIMIT, c.UNMASKED]})
    async def quarantine(request: Request) -> Response:
        """The last quarantined records with their reasons (masked), oldest first."""
        unmasked(request, "read")
        limit = _limit(request)
        return JSONResponse({"records": await anyio.to_thread.run_sync(
            lambda: reads.quarantined(limit))})
