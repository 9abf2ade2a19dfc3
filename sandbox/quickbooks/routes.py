"""QuickBooks Accounting API routes under ``/v3/company/{realmId}``.

Writes: POST /customer, /invoice, /payment (``?operation=delete|void``; ``?requestid=``
replays the first answer without writing again). Reads: GET /{entity}/{id},
GET /companyinfo/{realmId}, GET or POST /query, GET /cdc, POST /batch (at most 30 items,
each a create/update/delete/void or a Query, answered per item with the entity or a Fault).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aiohttp import web

from sandbox.quickbooks import entities
from sandbox.quickbooks.common import QBError, answer, handler, parse_body, parse_time, qb_time, unsupported
from sandbox.quickbooks.query import execute, parse
from sandbox.quickbooks.store import ENTITIES, Realm, public

if TYPE_CHECKING:
    from sandbox.core import SandboxState

PATHS = {name.lower(): name for name in ENTITIES}
MAX_BATCH = 30
MAX_CDC = 1000
CDC_WINDOW_S = 30 * 86400
OPERATIONS = {"create", "update", "delete", "void"}


def realm_of(request: web.Request) -> Realm:
    realm: Realm = request["account"].data["realm"]
    return realm


def _write(realm: Realm, entity: str, operation: str, data: dict[str, Any]) -> dict[str, Any]:
    if operation == "delete":
        return entities.delete(realm, entity, data)
    if operation == "void":
        return entities.void(realm, entity, data)
    if operation == "create" and data.get("Id") not in (None, ""):
        raise QBError(
            "2010",
            "Request has invalid or unsupported property",
            "Id must not be supplied for a create operation",
            element="Id",
        )
    return public(entities.write(realm, entity, data))


def _replayed(realm: Realm, request: web.Request) -> web.Response | None:
    request_id = request.query.get("requestid")
    stored = realm.requests.get(request_id) if request_id else None
    if stored is None:
        return None
    return web.Response(body=stored[1], status=stored[0], content_type="application/json")


def _keep(realm: Realm, request: web.Request, response: web.Response) -> web.Response:
    request_id = request.query.get("requestid")
    if request_id and response.status == 200 and isinstance(response.body, bytes):
        realm.requests[request_id] = (200, response.body)
    return response


def add_routes(app: web.Application, prefix: str, state: SandboxState) -> None:
    Routes(state).add(app, prefix)


class Routes:
    """The company-scoped handlers; ``add`` registers them under ``{prefix}/v3/company/{realmId}``."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def add(self, app: web.Application, prefix: str) -> None:
        base = f"{prefix}/v3/company/{{realm_id}}"
        wrap = handler(self.state.clock)
        entity_paths = "{entity:" + "|".join(PATHS) + "}"
        app.router.add_post(f"{base}/{entity_paths}", wrap(self.post_entity))
        app.router.add_get(f"{base}/{entity_paths}/{{entity_id}}", wrap(self.get_entity))
        app.router.add_get(f"{base}/companyinfo/{{company_id}}", wrap(self.get_company_info))
        app.router.add_get(f"{base}/query", wrap(self.query))
        app.router.add_post(f"{base}/query", wrap(self.query))
        app.router.add_post(f"{base}/batch", wrap(self.batch))
        app.router.add_get(f"{base}/cdc", wrap(self.cdc))

    async def post_entity(self, request: web.Request) -> web.Response:
        """POST /{entity}[?operation=delete|void][&requestid=]: create or update."""
        realm = realm_of(request)
        replayed = _replayed(realm, request)
        if replayed is not None:
            return replayed
        entity = PATHS[request.match_info["entity"]]
        operation = request.query.get("operation", "update")
        if operation not in OPERATIONS:
            raise QBError("500", "Unsupported Operation", f"Operation {operation} is not supported.")
        record = _write(realm, entity, operation, parse_body(request["body"]))
        return _keep(realm, request, answer({entity: record}, self.state.clock()))

    async def get_entity(self, request: web.Request) -> web.Response:
        """GET /{entity}/{id}."""
        entity = PATHS[request.match_info["entity"]]
        record = realm_of(request).get(entity, request.match_info["entity_id"])
        return answer({entity: public(record)}, self.state.clock())

    async def get_company_info(self, request: web.Request) -> web.Response:
        """GET /companyinfo/{realmId}."""
        realm = realm_of(request)
        if request.match_info["company_id"] != realm.realm_id:
            raise QBError("610", "Object Not Found", "Object Not Found : CompanyInfo not found.")
        return answer({"CompanyInfo": public(realm.company)}, self.state.clock())

    async def query(self, request: web.Request) -> web.Response:
        """GET ?query= or POST (application/text body): a QBO query."""
        text = request.query.get("query")
        if request.method == "POST":
            text = request["body"].decode("utf-8", "replace")
            if text.startswith("query="):
                text = unquote_plus(text[6:])
        if not text or not text.strip():
            raise QBError("4000", "Error parsing query", "QueryParserError: query is missing")
        result = execute(realm_of(request), parse(text))
        return answer({"QueryResponse": result}, self.state.clock())

    async def batch(self, request: web.Request) -> web.Response:
        """POST /batch: ``BatchItemRequest`` of at most 30 items, run in order."""
        realm = realm_of(request)
        replayed = _replayed(realm, request)
        if replayed is not None:
            return replayed
        items = _batch_items(parse_body(request["body"]))
        responses = [_batch_item(realm, item) for item in items]
        return _keep(realm, request, answer({"BatchItemResponse": responses}, self.state.clock()))

    async def cdc(self, request: web.Request) -> web.Response:
        """GET /cdc?entities=A,B&changedSince=T: changes (and deletions) since T, at most 30 days back."""
        realm = realm_of(request)
        names = _cdc_entities(request.query.get("entities", ""))
        since = _cdc_since(request.query.get("changedSince"), self.state.clock())
        parts, budget = [], MAX_CDC
        for name in names:
            rows = _changes(realm, name, since)[:budget]
            budget -= len(rows)
            part: dict[str, Any] = {"startPosition": 1, "maxResults": len(rows), "totalCount": len(rows)}
            if rows:
                part = {name: rows, **part}
            parts.append(part)
        return answer({"CDCResponse": [{"QueryResponse": parts}]}, self.state.clock())


