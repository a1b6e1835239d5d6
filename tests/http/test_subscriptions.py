"""Subscriptions (§5) and the live upcoming invoice."""

import pytest

from tests.http.helpers import pin

PLAN = {"code": "pro", "name": "Pro", "currency": "USD", "base_fee": "49.00", "minimum_commitment": "100.00",
        "charges": [{"meter": "api_calls", "model": "graduated", "free_units": 1000,
                     "tiers": [{"up_to": 10000, "unit_price": "0.002"},
                               {"up_to": None, "unit_price": "0.001", "flat_fee": "5"}]}]}


@pytest.fixture
def setup(admin):
    assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "aggregation": "sum"}).status == 201
    assert admin.post("/v1/plans", PLAN).status == 201
    customer = admin.post("/v1/customers", {"name": "NY", "email": "ny@example.com",
                                            "timezone": "America/New_York", "tax_rate": "10"}).json
    return customer["id"]


def test_create_list_get_and_one_active(admin, setup):
    reply = admin.post("/v1/subscriptions", {"customer_id": setup, "plan": "pro", "start": "2025-09-10"})
    assert reply.status == 201, reply
    sub = reply.json
    assert (sub["status"], sub["start"], sub["billing_anchor"], sub["end"]) == ("active", "2025-09-10", "calendar", None)
    assert admin.get(f"/v1/subscriptions/{sub['id']}").json == sub
    assert [s["id"] for s in admin.get(f"/v1/subscriptions?customer_id={setup}").json["data"]] == [sub["id"]]
    again = admin.post("/v1/subscriptions", {"customer_id": setup, "plan": "pro", "start": "2025-10-01"})
    assert again.status == 409


@pytest.mark.parametrize("body,field", [
    ({"plan": "pro"}, "customer_id"),
    ({"customer_id": 999, "plan": "pro"}, "customer_id"),
    ({"plan": "nope"}, "plan"),
    ({"plan": "pro", "billing_anchor": "weekly"}, "billing_anchor"),
    ({"plan": "pro", "start": "2025-02-30"}, "start"),
    ({"plan": "pro", "overrides": {"seats": {"free_units": 1}}}, "overrides.seats"),
    ({"plan": "pro", "overrides": {"api_calls": {"unit_price": "1"}}}, "overrides.api_calls"),
    ({"plan": "pro", "overrides": {"api_calls": {"free_units": -1}}}, "charges[0].free_units"),
])
def test_bad_subscriptions(admin, setup, body, field):
    body = {"customer_id": setup, **body} if "customer_id" not in body and field != "customer_id" else body
    reply = admin.post("/v1/subscriptions", body)
    assert reply.status == 400, reply
    assert field in [d["field"] for d in reply.json["error"]["details"]]
    assert admin.get("/v1/subscriptions").json["data"] == []


def test_plan_currency_must_match(admin, setup):
    eur = admin.post("/v1/customers", {"name": "E", "email": "e@example.com", "currency": "EUR"}).json
    reply = admin.post("/v1/subscriptions", {"customer_id": eur["id"], "plan": "pro"})
    assert reply.status == 400 and reply.json["error"]["details"][0]["field"] == "plan"


