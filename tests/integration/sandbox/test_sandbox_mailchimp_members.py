"""The Mailchimp sandbox driven by the official `mailchimp-marketing` SDK."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from tests.integration.sandbox.mailchimp_helpers import mailchimp_account, mailchimp_client, new_list


def _hash(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()


def _problem(error: ApiClientError) -> dict[str, Any]:
    """The SDK leaves problem+json unparsed: .text is the raw body."""
    return json.loads(error.text)  # type: ignore[no-any-return]


@pytest.fixture
def client(sandbox_server: Any) -> Any:
    _, key = mailchimp_account(sandbox_server)
    return mailchimp_client(sandbox_server, api_key=key)


def test_ping_and_lists(client: Any) -> None:
    """Ping answers; a created list is listed and readable by id."""
    assert {"health_status": "Everything's Chimpy!"} == client.ping.get()
    list_id = new_list(client)
    lists = client.lists.get_all_lists()
    assert ([list_id], 1) == ([item["id"] for item in lists["lists"]], lists["total_items"])
    assert "Newsletter" == client.lists.get_list(list_id)["name"]


def test_list_create_requires_mailchimps_fields(client: Any) -> None:
    """A list without its required fields is a 400 Invalid Resource."""
    with pytest.raises(ApiClientError) as caught:
        client.lists.create_list({"name": "Only a name"})
    assert (400, "Invalid Resource") == (caught.value.status_code, _problem(caught.value)["title"])


def test_add_then_add_again_is_member_exists(client: Any) -> None:
    """POST adds a member; the same address again is 400 Member Exists."""
    list_id = new_list(client)
    member = client.lists.add_list_member(
        list_id, {"email_address": "Ada@Example.com", "status": "subscribed"}
    )
    assert _hash("ada@example.com") == member["id"]
    with pytest.raises(ApiClientError) as caught:
        client.lists.add_list_member(list_id, {"email_address": "ada@example.com", "status": "subscribed"})
    problem = _problem(caught.value)
    assert (400, "Member Exists") == (caught.value.status_code, problem["title"])
    assert {"type", "title", "status", "detail", "instance"} <= set(problem)


def test_put_upserts_by_hash_and_refuses_a_mismatched_hash(client: Any) -> None:
    """PUT creates then updates at the address's hash; another hash is a 400."""
    list_id = new_list(client)
    email = "jane.doe@example.com"
    body = {"email_address": email, "status_if_new": "subscribed", "merge_fields": {"FNAME": "Jane"}}
    created = client.lists.set_list_member(list_id, _hash(email), body)
    updated = client.lists.set_list_member(list_id, _hash(email), {**body, "merge_fields": {"LNAME": "Doe"}})
    assert (created["id"], "Jane Doe") == (updated["id"], updated["full_name"])
    with pytest.raises(ApiClientError) as caught:
        client.lists.set_list_member(list_id, _hash("other@example.com"), body)
    assert 400 == caught.value.status_code
    patched = client.lists.update_list_member(list_id, _hash(email), {"status": "unsubscribed"})
    assert (
        "unsubscribed" == client.lists.get_list_member(list_id, _hash(email))["status"] == patched["status"]
    )


def test_tags_are_added_and_removed(client: Any) -> None:
    """POST tags answers 204; active tags appear on the member, inactive ones leave."""
    list_id = new_list(client)
    email = "t@example.com"
    client.lists.set_list_member(
        list_id, _hash(email), {"email_address": email, "status_if_new": "subscribed"}
    )
    answer = client.lists.update_list_member_tags(
        list_id,
        _hash(email),
        {"tags": [{"name": "vip", "status": "active"}, {"name": "season-2025", "status": "active"}]},
    )
    assert 204 == answer.status_code
    client.lists.update_list_member_tags(
        list_id, _hash(email), {"tags": [{"name": "vip", "status": "inactive"}]}
    )
    assert ["season-2025"] == [t["name"] for t in client.lists.get_list_member(list_id, _hash(email))["tags"]]


def test_members_page_with_count_and_offset(client: Any) -> None:
    """Twenty-five members read back over three pages of ten; status filters."""
    list_id = new_list(client)
    emails = [f"m{i:02d}@example.com" for i in range(25)]
    client.lists.batch_list_members(
        list_id,
        {
            "members": [
                {"email_address": e, "status": "subscribed" if i % 5 else "unsubscribed"}
                for i, e in enumerate(emails)
            ]
        },
    )
    pages = [client.lists.get_list_members_info(list_id, count=10, offset=o) for o in (0, 10, 20)]
    assert emails == [m["email_address"] for page in pages for m in page["members"]]
    assert [25, 25, 25] == [page["total_items"] for page in pages]
    assert 10 == len(client.lists.get_list_members_info(list_id)["members"])
    assert 5 == client.lists.get_list_members_info(list_id, status="unsubscribed")["total_items"]
    too_many = requests.get(
        f"{client.api_client.host}/lists/{list_id}/members",
        params={"count": 1001},
        auth=("user", client.api_client.api_key),
        timeout=5,
    )
    assert (400, "application/problem+json") == (too_many.status_code, too_many.headers["Content-Type"])