def _batch_items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    for key in payload:
        if key != "BatchItemRequest":
            raise unsupported(key, "IntuitBatchRequest")
    items = payload.get("BatchItemRequest")
    if not isinstance(items, list) or not items:
        raise QBError(
            "2020",
            "Required param missing, need to supply the required value for the API",
            "Required parameter BatchItemRequest is missing in the request",
            element="BatchItemRequest",
        )
    if len(items) > MAX_BATCH:
        raise QBError(
            "2010",
            "Request has invalid or unsupported property",
            f"BatchItemRequest has {len(items)} items; at most {MAX_BATCH} are allowed",
            element="BatchItemRequest",
        )
    return items


def _batch_item(realm: Realm, item: Any) -> dict[str, Any]:
    bid = item.get("bId") if isinstance(item, dict) else None
    try:
        if bid in (None, ""):
            raise QBError(
                "2020",
                "Required param missing, need to supply the required value for the API",
                "Required parameter bId is missing in the request",
                element="bId",
            )
        if "Query" in item:
            return {"bId": bid, "QueryResponse": execute(realm, parse(str(item["Query"])))}
        entity = next((name for name in ENTITIES if name in item), None)
        operation = item.get("operation")
        extra = set(item) - {"bId", "operation", "optionsData", entity}
        if entity is None or operation not in OPERATIONS or extra:
            name = sorted(extra)[0] if extra else "operation"
            raise unsupported(name, "BatchItemRequest")
        return {"bId": bid, entity: _write(realm, entity, operation, dict(item[entity]))}
    except QBError as exc:
        return {"bId": bid, "Fault": exc.fault()}


def _cdc_entities(raw: str) -> list[str]:
    names = [part.strip() for part in raw.split(",") if part.strip()]
    if not names:
        raise QBError(
            "2020",
            "Required param missing, need to supply the required value for the API",
            "Required parameter entities is missing in the request",
            element="entities",
        )
    out = []
    for name in names:
        entity = PATHS.get(name.lower())
        if entity is None:
            raise QBError("4001", "Invalid query", f"QueryValidationError: Invalid entity name: {name}")
        out.append(entity)
    return out


def _cdc_since(raw: str | None, now: float) -> float:
    if not raw:
        raise QBError(
            "2020",
            "Required param missing, need to supply the required value for the API",
            "Required parameter changedSince is missing in the request",
            element="changedSince",
        )
    try:
        since = parse_time(raw)
    except ValueError:
        raise QBError(
            "2030", "Invalid Date", f"changedSince is not a valid date/time: {raw}", element="changedSince"
        ) from None
    if since < now - CDC_WINDOW_S:
        raise QBError(
            "2040", "Invalid Date", "changedSince must be within the last 30 days", element="changedSince"
        )
    return since


def _changes(realm: Realm, entity: str, since: float) -> list[dict[str, Any]]:
    changed = [r for r in realm.entities[entity].values() if math.floor(r["_u"]) >= since]
    changed.sort(key=lambda r: r["_u"])
    rows = [public(r) for r in changed]
    for record_id, at in realm.deleted[entity].items():
        if math.floor(at) >= since:
            rows.append(
                {
                    "domain": "QBO",
                    "status": "Deleted",
                    "Id": record_id,
                    "MetaData": {"LastUpdatedTime": qb_time(at)},
                }
            )
    return rows
