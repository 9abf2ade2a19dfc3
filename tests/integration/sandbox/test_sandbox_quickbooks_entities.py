"""QuickBooks Online entities in the sandbox over raw HTTP, in the shapes Intuit documents."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests


class QBO:
    """A realm registered in the sandbox plus a session that calls it as Intuit's docs show."""

    def __init__(self, sandbox: Any, session: requests.Session) -> None:
        self.sandbox = sandbox
        self.name = f"venue-{uuid.uuid4().hex[:8]}"
        self.realm = str(9130000000000000 + uuid.uuid4().int % 10**12)
        self.access, self.refresh = f"at-{uuid.uuid4().hex}", f"rt-{uuid.uuid4().hex}"
        sandbox.control(
            "POST",
            "/_sandbox/accounts",
            {
                "provider": "quickbooks",
                "account": self.name,
                "oauth": {
                    "client_id": sandbox.quickbooks_client_id,
                    "client_secret": sandbox.quickbooks_client_secret,
                    "access_token": self.access,
                    "refresh_token": self.refresh,
                    "realm_id": self.realm,
                    "expires_at": "2099-01-01T00:00:00Z",
                },
            },
        )
        self.session = session
        self.base = f"{sandbox.url}/quickbooks/v3/company/{self.realm}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}", "Accept": "application/json"}

    def post(self, path: str, body: Any, **params: str) -> requests.Response:
        return self.session.post(
            f"{self.base}/{path}",
            json=body,
            headers=self.headers(),
            params={"minorversion": "75", **params},
            timeout=10,
        )

    def get(self, path: str, **params: str) -> requests.Response:
        return self.session.get(
            f"{self.base}/{path}", headers=self.headers(), params={"minorversion": "75", **params}, timeout=10
        )

    def query(self, text: str) -> dict[str, Any]:
        """POST /query with the statement as ``application/text``, as python-quickbooks sends it."""
        answer = self.session.post(
            f"{self.base}/query",
            data=text.encode(),
            params={"minorversion": "75"},
            headers={**self.headers(), "Content-Type": "application/text"},
            timeout=10,
        )
        assert 200 == answer.status_code, answer.text
        return dict(answer.json()["QueryResponse"])


@pytest.fixture
def qbo(sandbox_server: Any) -> Iterator[QBO]:
    """A fresh realm and an HTTP session for it."""
    with requests.Session() as session:
        yield QBO(sandbox_server, session)


def fault_code(answer: requests.Response) -> tuple[int, str, str]:
    """(status, Fault type, first error code) of a QBO fault answer."""
    fault = answer.json()["Fault"]
    return answer.status_code, fault["type"], fault["Error"][0]["code"]


