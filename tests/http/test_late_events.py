"""Late events (§4, §7): stored and flagged, never rewriting an issued
invoice, billed per (period, meter) as an adjustment on the next invoice."""

import pytest

from tests.http.helpers import assert_error, pin

PLAN = {"code": "grad", "name": "Graduated", "currency": "USD",
        "charges": [{"meter": "api_calls", "model": "graduated",
                     "tiers": [{"up_to": 1000, "unit_price": "0.10"}, {"up_to": None, "unit_price": "0.05"}]}]}
COMMIT = {"code": "commit", "name": "Commitment", "currency": "USD", "minimum_commitment": "100.00",
          "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": "1.00"}]}


def send(admin, cid, quantity, timestamp, event_id=None):
    event = {"meter": "api_calls", "quantity": quantity, "timestamp": timestamp}
    if event_id:
        event["id"] = event_id
    reply = admin.post("/v1/events/batch", {"customer_id": cid, "events": [event]})
    assert reply.status == 200 and reply.json["accepted"] == 1, reply


def lines(invoice):
    return [(l["type"], l["quantity"], l["amount"]) for l in invoice["lines"]]


@pytest.fixture
def customer(admin):
    assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "aggregation": "sum"}).status == 201
    assert admin.post("/v1/plans", PLAN).status == 201
    assert admin.post("/v1/plans", COMMIT).status == 201
    pin("2025-09-20T00:00:00Z")
    cid = admin.post("/v1/customers", {"name": "Late Co", "email": "late@example.com", "tax_rate": "10"}).json["id"]
    return cid


def run_and_issue(admin, as_of):
    pin(as_of)
    ids = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    return [admin.post(f"/v1/invoices/{i}/finalize", {}).json for i in ids]


def test_late_event_crossing_a_tier_boundary_then_a_second_batch(admin, customer):
    """September: 900 calls = 90.00 (+10% tax = 99.00), issued. 200 late calls make
    1,100 = 1,000 × 0.10 + 100 × 0.05 = 105.00: the adjustment is 15.00, not
    200 × 0.10 = 20.00. A second late batch of 100 makes 1,200 = 110.00: only
    5.00 more, on the invoice after."""
    assert admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "grad", "start": "2025-09-01"}).status == 201
    send(admin, customer, 900, "2025-09-10T00:00:00Z", "on-time")
    (september,) = run_and_issue(admin, "2025-10-02T00:00:00Z")
    assert (september["number"], september["total"]) == ("INV-000001", "99.00")
    send(admin, customer, 200, "2025-09-25T00:00:00Z", "late-1")
    listed = {e["id"]: e["late"] for e in admin.get(f"/v1/events?customer_id={customer}").json["data"]}
    assert listed == {"on-time": False, "late-1": True}
    assert admin.get(f"/v1/invoices/{september['id']}").json == september  # untouched
    upcoming = admin.get(f"/v1/customers/{customer}/upcoming-invoice").json
    assert ("adjustment", 200, "15.00") in lines(upcoming)
    (october,) = run_and_issue(admin, "2025-11-02T00:00:00Z")
    adjustment = [l for l in october["lines"] if l["type"] == "adjustment"]
    assert [(l["meter"], l["quantity"], l["amount"]) for l in adjustment] == [("api_calls", 200, "15.00")]
    assert "2025-09-01 – 2025-09-30" in adjustment[0]["description"]
    assert (october["subtotal"], october["tax"], october["total"]) == ("15.00", "1.50", "16.50")  # taxed there
    send(admin, customer, 100, "2025-09-26T00:00:00Z", "late-2")
    (november,) = run_and_issue(admin, "2025-12-02T00:00:00Z")
    assert [l for l in lines(november) if l[0] == "adjustment"] == [("adjustment", 100, "5.00")]
    # nothing more is owed: the next invoice has no adjustment
    (december,) = run_and_issue(admin, "2026-01-02T00:00:00Z")
    assert [l for l in lines(december) if l[0] == "adjustment"] == []


