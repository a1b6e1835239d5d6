"""What a customer's own credential sees (§9): its own objects only, without
anything staff-only, and a 404 for another customer's object that reads
exactly like the 404 for an object that does not exist."""

import pytest

from tests.helpers import wait_for
from tests.http.helpers import (assert_error, basic_plan, key_client, make_resource, new_user, pin, september_drafts,
                                sign_in, start)
from tests.http.test_stream import open_stream, streams  # noqa: F401  (the fixture)

PRO = {"code": "pro", "name": "Pro", "currency": "USD", "base_fee": "900.00",
       "charges": [{"meter": "api_calls", "model": "graduated",
                    "tiers": [{"up_to": 1000, "unit_price": "0.0007"}, {"up_to": None, "unit_price": "0.0003"}]}]}
INVOICE_STAFF_ONLY = ("on_hold", "void_reason", "requires_approval")
CUSTOMER_STAFF_ONLY = ("requires_approval", "csm_user_id", "metadata")


@pytest.fixture
def two(server, admin):
    """Two customers on Basic with September drafts; the first's own key and
    portal user, and a session of the second."""
    basic_plan(admin)
    assert admin.post("/v1/plans", PRO).status == 201
    csm = new_user(server, "customer_success")
    mine, theirs = september_drafts(admin, 2, requires_approval=True, csm_user_id=csm["id"],
                                    metadata={"note": "churn risk"})
    me = admin.get(f"/v1/invoices/{mine}").json["customer_id"]
    other = admin.get(f"/v1/invoices/{theirs}").json["customer_id"]
    room = make_resource(admin)
    session = start(admin, room["id"], other).json
    portal = new_user(server, "customer", customer_id=me)
    return {"mine": mine, "theirs": theirs, "me": me, "other": other, "session": session["id"],
            "key": key_client(server, customer_id=me), "portal": sign_in(server, portal)}


def test_invoices_shown_to_the_customer_leave_out_staff_fields(server, admin, two):
    mine = two["mine"]
    sales = key_client(server, "sales")
    assert admin.post(f"/v1/invoices/{mine}/finalize", {"comment": "internal: check usage"}).status == 200
    assert sales.post(f"/v1/invoices/{mine}/reject", {"comment": "internal: customer disputes"}).status == 200
    staff = admin.get(f"/v1/invoices/{mine}").json
    assert all(name in staff for name in INVOICE_STAFF_ONLY) and staff["on_hold"] is True
    for client in (two["key"], two["portal"]):
        own = client.get(f"/v1/invoices/{mine}").json
        assert not any(name in own for name in INVOICE_STAFF_ONLY), own
        assert own["total"] == staff["total"] and own["lines"] == staff["lines"]
        listed = client.get("/v1/invoices").json["data"]
        assert [i["id"] for i in listed] == [mine]
        assert not any(name in listed[0] for name in INVOICE_STAFF_ONLY)
        assert b"internal" not in client.get("/v1/invoices.csv").raw
        assert_error(client.get(f"/v1/invoices/{mine}/actions"), 403, "forbidden")  # the comments
    # void: the reason is the staff's
    assert admin.post(f"/v1/invoices/{mine}/void", {"reason": "internal: wrong entity"}).status == 200
    assert "void_reason" not in two["key"].get(f"/v1/invoices/{mine}").json
    assert b"internal" not in two["key"].get(f"/v1/invoices/{mine}.pdf").raw


def test_payments_shown_to_the_customer_do_not_name_the_staff(server, admin, two):
    mine = two["mine"]
    assert admin.post(f"/v1/invoices/{mine}/finalize", {}).status == 200
    assert key_client(server, "sales").post(f"/v1/invoices/{mine}/approve", {}).status == 200
    assert admin.post(f"/v1/invoices/{mine}/payments", {"amount": "10.00", "method": "card"}).status == 201
    staff = admin.get(f"/v1/invoices/{mine}/payments").json["data"]
    own = two["key"].get(f"/v1/invoices/{mine}/payments").json["data"]
    assert staff[0]["created_by"].startswith("key:")
    assert own == [{k: v for k, v in staff[0].items() if k != "created_by"}]


