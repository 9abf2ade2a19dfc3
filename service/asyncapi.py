"""The AsyncAPI 3.0 document of CONTRACT section 3, generated from the code's own models.

Schemas come from the pydantic models (``service.messages.ALL_MESSAGES`` and the platform
shapes of ``service.entities.ENTITY_MODELS``); names come from ``consumers.topology``; the
entity list from ``service.entities``. Nothing here is hand-written JSON Schema except the
narrowing of a generic message to one routing key (``provider``/``entity`` constants, the
record shape). Output is deterministic (sorted keys) so a stale committed ``asyncapi.json``
is caught by a plain comparison (tests/unit/test_asyncapi.py); regenerate it with
``integration-service asyncapi --output asyncapi.json``.

Channels are concrete routing keys (``sync.stripe.customers``), except the record events'
``op`` and the dead letters' original routing key, which are address parameters.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from consumers import topology
from service.config import PROVIDERS
from service.entities import ENTITY_MODELS, SUPPORTED
from service.errors import Category, Severity
from service.messages import (
    ALL_MESSAGES,
    JOB_RESULT_V1,
    RECORD_EVENT_V1,
    SYNC_REQUEST_V1,
    WEBHOOK_V1,
    FinalStatus,
    JobCounts,
    JobResult,
    RecordEvent,
    SyncRequest,
    VerifiedWebhook,
    record_event_id,
)

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
SCHEMAS = "#/components/schemas/"
MESSAGES = "#/components/messages/"
RECORD_OPS: tuple[str, ...] = ("upserted", "deleted")
JOB_STATUSES: tuple[str, ...] = get_args(FinalStatus)
DEAD_LETTER_HEADERS: tuple[str, ...] = (
    "x-death-reason", "x-error-category", "x-error-severity", "x-original-exchange", "x-original-routing-key",
)
_EXAMPLE_TIME = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _ref(target: str) -> dict[str, str]:
    return {"$ref": target}


def _version() -> str:
    try:
        return metadata.version("integration-service")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def component_schemas() -> dict[str, Any]:
    """JSON Schema of every message model and platform shape, keyed by model name."""
    models: list[type[BaseModel]] = list(ALL_MESSAGES)
    models += sorted(set(ENTITY_MODELS.values()), key=lambda model: model.__name__)
    _, schema = models_json_schema(
        [(model, "serialization") for model in models], by_alias=True, ref_template=SCHEMAS + "{model}",
    )
    return dict(schema["$defs"])


# Bindings ---------------------------------------------------------------------------------

def _exchange_binding(exchange: str) -> dict[str, Any]:
    return {"amqp": {
        "is": "routingKey",
        "exchange": {"name": exchange, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"},
        "bindingVersion": AMQP_BINDING_VERSION,
    }}


def _queue_binding(queue: str) -> dict[str, Any]:
    return {"amqp": {
        "is": "queue",
        "queue": {"name": queue, "durable": True, "exclusive": False, "autoDelete": False, "vhost": "/"},
        "bindingVersion": AMQP_BINDING_VERSION,
    }}


def _message_binding(message_type: str) -> dict[str, Any]:
    return {"amqp": {"contentEncoding": "utf-8", "messageType": message_type,
                     "bindingVersion": AMQP_BINDING_VERSION}}


SEND_BINDINGS: dict[str, Any] = {"amqp": {"deliveryMode": 2, "bindingVersion": AMQP_BINDING_VERSION}}
RECEIVE_BINDINGS: dict[str, Any] = {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}}


# Messages ---------------------------------------------------------------------------------

def _example(model: BaseModel) -> list[dict[str, Any]]:
    """An example body, built through the model so it is valid by construction."""
    return [{"payload": model.model_dump(mode="json", by_alias=True)}]


def _message(
    name: str, title: str, message_type: str, payload: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {"name": name, "title": title, "contentType": "application/json", "payload": payload,
            "bindings": _message_binding(message_type), **extra}


def _narrowed(schema: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"allOf": [_ref(SCHEMAS + schema), {"properties": properties}]}


def sync_request_message(provider: str, entity: str) -> dict[str, Any]:
    """A sync request for one (provider, entity): push records are that entity's platform shape."""
    shape = ENTITY_MODELS[(provider, entity)].__name__
    pushable = (provider, entity, "push") in SUPPORTED
    narrowing: dict[str, Any] = {"provider": {"const": provider}, "entity": {"const": entity}}
    if pushable:
        records = {"type": "array", "items": _ref(SCHEMAS + shape)}
        narrowing["records"] = {"anyOf": [records, {"type": "null"}]}
    else:
        narrowing["direction"] = {"const": "pull"}
        narrowing["records"] = {"type": "null"}
    summary = f"{'Pull or push' if pushable else 'Pull'} {provider} {entity} ({shape} records)."
    return _message("SyncRequest", f"Sync request: {provider} {entity}", SYNC_REQUEST_V1,
                    _narrowed("SyncRequest", narrowing), summary=summary)


