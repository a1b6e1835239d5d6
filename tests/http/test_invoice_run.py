"""The invoice run (§7): one draft per ended period, never two, lines that add up."""

import sqlite3
import threading

import pytest

from tests.http.helpers import pin

PLAN = {"code": "pro", "name": "Pro", "currency": "USD", "base_fee": "49.00", "minimum_commitment": "100.00",
        "charges": [{"meter": "api_calls", "model": "graduated", "free_units": 1000,
                     "tiers": [{"up_to": 10000, "unit_price": "0.002"},
                               {"up_to": None, "unit_price": "0.001", "flat_fee": "5"}]}]}


@pytest.fixture
def customer(admin):
    assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "aggregation": "sum"}).status == 201
    assert admin.post("/v1/plans", PLAN).status == 201
    cid = admin.post("/v1/customers", {"name": "NY", "email": "ny@example.com", "timezone": "America/New_York",
                                       "tax_rate": "10"}).json["id"]
    pin("2025-10-20T12:00:00Z")
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "pro", "start": "2025-09-10"}).status == 201
    events = [{"meter": "api_calls", "quantity": 12000, "timestamp": "2025-09-15T00:00:00Z"},
              {"meter": "api_calls", "quantity": 500, "timestamp": "2025-10-02T00:00:00Z"}]
    assert admin.post("/v1/events/batch", {"customer_id": cid, "events": events}).status == 200
    return cid


def test_run_drafts_each_ended_period_once(admin, customer):
    """September (from the 10th, 21/30 days) in New York ends 2025-10-01T04:00Z.
    base 34.30 + usage 26.00 + minimum 9.70 = 70.00; tax 7.00; total 77.00."""
    pin("2025-11-02T00:00:00Z")
    reply = admin.post("/v1/invoices/run", {"as_of": "2025-10-01T03:59:59Z"})
    assert reply.status == 200 and reply.json == {"created": 0, "invoice_ids": []}
    reply = admin.post("/v1/invoices/run", {"as_of": "2025-10-01T04:00:00Z"})
    assert reply.json["created"] == 1
    invoice = admin.get(f"/v1/invoices/{reply.json['invoice_ids'][0]}").json
    assert (invoice["status"], invoice["number"], invoice["customer_id"]) == ("draft", None, customer)
    assert (invoice["period_start"], invoice["period_end"]) == ("2025-09-10T04:00:00Z", "2025-10-01T04:00:00Z")
    assert [(l["type"], l["amount"]) for l in invoice["lines"]] == [
        ("base_fee", "34.30"), ("usage", "26.00"), ("minimum", "9.70"), ("tax", "7.00")]
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == ("70.00", "7.00", "77.00")
    assert admin.post("/v1/invoices/run", {"as_of": "2025-10-01T04:00:00Z"}).json["created"] == 0
    # October closes later; running as of November drafts only October (500 calls, inside the free units)
    reply = admin.post("/v1/invoices/run", {"as_of": "2025-11-01T04:00:00Z"})
    assert reply.json["created"] == 1
    october = admin.get(f"/v1/invoices/{reply.json['invoice_ids'][0]}").json
    assert [(l["type"], l["amount"]) for l in october["lines"]][:2] == [("base_fee", "49.00"), ("usage", "0.00")]
    assert october["total"] == "110.00"  # commitment 100.00 + 10% tax
    listed = admin.get(f"/v1/invoices?customer_id={customer}&status=draft").json["data"]
    assert [i["id"] for i in listed] == [october["id"], invoice["id"]]
    assert [i["id"] for i in admin.get("/v1/invoices?period=2025-09").json["data"]] == [invoice["id"]]


def test_concurrent_runs_never_double_invoice(server, admin, customer):
    pin("2025-12-02T00:00:00Z")
    results = []

    def run():
        client = server.client(admin.token)
        results.append(client.post("/v1/invoices/run", {"as_of": "2025-12-01T05:00:00Z"}).json["created"])
        client.close()

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0] * 7 + [3]  # September, October, November
    assert len(admin.get("/v1/invoices").json["data"]) == 3


