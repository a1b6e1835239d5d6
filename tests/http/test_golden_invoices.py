"""Golden invoices through the invoice run: proration on the 31st, in February,
across a DST change in a non-UTC timezone, anniversary periods, and trials."""

import pytest

from billing import clock
from billing.domain import times


@pytest.fixture
def ny(admin):
    assert admin.post("/v1/plans", {"code": "flat", "name": "Flat", "base_fee": "31.00",
                                    "minimum_commitment": "62.00"}).status == 201
    assert admin.post("/v1/plans", {"code": "trial", "name": "Trial", "base_fee": "30.00", "trial_days": 14}).status == 201
    return admin.post("/v1/customers", {"name": "NY", "email": "ny@example.com",
                                        "timezone": "America/New_York"}).json["id"]


def drafts(admin, as_of):
    clock.pin(times.parse_instant("2025-12-31T00:00:00Z"))
    ids = admin.post("/v1/invoices/run", {"as_of": as_of}).json["invoice_ids"]
    return [admin.get(f"/v1/invoices/{i}").json for i in ids]


def amounts(invoice):
    return [(l["type"], l["amount"]) for l in invoice["lines"]]


def test_anniversary_on_the_31st_through_february_and_dst(admin, ny):
    """Start 31 Jan 2025, anniversary. Periods: 31 Jan–28 Feb (28 days), 28 Feb–31 Mar
    (31 days; New York springs forward on 9 March, still 31 local days), cancel on
    15 March: 15 of 31 days → base 31.00 × 15/31 = 15.00, commitment 62.00 × 15/31 = 30.00."""
    sub = admin.post("/v1/subscriptions", {"customer_id": ny, "plan": "flat", "start": "2025-01-31",
                                           "billing_anchor": "anniversary"}).json
    clock.pin(times.parse_instant("2025-03-01T12:00:00Z"))
    assert admin.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at": "2025-03-15"}).json["end"] == "2025-03-15"
    february, march = drafts(admin, "2025-04-01T00:00:00Z")
    assert (february["period_start"], february["period_end"]) == ("2025-01-31T05:00:00Z", "2025-02-28T05:00:00Z")
    assert amounts(february) == [("base_fee", "31.00"), ("minimum", "31.00")]
    # the period ends at local midnight of 15 March, after the DST change (UTC−4)
    assert (march["period_start"], march["period_end"]) == ("2025-02-28T05:00:00Z", "2025-03-15T04:00:00Z")
    assert amounts(march) == [("base_fee", "15.00"), ("minimum", "15.00")]
    assert march["lines"][0]["quantity"] == 15


def test_calendar_start_on_the_31st(admin, ny):
    """Start 31 Jan, calendar: 1 of 31 January days → 31.00 × 1/31 = 1.00; commitment 2.00."""
    admin.post("/v1/subscriptions", {"customer_id": ny, "plan": "flat", "start": "2025-01-31"})
    (january,) = drafts(admin, "2025-02-01T05:00:00Z")
    assert amounts(january) == [("base_fee", "1.00"), ("minimum", "1.00")]


def test_trial_days_waive_the_base_fee(admin, ny):
    """Start 10 Sept with a 14-day trial: billed from 24 Sept, 7 of 30 days →
    30.00 × 7/30 = 7.00."""
    admin.post("/v1/subscriptions", {"customer_id": ny, "plan": "trial", "start": "2025-09-10"})
    (september,) = drafts(admin, "2025-10-01T04:00:00Z")
    assert amounts(september) == [("base_fee", "7.00")]
    assert september["period_start"] == "2025-09-10T04:00:00Z"


def test_fall_back_month_in_berlin(admin, ny):
    """October 2025 in Berlin has a 25-hour day; the period is 31 local days and the
    base fee is whole: 31.00 (+ 31.00 minimum)."""
    berlin = admin.post("/v1/customers", {"name": "B", "email": "b@example.com", "timezone": "Europe/Berlin"}).json["id"]
    admin.post("/v1/subscriptions", {"customer_id": berlin, "plan": "flat", "start": "2025-10-01"})
    (october,) = drafts(admin, "2025-11-01T00:00:00Z")
    assert (october["period_start"], october["period_end"]) == ("2025-09-30T22:00:00Z", "2025-10-31T23:00:00Z")
    assert amounts(october) == [("base_fee", "31.00"), ("minimum", "31.00")]