def test_since_last_changed_returns_only_later_changes(sandbox_server: Any, client: Any) -> None:
    """A member changed after the cursor is the only one an incremental pull sees."""
    list_id = new_list(client)
    for email in ("a@example.com", "b@example.com"):
        client.lists.set_list_member(
            list_id, _hash(email), {"email_address": email, "status_if_new": "subscribed"}
        )
    cursor = client.lists.get_list_member(list_id, _hash("b@example.com"))["last_changed"]
    sandbox_server.control("POST", "/_sandbox/clock", {"advance_seconds": 5})
    try:
        client.lists.update_list_member(list_id, _hash("a@example.com"), {"merge_fields": {"FNAME": "A"}})
    finally:
        sandbox_server.control("POST", "/_sandbox/clock", {"advance_seconds": -5})
    later = client.lists.get_list_members_info(list_id, since_last_changed=cursor)
    assert ["a@example.com"] == [m["email_address"] for m in later["members"]]


def test_batch_subscribe_reports_rejects_inside_a_200(client: Any) -> None:
    """Existing members are errors without update_existing and updates with it; >500 is refused."""
    list_id = new_list(client)
    client.lists.add_list_member(list_id, {"email_address": "old@example.com", "status": "subscribed"})
    members = [
        {"email_address": "old@example.com", "status": "subscribed"},
        {"email_address": "new@example.com", "status": "subscribed"},
        {"email_address": "not-an-address", "status": "subscribed"},
    ]
    first = client.lists.batch_list_members(list_id, {"members": members})
    assert (1, 0, 2) == (first["total_created"], first["total_updated"], first["error_count"])
    assert {"old@example.com", "not-an-address"} == {e["email_address"] for e in first["errors"]}
    again = client.lists.batch_list_members(list_id, {"members": members[:2], "update_existing": True})
    assert (0, 2, 0) == (again["total_created"], again["total_updated"], again["error_count"])
    too_many = [{"email_address": f"x{i}@example.com", "status": "subscribed"} for i in range(501)]
    with pytest.raises(ApiClientError) as caught:
        client.lists.batch_list_members(list_id, {"members": too_many})
    assert 400 == caught.value.status_code


def test_unknown_field_is_a_400_naming_it(client: Any) -> None:
    """A property members do not have is a 400 Invalid Resource naming the field."""
    list_id = new_list(client)
    with pytest.raises(ApiClientError) as caught:
        client.lists.add_list_member(
            list_id, {"email_address": "u@example.com", "status": "subscribed", "favourite_colour": "red"}
        )
    problem = _problem(caught.value)
    assert (400, "Invalid Resource", "favourite_colour") == (
        caught.value.status_code,
        problem["title"],
        problem["errors"][0]["field"],
    )


def test_unknown_key_is_a_401_and_unknown_list_a_404(sandbox_server: Any, client: Any) -> None:
    """A key the sandbox never issued is 401 API Key Invalid; an unknown list is 404."""
    stranger = mailchimp_client(sandbox_server, api_key="0123456789abcdef-us6")
    with pytest.raises(ApiClientError) as caught:
        stranger.ping.get()
    assert (401, "API Key Invalid") == (caught.value.status_code, _problem(caught.value)["title"])
    with pytest.raises(ApiClientError) as missing:
        client.lists.get_list("nosuchlist")
    assert (404, "Resource Not Found") == (missing.value.status_code, _problem(missing.value)["title"])


def test_more_than_ten_connections_at_once_get_429(sandbox_server: Any) -> None:
    """With every call slowed, 15 at once: 10 are served and 5 get 429 Too Many Requests."""
    name, key = mailchimp_account(sandbox_server)
    sandbox_server.control(
        "POST", "/_sandbox/faults", {"provider": "mailchimp", "account": name, "latency_ms": 700}
    )
    try:

        def ping(_: int) -> int:
            try:
                mailchimp_client(sandbox_server, api_key=key).ping.get()
            except ApiClientError as error:
                return int(error.status_code)
            return 200

        with ThreadPoolExecutor(max_workers=15) as pool:
            statuses = sorted(pool.map(ping, range(15)))
    finally:
        sandbox_server.control("DELETE", "/_sandbox/faults")
    assert [200] * 10 + [429] * 5 == statuses


def test_archive_delete_permanent_and_put_on_the_collection(sandbox_server: Any, client: Any) -> None:
    """DELETE archives, delete-permanent removes, and PUT on /members is 405."""
    list_id = new_list(client)
    email = "gone@example.com"
    client.lists.set_list_member(
        list_id, _hash(email), {"email_address": email, "status_if_new": "subscribed"}
    )
    client.lists.delete_list_member(list_id, _hash(email))
    assert "archived" == client.lists.get_list_member(list_id, _hash(email))["status"]
    client.lists.delete_list_member_permanent(list_id, _hash(email))
    with pytest.raises(ApiClientError) as caught:
        client.lists.get_list_member(list_id, _hash(email))
    assert 404 == caught.value.status_code
    answer = requests.put(
        f"{client.api_client.host}/lists/{list_id}/members",
        json={},
        timeout=5,
        auth=("user", client.api_client.api_key),
    )
    assert (405, "Method Not Allowed") == (answer.status_code, answer.json()["title"])
