"""The operate endpoints of `sopkit serve`: a customer's timeline, retrying a dead letter, a
campaign preview, a dry run and the hand-overs, each what the CLI command of the same job
says (sopkit/_live/operate.py holds the one implementation), from the served store.

Each request opens a store connection of its own (a dry run restores every customer; a
retry writes), so a long one does not hold up the others. Errors are BadInput problems.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from sopkit._errors import SopkitError, UsageError
from sopkit._lang.clock import Calendar
from sopkit._live import operate as op
from sopkit._mask import mask_text
from sopkit._playbook.models import parse_duration
from sopkit._serve import contract as c
from sopkit._serve.ingest import BadInput
from sopkit._serve.reads import MAX_ROWS, Reads
from sopkit._serve.service import ServedLoop

T = TypeVar("T")
At = Annotated[str | None, Query(description="an ISO 8601 time (the playbook's timezone "
                                 "unless it has an offset), at most 366 days ahead")]
_OBJECT: dict[str, Any] = {"type": "object"}  # an answer documented in prose
MAX_ID = 2**63 - 1  # the largest outbox row id a store can hold (a signed 64-bit integer)
ENGINE = "native"  # reads evaluate on the native engine: the same results as durable
AHEAD = 366 * 86400  # the furthest `at` and `window` reach past the server's clock: a
# request moves a runtime's clock there day by day, so a far one would hold a worker for long


async def _call(work: Callable[[], T]) -> T:
    """`work` on a worker thread; its refusals as problems (details masked)."""
    try:
        return await anyio.to_thread.run_sync(work)
    except op.NotFound as exc:
        raise BadInput(404, "Not found", mask_text(str(exc))) from None
    except op.Conflict as exc:
        raise BadInput(409, "Conflict", mask_text(str(exc))) from None
    except UsageError as exc:
        raise BadInput(400, "Bad request", mask_text(str(exc))) from None
    except SopkitError as exc:  # the store (mismatch, unavailable) or a channel failed
        raise BadInput(503, "Unavailable", mask_text(str(exc))) from None


def operate_routes(app: FastAPI, loop: ServedLoop, reads: Reads,
                   authorize: Callable[[Request, str], set[str]],
                   unmasked: Callable[[Request, str], bool], environ: Mapping[str, str],
                   wall: Callable[[], float] = time.time) -> None:
    """GET /v1/customers/{id}/timeline, /v1/campaigns/{name}/preview, /v1/dry-run and
    /v1/handover (scope read); POST /v1/outbox/{id}/retry (scope admin)."""
    loaded = reads.loaded
    cal = Calendar(loaded.model.playbook.timezone)

    def instant(text: str | None) -> int | None:
        if text is None:
            return None
        try:
            when = op.parse_at(loaded, text, "at")
        except UsageError as exc:
            raise BadInput(400, "Bad time", str(exc),
                           [{"parameter": "at", "detail": "expected an ISO 8601 time"}]) from None
        if when > loop.options.clock() + AHEAD:
            raise BadInput(400, "Bad time", "at is more than 366 days after the server's clock",
                           [{"parameter": "at", "detail": "at most 366 days ahead"}])
        return when

    def number(text: str | None, name: str, default: int, top: int) -> int:
        text = str(default) if text is None else text
        if not (text.isascii() and text.isdigit() and len(text) <= 9) or int(text) > top:
            raise BadInput(400, f"Bad {name}", f"{name} must be 0 to {top}",
                           [{"parameter": name, "detail": f"expected 0 to {top}"}])
        return int(text)

    @app.get("/v1/customers/{customer_id}/timeline", summary="A customer's timeline",
             responses={**c.answer(200, "What `sopkit explain` says: events, changes, actions, "
                                   "near misses (masked)", _OBJECT),
                        **c.problems(400, 401, 403, 404, 409,
                                     s400="A bad `at`", s404="The kept history never names "
                                     "this customer", s409="The server keeps no history "
                                     "(`serve --no-history`)")},
             openapi_extra={"parameters": [c.UNMASKED]})
    async def timeline(customer_id: str, request: Request, at: At = None) -> Response:
        """`sopkit explain` over the kept inbox: events, changes, actions, near misses."""
        show = unmasked(request, "read")
        if not loop.options.history:
            raise BadInput(409, "No history", "this server keeps no history (`sopkit serve "
                           "--no-history`): restart it with --history to keep the records "
                           "it applies from then on")
        upto = loop.position
        until = instant(at)

        def work() -> dict[str, Any]:
            with reads.opened() as store:
                found = op.served_timeline(loaded, store, reads.history(upto), customer_id,
                                           at=until, engine=ENGINE)
            return found.to_json(loaded, show)

        return JSONResponse(await _call(work))

    @app.post("/v1/outbox/{row_id}/retry", summary="Retry a dead letter",
              responses={**c.answer(200, "The row back to pending, and when it is due", _OBJECT),
                         **c.problems(400, 401, 403, 404, 409, s400="The id is not a "
                                      "positive integer", s404="No outbox row has this id",
                                      s409="The row is not dead")})
    async def retry(row_id: str, request: Request) -> Response:
        """`sopkit outbox retry --id`: a dead row back to pending, due now; the loop sends it."""
        authorize(request, "admin")
        if not (row_id.isascii() and row_id.isdigit() and len(row_id) <= 19):
            raise BadInput(400, "Bad id", f"the outbox row id must be a positive integer, "
                           f"not '{mask_text(row_id[:40])}'",
                           [{"parameter": "id", "detail": "expected an integer"}])
        wanted = int(row_id)
        if not 1 <= wanted <= MAX_ID:
            raise BadInput(404, "Not found", f"row {wanted} does not exist")

        def work() -> dict[str, Any]:
            with reads.opened() as store:
                return {"id": wanted, **op.retry_dead(store, [wanted], wall,
                                                         "GET /v1/outbox?status=dead").to_json()}

        done = await _call(work)
        loop.wake.set()  # the loop dispatches what is due when it next idles
        return JSONResponse(done)

    @app.get("/v1/campaigns/{name}/preview", summary="A campaign's preview",
             responses={**c.answer(200, "Reach, pilot, holdout and each variant's message "
                                   "(masked)", _OBJECT),
                        **c.problems(400, 401, 403, 404, s400="A bad `at` or `sample`",
                                     s404="The playbook has no campaign of this name (the "
                                     "nearest is named)")},
             openapi_extra={"parameters": [c.UNMASKED]})
    async def campaign_preview(name: str, request: Request, at: At = None,
                               sample: Annotated[str | None, Query(
                                   description="members listed (0 to 1000; default 10)")]
                               = None) -> Response:
        """`sopkit campaign preview --store`: reach and each variant's message at `at`."""
        show = unmasked(request, "read")
        when = instant(at)
        count = number(sample, "sample", 10, MAX_ROWS)

        def work() -> dict[str, Any]:
            op.check_campaign(loaded, name)
            with reads.opened() as store:
                found, _ = op.preview_stored(loaded, store, name,
                                             loop.options.clock() if when is None else when,
                                             count, ENGINE)
            data: dict[str, Any] = op.shown(found.to_json(), show)
            return data

        return JSONResponse(await _call(work))

    @app.get("/v1/dry-run", summary="Dry run",
             responses={**c.answer(200, "What would be sent, and what the screens hold back "
                                   "(masked)", _OBJECT),
                        **c.problems(400, 401, 403, s400="A bad `at` or `window`")},
             openapi_extra={"parameters": [c.UNMASKED]})
    async def dry_run(request: Request, at: At = None,
                      window: Annotated[str | None, Query(
                          description="also list campaign firings this long after `at` "
                          "(default 7d; 0: none; at most 366d)")] = None) -> Response:
        """`sopkit dry-run`: what would be dispatched at `at`, sending nothing."""
        show = unmasked(request, "read")
        when = instant(at)
        text = "7d" if window is None else window
        try:
            ahead = 0 if text.strip() in ("0", "0s") else parse_duration(text)
        except (ValueError, OverflowError) as exc:
            raise BadInput(400, "Bad window", f"window: {exc}",
                           [{"parameter": "window", "detail": str(exc)}]) from None
        if ahead > AHEAD:
            raise BadInput(400, "Bad window", "window is longer than 366 days",
                           [{"parameter": "window", "detail": "at most 366d"}])

        def work() -> dict[str, Any]:
            with reads.opened() as store:
                plan = op.dry_run(loaded, store, when, ahead, ENGINE, wall, "?at=")
            return {"at": cal.format(plan.now), "replay_clock": plan.replay,
                    "would_send": len(plan.sending),
                    "settle_unsent": len(plan.rows) - len(plan.sending),
                    "later": plan.later, "notices": plan.notices,
                    "items": list(plan.items(show))}

        return JSONResponse(await _call(work))

    @app.get("/v1/handover", summary="Hand-overs",
             responses={**c.answer(200, "Departed staff's customers and whether they are "
                                   "taken over (masked)", _OBJECT),
                        **c.problems(401, 403)},
             openapi_extra={"parameters": [c.UNMASKED]})
    async def handover(request: Request, listed: Annotated[str | None, Query(
            alias="all", description="true: every customer, not only those not taken "
            "over yet")] = None) -> Response:
        """`sopkit handover status`: who has been taken over (asks WeCom), `all` for every one."""
        show = unmasked(request, "read")
        every = (listed or "").lower() in ("1", "true", "yes")

        def work() -> dict[str, Any]:
            with reads.opened() as store:
                lines = op.handover(loaded, store, environ)
            waiting = [line for line in lines if not line.taken_over]
            return {"customers": len(lines), "taken_over": len(lines) - len(waiting),
                    "not_yet": len(waiting),
                    "lines": [op.shown(line.to_json(), show)
                              for line in (lines if every else waiting)]}

        return JSONResponse(await _call(work))
