"""Coupons and credits together with tax on the live upcoming invoice (§5 order)."""

import pytest

from billing import clock
from billing.domain import times


@pytest.fixture
def customer(admin):
    assert admin.post("/v1/plans", {"code": "basic", "name": "Basic", "base_fee": "100.00"}).status == 201
    return admin.post("/v1/customers", {"name": "C", "email": "c@example.com", "tax_rate": "10"}).json["id"]


def test_coupon_tax_and_credits_in_order(admin, customer):
    """base 100.00; 20% off → 20.00; tax 10% of 80.00 = 8.00; total 88.00;
    credits 50.00 → amount due 38.00."""
    clock.pin(times.parse_instant("2025-09-15T12:00:00Z"))
    assert admin.post("/v1/coupons", {"code": "TWENTY", "percent_off": "20", "duration": "once"}).status == 201
    reply = admin.post(f"/v1/customers/{customer}/credits", {"amount": "50.00", "reason": "goodwill"})
    assert reply.status == 201 and reply.json["balance"] == "50.00"
    assert admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "basic", "start": "2025-09-01",
                                            "coupon": "TWENTY"}).status == 201
    inv = admin.get(f"/v1/customers/{customer}/upcoming-invoice").json
    assert [(l["type"], l["amount"]) for l in inv["lines"]] == [("base_fee", "100.00"), ("discount", "-20.00"),
                                                               ("tax", "8.00")]
    assert (inv["subtotal"], inv["discount"], inv["tax"], inv["total"], inv["credits_applied"], inv["amount_due"]) \
        == ("100.00", "20.00", "8.00", "88.00", "50.00", "38.00")
    # "once": the next period has no discount
    clock.pin(times.parse_instant("2025-10-15T12:00:00Z"))
    inv = admin.get(f"/v1/customers/{customer}/upcoming-invoice").json
    assert inv["discount"] == "0.00" and inv["total"] == "110.00"
    ledger = admin.get(f"/v1/customers/{customer}/credits").json
    assert ledger["balance"] == "50.00" and ledger["data"][0]["reason"] == "goodwill"


def test_repeating_amount_off(admin, customer):
    clock.pin(times.parse_instant("2025-10-15T12:00:00Z"))
    assert admin.post("/v1/coupons", {"code": "TEN", "amount_off": "10.00", "currency": "USD",
                                      "duration": "repeating", "periods": 2}).status == 201
    assert admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "basic", "start": "2025-09-01",
                                            "coupon": "TEN"}).status == 201
    assert admin.get(f"/v1/customers/{customer}/upcoming-invoice").json["discount"] == "10.00"  # 2nd period
    clock.pin(times.parse_instant("2025-11-15T12:00:00Z"))
    assert admin.get(f"/v1/customers/{customer}/upcoming-invoice").json["discount"] == "0.00"   # 3rd period


@pytest.mark.parametrize("body,field", [
    ({"code": "X"}, "percent_off"),
    ({"code": "X", "percent_off": "20", "amount_off": "1.00"}, "percent_off"),
    ({"code": "X", "percent_off": "120"}, "percent_off"),
    ({"code": "X", "amount_off": "10.00"}, "currency"),
    ({"code": "X", "amount_off": "10.001", "currency": "USD"}, "amount_off"),
    ({"code": "X", "percent_off": "5", "duration": "repeating"}, "periods"),
    ({"code": "X", "percent_off": "5", "duration": "always"}, "duration"),
])
def test_bad_coupons(admin, body, field):
    reply = admin.post("/v1/coupons", body)
    assert reply.status == 400 and field in [d["field"] for d in reply.json["error"]["details"]], reply
    assert admin.get("/v1/coupons").json["data"] == []


def test_bad_credits_and_unknown_coupon(admin, customer):
    for body in ({"amount": "0"}, {"amount": "-5.00"}, {"amount": "1.001"}, {"amount": 5}, {}):
        reply = admin.post(f"/v1/customers/{customer}/credits", body)
        assert reply.status == 400 and reply.json["error"]["details"][0]["field"] == "amount", (body, reply)
    assert admin.get(f"/v1/customers/{customer}/credits").json["balance"] == "0.00"
    reply = admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "basic", "coupon": "NOPE"})
    assert reply.status == 400 and reply.json["error"]["details"][0]["field"] == "coupon"
    assert admin.post("/v1/customers/999/credits", {"amount": "1.00"}).status == 404


def test_estimate_for_a_customer_applies_its_coupon_and_tax(admin, customer):
    """100.00 base, 20% off → 80.00, tax 10% → 88.00."""
    clock.pin(times.parse_instant("2025-09-15T12:00:00Z"))
    admin.post("/v1/coupons", {"code": "TWENTY", "percent_off": "20", "duration": "forever"})
    admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "basic", "start": "2025-09-01", "coupon": "TWENTY"})
    assert admin.post("/v1/estimate", {"plan": "basic", "customer_id": customer}).json["total"] == "88.00"
    assert admin.post("/v1/estimate", {"plan": "basic"}).json["total"] == "100.00"
