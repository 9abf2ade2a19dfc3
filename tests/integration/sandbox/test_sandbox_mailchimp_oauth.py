"""Mailchimp OAuth (token and metadata endpoints), list webhooks and webhooks the sandbox sends."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from tests.integration.sandbox.mailchimp_helpers import mailchimp_account, mailchimp_client, new_list
from tests.integration.sandbox.receiver import webhook_receiver


def _exchange(sandbox: Any, code: str, *, secret: str | None = None) -> requests.Response:
    return requests.post(
        f"{sandbox.url}/mailchimp/oauth2/token",
        timeout=5,
        data={
            "grant_type": "authorization_code",
            "client_id": sandbox.mailchimp_client_id,
            "client_secret": secret or sandbox.mailchimp_client_secret,
            "redirect_uri": "http://127.0.0.1/cb",
            "code": code,
        },
    )


def test_code_exchange_gives_a_never_expiring_token_without_refresh(sandbox_server: Any) -> None:
    """The token endpoint answers an access token, expires_in 0 and no refresh token; codes are single use."""
    name, _ = mailchimp_account(sandbox_server, oauth={"code": "code-1", "server_prefix": "us6"})
    answer = _exchange(sandbox_server, "code-1")
    assert 200 == answer.status_code
    body = answer.json()
    assert (0, None) == (body["expires_in"], body.get("refresh_token"))
    sandbox_server.control("POST", "/_sandbox/clock", {"advance_seconds": 400 * 86400})
    try:
        client = mailchimp_client(sandbox_server, access_token=body["access_token"])
        assert "Everything's Chimpy!" == client.ping.get()["health_status"]
    finally:
        sandbox_server.control("POST", "/_sandbox/clock", {"advance_seconds": -400 * 86400})
    assert (400, "invalid_grant") == (lambda r: (r.status_code, r.json()["error"]))(
        _exchange(sandbox_server, "code-1")
    )
    calls = sandbox_server.control("GET", f"/_sandbox/calls?provider=mailchimp&account={name}")["calls"]
    assert ("/oauth2/token", 200) == (calls[0]["path"], calls[0]["status"])


def test_wrong_client_secret_is_refused(sandbox_server: Any) -> None:
    """A client secret other than the configured one is 401 invalid_client."""
    mailchimp_account(sandbox_server, oauth={"code": "code-2"})
    answer = _exchange(sandbox_server, "code-2", secret="wrong")
    assert (401, "invalid_client") == (answer.status_code, answer.json()["error"])


def test_metadata_names_the_dc_and_a_bad_token_gets_200_invalid_token(sandbox_server: Any) -> None:
    """Metadata with `OAuth <token>` gives dc and api_endpoint; a bad token gets 200 invalid_token."""
    mailchimp_account(sandbox_server, oauth={"access_token": "tok-meta", "server_prefix": "us19"})
    good = requests.get(
        f"{sandbox_server.url}/mailchimp/oauth2/metadata",
        timeout=5,
        headers={"Authorization": "OAuth tok-meta"},
    ).json()
    assert ("us19", f"{sandbox_server.url}/mailchimp") == (good["dc"], good["api_endpoint"])
    assert {"login_name", "login_email"} <= set(good["login"])
    bad = requests.get(
        f"{sandbox_server.url}/mailchimp/oauth2/metadata", timeout=5, headers={"Authorization": "OAuth nope"}
    )
    assert (200, {"error": "invalid_token"}) == (bad.status_code, bad.json())


def test_unknown_bearer_token_is_a_401(sandbox_server: Any) -> None:
    """A token the sandbox never issued is refused by the SDK with status 401."""
    with pytest.raises(ApiClientError) as caught:
        mailchimp_client(sandbox_server, access_token="never-issued").ping.get()
    assert 401 == caught.value.status_code


def test_list_webhooks_create_list_delete(sandbox_server: Any) -> None:
    """A list webhook is created, listed, deleted; the same URL twice is refused."""
    _, key = mailchimp_account(sandbox_server)
    client = mailchimp_client(sandbox_server, api_key=key)
    list_id = new_list(client)
    url = "http://127.0.0.1:8080/webhooks/mailchimp/venue-1/token"
    hook = client.lists.create_list_webhook(
        list_id, {"url": url, "events": {"subscribe": True}, "sources": {"api": True}}
    )
    assert [hook["id"]] == [h["id"] for h in client.lists.get_list_webhooks(list_id)["webhooks"]]
    with pytest.raises(ApiClientError):
        client.lists.create_list_webhook(list_id, {"url": url})
    client.lists.delete_list_webhook(list_id, hook["id"])
    assert 0 == client.lists.get_list_webhooks(list_id)["total_items"]


def test_sent_webhook_is_an_unsigned_form_post(sandbox_server: Any) -> None:
    """The sandbox posts Mailchimp's form fields (type, fired_at, data[...]) to the URL."""
    name, _ = mailchimp_account(sandbox_server)
    event = {
        "type": "subscribe",
        "data": {
            "id": "8a25ff1d98",
            "email": "ada@example.com",
            "list_id": "a6b5da1054",
            "merges": {"FNAME": "Ada"},
        },
    }
    with webhook_receiver() as receiver:
        answer = sandbox_server.control(
            "POST",
            "/_sandbox/webhooks/mailchimp",
            {"account": name, "event": event, "url": receiver.url + "/webhooks/mailchimp/v/secret-token"},
        )
    assert 200 == answer["status"]
    [(path, headers, body)] = receiver.requests
    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    assert ("/webhooks/mailchimp/v/secret-token", "application/x-www-form-urlencoded") == (
        path,
        headers["content-type"],
    )
    assert {
        "type": "subscribe",
        "data[email]": "ada@example.com",
        "data[merges][FNAME]": "Ada",
    }.items() <= form.items()
    assert len(form["fired_at"]) == len("2025-01-01 00:00:00")
    assert not any("signature" in h for h in headers)
