"""The AsyncAPI document: generated from the models, covers CONTRACT section 3, committed fresh."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consumers import topology
from service.asyncapi import build_document, render_document
from service.cli import cli, main
from service.config import PROVIDERS
from service.entities import ENTITY_MODELS, SUPPORTED
from service.messages import ALL_MESSAGES

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "asyncapi.json"
DOC: dict[str, Any] = build_document()
PARAMETER = re.compile(r"\{(\w+)\}")
OPS = ("upserted", "deleted")


def _resolve(pointer: str) -> Any:
    """The object a local JSON pointer (``#/a/b``) names in the document."""
    node: Any = DOC
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _expand(address: str, parameters: dict[str, Any]) -> set[str]:
    """Every concrete routing key an address template stands for (parameters with an enum)."""
    names = PARAMETER.findall(address)
    keys = set()
    for combo in itertools.product(*(parameters[name]["enum"] for name in names)):
        values = dict(zip(names, combo, strict=True))
        keys.add(PARAMETER.sub(lambda m, v=values: v[m.group(1)], address))
    return keys


def _routing_keys_by_exchange() -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for channel in DOC["channels"].values():
        amqp = channel["bindings"]["amqp"]
        if amqp["is"] == "routingKey" and channel["address"] not in ("{routingKey}", None):
            expanded = _expand(channel["address"], channel.get("parameters", {}))
            keys.setdefault(amqp["exchange"]["name"], set()).update(expanded)
    return keys


def test_committed_document_is_fresh() -> None:
    """asyncapi.json is what the models generate now (`integration-service asyncapi -o asyncapi.json`)."""
    assert render_document() == COMMITTED.read_text(encoding="utf-8"), "asyncapi.json is stale: regenerate it"


def test_output_is_deterministic_with_sorted_keys() -> None:
    """Two renders are identical, and the text is already in sorted-key form."""
    text = render_document()
    assert text == render_document()
    assert json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n" == text


def test_message_schemas_are_the_models_own() -> None:
    """Each message and entity schema is exactly what pydantic generates from the model."""
    schemas = DOC["components"]["schemas"]
    models = list(ALL_MESSAGES) + list(set(ENTITY_MODELS.values()))
    for model in models:
        own = model.model_json_schema(
            by_alias=True, mode="serialization", ref_template="#/components/schemas/{model}")
        own.pop("$defs", None)
        assert own == schemas[model.__name__], model.__name__
    assert {"integration.sync_request.v1", "integration.webhook.v1"} <= {
        schemas[m.__name__]["properties"]["schema"]["const"] for m in ALL_MESSAGES}


def test_every_exchange_and_routing_key_of_the_contract_is_a_channel() -> None:
    """sync.<p>.<e>, webhook.<p>, <p>.<e>.<op>, job.<status>: exactly these, on the right exchanges."""
    expected = {
        topology.COMMANDS_EXCHANGE: {f"sync.{p}.{e}" for p, e in ENTITY_MODELS},
        topology.WEBHOOKS_EXCHANGE: {f"webhook.{p}" for p in PROVIDERS},
        topology.EVENTS_EXCHANGE: {f"{p}.{e}.{op}" for p, e in ENTITY_MODELS for op in OPS}
        | {f"job.{status}" for status in ("succeeded", "partial", "failed")},
    }
    assert expected == _routing_keys_by_exchange()
    dead = DOC["channels"]["dead_letters"]
    assert (topology.DEAD_EXCHANGE, "{routingKey}") == (
        dead["bindings"]["amqp"]["exchange"]["name"], dead["address"])
    exchanges = {c["bindings"]["amqp"]["exchange"]["name"] for c in DOC["channels"].values()
                 if "exchange" in c["bindings"]["amqp"]}
    assert set(topology.EXCHANGES) | {""} == exchanges  # "": replies to reply_to via the default exchange


def test_every_queue_is_a_channel_with_its_binding_and_arguments() -> None:
    """Each topology queue appears with its exchange, binding key and exact arguments."""
    queues = {c["address"]: c for c in DOC["channels"].values() if c["bindings"]["amqp"]["is"] == "queue"
              and c["address"] is not None}
    assert {spec.name for spec in topology.QUEUES} == set(queues)
    for spec in topology.QUEUES:
        channel = queues[spec.name]
        assert ({"exchange": spec.exchange, "routingKey": spec.binding_key}, spec.arguments) == (
            channel["x-binding"], channel["x-arguments"])


def test_messages_carry_the_platform_shapes() -> None:
    """Record events' data and pushable sync requests' records refer to the entity's model schema."""
    messages = DOC["components"]["messages"]
    for (provider, entity), model in ENTITY_MODELS.items():
        shape = f"#/components/schemas/{model.__name__}"
        event = messages[f"RecordEvent_{provider}_{entity}"]["payload"]["allOf"][1]["properties"]
        assert shape == event["data"]["$ref"]
        sync = messages[f"SyncRequest_{provider}_{entity}"]["payload"]["allOf"][1]["properties"]
        pushable = (provider, entity, "push") in SUPPORTED
        assert pushable == (shape in _refs(sync["records"])), (provider, entity)
        assert pushable == ("direction" not in sync), (provider, entity)


def test_every_reference_resolves_and_operations_fit_their_channels() -> None:
    """No dangling $ref; each operation's messages belong to its channel; address parameters are declared."""
    for ref in _refs(DOC):
        _resolve(ref)
    for name, operation in DOC["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        for message in operation.get("messages", []):
            assert message["$ref"].startswith(channel_ref + "/messages/"), name
    for name, channel in DOC["channels"].items():
        declared = set(channel.get("parameters", {}))
        assert set(PARAMETER.findall(channel["address"] or "")) == declared, name


@pytest.mark.parametrize("model", ALL_MESSAGES, ids=lambda m: m.__name__)
def test_examples_are_valid_messages(model: Any) -> None:
    """Each base message's example parses with its model and survives a round trip."""
    example = DOC["components"]["messages"][model.__name__]["examples"][0]["payload"]
    assert example == model.model_validate(example).model_dump(mode="json", by_alias=True)


def test_cli_prints_and_writes_the_document(tmp_path: Path) -> None:
    """`asyncapi` prints the document; `--output F` writes the same text to F."""
    printed = CliRunner().invoke(cli, ["asyncapi"])
    target = tmp_path / "asyncapi.json"
    assert (0, render_document()) == (printed.exit_code, printed.output)
    assert 0 == main(["asyncapi", "--output", str(target)])
    assert render_document() == target.read_text(encoding="utf-8")


def test_cli_reports_an_unwritable_output_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output in a missing folder exits 1 with one error line."""
    assert 1 == main(["asyncapi", "--output", str(tmp_path / "missing" / "a.json")])
    err = capsys.readouterr().err
    assert (1, True) == (len(err.strip().splitlines()), err.startswith("error: cannot write"))