def test_drafts_follow_events_until_issued(admin, customer):
    pin("2025-10-20T12:00:00Z")
    invoice_id = admin.post("/v1/invoices/run", {"as_of": "2025-10-01T12:00:00Z"}).json["invoice_ids"][0]
    assert admin.post("/v1/events", {"customer_id": customer, "meter": "api_calls", "quantity": 1000,
                                     "timestamp": "2025-09-30T12:00:00Z"}).status == 201
    invoice = admin.get(f"/v1/invoices/{invoice_id}").json
    # 13,000 calls: 20 + 2,000 × 0.001 + 5 = 27.00
    assert [l["amount"] for l in invoice["lines"] if l["type"] == "usage"] == ["27.00"]


def test_bad_runs(admin, customer):
    assert admin.post("/v1/invoices/run", {"as_of": "2025-10-20T12:06:00Z"}).status == 400
    assert admin.post("/v1/invoices/run", {"as_of": "soon"}).status == 400
    assert admin.post("/v1/invoices/run", {"when": "now"}).status == 400
    assert admin.get("/v1/invoices?status=late").status == 400
    assert admin.get("/v1/invoices/999").status == 404
    assert admin.get("/v1/invoices").json["data"] == []
    assert admin.post("/v1/invoices/run", {"as_of": "2025-10-20T12:04:00Z"}).json["created"] == 1


def test_cancel_or_change_before_the_invoiced_end_is_409(admin, customer):
    pin("2025-11-02T00:00:00Z")
    assert admin.post("/v1/invoices/run", {"as_of": "2025-11-01T04:00:00Z"}).json["created"] == 2
    sub_id = admin.get(f"/v1/subscriptions?customer_id={customer}").json["data"][0]["id"]
    assert admin.post(f"/v1/subscriptions/{sub_id}/cancel", {"at": "2025-10-15"}).status == 409
    assert admin.post("/v1/plans", {**PLAN, "code": "pro2"}).status == 201
    assert admin.post(f"/v1/subscriptions/{sub_id}/change-plan", {"plan": "pro2", "at": "2025-10-20"}).status == 409
    assert admin.post(f"/v1/subscriptions/{sub_id}/cancel", {"at": "2025-11-01"}).status == 200


def test_a_fixed_coupon_split_by_a_plan_change_is_stored_once_when_both_parts_share_a_chunk(server, admin):
    """A plan change on 16 Sept splits September in two drafts made by one run
    (one chunk). 60.00 × 15/30 = 30.00 on the old plan takes 30.00 of the
    40.00 off; 90.00 × 15/30 = 45.00 on the new plan gets the 10.00 left.
    What the run stores is what a read re-rates: the 40.00 is given once."""
    pin("2025-09-10T12:00:00Z")
    for code, fee in (("a", "60.00"), ("b", "90.00")):
        assert admin.post("/v1/plans", {"code": code, "name": code, "currency": "USD", "base_fee": fee,
                                        "charges": []}).status == 201
    assert admin.post("/v1/coupons", {"code": "FORTY", "amount_off": "40.00", "currency": "USD",
                                      "duration": "forever"}).status == 201
    cid = admin.post("/v1/customers", {"name": "U", "email": "u@example.com", "timezone": "UTC"}).json["id"]
    sub = admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "a", "start": "2025-09-01",
                                           "coupon": "FORTY"}).json
    assert admin.post(f"/v1/subscriptions/{sub['id']}/change-plan", {"plan": "b", "at": "2025-09-16"}).status == 200
    pin("2025-10-02T00:00:00Z")
    reply = admin.post("/v1/invoices/run", {"as_of": "2025-10-01T00:00:00Z"})
    assert reply.status == 200 and reply.json["created"] == 2, reply
    shown = {i: admin.get(f"/v1/invoices/{i}").json for i in reply.json["invoice_ids"]}
    assert sorted((inv["subtotal"], inv["discount"], inv["total"]) for inv in shown.values()) == [
        ("30.00", "30.00", "0.00"), ("45.00", "10.00", "35.00")]
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        stored = dict(conn.execute("SELECT id, discount FROM invoices WHERE customer_id = ?", (cid,)).fetchall())
    finally:
        conn.close()
    assert sorted(stored.values()) == [1000, 3000]