def test_upcoming_invoice_prorated_first_month(admin, setup):
    """Started 2025-09-10 in New York: 21 of 30 days. base 49.00 × 21/30 = 34.30.
    api_calls 12,000 (1,000 free): 10,000 × 0.002 + 1,000 × 0.001 + 5 = 26.00.
    commitment 100.00 × 21/30 = 70.00 > 60.30 → minimum 9.70. subtotal 70.00,
    tax 10% = 7.00, total 77.00."""
    pin("2025-09-20T12:00:00Z")
    assert admin.post("/v1/subscriptions", {"customer_id": setup, "plan": "pro", "start": "2025-09-10"}).status == 201
    events = [{"meter": "api_calls", "quantity": 6000, "timestamp": "2025-09-12T00:00:00Z"},
              {"meter": "api_calls", "quantity": 6000, "timestamp": "2025-09-15T00:00:00Z"},
              {"meter": "api_calls", "quantity": 999, "timestamp": "2025-09-10T03:59:59Z"}]  # the 9th, local
    assert admin.post("/v1/events/batch", {"customer_id": setup, "events": events}).status == 200
    reply = admin.get(f"/v1/customers/{setup}/upcoming-invoice")
    assert reply.status == 200, reply
    inv = reply.json
    assert (inv["status"], inv["id"], inv["number"], inv["issued_at"]) == ("estimate", None, None, None)
    assert (inv["period_start"], inv["period_end"]) == ("2025-09-10T04:00:00Z", "2025-10-01T04:00:00Z")
    assert [(l["type"], l["amount"]) for l in inv["lines"]] == [
        ("base_fee", "34.30"), ("usage", "26.00"), ("minimum", "9.70"), ("tax", "7.00")]
    assert [t["quantity"] for t in inv["lines"][1]["tiers"]] == [10000, 1000]
    assert (inv["subtotal"], inv["tax"], inv["total"], inv["amount_due"]) == ("70.00", "7.00", "77.00", "77.00")


def test_upcoming_invoice_without_subscription(admin, setup):
    pin("2025-09-20T12:00:00Z")
    inv = admin.get(f"/v1/customers/{setup}/upcoming-invoice").json
    assert inv["subscription_id"] is None and inv["lines"] == [] and inv["total"] == "0.00"
    assert inv["period_start"] == "2025-09-01T04:00:00Z"


def test_cancel_defaults_to_period_end_and_change_plan_keeps_the_anchor(admin, setup):
    pin("2025-09-20T12:00:00Z")
    sub = admin.post("/v1/subscriptions", {"customer_id": setup, "plan": "pro", "start": "2025-01-31",
                                           "billing_anchor": "anniversary"}).json
    assert admin.post("/v1/plans", {**PLAN, "code": "max", "base_fee": "99.00"}).status == 201
    changed = admin.post(f"/v1/subscriptions/{sub['id']}/change-plan", {"plan": "max", "at": "2025-09-25"})
    assert changed.status == 200, changed
    assert changed.json["previous"]["status"] == "ended" and changed.json["previous"]["end"] == "2025-09-25"
    new = changed.json["subscription"]
    assert (new["plan"], new["start"], new["anchor_date"]) == ("max", "2025-09-25", "2025-01-31")
    canceled = admin.post(f"/v1/subscriptions/{new['id']}/cancel")
    assert canceled.status == 200
    # anniversary of the 31st: the period holding Sept 25 ends on Sept 30
    assert canceled.json["end"] == "2025-09-30" and canceled.json["status"] == "canceled"
    assert admin.post(f"/v1/subscriptions/{new['id']}/cancel").status == 409
    # on 20 Sept the old plan is in force; its last period is 31 Aug .. 25 Sept (closed
    # by the change): base 49.00 × 25/30 days = 40.833… → 40.83
    inv = admin.get(f"/v1/customers/{setup}/upcoming-invoice").json
    assert inv["subscription_id"] == sub["id"]
    assert (inv["period_start"], inv["period_end"]) == ("2025-08-31T04:00:00Z", "2025-09-25T04:00:00Z")
    assert inv["lines"][0] == {**inv["lines"][0], "type": "base_fee", "amount": "40.83", "quantity": 25}
    # from 25 Sept the new plan: 25..29 Sept = 5 of 30 days, base 99.00 × 5/30 = 16.50
    pin("2025-09-27T12:00:00Z")
    inv = admin.get(f"/v1/customers/{setup}/upcoming-invoice").json
    assert inv["subscription_id"] == new["id"]
    assert (inv["period_start"], inv["period_end"]) == ("2025-09-25T04:00:00Z", "2025-09-30T04:00:00Z")
    assert inv["lines"][0]["amount"] == "16.50"