def test_the_customer_record_shown_to_the_customer_leaves_out_staff_fields(server, admin, two):
    me = two["me"]
    staff = admin.get(f"/v1/customers/{me}").json
    assert staff["metadata"] == {"note": "churn risk"} and staff["requires_approval"] is True
    for client in (two["key"], two["portal"]):
        own = client.get(f"/v1/customers/{me}").json
        assert own == {k: v for k, v in staff.items() if k not in CUSTOMER_STAFF_ONLY}
        assert client.get("/v1/customers").json["data"] == [own]


def test_a_customer_estimates_only_its_own_plan(server, admin, two):
    own = two["key"]
    mine = own.post("/v1/estimate", {"plan": "basic", "usage": {"api_calls": 1000}})
    assert mine.status == 200 and mine.json["total"] == "110.00"
    foreign = own.post("/v1/estimate", {"plan": "pro", "usage": {"api_calls": 1000}})
    unknown = own.post("/v1/estimate", {"plan": "prx", "usage": {"api_calls": 1000}})
    assert_error(foreign, 404, "not_found")
    assert foreign.json["error"]["message"].replace("pro", "prx") == unknown.json["error"]["message"]
    assert foreign.raw.replace(b"pro", b"prx") == unknown.raw  # nothing tells them apart
    assert b"0.0007" not in foreign.raw
    inline = own.post("/v1/estimate", {"plan": PRO | {"code": None}, "usage": {"api_calls": 1000}})
    assert inline.status == 400 and b"0.0007" not in inline.raw
    # staff estimate any plan
    assert admin.post("/v1/estimate", {"plan": "pro", "usage": {"api_calls": 1000}}).json["total"] == "900.70"


def _same_but_the_id(client, path, other_id, missing_id):
    """The 404 for another customer's object and for a missing one: the same but for the id asked."""
    foreign = client.get(path.format(other_id))
    missing = client.get(path.format(missing_id))
    assert_error(foreign, 404, "not_found")
    assert foreign.raw == missing.raw.replace(str(missing_id).encode(), str(other_id).encode()), \
        (path, foreign.raw, missing.raw)


def test_another_customers_object_is_not_found_like_a_missing_one(server, admin, two):
    pin("2025-10-01T07:00:00Z")
    other = two["other"]
    sub = admin.get(f"/v1/subscriptions?customer_id={other}").json["data"][0]["id"]
    cases = [("/v1/invoices/{}", two["theirs"]), ("/v1/invoices/{}.pdf", two["theirs"]),
             ("/v1/invoices/{}/payments", two["theirs"]), ("/v1/sessions/{}", two["session"]),
             ("/v1/subscriptions/{}", sub), ("/v1/customers/{}", other), ("/v1/customers/{}/usage", other),
             ("/v1/customers/{}/upcoming-invoice", other), ("/v1/customers/{}/credits", other),
             ("/v1/customers/{}/usage.csv", other), ("/v1/invoices?customer_id={}", other),
             ("/v1/events?customer_id={}", other), ("/v1/sessions?customer_id={}", other),
             ("/v1/subscriptions?customer_id={}", other)]
    for client in (two["key"], two["portal"]):
        for path, other_id in cases:
            _same_but_the_id(client, path, other_id, 987654)


def test_the_customers_live_stream_leaves_out_staff_fields(server, admin, two, streams):
    mine = two["mine"]
    own = open_stream(server, streams, two["key"].token)
    staff = open_stream(server, streams, admin.token)
    wait_for(lambda: server.app.bus.count() == 2, message="two subscribers")
    assert admin.post(f"/v1/invoices/{mine}/void", {"reason": "internal: wrong entity"}).status == 200
    assert staff.wait_for("invoice.voided")["invoice"]["void_reason"] == "internal: wrong entity"
    voided = own.wait_for("invoice.voided")["invoice"]
    assert voided["id"] == mine and voided["status"] == "void"
    assert not any(name in voided for name in INVOICE_STAFF_ONLY), voided
