"""The invoice run rates a chunk of drafts before it writes any of them
(billing/api/invoice_run.py): what it stores must not depend on which
drafts shared a chunk. For customers with several periods due, plan changes
that split a period, fixed and percent coupons and credits, every draft the
run stores, whatever the chunk size, equals what reading it gives (a read
rates the draft's period alone, from what is stored then)."""

import sqlite3

import pytest

from billing.api import invoice_run
from billing.domain import money, times
from tests.http.helpers import pin

PLANS = [
    {"code": "small", "name": "Small", "currency": "USD", "base_fee": "20.00",
     "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "0.01"}]},
    {"code": "big", "name": "Big", "currency": "USD", "base_fee": "80.00", "minimum_commitment": "100.00",
     "charges": [{"meter": "calls", "model": "graduated", "free_units": 100,
                  "tiers": [{"up_to": 1000, "unit_price": "0.02"}, {"up_to": None, "unit_price": "0.005"}]}]},
]
COUPONS = [
    {"code": "OFF15", "amount_off": "15.00", "currency": "USD", "duration": "forever"},
    {"code": "ONCE50", "amount_off": "50.00", "currency": "USD", "duration": "once"},
    {"code": "PCT10", "percent_off": "10", "duration": "forever"},
]
# (timezone, plan, coupon, plan changes (date, plan), credits)
CUSTOMERS = [
    ("UTC", "small", None, [], None),
    ("UTC", "small", "OFF15", [("2025-08-12", "big")], None),
    ("America/New_York", "big", "OFF15", [("2025-08-20", "small"), ("2025-09-05", "big")], None),
    ("Europe/Berlin", "small", "ONCE50", [("2025-07-10", "big")], None),
    ("UTC", "big", "PCT10", [("2025-09-16", "small")], "30.00"),
    ("Asia/Kathmandu", "small", "OFF15", [], "12.34"),
]
AS_OF = "2025-10-02T00:00:00Z"


def _scenario(admin):
    assert admin.post("/v1/meters", {"key": "calls", "name": "Calls", "aggregation": "sum"}).status == 201
    for plan in PLANS:
        assert admin.post("/v1/plans", plan).status == 201, plan
    for coupon in COUPONS:
        assert admin.post("/v1/coupons", {"name": coupon["code"], **coupon}).status == 201, coupon
    pin("2025-07-01T00:00:00Z")
    for n, (zone, plan, coupon, changes, credits) in enumerate(CUSTOMERS):
        cid = admin.post("/v1/customers", {"name": f"C{n}", "email": f"c{n}@example.com", "timezone": zone}).json["id"]
        assert cid == n + 1
        body = {"customer_id": cid, "plan": plan, "start": "2025-07-01", **({"coupon": coupon} if coupon else {})}
        sub = admin.post("/v1/subscriptions", body)
        assert sub.status == 201, sub
        sub_id = sub.json["id"]
        for day, new_plan in changes:
            changed = admin.post(f"/v1/subscriptions/{sub_id}/change-plan", {"plan": new_plan, "at": day})
            assert changed.status == 200, changed
            sub_id = changed.json["subscription"]["id"]
        if credits:
            assert admin.post(f"/v1/customers/{cid}/credits", {"amount": credits, "reason": "goodwill"}).status == 201
    for month in (7, 8, 9):
        pin(f"2025-{month + 1:02d}-01T00:00:00Z")  # each month's events at its end
        for n in range(len(CUSTOMERS)):
            events = [{"meter": "calls", "quantity": 37 * (n + 1) + 11 * day,
                       "timestamp": f"2025-{month:02d}-{day:02d}T12:00:00Z"} for day in (3, 11, 19, 27)]
            assert admin.post("/v1/events/batch", {"customer_id": n + 1, "events": events}).status == 200


def _stored(server, invoice_id):
    conn = sqlite3.connect(server.app.config.db_path)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
        lines = conn.execute("SELECT type, amount FROM invoice_lines WHERE invoice_id = ? ORDER BY position",
                             (invoice_id,)).fetchall()
    finally:
        conn.close()
    amounts = {name: money.format_minor(row[name], row["currency"])
               for name in ("subtotal", "discount", "tax", "total", "credits_applied", "amount_due")}
    return amounts, [(line["type"], money.format_minor(line["amount"], row["currency"])) for line in lines]


@pytest.mark.parametrize("chunk", [1, 4, 50])
def test_what_the_run_stores_is_what_a_read_rates_whatever_shared_a_chunk(server, admin, chunk):
    _scenario(admin)
    pin("2025-10-02T00:00:00Z")
    created = invoice_run.run_as_of(server.app, times.parse_instant(AS_OF), chunk=chunk)
    # three calendar months for each customer, one draft more for each plan change
    assert len(created) == 3 * len(CUSTOMERS) + sum(len(changes) for _, _, _, changes, _ in CUSTOMERS)
    discounted = 0
    for invoice_id in created:
        shown = admin.get(f"/v1/invoices/{invoice_id}").json
        amounts, lines = _stored(server, invoice_id)
        assert amounts == {name: shown[name] for name in amounts}, (invoice_id, shown["local_period"])
        assert lines == [(line["type"], line["amount"]) for line in shown["lines"]], invoice_id
        discounted += shown["discount"] != "0.00"
    assert discounted > len(CUSTOMERS)  # the coupons took effect on many drafts


@pytest.mark.parametrize("chunk", [1, 4, 50])
def test_late_events_are_carried_once_and_stored_as_read_whatever_shared_a_chunk(server, admin, chunk):
    """July is drafted and issued; events then arrive late into July. The
    run as of October drafts August and September (and the parts of plan
    changes): each customer's first draft carries its July adjustment."""
    _scenario(admin)
    pin("2025-08-02T00:00:00Z")
    july = invoice_run.run_as_of(server.app, times.parse_instant("2025-08-02T00:00:00Z"))
    for invoice_id in july:
        assert admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).status == 200
    pin("2025-10-02T00:00:00Z")
    late = [{"meter": "calls", "quantity": 500, "timestamp": "2025-07-20T12:00:00Z"}]
    for customer_id in (1, 2, 3, 5):
        assert admin.post("/v1/events/batch", {"customer_id": customer_id, "events": late}).status == 200
    created = invoice_run.run_as_of(server.app, times.parse_instant(AS_OF), chunk=chunk)
    carriers = {}
    for invoice_id in created:
        shown = admin.get(f"/v1/invoices/{invoice_id}").json
        amounts, lines = _stored(server, invoice_id)
        assert amounts == {name: shown[name] for name in amounts}, (invoice_id, shown["local_period"])
        assert lines == [(line["type"], line["amount"]) for line in shown["lines"]], invoice_id
        if any(line["type"] == "adjustment" for line in shown["lines"]):
            carriers.setdefault(shown["customer_id"], []).append(invoice_id)
    assert sorted(carriers) == [1, 2, 3, 5] and all(len(ids) == 1 for ids in carriers.values())