def test_minimum_commitment_true_up_nets_out(admin, customer):
    """Commitment 100.00; September 50 calls = 50.00 + 50.00 top-up. 30 late calls:
    usage +30.00, true-up −30.00: nothing more is owed."""
    assert admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "commit", "start": "2025-09-01"}).status == 201
    send(admin, customer, 50, "2025-09-10T00:00:00Z")
    (september,) = run_and_issue(admin, "2025-10-02T00:00:00Z")
    assert lines(september)[:2] == [("usage", 50, "50.00"), ("minimum", None, "50.00")]
    send(admin, customer, 30, "2025-09-11T00:00:00Z")
    (october,) = run_and_issue(admin, "2025-11-02T00:00:00Z")
    adjustments = [l for l in october["lines"] if l["type"] == "adjustment"]
    assert [(l["meter"], l["amount"]) for l in adjustments] == [("api_calls", "30.00"), (None, "-30.00")]
    assert october["total"] == "110.00"  # October's own 100.00 commitment + tax; the adjustments net to 0
    # 80 more late calls: usage 160 in September, 60 above the commitment
    send(admin, customer, 80, "2025-09-12T00:00:00Z")
    (november,) = run_and_issue(admin, "2025-12-02T00:00:00Z")
    adjustments = [(l["meter"], l["amount"]) for l in november["lines"] if l["type"] == "adjustment"]
    assert adjustments == [("api_calls", "80.00"), (None, "-20.00")]


def test_ended_subscription_gets_an_adjustment_only_invoice(server, admin, customer):
    sub = admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "grad", "start": "2025-09-01"}).json
    assert admin.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at": "2025-10-01"}).status == 200
    send(admin, customer, 900, "2025-09-10T00:00:00Z")
    (september,) = run_and_issue(admin, "2025-10-02T00:00:00Z")
    send(admin, customer, 200, "2025-09-29T00:00:00Z")
    pin("2025-10-10T00:00:00Z")
    created = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    assert len(created) == 1
    only = admin.get(f"/v1/invoices/{created[0]}").json
    assert only["subscription_id"] is None
    assert lines(only) == [("adjustment", 200, "15.00"), ("tax", None, "1.50")]
    assert only["total"] == "16.50" and only["local_period"] == september["local_period"]
    assert admin.post("/v1/invoices/run", {}).json["created"] == 0  # not twice
    # the scheduler issues it a grace period after it was drafted
    server.app.scheduler.issue_due()
    assert admin.get(f"/v1/invoices/{only['id']}").json["status"] == "draft"
    pin("2025-10-11T00:00:01Z")
    server.app.scheduler.issue_due()
    assert admin.get(f"/v1/invoices/{only['id']}").json["number"] == "INV-000002"


def test_events_during_approval_are_late_unless_rejected(server, admin, customer):
    assert admin.patch(f"/v1/customers/{customer}", {"requires_approval": True}).status == 200
    assert admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "grad", "start": "2025-09-01"}).status == 201
    send(admin, customer, 900, "2025-09-10T00:00:00Z")
    pin("2025-10-02T00:00:00Z")
    (invoice_id,) = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    assert admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json["status"] == "pending_approval"
    send(admin, customer, 200, "2025-09-25T00:00:00Z", "during-approval")
    assert admin.get(f"/v1/invoices/{invoice_id}").json["total"] == "99.00"  # frozen for the approver
    # rejected: back to a draft that re-rates with every event, so no adjustment is owed
    assert admin.post(f"/v1/invoices/{invoice_id}/reject", {"comment": "recheck"}).json["total"] == "115.50"
    upcoming = admin.get(f"/v1/customers/{customer}/upcoming-invoice").json
    assert [l for l in lines(upcoming) if l[0] == "adjustment"] == []
    assert admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json["status"] == "pending_approval"
    send(admin, customer, 100, "2025-09-26T00:00:00Z", "after-resubmit")
    approved = admin.post(f"/v1/invoices/{invoice_id}/approve", {"comment": "ok"}).json
    assert approved["total"] == "115.50"
    upcoming = admin.get(f"/v1/customers/{customer}/upcoming-invoice").json
    assert [l for l in lines(upcoming) if l[0] == "adjustment"] == [("adjustment", 100, "5.00")]


def test_reissued_period_is_not_billed_twice(admin, customer):
    """September issued (900 = 90.00), a late 200 adjusted on October (15.00,
    issued), then September voided and reissued: the new draft rates all 1,100
    (105.00) and takes back the 15.00 already billed."""
    assert admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "grad", "start": "2025-09-01"}).status == 201
    send(admin, customer, 900, "2025-09-10T00:00:00Z")
    (september,) = run_and_issue(admin, "2025-10-02T00:00:00Z")
    send(admin, customer, 200, "2025-09-25T00:00:00Z")
    (october,) = run_and_issue(admin, "2025-11-02T00:00:00Z")
    assert admin.post(f"/v1/invoices/{september['id']}/void", {"reason": "address"}).status == 200
    again = admin.post(f"/v1/invoices/{september['id']}/reissue", {}).json
    assert lines(again) == [("usage", 1100, "105.00"), ("adjustment", -200, "-15.00"), ("tax", None, "9.00")]
    issued = admin.post(f"/v1/invoices/{again['id']}/finalize", {}).json
    assert issued["total"] == "99.00"
    (november,) = run_and_issue(admin, "2025-12-02T00:00:00Z")
    assert [l for l in lines(november) if l[0] == "adjustment"] == []


