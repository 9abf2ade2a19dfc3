"""QuickBooks tokens, throttling and webhooks in the sandbox, checked with independent code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox.quickbooks import signature
from tests.integration.sandbox.receiver import webhook_receiver
from tests.integration.sandbox.test_sandbox_quickbooks_entities import QBO

# providers.md 3.6: computed example for intuit-signature
VECTOR_TOKEN = "test-verifier-token"
VECTOR_BODY = (
    '{"eventNotifications":[{"realmId":"123146096291789","dataChangeEvent":{"entities":[{"name":"Customer",'
    '"id":"1","operation":"Create","lastUpdated":"2025-01-01T00:00:00.000Z"}]}}]}'
)
VECTOR_SIGNATURE = "2u4Ai3jvu8WVKJjiGfjN4bEcENtj2bDTB4LNOrtUt84="


@pytest.fixture
def qbo(sandbox_server: Any) -> Iterator[QBO]:
    """A fresh realm and an HTTP session for it."""
    with requests.Session() as session:
        yield QBO(sandbox_server, session)


def intuit_signature(token: str, body: bytes) -> str:
    """Intuit's documented check, written independently of the sandbox."""
    return base64.b64encode(hmac.new(token.encode(), body, hashlib.sha256).digest()).decode()


def refresh(sandbox: Any, token: str, *, secret: str | None = None) -> requests.Response:
    """The token call as Intuit documents it: form body, Basic client credentials."""
    client = f"{sandbox.quickbooks_client_id}:{secret or sandbox.quickbooks_client_secret}"
    return requests.post(
        f"{sandbox.url}/quickbooks/oauth2/v1/tokens/bearer",
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers={
            "Authorization": "Basic " + base64.b64encode(client.encode()).decode(),
            "Accept": "application/json",
        },
        timeout=10,
    )


def auth_error(answer: requests.Response) -> tuple[int, str, str, str]:
    """(status, type, code, detail) of QBO's lowercase authentication fault."""
    fault = answer.json()["fault"]
    return answer.status_code, fault["type"], fault["error"][0]["code"], fault["error"][0]["detail"]


def test_unknown_expired_and_other_realm_tokens_are_401(qbo: QBO) -> None:
    """Unknown, expired and another realm's tokens all get the lowercase AUTHENTICATION fault."""
    qbo.access = "not-a-token"
    status, kind, code, _ = auth_error(qbo.get(f"companyinfo/{qbo.realm}"))
    assert (401, "AUTHENTICATION", "3200") == (status, kind, code)
    expired = f"at-expired-{uuid.uuid4().hex}"
    qbo.sandbox.control(
        "POST",
        "/_sandbox/accounts",
        {
            "provider": "quickbooks",
            "account": qbo.name,
            "oauth": {"access_token": expired, "expires_at": "2020-01-01T00:00:00Z", "realm_id": qbo.realm},
        },
    )
    qbo.access = expired
    assert auth_error(qbo.get(f"companyinfo/{qbo.realm}"))[3].startswith("Token expired")
    other = QBO(qbo.sandbox, qbo.session)
    qbo.access = other.access
    assert 401 == qbo.get(f"companyinfo/{qbo.realm}").status_code
    assert 200 == other.get(f"companyinfo/{other.realm}").status_code


def test_refresh_rotates_and_revokes_the_old_refresh_token(qbo: QBO) -> None:
    """Each refresh issues a new pair; the old refresh token is then invalid_grant; a bad client 401."""
    first = refresh(qbo.sandbox, qbo.refresh)
    assert 200 == first.status_code
    granted = first.json()
    assert ("bearer", 3600) == (granted["token_type"], granted["expires_in"])
    assert granted["refresh_token"] != qbo.refresh and granted["x_refresh_token_expires_in"] > 0
    qbo.access = granted["access_token"]
    info = qbo.get(f"companyinfo/{qbo.realm}").json()["CompanyInfo"]
    assert qbo.name == info["CompanyName"]
    reused = refresh(qbo.sandbox, qbo.refresh)
    assert (400, {"error": "invalid_grant"}) == (reused.status_code, reused.json())
    assert 200 == refresh(qbo.sandbox, granted["refresh_token"]).status_code
    wrong_client = refresh(qbo.sandbox, granted["refresh_token"], secret="wrong")
    assert (401, {"error": "invalid_client"}) == (wrong_client.status_code, wrong_client.json())