def test_create_sparse_update_and_stale_sync_token(qbo: QBO) -> None:
    """A sparse update bumps SyncToken and keeps other fields; an old SyncToken is 5010."""
    created = qbo.post("customer", {"DisplayName": "Ada Lovelace", "PrimaryEmailAddr": {"Address": "a@x.io"}})
    customer = created.json()["Customer"]
    assert (200, "0") == (created.status_code, customer["SyncToken"])
    updated = qbo.post(
        "customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "GivenName": "Ada"}
    )
    after = updated.json()["Customer"]
    assert ("1", "Ada", "a@x.io") == (
        after["SyncToken"],
        after["GivenName"],
        after["PrimaryEmailAddr"]["Address"],
    )
    assert after == qbo.get(f"customer/{customer['Id']}").json()["Customer"]
    stale = qbo.post("customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "late"})
    assert (400, "ValidationFault", "5010") == fault_code(stale)


def test_requestid_replays_without_a_second_record(qbo: QBO) -> None:
    """The same ``requestid`` answers the original customer and creates nothing new."""
    request_id = uuid.uuid4().hex
    first = qbo.post("customer", {"DisplayName": "Once"}, requestid=request_id).json()
    again = qbo.post("customer", {"DisplayName": "Once"}, requestid=request_id).json()
    assert first["Customer"] == again["Customer"]
    assert {"totalCount": 1} == qbo.query("SELECT COUNT(*) FROM Customer")


def test_unknown_property_missing_field_unknown_id_and_duplicate_name(qbo: QBO) -> None:
    """Each bad request gets its own QBO fault: 2010, 2020, 610 and 6240."""
    assert (400, "ValidationFault", "2010") == fault_code(
        qbo.post("customer", {"DisplayName": "X", "Colour": "red"})
    )
    customer = qbo.post("customer", {"DisplayName": "Grace Hopper"}).json()["Customer"]
    no_lines = qbo.post("invoice", {"CustomerRef": {"value": customer["Id"]}})
    assert (400, "ValidationFault", "2020") == fault_code(no_lines)
    assert (400, "ValidationFault", "610") == fault_code(qbo.get("customer/999999"))
    assert (400, "ValidationFault", "6240") == fault_code(
        qbo.post("customer", {"DisplayName": "grace hopper"})
    )


def _batch_customers(qbo: QBO, names: list[str]) -> list[dict[str, Any]]:
    items = [
        {"bId": str(i), "operation": "create", "Customer": {"DisplayName": n}} for i, n in enumerate(names)
    ]
    answer = qbo.post("batch", {"BatchItemRequest": items})
    assert 200 == answer.status_code, answer.text
    return [item["Customer"] for item in answer.json()["BatchItemResponse"]]


def test_query_pages_with_startposition_and_maxresults(qbo: QBO) -> None:
    """Five customers read back over pages of two; COUNT(*) answers totalCount."""
    names = [f"Guest {i}" for i in range(5)]
    _batch_customers(qbo, names)
    pages = []
    for start in (1, 3, 5):
        page = qbo.query(f"SELECT * FROM Customer ORDERBY Id STARTPOSITION {start} MAXRESULTS 2")
        pages.append([c["DisplayName"] for c in page["Customer"]])
        assert start == page["startPosition"]
    assert [names[0:2], names[2:4], names[4:5]] == pages
    assert {} == qbo.query("SELECT * FROM Customer STARTPOSITION 6 MAXRESULTS 2")
    assert {"totalCount": 5} == qbo.query("select count(*) from customer")


def test_incremental_query_and_cdc_see_only_the_later_change(qbo: QBO) -> None:
    """After the cursor, only the customer updated later appears in the query and in CDC."""
    old, changed = _batch_customers(qbo, ["Unchanged", "Changed"])
    cursor = changed["MetaData"]["LastUpdatedTime"]
    qbo.sandbox.control("POST", "/_sandbox/clock", {"advance_seconds": 2})  # QBO times are whole seconds
    qbo.post("customer", {"Id": changed["Id"], "SyncToken": "0", "sparse": True, "Notes": "later"})
    found = qbo.query(f"SELECT * FROM Customer WHERE MetaData.LastUpdatedTime > '{cursor}' MAXRESULTS 1000")
    assert [changed["Id"]] == [c["Id"] for c in found["Customer"]]
    since = (datetime.fromisoformat(cursor) + timedelta(seconds=1)).isoformat()
    cdc = qbo.get("cdc", entities="Customer", changedSince=since).json()
    [customers] = cdc["CDCResponse"][0]["QueryResponse"]
    assert [(changed["Id"], "later")] == [(c["Id"], c["Notes"]) for c in customers["Customer"]]
    assert old["Id"] != changed["Id"]


def test_batch_answers_each_item_and_caps_at_30(qbo: QBO) -> None:
    """Items succeed or fault on their own, a Query item answers a QueryResponse; 31 items are refused."""
    customer = _batch_customers(qbo, ["Batch Base"])[0]
    items = [
        {"bId": "a", "operation": "create", "Customer": {"DisplayName": "Batch New"}},
        {
            "bId": "b",
            "operation": "update",
            "Customer": {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "batched"},
        },
        {"bId": "c", "operation": "create", "Customer": {"DisplayName": "Batch Base"}},
        {"bId": "d", "Query": "SELECT * FROM Customer WHERE DisplayName = 'Batch New'"},
    ]
    answer = qbo.post("batch", {"BatchItemRequest": items}).json()["BatchItemResponse"]
    by_id = {item["bId"]: item for item in answer}
    assert "Batch New" == by_id["a"]["Customer"]["DisplayName"]
    assert ("1", "batched") == (by_id["b"]["Customer"]["SyncToken"], by_id["b"]["Customer"]["Notes"])
    assert "6240" == by_id["c"]["Fault"]["Error"][0]["code"]
    assert [by_id["a"]["Customer"]["Id"]] == [c["Id"] for c in by_id["d"]["QueryResponse"]["Customer"]]
    too_many = [{"bId": str(i), "Query": "SELECT * FROM Customer"} for i in range(31)]
    assert 400 == qbo.post("batch", {"BatchItemRequest": too_many}).status_code


def test_invoice_totals_and_payments_lower_the_balance(qbo: QBO) -> None:
    """An invoice totals its lines (Qty x UnitPrice must match Amount); a payment lowers its Balance."""
    customer = qbo.post("customer", {"DisplayName": "Payer"}).json()["Customer"]
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": 25.0,
        "SalesItemLineDetail": {"Qty": 2, "UnitPrice": 12.5},
    }
    ref = {"value": customer["Id"]}
    wrong = qbo.post("invoice", {"CustomerRef": ref, "Line": [{**line, "Amount": 26.0}]})
    assert (400, "ValidationFault", "6070") == fault_code(wrong)
    invoice = qbo.post("invoice", {"CustomerRef": ref, "Line": [line, line]}).json()["Invoice"]
    assert (50.0, 50.0) == (invoice["TotalAmt"], invoice["Balance"])
    link = [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]
    payment = qbo.post(
        "payment", {"CustomerRef": ref, "TotalAmt": 20.0, "Line": [{"Amount": 20.0, "LinkedTxn": link}]}
    )
    assert 200 == payment.status_code
    assert 30.0 == qbo.get(f"invoice/{invoice['Id']}").json()["Invoice"]["Balance"]


def test_without_accept_json_the_answer_is_xml(qbo: QBO) -> None:
    """QBO answers XML unless the client asks for JSON, so a missing Accept header shows up."""
    answer = qbo.session.get(
        f"{qbo.base}/companyinfo/{qbo.realm}", headers={"Authorization": f"Bearer {qbo.access}"}, timeout=10
    )
    assert (200, "application/xml") == (answer.status_code, answer.headers["Content-Type"].split(";")[0])
    root = ET.fromstring(answer.text)
    assert qbo.name == root.findtext(
        "i:CompanyInfo/i:CompanyName", namespaces={"i": "http://schema.intuit.com/finance/v3"}
    )
