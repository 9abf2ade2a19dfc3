"""QuickBooks writes through POST /batch: at most 30 items a request, one Fault per item.

Each item gets a ``bId`` (its index in the batch, under Intuit's 10 characters). The
request's ``requestid`` is a UUIDv5 over the items' idempotency keys (36 characters, within
the batch limit of 36), so a retried, redelivered or replayed batch is answered from
Intuit's record of the first one and makes no second object.

An update needs ``Id`` and the current ``SyncToken`` and is sent ``sparse`` (only the mapped
fields change). Tokens not given in the payload are read first with one query; a 5010
(stale SyncToken) re-reads the tokens of the stale items and retries them once, in a batch
whose requestid is derived from their keys plus ``synctoken-retry`` (the original requestid
would only replay the stale answer). Faults come back as failed PushResults (6240 duplicate
DisplayName is ``validation``), never retryable: a replay under the same requestid would
get the same stored answer. A failure of the whole request raises.
"""

from __future__ import annotations

import uuid
from typing import Any

from providers.base import PushItem, PushResult, VenueAuth
from providers.quickbooks.api import ENTITY_NAMES, QuickBooksApi, object_of, rows_of
from providers.quickbooks.errors import ObjectNotFoundError, StaleSyncTokenError, error_from_fault, find_fault
from service.errors import IntegrationError, ProviderError
from service.messages import NAMESPACE

BATCH_LIMIT = 30  # Intuit recommends at most 30 payloads per batch request
_SERVER_FIELDS = ("Id", "SyncToken", "sparse", "MetaData", "domain")

Op = tuple[int, PushItem]


def request_id(items: list[PushItem], *, why: str = "") -> str:
    """The batch's requestid: UUIDv5 over its items' keys (order-independent)."""
    keys = ",".join(sorted(item.idempotency_key for item in items))
    return str(uuid.uuid5(NAMESPACE, f"quickbooks:batch{':' + why if why else ''}:{keys}"))


def _failed(item: PushItem, error: IntegrationError) -> PushResult:
    return PushResult(record_id=item.record_id, outcome="failed", external_id=item.external_id, error=error)


async def push_entity(
    api: QuickBooksApi, auth: VenueAuth, entity: str, items: list[PushItem]
) -> list[PushResult]:
    """Write customers, invoices or payments in batches of at most 30."""
    results: list[PushResult] = []
    for start in range(0, len(items), BATCH_LIMIT):
        results += await _push_chunk(api, auth, ENTITY_NAMES[entity], items[start:start + BATCH_LIMIT])
    return results


async def _push_chunk(
    api: QuickBooksApi, auth: VenueAuth, name: str, chunk: list[PushItem]
) -> list[PushResult]:
    results: dict[int, PushResult] = {}
    wanted = [i.external_id for i in chunk if i.external_id and "SyncToken" not in i.payload]
    tokens = await read_sync_tokens(api, auth, name, wanted)
    ops: list[Op] = []
    for index, item in enumerate(chunk):
        token = item.payload.get("SyncToken", tokens.get(item.external_id or ""))
        if item.external_id and token is None:
            results[index] = _failed(item, ObjectNotFoundError(
                f"quickbooks {name} {item.external_id} does not exist", status=None))
        else:
            ops.append((index, item))
    bodies = {index: _body(item, tokens) for index, item in ops}
    stale = await _send(api, auth, name, ops, bodies, request_id([i for _, i in ops]), results)
    if stale:
        fresh = await read_sync_tokens(api, auth, name, [item.external_id or "" for _, item in stale])
        retry_bodies = {index: _body(item, fresh, force=True) for index, item in stale}
        again = await _send(api, auth, name, stale, retry_bodies,
                            request_id([i for _, i in stale], why="synctoken-retry"), results)
        for index, item in again:
            results[index] = _failed(item, StaleSyncTokenError(
                f"quickbooks {name} {item.external_id}: SyncToken still stale after one re-read", status=400))
    return [results[index] for index in range(len(chunk))]


def _body(item: PushItem, tokens: dict[str, str], *, force: bool = False) -> dict[str, Any]:
    fields = {k: v for k, v in item.payload.items() if k not in _SERVER_FIELDS}
    if item.external_id is None:
        return fields
    token = tokens.get(item.external_id)
    if not force:  # a SyncToken in the payload wins, until Intuit says it is stale
        token = item.payload.get("SyncToken", token)
    return {**fields, "Id": item.external_id, "SyncToken": str(token), "sparse": True}


async def _send(
    api: QuickBooksApi, auth: VenueAuth, name: str, ops: list[Op], bodies: dict[int, dict[str, Any]],
    requestid: str, results: dict[int, PushResult],
) -> list[Op]:
    """One /batch call; fills ``results`` and returns the items that met a stale SyncToken."""
    if not ops:
        return []
    request = {"BatchItemRequest": [
        {"bId": str(index), "operation": "update" if item.external_id else "create", name: bodies[index]}
        for index, item in ops
    ]}
    payload = await api.call(auth, "POST", "/batch", operation="batch_write", body=request,
                             params={"requestid": requestid})
    answers = _answers(payload)
    stale: list[Op] = []
    for index, item in ops:
        result = _result(item, name, answers.get(str(index)))
        if isinstance(result.error, StaleSyncTokenError):
            stale.append((index, item))
        results[index] = result
    return stale


def _answers(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    items = payload.get("BatchItemResponse")
    if not isinstance(items, list):
        raise ProviderError("quickbooks batch_write: response has no BatchItemResponse list", retryable=True)
    return {str(a.get("bId")): a for a in items if isinstance(a, dict)}


def _result(item: PushItem, name: str, answer: dict[str, Any] | None) -> PushResult:
    if answer is None:
        return _failed(item, ProviderError(f"quickbooks batch_write: no answer for {name} {item.record_id}",
                                           retryable=True))
    fault = find_fault(answer)
    if fault is not None:
        error = error_from_fault(fault, status=None, operation=f"batch_write {name}")
        if error.retryable:
            # Intuit answers a repeated requestid with the stored first answer, so a retry of
            # this batch would meet the same fault: fail the record instead of looping.
            error = ProviderError(f"{error.message} (not retried: the batch's requestid would "
                                  "replay this answer)", retryable=False)
        return _failed(item, error)
    try:
        obj = object_of(answer, name, operation="batch_write")
    except ProviderError as exc:
        return _failed(item, exc)
    return PushResult(record_id=item.record_id, outcome="updated" if item.external_id else "created",
                      external_id=str(obj["Id"]), data=obj)


async def read_sync_tokens(api: QuickBooksApi, auth: VenueAuth, name: str, ids: list[str]) -> dict[str, str]:
    """Current SyncTokens by Id, with one query (ids absent from the answer do not exist)."""
    safe = sorted({i for i in ids if i and i.isalnum()})
    if not safe:
        return {}
    quoted = ", ".join(f"'{i}'" for i in safe)
    active = "Active IN (true, false) AND " if name == "Customer" else ""  # inactive ones too
    statement = f"SELECT * FROM {name} WHERE {active}Id IN ({quoted}) MAXRESULTS {max(len(safe), 1)}"
    response = await api.query(auth, statement, operation="read_sync_tokens")
    rows = rows_of(response, name, operation="read_sync_tokens")
    return {str(r["Id"]): str(r["SyncToken"]) for r in rows
            if r.get("Id") is not None and r.get("SyncToken") is not None}