def test_past_ten_requests_a_second_is_an_xml_throttle_fault(qbo: QBO) -> None:
    """Past 10/s per realm the answer is 429 with Intuit's XML body, though JSON was asked for."""
    answers = []
    while len(answers) < 50 and (not answers or answers[-1].status_code != 429):
        answers.append(qbo.get(f"companyinfo/{qbo.realm}"))
    answer = answers[-1]
    assert 429 == answer.status_code
    assert len(answers) > 10 and {200} == {a.status_code for a in answers[:-1]}
    assert "xml" in answer.headers["Content-Type"]
    root = ET.fromstring(answer.text)
    namespace = {"i": "http://schema.intuit.com/finance/v3"}
    error = root.find("i:Fault/i:Error", namespace)
    assert error is not None and "3001" == error.get("code")
    assert "ThrottleExceeded" in (error.findtext("i:Message", namespaces=namespace) or "")


def test_signer_matches_the_documented_example() -> None:
    """The sandbox's signer and an independent HMAC both give providers.md's example signature."""
    assert VECTOR_SIGNATURE == intuit_signature(VECTOR_TOKEN, VECTOR_BODY.encode())
    assert VECTOR_SIGNATURE == signature(VECTOR_TOKEN, VECTOR_BODY.encode())


def test_classic_and_cloudevents_webhooks_verify(qbo: QBO) -> None:
    """Both payload formats arrive signed with the app-wide verifier token over the raw body."""
    change = {"name": "Customer", "id": "7", "operation": "Update"}
    with webhook_receiver() as receiver:
        for form in ("classic", "cloudevents"):
            answer = qbo.sandbox.control(
                "POST",
                "/_sandbox/webhooks/quickbooks",
                {
                    "account": qbo.name,
                    "event": change,
                    "url": receiver.url + "/webhooks/quickbooks",
                    "format": form,
                },
            )
            assert 200 == answer["status"]
    token = qbo.sandbox.quickbooks_webhook_verifier_token
    (_, classic_headers, classic), (_, cloud_headers, cloud) = receiver.requests
    assert intuit_signature(token, classic) == classic_headers["intuit-signature"]
    assert intuit_signature(token, cloud) == cloud_headers["intuit-signature"]
    [notification] = json.loads(classic)["eventNotifications"]
    assert qbo.realm == notification["realmId"]
    assert ("Customer", "7", "Update") == tuple(
        notification["dataChangeEvent"]["entities"][0][k] for k in ("name", "id", "operation")
    )
    [event] = json.loads(cloud)
    assert ("1.0", "qbo.customer.updated.v1", "7", qbo.realm) == (
        event["specversion"],
        event["type"],
        event["intuitentityid"],
        event["intuitaccountid"],
    )


def test_a_fault_scoped_to_an_account_fires_on_its_token_calls_only(qbo: QBO) -> None:
    """A token call names its account only by the token it carries; an account's fault
    must still fire on it (it answered 200), and not on another account's refresh."""
    other = QBO(qbo.sandbox, qbo.session)
    qbo.sandbox.control(
        "POST", "/_sandbox/faults",
        {"provider": "quickbooks", "account": qbo.name, "path_prefix": "/oauth2", "status": 503},
    )
    try:
        assert 503 == refresh(qbo.sandbox, qbo.refresh).status_code
        assert 200 == refresh(other.sandbox, other.refresh).status_code
    finally:
        qbo.sandbox.control("DELETE", "/_sandbox/faults")
    calls = qbo.sandbox.control("GET", "/_sandbox/calls?provider=quickbooks")["calls"]
    faulted = [c for c in calls if c["path"] == "/oauth2/v1/tokens/bearer" and c["account"] == qbo.name]
    assert [(503, "status")] == [(c["status"], c.get("fault")) for c in faulted]
    assert 200 == refresh(qbo.sandbox, qbo.refresh).status_code  # the fault is gone, the token still good


def test_a_refresh_by_another_oauth_client_than_the_accounts_is_refused(qbo: QBO) -> None:
    """CONTRACT section 7: the OAuth client must match the one registered with the account,
    not only the sandbox's own (a refresh by another app's client got new tokens)."""
    qbo.sandbox.control(
        "POST", "/_sandbox/accounts",
        {"provider": "quickbooks", "account": qbo.name,
         "oauth": {"client_id": "another-app", "client_secret": "its-secret", "refresh_token": qbo.refresh,
                   "realm_id": qbo.realm}},
    )
    refused = refresh(qbo.sandbox, qbo.refresh)
    assert (401, {"error": "invalid_client"}) == (refused.status_code, refused.json())
