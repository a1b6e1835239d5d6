"""Recommendations (§10): cheaper_plan, unused_commitment and scale_down,
each recomputed here by hand from its evidence."""

from datetime import timedelta, timezone
from decimal import Decimal

import pytest

from billing import clock
from tests.harness import make_key
from tests.helpers import at
from tests.http.helpers import assert_error, assert_validation, create_customer, create_meter


def invoice_months(admin, customer_id, months):
    for month_end in months:
        clock.pin(at(month_end))
        for invoice_id in admin.post("/v1/invoices/run", {"as_of": month_end.replace("00:00:00Z", "00:00:00Z")}).json["invoice_ids"]:
            assert admin.post(f"/v1/invoices/{invoice_id}/finalize").status == 200


def test_cheaper_plan_and_unused_commitment(server, admin):
    """On "big" (base 100.00, commitment 150.00, 0.01 a call) with 1,000 calls a
    month: 100.00 + 10.00 = 110.00, topped up by 40.00 to 150.00 each month.
    On "small" (base 20.00, 0.02 a call): 20.00 + 20.00 = 40.00. Over the last
    3 periods (Jul, Aug, Sep): 150.00 vs 40.00 on average → 110.00 a month;
    the true-up of the last 2 periods: 40.00 on average."""
    create_meter(admin, key="api_calls")
    for code, base, commitment, price in (("big", "100.00", "150.00", "0.01"), ("small", "20.00", "0", "0.02"),
                                          ("pricey", "500.00", "0", "0.05")):
        assert admin.post("/v1/plans", {"code": code, "name": code, "currency": "USD", "base_fee": base,
                                        "minimum_commitment": commitment, "charges": [
                                            {"meter": "api_calls", "model": "per_unit", "unit_price": price}]}).status == 201
    customer = create_customer(admin)
    cid = customer["id"]
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "big", "start": "2025-07-01"}).status == 201
    for month in ("07", "08", "09"):
        assert admin.post("/v1/events", {"customer_id": cid, "meter": "api_calls", "quantity": 1000,
                                         "timestamp": f"2025-{month}-15T00:00:00Z"}).status == 201
    invoice_months(admin, cid, ["2025-08-01T00:00:00Z", "2025-09-01T00:00:00Z", "2025-10-01T00:00:00Z"])
    body = admin.get(f"/v1/analytics/recommendations?customer_id={cid}").json
    found = {r["type"]: r for r in body["data"]}
    assert set(found) == {"cheaper_plan", "unused_commitment"}
    cheaper = found["cheaper_plan"]
    assert cheaper["estimated_monthly_savings"] == {"USD": "110.00"}
    evidence = cheaper["evidence"]
    assert (evidence["current_plan"], evidence["cheapest_plan"]) == ("big", "small")
    assert [(p["period_start"], p["billed_subtotal"], p["alternatives"]) for p in evidence["periods"]] == [
        (f"2025-{m}-01", "150.00", {"pricey": "550.00", "small": "40.00"}) for m in ("09", "08", "07")]
    # redo the arithmetic from the evidence
    billed = sum(Decimal(p["billed_subtotal"]) for p in evidence["periods"]) / 3
    cheapest = sum(Decimal(p["alternatives"]["small"]) for p in evidence["periods"]) / 3
    assert Decimal(cheaper["estimated_monthly_savings"]["USD"]) == billed - cheapest
    commitment = found["unused_commitment"]
    assert [p["true_up"] for p in commitment["evidence"]["periods"]] == ["40.00", "40.00"]
    assert commitment["estimated_monthly_savings"] == {"USD": "40.00"}


@pytest.mark.parametrize("grouped", [True, False], ids=["rollups", "raw events"])
def test_scale_down_from_collected_cpu(server, admin, grouped):
    """Service "api": 4 cores allocated (14,400 core-seconds an hour) for the
    last 7 days, using 1,800 core-seconds an hour (12.5 %) and at most 3,240
    in one hour (0.9 cores, 22.5 %): under 30 % in every hour. Cores needed
    = ceil(0.9 × 1.3) = 2; at 0.0001 per allocated core-second (0.36 per
    core-hour): (4 − 2) × 720 × 0.36 = 518.40 a month. Service "batch"
    reaches 50 % in one hour: no recommendation. The same from the raw events
    when the meters were set up by hand without their `service` group (read
    by time, through the events' time index)."""
    for key in ("cpu_core_seconds", "cpu_allocated_core_seconds"):
        create_meter(admin, key=key, group_by=["service"] if grouped else [])
    assert admin.post("/v1/plans", {"code": "compute", "name": "Compute", "currency": "USD", "charges": [
        {"meter": "cpu_allocated_core_seconds", "model": "per_unit", "unit_price": "0.0001"}]}).status == 201
    customer = create_customer(admin)
    cid = customer["id"]
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "compute", "start": "2025-09-01"}).status == 201
    now = at("2025-09-20T10:30:00Z")
    clock.pin(now)
    first_hour = at("2025-09-13T10:00:00Z")
    events = []
    for n in range(7 * 24):
        hour = first_hour + timedelta(hours=n)
        stamp = hour.strftime("%Y-%m-%dT%H:%M:%SZ")
        api_used = 3240 if n == 50 else 1800
        batch_used = 7200 if n == 80 else 1000
        events += [{"id": f"api-a-{n}", "meter": "cpu_allocated_core_seconds", "quantity": 14400, "timestamp": stamp,
                    "properties": {"service": "api"}},
                   {"id": f"api-u-{n}", "meter": "cpu_core_seconds", "quantity": api_used, "timestamp": stamp,
                    "properties": {"service": "api"}},
                   {"id": f"batch-a-{n}", "meter": "cpu_allocated_core_seconds", "quantity": 14400,
                    "timestamp": stamp, "properties": {"service": "batch"}},
                   {"id": f"batch-u-{n}", "meter": "cpu_core_seconds", "quantity": batch_used, "timestamp": stamp,
                    "properties": {"service": "batch"}}]
    assert admin.post("/v1/events/batch", {"customer_id": cid, "events": events}).json["accepted"] == len(events)
    tenant = server.client(make_key(server, customer_id=cid))
    body = tenant.get("/v1/analytics/recommendations").json  # a customer sees its own
    assert [r["type"] for r in body["data"]] == ["scale_down"]
    found = body["data"][0]
    evidence = found["evidence"]
    assert evidence["service"] == "api" and evidence["hours"] == 168
    assert (evidence["allocated_cores"], evidence["cores_needed"]) == (4, 2)
    assert evidence["highest_hourly_use_percent"] == "22.50" and evidence["highest_hourly_use_cores"] == "0.900000"
    assert found["estimated_monthly_savings"] == {"USD": "518.40"}
    assert Decimal(evidence["price_per_core_hour"]) * 720 * 2 == Decimal("518.40")


def test_who_sees_what(server, admin):
    mine, other = create_customer(admin), create_customer(admin)
    tenant = server.client(make_key(server, customer_id=mine["id"]))
    assert tenant.get("/v1/analytics/recommendations").json == {"customer_id": mine["id"], "data": []}
    assert_error(tenant.get(f"/v1/analytics/recommendations?customer_id={other['id']}"), 404, "not_found")
    assert_validation(admin.get("/v1/analytics/recommendations"), "customer_id")
    assert_error(admin.get("/v1/analytics/recommendations?customer_id=999999"), 404, "not_found")