def record_event_message(provider: str, entity: str) -> dict[str, Any]:
    """A record event of one (provider, entity): ``data`` is that entity's platform shape."""
    shape = ENTITY_MODELS[(provider, entity)].__name__
    narrowing = {"provider": {"const": provider}, "entity": {"const": entity}, "data": _ref(SCHEMAS + shape)}
    return _message("RecordEvent", f"Record event: {provider} {entity}", RECORD_EVENT_V1,
                    _narrowed("RecordEvent", narrowing),
                    summary=f"One change to a {provider} {entity} record.")


def job_result_message(status: str) -> dict[str, Any]:
    return _message("JobResult", f"Job result: {status}", JOB_RESULT_V1,
                    _narrowed("JobResult", {"status": {"const": status}}),
                    summary=f"A sync job that ended {status}.")


def webhook_message(provider: str) -> dict[str, Any]:
    return _message("VerifiedWebhook", f"Verified webhook: {provider}", WEBHOOK_V1,
                    _narrowed("VerifiedWebhook", {"provider": {"const": provider}}),
                    summary=f"A {provider} webhook whose signature the ingress verified (body in base64).")


def dead_letter_message() -> dict[str, Any]:
    """The original body, untouched, with the daemon's dead-letter headers."""
    header_schema: dict[str, Any] = {
        "x-death-reason": {"type": "string", "description": "one line, human readable"},
        "x-error-category": {"type": "string", "enum": list(get_args(Category))},
        "x-error-severity": {"type": "string", "enum": list(get_args(Severity))},
        "x-original-exchange": {"type": "string",
                                "enum": [topology.COMMANDS_EXCHANGE, topology.WEBHOOKS_EXCHANGE]},
        "x-original-routing-key": {"type": "string"},
    }
    headers = {"type": "object", "properties": header_schema, "required": list(DEAD_LETTER_HEADERS)}
    payload = {
        "description": "The original body, untouched (unreadable bodies too).",
        "anyOf": [_ref(SCHEMAS + "SyncRequest"), _ref(SCHEMAS + "VerifiedWebhook"),
                  {"description": "a body that could not be read as either"}],
    }
    return {"name": "DeadLetter", "title": "Dead letter", "contentType": "application/json",
            "summary": "A message the daemon could not use, stored in PostgreSQL and published here.",
            "headers": headers, "payload": payload}