def test_estimate_what_if(admin, setup):
    """Full period: base 49.00 + usage 26.00 = 75.00 → minimum 25.00 → 100.00;
    with the customer's 10% tax: 110.00."""
    reply = admin.post("/v1/estimate", {"plan": "pro", "usage": {"api_calls": 12000}})
    assert reply.status == 200, reply
    assert (reply.json["status"], reply.json["total"]) == ("estimate", "100.00")
    reply = admin.post("/v1/estimate", {"plan": "pro", "usage": {"api_calls": 12000}, "customer_id": setup})
    assert reply.json["total"] == "110.00"
    inline = {"currency": "JPY", "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": "1.5"}]}
    reply = admin.post("/v1/estimate", {"plan": inline, "usage": {"api_calls": 1234}})
    assert reply.status == 200 and reply.json["total"] == "1851"  # 1,234 × 1.5 yen
    assert admin.post("/v1/estimate", {"plan": "pro"}).json["total"] == "100.00"  # missing usage is 0
    bad = admin.post("/v1/estimate", {"plan": "pro", "usage": {"nope": 1}})
    assert bad.status == 400 and bad.json["error"]["details"][0]["field"] == "usage.nope"
    assert admin.post("/v1/estimate", {"plan": "nope"}).status == 400


def test_customer_with_a_subscription_is_archived_not_deleted(admin, setup):
    assert admin.post("/v1/subscriptions", {"customer_id": setup, "plan": "pro"}).status == 201
    reply = admin.delete(f"/v1/customers/{setup}")
    assert reply.status == 409 and "subscriptions" in reply.json["error"]["message"]
    assert admin.patch(f"/v1/customers/{setup}", {"timezone": "UTC"}).status == 409  # active subscription
    assert admin.patch(f"/v1/customers/{setup}", {"archived": True}).status == 200


def test_scoped_key_estimate_for_another_customer_is_404_either_way(server, admin, setup):
    from tests.harness import make_key
    scoped = server.client(make_key(server, customer_id=setup))
    other = admin.post("/v1/customers", {"name": "O", "email": "o@example.com"}).json["id"]
    assert admin.post("/v1/subscriptions", {"customer_id": setup, "plan": "pro", "start": "2025-09-10"}).status == 201
    for customer_id in (other, 99999):
        assert scoped.post("/v1/estimate", {"plan": "pro", "customer_id": customer_id}).status == 404
    assert scoped.post("/v1/estimate", {"plan": "pro", "customer_id": setup}).status == 200


def test_usage_defaults_to_the_open_anniversary_period(admin, setup):
    pin("2025-09-20T12:00:00Z")
    assert admin.post("/v1/subscriptions", {"customer_id": setup, "plan": "pro", "start": "2025-07-15",
                                            "billing_anchor": "anniversary"}).status == 201
    usage = admin.get(f"/v1/customers/{setup}/usage").json
    assert (usage["from"], usage["to"]) == ("2025-09-15T04:00:00Z", "2025-10-15T04:00:00Z")


def test_overrides_change_the_price(admin, setup):
    """free_units overridden to 5,000: q 12,000 → billable 7,000 × 0.002 = 14.00 (tier 1 only)."""
    pin("2025-09-20T12:00:00Z")
    assert admin.post("/v1/subscriptions", {"customer_id": setup, "plan": "pro", "start": "2025-09-01",
                                            "overrides": {"api_calls": {"free_units": 5000}}}).status == 201
    assert admin.post("/v1/events", {"customer_id": setup, "meter": "api_calls", "quantity": 12000,
                                     "timestamp": "2025-09-15T00:00:00Z"}).status == 201
    lines = admin.get(f"/v1/customers/{setup}/upcoming-invoice").json["lines"]
    assert [l["amount"] for l in lines if l["type"] == "usage"] == ["14.00"]
