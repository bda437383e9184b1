"""What the OpenAPI document of `sopkit serve` says beyond the routes (docs/openapi.json).

The handlers read their bodies themselves (so that a bad record is named by its JSON
Pointer, docs/http.md#errors), so FastAPI cannot see the request bodies, the answers or the
problems: each route's decorator takes them from here, and `install` puts the shared shapes
(components) into the app's document. `make openapi` writes the document; a test fails when
the committed file differs from what the app says.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM = "application/problem+json"
_REF = "#/components/schemas/"

_WHEN = {
    400: "Not JSON, not the shape the endpoint takes, or records the playbook cannot type "
         "(`errors` names each by JSON Pointer); nothing of the request was accepted",
    401: "No API key, or an unknown one (`WWW-Authenticate` says how to send one)",
    403: "The key's scope does not allow this (or `unmasked=true` without an admin key)",
    404: "The store holds no customer with this id",
    409: "The resource is not in a state that allows this (named in `detail`)",
    413: "More than 1,000 records in one request, or a body over 4 MiB",
    415: "Neither a CloudEvents content type nor binary mode (`ce-*` headers)",
    429: "Backpressure: too many accepted records wait to be applied; nothing was stored, "
         "send it again after `Retry-After` seconds",
    503: "The store did not take the records; retry after `Retry-After` seconds",
}


def problems(*statuses: int, **when: str) -> dict[int | str, dict[str, Any]]:
    """Problem responses (RFC 9457) for `statuses`; `when` overrides a description
    (keyword `s503="..."`)."""
    return {status: {"description": when.get(f"s{status}", _WHEN[status]),
                     "content": {PROBLEM: {"schema": {"$ref": _REF + "Problem"}}}}
            for status in statuses}


def answer(status: int, description: str, schema: dict[str, Any],
           media: str = "application/json") -> dict[int | str, dict[str, Any]]:
    """One documented success response."""
    return {status: {"description": description, "content": {media: {"schema": schema}}}}


def body(*shapes: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """`openapi_extra` declaring the request body: (media type, schema) pairs."""
    return {"requestBody": {"required": True,
                            "content": {media: {"schema": schema} for media, schema in shapes}}}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF + name}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


UNMASKED = _query("unmasked", "`true` (admin keys only): personal data in full",
                  {"type": "string", "enum": ["true", "false"]})
LIMIT = _query("limit", "How many rows (1 to 1,000, default 100)",
               {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})
STATUS = _query("status", "Only rows in this status",
                {"type": "string", "enum": ["pending", "leased", "delivered", "dead",
                                            "suppressed", "holdout", "cancelled",
                                            "backfilled", "expired"]})
CUSTOMER = _query("customer_id", "Only this customer's rows", {"type": "string"})

INGEST = {**answer(202, "Committed to the inbox: the loop applies the records in order",
                   ref("Accepted")),
          **problems(400, 401, 403, 413, 429, 503)}
"""The responses of every ingest endpoint (CloudEvents adds 415)."""
READ = problems(400, 401, 403,
                s400="A `limit` outside 1 to 1,000, or an unknown `status`")

_TEXT = {"type": "string"}
_ID = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
_EVENT = {
    "type": "object", "description": "A sopkit event: the fields the playbook declares for "
    "its `type`, beside these (docs/playbook.md#events)",
    "required": ["customer_id", "type", "ts"], "additionalProperties": True,
    "properties": {"customer_id": {**_TEXT, "description": "The customer"},
                   "type": {**_TEXT, "description": "An event type of the playbook, "
                            "`profile`, or a consent event"},
                   "ts": {**_TEXT, "description": "ISO 8601 time (local to the playbook's "
                          "timezone without an offset)", "examples": ["2026-12-05T09:14:45Z"]},
                   "event_id": {**_TEXT, "description": "A repeated id is not applied twice"}}}
_SEGMENT_COMMON: dict[str, Any] = {
    "userId": {**_ID, "description": "The customer (`customer_id`)"},
    "anonymousId": {**_TEXT, "description": "A call with only this is quarantined"},
    "messageId": {**_TEXT, "description": "`event_id`"},
    "timestamp": {**_TEXT, "description": "`ts` (else `originalTimestamp`, else arrival)"},
    "originalTimestamp": _TEXT}
_TRACK = {"type": "object", "description": "A Segment `track` call",
          "required": ["event"], "additionalProperties": True,
          "properties": {**_SEGMENT_COMMON, "type": {"const": "track"},
                         "event": {**_TEXT, "description": "Mapped to an event type by "
                                   "`[ingest.segment.events]`"},
                         "properties": {"type": "object", "description": "The event's "
                                        "fields, renamed by the mapping"}}}
_IDENTIFY = {"type": "object", "description": "A Segment `identify` call",
             "additionalProperties": True,
             "properties": {**_SEGMENT_COMMON, "type": {"const": "identify"},
                            "traits": {"type": "object", "description": "Profile "
                                       "attributes, renamed by `[ingest.segment] traits`"},
                            "context": {"type": "object"}}}
_CLOUDEVENT = {"type": "object", "description": "A CloudEvent 1.0 (structured mode)",
               "required": ["specversion", "id", "source", "type"],
               "additionalProperties": True,
               "properties": {"specversion": {"const": "1.0"}, "id": {**_TEXT, "description":
                                                                     "`event_id`"},
                              "source": _TEXT,
                              "type": {**_TEXT, "description": "An event type of the "
                                       "playbook (else quarantined)"},
                              "subject": {**_TEXT, "description": "The customer"},
                              "time": {**_TEXT, "description": "`ts`"},
                              "data": {"type": "object", "description": "The event's "
                                       "fields (JSON only: `data_base64` is refused)"}}}

_EVENT["examples"] = [{"customer_id": "c1", "type": "purchase", "ts": "2026-12-05T09:14:45Z",
                       "amount": "99.00", "event_id": "order-1001"}]
_TRACK["examples"] = [{"userId": "c1", "event": "Order Completed", "properties":
                       {"revenue": 25}, "messageId": "seg-7f3e",
                       "timestamp": "2026-12-05T09:14:45Z"}]
_IDENTIFY["examples"] = [{"userId": "c2", "traits": {"full_name": "李雷"},
                          "timestamp": "2026-12-05T09:14:45Z"}]
_CLOUDEVENT["examples"] = [{"specversion": "1.0", "id": "ord-1002", "source": "/crm/orders",
                            "type": "purchase", "subject": "c2",
                            "time": "2026-12-05T09:14:45Z", "data": {"amount": "15.50"}}]

SCHEMAS: dict[str, dict[str, Any]] = {
    "Problem": {"type": "object", "description": "An RFC 9457 problem",
                "required": ["type", "title", "status", "detail"],
                "properties": {"type": _TEXT, "title": _TEXT, "status": {"type": "integer"},
                               "detail": _TEXT,
                               "errors": {"type": "array", "description": "The bad items: "
                                          "`pointer` into the body or `parameter`",
                                          "items": {"type": "object",
                                                    "required": ["detail"],
                                                    "properties": {"pointer": _TEXT,
                                                                   "parameter": _TEXT,
                                                                   "detail": _TEXT}}}}},
    "Accepted": {"type": "object", "required": ["success", "accepted", "quarantined",
                                                "last_seq"],
                 "properties": {"success": {"const": True},
                                "accepted": {"type": "integer", "minimum": 0,
                                             "description": "Records the loop will apply"},
                                "quarantined": {"type": "integer", "minimum": 0,
                                                "description": "Records accepted into the "
                                                "quarantine (no use for them)"},
                                "last_seq": {"type": "integer", "description": "The inbox "
                                             "position of the last record (compare "
                                             "`/readyz`'s `position`)"}}},
    "Event": _EVENT,
    "Events": {"anyOf": [ref("Event"), {"type": "array", "maxItems": 1000,
                                        "items": ref("Event")}]},
    "SegmentTrack": _TRACK,
    "SegmentIdentify": _IDENTIFY,
    "SegmentBatch": {"type": "object", "required": ["batch"],
                     "properties": {"batch": {"type": "array", "maxItems": 1000,
                                              "items": {"anyOf": [ref("SegmentTrack"),
                                                                  ref("SegmentIdentify")]}}}},
    "CloudEvent": _CLOUDEVENT,
    "CloudEventBatch": {"type": "array", "maxItems": 1000, "items": ref("CloudEvent")},
    "Health": {"type": "object", "required": ["status"],
               "properties": {"status": {"const": "ok"}}},
    "Ready": {"type": "object", "required": ["status", "position"],
              "properties": {"status": {"const": "ready"},
                             "position": {"type": "integer", "description": "The seq of "
                                          "the last inbox record whose decisions are "
                                          "committed"}}},
    "Customer": {"type": "object", "required": ["customer_id", "tags", "facts", "profile",
                                                "pending_actions"],
                 "properties": {"customer_id": _TEXT, "owner": {"type": ["string", "null"]},
                                "stage": {"type": ["string", "null"]},
                                "tags": {"type": "array", "items": _TEXT},
                                "facts": {"type": "object"}, "scores": {"type": "object"},
                                "profile": {"type": "object"},
                                "as_of": {"type": ["string", "null"]},
                                "delayed_rules": {"type": "integer"},
                                "pending_actions": {"type": "array",
                                                    "items": {"type": "object"}}}},
    "OutboxRows": {"type": "object", "required": ["rows"],
                   "properties": {"rows": {"type": "array", "items": {
                       "type": "object", "required": ["id", "key", "customer_id", "status"],
                       "description": "As `sopkit outbox list --output jsonl` prints it"}}}},
    "Quarantined": {"type": "object", "required": ["records"],
                    "properties": {"records": {"type": "array", "items": {
                        "type": "object", "description": "`line` (inbox position), "
                        "`reason`, `record` (masked), `source`"}}}},
}

_CE_HEADERS = [{"name": f"ce-{attr}", "in": "header", "required": False,
                "description": f"Binary mode: the CloudEvents `{attr}` attribute (the body "
                "is `data`)", "schema": _TEXT}
               for attr in ("specversion", "id", "source", "type", "subject", "time")]
CLOUDEVENTS = {**body(("application/cloudevents+json", ref("CloudEvent")),
                      ("application/cloudevents-batch+json", ref("CloudEventBatch")),
                      ("application/json", {"type": "object", "description": "Binary "
                                            "mode: the event's data, with `ce-*` headers"})),
               "parameters": _CE_HEADERS}

_DESCRIPTION = (
    "The HTTP API of `sopkit serve` (docs/http.md): ingest sopkit events, Segment calls and "
    "CloudEvents into the store's durable inbox (`202` once committed), read customers, the "
    "outbox and the quarantine, health and Prometheus metrics. Errors are RFC 9457 problems "
    "(`application/problem+json`). Keys come from `SOPKIT_API_KEYS`; a key is sent as "
    "Bearer, or as HTTP Basic user name (Segment's write key).")
_SECURITY = {"bearer": {"type": "http", "scheme": "bearer",
                        "description": "`Authorization: Bearer KEY`"},
             "basic": {"type": "http", "scheme": "basic",
                       "description": "The key as user name, any password"}}
_OPEN = {"/healthz", "/readyz", "/openapi.json"}


def install(app: FastAPI) -> None:
    """Make `app.openapi()` the full document: shared shapes, keys, no FastAPI 422s."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=_DESCRIPTION,
                              routes=app.routes)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):  # we answer 400 instead
                schemas.pop(name, None)
            schemas.update(SCHEMAS)
            doc["components"]["securitySchemes"] = _SECURITY
            for path, operations in doc.get("paths", {}).items():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
                    if path not in _OPEN:
                        operation["security"] = [{"bearer": []}, {"basic": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to extend the document