def example_messages() -> dict[str, dict[str, Any]]:
    """The four base messages with an example each (the contract's own sync request example)."""
    venue = {"venue_id": "venue-42", "provider": "stripe", "entity": "customers"}
    sync = SyncRequest.model_validate({
        **venue, "job_id": "7b0c0e0a-1c1a-4b7e-9d55-8a4b0c9f1e21", "direction": "push", "mode": "incremental",
        "records": [{"id": "cust-1", "email": "ada@example.com", "first_name": "Ada"}]})
    result = JobResult.model_validate({
        **venue, "job_id": sync.job_id, "direction": "push", "status": "succeeded",
        "counts": JobCounts(processed=1, created=1),
        "started_at": _EXAMPLE_TIME, "finished_at": _EXAMPLE_TIME})
    event = RecordEvent.model_validate({
        **venue, "op": "upserted", "external_id": "cus_123", "platform_id": "cust-1",
        "data": {"id": "cust-1", "email": "ada@example.com"}, "source": "sync", "occurred_at": _EXAMPLE_TIME,
        "event_id": record_event_id("stripe", "venue-42", "customers", "cus_123", "1767322800")})
    hook = VerifiedWebhook.model_validate({
        "provider": "stripe", "venue_id": "venue-42", "received_at": _EXAMPLE_TIME,
        "body": "eyJpZCI6ICJldnRfMSJ9",
        "headers": {"stripe-signature": "t=1767322800,v1=...", "content-type": "application/json"}})
    kinds: dict[str, tuple[BaseModel, str]] = {
        "SyncRequest": (sync, SYNC_REQUEST_V1), "JobResult": (result, JOB_RESULT_V1),
        "RecordEvent": (event, RECORD_EVENT_V1), "VerifiedWebhook": (hook, WEBHOOK_V1)}
    return {name: _message(name, name, schema_id, _ref(SCHEMAS + name), examples=_example(model))
            for name, (model, schema_id) in kinds.items()}


# Channels and operations -------------------------------------------------------------------

def _channel(address: str | None, description: str, messages: dict[str, str], bindings: dict[str, Any],
             **extra: Any) -> dict[str, Any]:
    return {"address": address, "description": description, "bindings": bindings,
            "messages": {key: _ref(MESSAGES + message) for key, message in messages.items()}, **extra}


def _send(channel: str, summary: str, *, reply: dict[str, Any] | None = None) -> dict[str, Any]:
    operation = {"action": "send", "channel": _ref(f"#/channels/{channel}"), "summary": summary,
                 "bindings": SEND_BINDINGS}
    return operation if reply is None else {**operation, "reply": reply}


def _receive(channel: str, summary: str, **extra: Any) -> dict[str, Any]:
    return {"action": "receive", "channel": _ref(f"#/channels/{channel}"), "summary": summary,
            "bindings": RECEIVE_BINDINGS, **extra}