def test_retraction_allowed_while_draft_refused_once_issued(admin, customer):
    assert admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "grad", "start": "2025-09-01"}).status == 201
    send(admin, customer, 900, "2025-09-10T00:00:00Z", "a")
    send(admin, customer, 10, "2025-09-11T00:00:00Z", "b")
    pin("2025-10-02T00:00:00Z")
    (invoice_id,) = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    assert admin.delete(f"/v1/customers/{customer}/events/b").status == 200  # draft: allowed
    assert admin.get(f"/v1/invoices/{invoice_id}").json["total"] == "99.00"
    admin.post(f"/v1/invoices/{invoice_id}/finalize", {})
    refused = admin.delete(f"/v1/customers/{customer}/events/a")
    assert_error(refused, 409, "conflict")
    assert "INV-000001" in refused.json["error"]["message"]


def test_a_voided_adjustment_invoice_is_not_recreated(admin, customer):
    sub = admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "grad", "start": "2025-09-01"}).json
    assert admin.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at": "2025-10-01"}).status == 200
    send(admin, customer, 900, "2025-09-10T00:00:00Z")
    run_and_issue(admin, "2025-10-02T00:00:00Z")
    send(admin, customer, 200, "2025-09-29T00:00:00Z")
    (only,) = run_and_issue(admin, "2025-10-10T00:00:00Z")
    assert admin.post(f"/v1/invoices/{only['id']}/void", {"reason": "waived"}).status == 200
    assert admin.post("/v1/invoices/run", {}).json["created"] == 0  # voided periods are not re-created
    again = admin.post(f"/v1/invoices/{only['id']}/reissue", {}).json  # only a reissue brings it back
    assert lines(again) == [("adjustment", 200, "15.00"), ("tax", None, "1.50")]


def test_a_plan_change_keeps_the_trial_of_the_first_start(admin, customer):
    """A 14-day trial from 2025-09-01; a change of plan on the 10th does not
    start a new trial: the new plan bills from the 15th (16 of 30 days)."""
    trial = {"code": "trial", "name": "Trial plan", "currency": "USD", "base_fee": "30.00", "trial_days": 14,
             "charges": []}
    other = {**trial, "code": "trial2", "name": "Other", "base_fee": "60.00"}
    assert admin.post("/v1/plans", trial).status == 201 and admin.post("/v1/plans", other).status == 201
    sub = admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "trial", "start": "2025-09-01"}).json
    pin("2025-09-20T00:00:00Z")
    assert admin.post(f"/v1/subscriptions/{sub['id']}/change-plan", {"plan": "trial2", "at": "2025-09-10"}).status == 200
    pin("2025-10-02T00:00:00Z")
    ids = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    bases = sorted(l["amount"] for i in ids for l in admin.get(f"/v1/invoices/{i}").json["lines"]
                   if l["type"] == "base_fee")
    assert bases == ["0.00", "32.00"]  # old plan: its 9 days all in the trial; new plan 60.00 × 16/30


def test_an_amount_off_coupon_once_is_not_doubled_by_a_plan_change(admin, customer):
    """10.00 off once; a plan change on 2025-09-16 splits September into two
    invoices: the first takes the 10.00 (its subtotal allows), the second none."""
    flat = {"code": "flat", "name": "Flat", "currency": "USD", "base_fee": "30.00", "charges": []}
    flat2 = {**flat, "code": "flat2", "name": "Flat 2", "base_fee": "60.00"}
    assert admin.post("/v1/plans", flat).status == 201 and admin.post("/v1/plans", flat2).status == 201
    assert admin.post("/v1/coupons", {"code": "TEN", "amount_off": "10.00", "currency": "USD",
                                      "duration": "once"}).status == 201
    sub = admin.post("/v1/subscriptions", {"customer_id": customer, "plan": "flat", "start": "2025-09-01",
                                           "coupon": "TEN"}).json
    assert admin.post(f"/v1/subscriptions/{sub['id']}/change-plan", {"plan": "flat2", "at": "2025-09-16"}).status == 200
    pin("2025-10-02T00:00:00Z")
    ids = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    discounts = [admin.get(f"/v1/invoices/{i}").json["discount"] for i in ids]
    assert discounts == ["10.00", "0.00"]  # 15/30 × 30.00 = 15.00 − 10.00; then 15/30 × 60.00 = 30.00, nothing off
