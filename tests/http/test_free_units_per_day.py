"""The `free_units_per_day` charge option (§5): the allowance is that number ×
the local days billed in the period (partial periods count their days),
added to `free_units`; on any model and in subscription overrides."""

from decimal import Decimal

import pytest

from billing.domain import rating
from tests.http.helpers import assert_validation, create_customer, create_meter, table_count


@pytest.mark.parametrize("model,fields", [
    ("per_unit", {"unit_price": "0.1"}),
    ("graduated", {"tiers": [{"up_to": 10, "unit_price": "1"}, {"up_to": None, "unit_price": "0.5"}]}),
    ("volume", {"tiers": [{"up_to": None, "unit_price": "0.5"}]}),
    ("package", {"package_size": 10, "package_price": "1"}),
])
def test_every_model_takes_it(server, admin, model, fields):
    create_meter(admin, key="gb")
    body = {"code": f"p-{model}", "name": "P", "currency": "USD",
            "charges": [{"meter": "gb", "model": model, "free_units_per_day": Decimal("1.5"), **fields}]}
    reply = admin.post("/v1/plans", body)
    assert reply.status == 201, reply
    assert Decimal(str(reply.json["charges"][0]["free_units_per_day"])) == Decimal("1.5")
    assert Decimal(str(admin.get(f"/v1/plans/p-{model}").json["charges"][0]["free_units_per_day"])) == Decimal("1.5")


@pytest.mark.parametrize("value", [-1, "abc", "1e3", True, 1.0000001, 10 ** 13])
def test_bad_values_are_400_and_change_nothing(server, admin, value):
    create_meter(admin, key="gb")
    body = {"code": "p", "name": "P", "currency": "USD",
            "charges": [{"meter": "gb", "model": "per_unit", "unit_price": "1", "free_units_per_day": value}]}
    assert_validation(admin.post("/v1/plans", body), "charges[0].free_units_per_day")
    assert table_count(server, "plans") == 0


def test_partial_periods_count_their_days_and_overrides_set_it(server, admin):
    """Subscribed from 21 September (UTC): 10 billed days of 30. The plan
    gives 1 free per day → 10 free; the override gives 2 per day → 20 free,
    plus 5 free_units → 25. Usage 40 × 1.00: plan 30.00, override 15.00."""
    create_meter(admin, key="gb")
    plan = {"code": "daily", "name": "Daily", "currency": "USD",
            "charges": [{"meter": "gb", "model": "per_unit", "unit_price": "1", "free_units_per_day": 1}]}
    assert admin.post("/v1/plans", plan).status == 201
    first, second = create_customer(admin), create_customer(admin)
    assert admin.post("/v1/subscriptions", {"customer_id": first["id"], "plan": "daily",
                                            "start": "2025-09-21"}).status == 201
    reply = admin.post("/v1/subscriptions", {"customer_id": second["id"], "plan": "daily", "start": "2025-09-21",
                                             "overrides": {"gb": {"free_units_per_day": 2, "free_units": 5}}})
    assert reply.status == 201, reply
    for customer in (first, second):
        assert admin.post("/v1/events", {"customer_id": customer["id"], "meter": "gb", "quantity": 40,
                                         "timestamp": "2025-09-25T00:00:00Z"}).status == 201
    ids = admin.post("/v1/invoices/run", {"as_of": "2025-10-01T00:00:00Z"}).json["invoice_ids"]
    totals = {}
    for invoice_id in ids:
        invoice = admin.get(f"/v1/invoices/{invoice_id}").json
        line = [l for l in invoice["lines"] if l["meter"] == "gb"][0]
        totals[invoice["customer_id"]] = (line["amount"], line["description"])
    assert totals[first["id"]] == ("30.00", "Gb (per unit), 10 free (1/day × 10 days)")
    assert totals[second["id"]] == ("15.00", "Gb (per unit), 25 free (2/day × 10 days + 5)")


def test_override_values_are_checked(server, admin):
    create_meter(admin, key="gb")
    plan = {"code": "daily", "name": "Daily", "currency": "USD",
            "charges": [{"meter": "gb", "model": "per_unit", "unit_price": "1"}]}
    assert admin.post("/v1/plans", plan).status == 201
    customer = create_customer(admin)
    reply = admin.post("/v1/subscriptions", {"customer_id": customer["id"], "plan": "daily",
                                             "overrides": {"gb": {"free_units_per_day": -2}}})
    assert_validation(reply, "charges[0].free_units_per_day")
    assert table_count(server, "subscriptions") == 0


def test_the_estimate_counts_the_days_of_a_full_month(server, admin):
    """POST /v1/estimate prices a full period: the current calendar month's
    days × 1 free per day; usage of 100 at 1.00 is billed (100 − days)."""
    create_meter(admin, key="gb")
    plan = {"currency": "USD", "charges": [{"meter": "gb", "model": "per_unit", "unit_price": "1",
                                            "free_units_per_day": 1}]}
    reply = admin.post("/v1/estimate", {"plan": plan, "usage": {"gb": 100}})
    assert reply.status == 200, reply
    days = int(reply.json["lines"][0]["description"].split("× ")[1].split(" ")[0])
    assert 28 <= days <= 31
    assert reply.json["total"] == f"{100 - days}.00"


def test_rating_adds_the_daily_allowance_to_free_units():
    """Pure: free = 100 + 2 × 31 = 162; 200 − 162 = 38 billable × 0.5 = 19.00."""
    charge = rating.Charge("gb", "per_unit", free_units=Decimal(100), unit_price=Decimal("0.5"),
                           free_units_per_day=Decimal(2))
    priced = rating.price(charge, Decimal(200), "USD", billed_days=31)
    assert (priced.free, priced.billable, priced.amount) == (Decimal(162), Decimal(38), 1900)