class _Builder:
    """Collects channels, operations and messages as each part of section 3 is added."""

    def __init__(self) -> None:
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = example_messages()

    def add_sync_requests(self) -> None:
        queue_messages = {}
        for provider, entity in sorted(ENTITY_MODELS):
            suffix = f"{provider}_{entity}"
            self.messages[f"SyncRequest_{suffix}"] = sync_request_message(provider, entity)
            queue_messages[f"syncRequest_{suffix}"] = f"SyncRequest_{suffix}"
            self.channels[f"sync_{suffix}"] = _channel(
                topology.sync_routing_key(provider, entity), f"Sync requests for {provider} {entity}.",
                {"syncRequest": f"SyncRequest_{suffix}"}, _exchange_binding(topology.COMMANDS_EXCHANGE))
            self.operations[f"send_sync_{suffix}"] = _send(
                f"sync_{suffix}",
                "Platform services, the CLI (`sync`) and the scheduler publish a sync request.")
        self._add_queue("sync_requests", topology.QUEUES[0], queue_messages)
        self.operations["receive_sync_requests"] = _receive(
            "queue_sync_requests",
            "The daemon runs each sync request; every readable one ends in a job result.",
            reply={"address": {"location": "$message.header#/reply_to",
                               "description": "the request's AMQP reply_to property, if set"},
                   "channel": _ref("#/channels/job_reply")})

    def add_webhooks(self) -> None:
        queue_messages = {}
        for provider in PROVIDERS:
            self.messages[f"VerifiedWebhook_{provider}"] = webhook_message(provider)
            queue_messages[f"webhook_{provider}"] = f"VerifiedWebhook_{provider}"
            self.channels[f"webhook_{provider}"] = _channel(
                topology.webhook_routing_key(provider), f"Verified {provider} webhooks.",
                {"webhook": f"VerifiedWebhook_{provider}"}, _exchange_binding(topology.WEBHOOKS_EXCHANGE))
            self.operations[f"send_webhook_{provider}"] = _send(
                f"webhook_{provider}", "The ingress publishes a verified webhook, then answers 200.")
        self._add_queue("webhook_events", topology.QUEUES[1], queue_messages)
        self.operations["receive_webhook_events"] = _receive(
            "queue_webhook_events", "The daemon turns each webhook into record events.")

    def add_record_events(self) -> None:
        for provider, entity in sorted(ENTITY_MODELS):
            suffix = f"{provider}_{entity}"
            self.messages[f"RecordEvent_{suffix}"] = record_event_message(provider, entity)
            address = topology.record_event_routing_key(provider, entity, "{op}")
            self.channels[f"events_{suffix}"] = _channel(
                address, f"Changes to {provider} {entity} records, from syncs and webhooks.",
                {"recordEvent": f"RecordEvent_{suffix}"}, _exchange_binding(topology.EVENTS_EXCHANGE),
                parameters={"op": {"enum": list(RECORD_OPS), "description": "what happened to the record"}})
            self.operations[f"send_record_event_{suffix}"] = _send(
                f"events_{suffix}", "The daemon publishes one event per changed record (stable event_id).")

    def add_job_results(self) -> None:
        for status in JOB_STATUSES:
            self.messages[f"JobResult_{status}"] = job_result_message(status)
            self.channels[f"job_{status}"] = _channel(
                topology.job_result_routing_key(status), f"Sync jobs that ended {status}.",
                {"jobResult": f"JobResult_{status}"}, _exchange_binding(topology.EVENTS_EXCHANGE))
            self.operations[f"send_job_result_{status}"] = _send(
                f"job_{status}", "The daemon publishes each job's one result.")
        self.channels["job_reply"] = _channel(
            None, "The job result again, to the request's reply_to queue (default exchange, "
            "correlation_id copied).", {"jobResult": "JobResult"},
            {"amqp": {"is": "routingKey", "exchange": {"name": "", "type": "default", "vhost": "/"},
                      "bindingVersion": AMQP_BINDING_VERSION}})

    def add_dead_letters(self) -> None:
        self.messages["DeadLetter"] = dead_letter_message()
        self.channels["dead_letters"] = _channel(
            "{routingKey}", "Messages the daemon could not use: stored in PostgreSQL, then published here.",
            {"deadLetter": "DeadLetter"}, _exchange_binding(topology.DEAD_EXCHANGE),
            parameters={"routingKey": {"description": "the original routing key, unchanged"}})
        self.operations["send_dead_letter"] = _send(
            "dead_letters", "The daemon dead-letters a message it cannot use (then acks the original).")
        self._add_queue("dead_letters", topology.QUEUES[2], {"deadLetter": "DeadLetter"})

    def _add_queue(self, key: str, spec: topology.QueueSpec, messages: dict[str, str]) -> None:
        self.channels[f"queue_{key}"] = _channel(
            spec.name, f"Queue {spec.name}, bound to {spec.exchange} with {spec.binding_key}.",
            messages, _queue_binding(spec.name),
            **{"x-binding": {"exchange": spec.exchange, "routingKey": spec.binding_key},
               "x-arguments": dict(spec.arguments)})


def build_document() -> dict[str, Any]:
    """The AsyncAPI document of every exchange, routing key, queue and message."""
    builder = _Builder()
    builder.add_sync_requests()
    builder.add_webhooks()
    builder.add_record_events()
    builder.add_job_results()
    builder.add_dead_letters()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Integration service messages",
            "version": _version(),
            "description": "RabbitMQ exchanges, routing keys and message bodies of the integration "
            "service (CONTRACT section 3). Generated from the pydantic models by "
            "`integration-service asyncapi`; do not edit by hand.",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:5672", "protocol": "amqp", "protocolVersion": "0.9.1",
                              "description": "The local broker (AMQP_URL's default)."}},
        "channels": builder.channels,
        "operations": builder.operations,
        "components": {"schemas": component_schemas(), "messages": builder.messages},
    }


def render_document() -> str:
    """The document as deterministic JSON text (sorted keys, two-space indent, final newline)."""
    return json.dumps(build_document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
