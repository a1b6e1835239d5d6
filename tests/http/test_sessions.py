"""Sessions (§6): atomic capacity, stop and cost, lists and scoping, billing
records, their invoice lines, resource analytics, and the maximum duration."""

import sqlite3
import threading
from decimal import Decimal

import pytest

from billing import clock
from tests.harness import make_key
from tests.http.helpers import (assert_error, assert_validation, make_customer, make_resource, pin, start,
                                table_count)


@pytest.fixture(autouse=True)
def _clock():
    pin("2025-09-15T09:00:00Z")


def stop(client, session_id):
    return client.post(f"/v1/sessions/{session_id}/stop", {})


def run_session(client, resource_id, customer_id, started, ended):
    """A session from `started` to `ended` (pins the clock); the stopped session."""
    pin(started)
    reply = start(client, resource_id, customer_id)
    assert reply.status == 201, reply
    pin(ended)
    reply = stop(client, reply.json["id"])
    assert reply.status == 200, reply
    return reply.json


def db_rows(server, sql, params=()):
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- start and capacity ---------------------------------------------------------------

def test_start_answers_201_with_the_session(admin):
    room = make_resource(admin, capacity=2)
    cid = make_customer(admin)
    reply = start(admin, room["id"], cid, user="alice")
    assert reply.status == 201, reply
    s = reply.json
    assert (s["resource_id"], s["resource"], s["customer_id"], s["user"], s["status"]) == \
        (room["id"], room["name"], cid, "alice", "active")
    assert (s["started_at"], s["ended_at"], s["duration_seconds"], s["cost"]) == \
        ("2025-09-15T09:00:00Z", None, None, None)
    assert (s["price_per_minute"], s["currency"], s["auto_stopped"]) == ("0.50", "USD", False)
    assert admin.get(f"/v1/sessions/{s['id']}").json["status"] == "active"
    pin("2025-09-15T09:02:00Z")  # a running session shows what it would cost now
    live = admin.get(f"/v1/sessions/{s['id']}").json
    assert (live["elapsed_seconds"], live["cost_so_far"]) == (120, "1.00")
    assert admin.get(f"/v1/resources/{room['id']}").json["active"] == 1


def test_capacity_full_body(server, admin):
    room = make_resource(admin, capacity=2)
    cid = make_customer(admin)
    assert start(admin, room["id"], cid).status == 201
    assert start(admin, room["id"], cid).status == 201
    reply = start(admin, room["id"], cid)
    assert reply.status == 409, reply
    error = reply.json["error"]
    assert set(error) == {"code", "message", "details", "active", "capacity"}
    assert (error["code"], error["details"], error["active"], error["capacity"]) == ("capacity_full", [], 2, 2)
    assert isinstance(error["message"], str) and error["message"]
    assert table_count(server, "sessions") == 2


def test_start_validation(server, admin):
    room = make_resource(admin)
    cid = make_customer(admin)
    for body, field in (({"customer_id": cid}, "resource_id"), ({"resource_id": room["id"]}, "customer_id"),
                        ({"resource_id": str(room["id"]), "customer_id": cid}, "resource_id"),
                        ({"resource_id": room["id"], "customer_id": True}, "customer_id"),
                        ({"resource_id": 999999, "customer_id": cid}, "resource_id"),
                        ({"resource_id": room["id"], "customer_id": 999999}, "customer_id"),
                        ({"resource_id": room["id"], "customer_id": cid, "user": 5}, "user"),
                        ({"resource_id": room["id"], "customer_id": cid, "seat": 1}, "seat")):
        assert_validation(admin.post("/v1/sessions", body), field)
    assert table_count(server, "sessions") == 0


def test_currency_mismatch_is_a_conflict(server, admin):
    euro_room = make_resource(admin, currency="EUR")
    cid = make_customer(admin)  # pays in USD
    assert_error(start(admin, euro_room["id"], cid), 409, "conflict")
    assert table_count(server, "sessions") == 0
    assert start(admin, euro_room["id"], make_customer(admin, currency="EUR")).status == 201


def test_concurrent_starts_never_exceed_capacity(server, admin):
    """200 starts at once from 20 threads, each request on its own connection:
    exactly 5 succeed, 195 are refused, and at no moment are more than 5 active."""
    room = make_resource(admin, capacity=5)
    cid = make_customer(admin)
    token = make_key(server, role="finance")
    statuses, bodies, lock = [], [], threading.Lock()
    barrier = threading.Barrier(20)
    done = threading.Event()
    peak = [0]

    def worker():
        barrier.wait()
        for _ in range(10):
            client = server.client(token)
            try:
                reply = start(client, room["id"], cid)
            finally:
                client.close()
            with lock:
                statuses.append(reply.status)
                bodies.append(reply.json)

    def watcher():  # reads the database while the starts race
        conn = sqlite3.connect(server.app.config.db_path)
        try:
            while not done.is_set():
                n = conn.execute("SELECT count(*) FROM sessions WHERE resource_id = ? AND ended_at IS NULL",
                                 (room["id"],)).fetchone()[0]
                peak[0] = max(peak[0], n)
        finally:
            conn.close()

    watch = threading.Thread(target=watcher)
    watch.start()
    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    done.set()
    watch.join()
    assert not any(t.is_alive() for t in threads)
    assert len(statuses) == 200
    assert statuses.count(201) == 5 and statuses.count(409) == 195, sorted(set(statuses))
    refusals = [b["error"] for b in bodies if b and "error" in b]
    assert len(refusals) == 195
    assert all(e["code"] == "capacity_full" and e["capacity"] == 5 and e["active"] == 5 for e in refusals)
    assert peak[0] <= 5
    assert db_rows(server, "SELECT count(*), count(*) FILTER (WHERE ended_at IS NULL) FROM sessions"
                           " WHERE resource_id = ?", (room["id"],)) == [(5, 5)]
    assert admin.get(f"/v1/resources/{room['id']}").json["active"] == 5
    assert len(admin.get(f"/v1/sessions?active=true&resource_id={room['id']}").json["data"]) == 5


# -- stop and cost ----------------------------------------------------------------------

@pytest.mark.parametrize("seconds,price,currency,cost", [
    (61, "0.50", "USD", "0.51"),      # 0.50833…
    (89, "0.10", "USD", "0.15"),      # 0.14833…
    (90, "0.01", "USD", "0.02"),      # 0.015: half up
    (150, "0.01", "USD", "0.03"),     # 0.025: half up, not to even
    (29, "0.30", "USD", "0.15"),      # 0.145 exactly: rounded once (minutes first would give 0.14)
    (0, "0.50", "USD", "0.00"),
    (90, "3", "JPY", "5"),            # 4.5 yen
    (61, "2", "JPY", "2"),            # 2.0333 yen
    (61, "0.125", "KWD", "0.127"),    # 0.12708…
])
def test_stop_cost_is_rounded_half_up_once(admin, seconds, price, currency, cost):
    room = make_resource(admin, price_per_minute=price, currency=currency)
    cid = make_customer(admin, currency=currency)
    pin("2025-09-15T09:00:00Z")
    session = start(admin, room["id"], cid).json
    clock.advance(seconds=seconds, microseconds=999_999 if seconds else 0)  # whole seconds: the fraction is dropped
    reply = stop(admin, session["id"])
    assert reply.status == 200, reply
    s = reply.json
    assert (s["status"], s["duration_seconds"], s["cost"], s["currency"]) == ("stopped", seconds, cost, currency)
    assert s["ended_at"] is not None and s["stopped_by"] and s["auto_stopped"] is False
    assert "cost_so_far" not in s
    assert admin.get(f"/v1/sessions/{session['id']}").json["cost"] == cost


def test_stop_twice_unknown_and_roles(server, admin):
    room = make_resource(admin)
    cid = make_customer(admin)
    session = start(admin, room["id"], cid).json
    viewer = server.client(make_key(server, role="viewer"))
    assert_error(viewer.post(f"/v1/sessions/{session['id']}/stop", {}), 403, "forbidden")
    assert_error(viewer.post("/v1/sessions", {"resource_id": room["id"], "customer_id": cid}), 403, "forbidden")
    pin("2025-09-15T09:01:00Z")
    first = stop(admin, session["id"])
    assert first.status == 200 and first.json["ended_at"] == "2025-09-15T09:01:00Z"
    pin("2025-09-15T09:05:00Z")
    again = stop(admin, session["id"])
    assert_error(again, 409, "conflict")
    after = admin.get(f"/v1/sessions/{session['id']}").json
    assert (after["ended_at"], after["duration_seconds"], after["cost"]) == ("2025-09-15T09:01:00Z", 60, "0.50")
    assert_error(stop(admin, 999999), 404, "not_found")
    assert_error(admin.get("/v1/sessions/999999"), 404, "not_found")
    finance = server.client(make_key(server, role="finance"))
    other = finance.post("/v1/sessions", {"resource_id": room["id"], "customer_id": cid})
    assert other.status == 201
    assert stop(finance, other.json["id"]).status == 200


def test_list_filters_and_customer_scope(server, admin):
    room_a, room_b = make_resource(admin), make_resource(admin)
    alice, bob = make_customer(admin), make_customer(admin)
    a1 = run_session(admin, room_a["id"], alice, "2025-09-15T09:00:00Z", "2025-09-15T09:10:00Z")["id"]
    a2 = start(admin, room_b["id"], alice).json["id"]
    b1 = start(admin, room_a["id"], bob).json["id"]

    def ids(path, client=admin):
        reply = client.get(path)
        assert reply.status == 200, reply
        return [s["id"] for s in reply.json["data"]]

    assert ids("/v1/sessions") == [b1, a2, a1]  # newest first
    assert ids("/v1/sessions?active=true") == [b1, a2]
    assert ids("/v1/sessions?active=false") == [a1]
    assert ids(f"/v1/sessions?resource_id={room_a['id']}") == [b1, a1]
    assert ids(f"/v1/sessions?customer_id={alice}") == [a2, a1]
    assert ids(f"/v1/sessions?customer_id={alice}&active=true&resource_id={room_b['id']}") == [a2]
    first = admin.get("/v1/sessions?limit=2").json
    assert [s["id"] for s in first["data"]] == [b1, a2]
    assert ids(f"/v1/sessions?limit=2&cursor={first['next_cursor']}") == [a1]
    assert_validation(admin.get("/v1/sessions?active=maybe"), "active")
    assert_validation(admin.get("/v1/sessions?customer_id=abc"), "customer_id")
    # a customer-scoped key: its own sessions only; another customer's are not found
    scoped = server.client(make_key(server, customer_id=alice))
    assert ids("/v1/sessions", scoped) == [a2, a1]
    assert ids(f"/v1/sessions?resource_id={room_a['id']}", scoped) == [a1]
    assert ids(f"/v1/sessions?customer_id={alice}", scoped) == [a2, a1]
    assert_error(scoped.get(f"/v1/sessions?customer_id={bob}"), 404, "not_found")
    assert scoped.get(f"/v1/sessions/{a1}").json["customer_id"] == alice
    assert_error(scoped.get(f"/v1/sessions/{b1}"), 404, "not_found")
    assert_error(scoped.post("/v1/sessions", {"resource_id": room_a["id"], "customer_id": alice}), 403, "forbidden")
    assert_error(scoped.post(f"/v1/sessions/{a2}/stop", {}), 403, "forbidden")
    records = scoped.get("/v1/billing-records").json
    assert [r["id"] for r in records["data"]] == [a1]
    assert_error(scoped.get(f"/v1/billing-records?customer_id={bob}"), 404, "not_found")
    assert_error(server.client().get("/v1/sessions"), 401, "unauthenticated")
    assert_error(server.client(make_key(server, role="ingest")).get("/v1/sessions"), 403, "forbidden")


# -- billing records ---------------------------------------------------------------------

def test_billing_records_filters_and_totals(server, admin):
    room, desk = make_resource(admin, price_per_minute="0.50"), make_resource(admin, price_per_minute="0.10")
    euro_room = make_resource(admin, price_per_minute="1.00", currency="EUR")
    alice, bob = make_customer(admin), make_customer(admin, currency="EUR")
    r1 = run_session(admin, room["id"], alice, "2025-09-10T10:00:00Z", "2025-09-10T10:01:01Z")   # 61 s: 0.51
    r2 = run_session(admin, desk["id"], alice, "2025-09-20T10:00:00Z", "2025-09-20T10:01:29Z")   # 89 s: 0.15
    r3 = run_session(admin, euro_room["id"], bob, "2025-09-30T23:00:00Z", "2025-10-01T00:30:00Z")  # 90 min: 90.00
    r4 = run_session(admin, room["id"], alice, "2025-10-02T10:00:00Z", "2025-10-02T10:02:00Z")   # 2 min: 1.00
    start(admin, room["id"], alice)  # running: not a billing record

    def get(query=""):
        reply = admin.get("/v1/billing-records" + query)
        assert reply.status == 200, reply
        return [r["id"] for r in reply.json["data"]], reply.json["totals"]

    ids, totals = get()
    assert ids == [r4["id"], r3["id"], r2["id"], r1["id"]]  # newest end first
    assert totals == {"EUR": {"sessions": 1, "minutes": Decimal("90.00"), "amount": "90.00"},
                      "USD": {"sessions": 3, "minutes": Decimal("4.50"), "amount": "1.66"}}
    record = admin.get("/v1/billing-records").json["data"][-1]
    assert (record["cost"], record["duration_seconds"], record["minutes"], record["customer_id"]) == \
        ("0.51", 61, Decimal("1.02"), alice)
    ids, totals = get(f"?customer_id={alice}")
    assert ids == [r4["id"], r2["id"], r1["id"]] and list(totals) == ["USD"]
    ids, totals = get(f"?resource_id={room['id']}")
    assert ids == [r4["id"], r1["id"]] and totals["USD"]["amount"] == "1.51"
    # from/to are half-open on ended_at; a session bills when it ends
    ids, totals = get("?from=2025-09-01T00:00:00Z&to=2025-10-01T00:30:00Z")
    assert ids == [r2["id"], r1["id"]] and list(totals) == ["USD"] and totals["USD"]["amount"] == "0.66"
    ids, _ = get("?from=2025-10-01T00:30:00Z&to=2025-10-02")
    assert ids == [r3["id"]]
    ids, totals = get("?from=2025-11-01")
    assert ids == [] and totals == {}
    page1 = admin.get("/v1/billing-records?limit=3").json
    assert len(page1["data"]) == 3 and page1["totals"]["USD"]["sessions"] == 3
    page2 = admin.get(f"/v1/billing-records?limit=3&cursor={page1['next_cursor']}").json
    assert [r["id"] for r in page2["data"]] == [r1["id"]] and page2["next_cursor"] is None
    assert_validation(admin.get("/v1/billing-records?from=yesterday"), "from")
    assert server.client(make_key(server, role="viewer")).get("/v1/billing-records").status == 200


def test_billing_record_dates_are_local_to_the_customer(admin):
    """§2: with a customer, a date bound is local midnight in its timezone."""
    room = make_resource(admin, price_per_minute="0.10")
    ny = make_customer(admin, timezone="America/New_York")
    late = run_session(admin, room["id"], ny, "2025-10-01T03:00:00Z", "2025-10-01T03:30:00Z")  # Sep 30, 23:30 local
    september = admin.get(f"/v1/billing-records?customer_id={ny}&from=2025-09-01&to=2025-10-01").json
    assert [r["id"] for r in september["data"]] == [late["id"]]
    october = admin.get(f"/v1/billing-records?customer_id={ny}&from=2025-10-01&to=2025-11-01").json
    assert october["data"] == [] and october["totals"] == {}


# -- invoices ------------------------------------------------------------------------------

def resource_lines(invoice):
    return [(l["description"], l["quantity"], l["unit_price"], l["amount"]) for l in invoice["lines"]
            if l["type"] == "resource"]


def test_sessions_bill_on_the_subscription_invoice_of_their_end(server, admin):
    assert admin.post("/v1/plans", {"code": "desk", "name": "Desk plan", "currency": "USD", "base_fee": "10.00",
                                     "charges": []}).status == 201
    room = make_resource(admin, name="Alpha", price_per_minute="0.30")
    lab = make_resource(admin, name="Beta", price_per_minute="0.50")
    cid = make_customer(admin)
    pin("2025-09-01T00:00:00Z")
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "desk", "start": "2025-09-01"}).status == 201
    run_session(admin, room["id"], cid, "2025-09-05T10:00:00Z", "2025-09-05T10:00:29Z")  # 0.145 → 0.15
    run_session(admin, room["id"], cid, "2025-09-06T10:00:00Z", "2025-09-06T10:00:29Z")  # 0.15 again
    run_session(admin, lab["id"], cid, "2025-09-07T10:00:00Z", "2025-09-07T10:01:01Z")   # 0.51
    # the upcoming invoice shows them live, a running one not yet
    pin("2025-09-30T23:59:00Z")
    running = start(admin, lab["id"], cid).json["id"]
    upcoming = admin.get(f"/v1/customers/{cid}/upcoming-invoice").json
    assert upcoming["status"] == "estimate" and upcoming["subscription_id"] is not None
    assert resource_lines(upcoming) == [("Alpha (2 sessions, minutes)", Decimal("0.97"), "0.30", "0.30"),
                                        ("Beta (1 session, minutes)", Decimal("1.02"), "0.50", "0.51")]
    assert upcoming["total"] == "10.81"
    pin("2025-10-01T00:01:00Z")
    assert stop(admin, running).json["cost"] == "1.00"  # ends in October: bills there
    pin("2025-10-01T06:00:00Z")
    run = admin.post("/v1/invoices/run", {"as_of": "2025-10-01T00:00:00Z"}).json
    assert run["created"] == 1
    invoice = admin.get(f"/v1/invoices/{run['invoice_ids'][0]}").json
    assert invoice["kind"] == "subscription"
    # one line per resource: quantity in minutes, amount = the sum of the rounded costs (not 0.29)
    assert resource_lines(invoice) == [("Alpha (2 sessions, minutes)", Decimal("0.97"), "0.30", "0.30"),
                                       ("Beta (1 session, minutes)", Decimal("1.02"), "0.50", "0.51")]
    assert [l["type"] for l in invoice["lines"]] == ["base_fee", "resource", "resource"]
    assert (invoice["subtotal"], invoice["total"]) == ("10.81", "10.81")
    assert admin.post("/v1/invoices/run", {"as_of": "2025-10-01T00:00:00Z"}).json["created"] == 0
    assert admin.post("/v1/invoices/run", {}).json["created"] == 0
    assert table_count(server, "invoices") == 1  # no monthly invoice besides the subscription's
    upcoming = admin.get(f"/v1/customers/{cid}/upcoming-invoice").json
    assert resource_lines(upcoming) == [("Beta (1 session, minutes)", Decimal("2.00"), "0.50", "1.00")]
    pin("2025-11-01T06:00:00Z")
    run = admin.post("/v1/invoices/run", {}).json
    assert run["created"] == 1
    october = admin.get(f"/v1/invoices/{run['invoice_ids'][0]}").json
    assert resource_lines(october) == [("Beta (1 session, minutes)", Decimal("2.00"), "0.50", "1.00")]
    assert admin.post("/v1/invoices/run", {}).json["created"] == 0


def test_customer_without_subscription_gets_a_monthly_invoice_in_local_time(server, admin):
    room = make_resource(admin, name="Gym", price_per_minute="0.10")
    ny = make_customer(admin, timezone="America/New_York")
    pin("2025-10-01T03:00:00Z")  # 23:00 on 30 September in New York
    session = start(admin, room["id"], ny).json["id"]
    upcoming = admin.get(f"/v1/customers/{ny}/upcoming-invoice").json
    assert upcoming["subscription_id"] is None and resource_lines(upcoming) == []
    assert upcoming["period_start"] == "2025-09-01T04:00:00Z"
    pin("2025-10-01T03:30:00Z")  # 23:30 local: still September
    assert stop(admin, session).json["cost"] == "3.00"
    upcoming = admin.get(f"/v1/customers/{ny}/upcoming-invoice").json  # shown live
    assert resource_lines(upcoming) == [("Gym (1 session, minutes)", Decimal("30.00"), "0.10", "3.00")]
    assert upcoming["total"] == "3.00"
    october = run_session(admin, room["id"], ny, "2025-10-01T04:30:00Z", "2025-10-01T04:40:00Z")  # October, local
    assert october["cost"] == "1.00"
    pin("2025-10-01T05:00:00Z")
    assert admin.post("/v1/invoices/run", {"as_of": "2025-10-01T03:59:59Z"}).json["created"] == 0  # not ended
    run = admin.post("/v1/invoices/run", {}).json
    assert run["created"] == 1
    invoice = admin.get(f"/v1/invoices/{run['invoice_ids'][0]}").json
    assert (invoice["kind"], invoice["subscription_id"], invoice["status"]) == ("monthly", None, "draft")
    assert (invoice["period_start"], invoice["period_end"]) == ("2025-09-01T04:00:00Z", "2025-10-01T04:00:00Z")
    assert invoice["local_period"] == {"start": "2025-09-01", "end": "2025-10-01"}
    assert resource_lines(invoice) == [("Gym (1 session, minutes)", Decimal("30.00"), "0.10", "3.00")]
    assert invoice["total"] == "3.00"
    assert admin.post("/v1/invoices/run", {}).json["created"] == 0
    assert admin.get(f"/v1/invoices/{invoice['id']}").json["total"] == "3.00"  # re-rated: still September only
    upcoming = admin.get(f"/v1/customers/{ny}/upcoming-invoice").json
    assert resource_lines(upcoming) == [("Gym (1 session, minutes)", Decimal("10.00"), "0.10", "1.00")]
    pin("2025-11-01T05:00:00Z")
    run = admin.post("/v1/invoices/run", {}).json
    assert run["created"] == 1
    second = admin.get(f"/v1/invoices/{run['invoice_ids'][0]}").json
    assert (second["kind"], second["local_period"]["start"], second["total"]) == ("monthly", "2025-10-01", "1.00")
    assert admin.post("/v1/invoices/run", {}).json["created"] == 0
    assert table_count(server, "invoices") == 2
    # a customer with nothing to bill gets nothing
    make_customer(admin)
    assert admin.post("/v1/invoices/run", {}).json["created"] == 0


# -- analytics ------------------------------------------------------------------------------

def test_resource_analytics_by_hand(server, admin):
    room = make_resource(admin, name="Pair room", capacity=2, price_per_minute="0.10")
    other = make_resource(admin, name="Empty", capacity=1)
    cid = make_customer(admin)
    run_session(admin, room["id"], cid, "2025-09-10T08:00:00Z", "2025-09-10T14:00:00Z")  # 6 h = 36.00
    run_session(admin, room["id"], cid, "2025-09-11T21:00:00Z", "2025-09-12T03:00:00Z")  # 6 h over UTC midnight
    pin("2025-09-20T00:00:00Z")
    reply = admin.get(f"/v1/analytics/resources?from=2025-09-09&to=2025-09-13&resource_id={room['id']}")
    assert reply.status == 200, reply
    body = reply.json
    assert [r["id"] for r in body["resources"]] == [room["id"]]
    pair = body["resources"][0]
    days = {d["date"]: (d["revenue"], d["occupied_minutes"], d["available_minutes"], d["utilization_percent"])
            for d in pair["days"]}
    assert days == {
        "2025-09-09": ("0.00", 0, 2880, "0.00"),
        "2025-09-10": ("36.00", 360, 2880, "12.50"),   # 6 × 60 / (2 × 1440)
        "2025-09-11": ("0.00", 180, 2880, "6.25"),
        "2025-09-12": ("36.00", 180, 2880, "6.25"),    # revenue on the day the session ended
    }
    assert (pair["revenue"], pair["occupied_minutes"], pair["available_minutes"], pair["utilization_percent"]) == \
        ("72.00", 720, 11520, "6.25")
    assert body["revenue"] == {"USD": "72.00"}
    # in New York the second session lies within 11 September (17:00–23:00)
    ny = admin.get(f"/v1/analytics/resources?from=2025-09-11&to=2025-09-12&timezone=America/New_York"
                   f"&resource_id={room['id']}").json["resources"][0]["days"]
    assert [(d["date"], d["revenue"], d["occupied_minutes"], d["utilization_percent"]) for d in ny] == \
        [("2025-09-11", "36.00", 360, "12.50")]
    # every resource without the filter; a DST day has 25 hours
    pin("2025-11-10T00:00:00Z")  # a day still to come has no available time yet
    both = admin.get("/v1/analytics/resources?from=2025-11-02&to=2025-11-03&timezone=America/New_York").json
    assert [r["id"] for r in both["resources"]] == [room["id"], other["id"]]
    assert [r["days"][0]["available_minutes"] for r in both["resources"]] == [3000, 1500]
    for bad in ("from=2025-09-10&to=2025-09-10", "from=soon", "timezone=Mars/Base", "resource_id=x",
                "from=2024-01-01&to=2025-09-01"):
        assert admin.get(f"/v1/analytics/resources?{bad}").status == 400, bad
    assert server.client(make_key(server, role="viewer")).get("/v1/analytics/resources").status == 200
    assert_error(server.client(make_key(server, customer_id=cid)).get("/v1/analytics/resources"), 403, "forbidden")


def test_running_sessions_count_in_utilization_until_now(admin):
    room = make_resource(admin, capacity=4)
    cid = make_customer(admin)
    pin("2025-09-10T00:00:00Z")
    start(admin, room["id"], cid)
    pin("2025-09-10T12:00:00Z")
    day = admin.get("/v1/analytics/resources?from=2025-09-10&to=2025-09-11").json["resources"][0]["days"][0]
    # the day so far: 12 h of one seat out of 4 seats × 12 h (the afternoon has not come yet)
    assert (day["occupied_minutes"], day["available_minutes"], day["utilization_percent"], day["revenue"]) == \
        (720, 2880, "25.00", "0.00")


# -- maximum duration -------------------------------------------------------------------------

def test_scheduler_stops_sessions_at_their_maximum(server, admin):
    room = make_resource(admin, max_duration_minutes=30, price_per_minute="0.50")
    free = make_resource(admin)  # no maximum
    cid = make_customer(admin)
    pin("2025-09-15T10:00:00Z")
    first = start(admin, room["id"], cid).json["id"]
    unlimited = start(admin, free["id"], cid).json["id"]
    pin("2025-09-15T10:20:00Z")
    second = start(admin, room["id"], cid).json["id"]
    pin("2025-09-15T10:29:59Z")
    assert server.app.scheduler.run_once()["details"]["sessions_stopped"] == 0
    assert admin.get(f"/v1/sessions/{first}").json["status"] == "active"
    pin("2025-09-15T10:45:00Z")
    job = server.app.scheduler.run_once()
    assert job["outcome"] == "ok" and job["details"]["sessions_stopped"] == 1
    s = admin.get(f"/v1/sessions/{first}").json
    assert (s["status"], s["ended_at"], s["duration_seconds"], s["cost"], s["auto_stopped"], s["stopped_by"]) == \
        ("stopped", "2025-09-15T10:30:00Z", 1800, "15.00", True, "scheduler")
    assert admin.get(f"/v1/sessions/{second}").json["status"] == "active"
    assert admin.get(f"/v1/sessions/{unlimited}").json["status"] == "active"
    assert_error(stop(admin, first), 409, "conflict")
    pin("2025-09-16T00:00:00Z")
    assert server.app.scheduler.run_once()["details"]["sessions_stopped"] == 1
    s = admin.get(f"/v1/sessions/{second}").json
    assert (s["ended_at"], s["duration_seconds"], s["cost"], s["auto_stopped"]) == \
        ("2025-09-15T10:50:00Z", 1800, "15.00", True)
    assert admin.get(f"/v1/sessions/{unlimited}").json["status"] == "active"
    assert server.app.scheduler.run_once()["details"]["sessions_stopped"] == 0
    assert admin.get(f"/v1/resources/{room['id']}").json["active"] == 0


def test_analytics_revenue_of_a_session_ending_at_midnight(admin):
    """A session ending exactly at 00:00 bills on that day (ranges are [from, to)),
    as its billing record does."""
    room = make_resource(admin, capacity=1, price_per_minute="0.10")
    cid = make_customer(admin)
    run_session(admin, room["id"], cid, "2025-09-09T23:00:00Z", "2025-09-10T00:00:00Z")  # 6.00
    records = admin.get("/v1/billing-records?from=2025-09-10&to=2025-09-11").json
    assert records["totals"]["USD"]["amount"] == "6.00"
    body = admin.get("/v1/analytics/resources?from=2025-09-10&to=2025-09-11").json
    day = body["resources"][0]["days"][0]
    assert (day["revenue"], day["occupied_minutes"]) == ("6.00", 0)
    assert body["revenue"] == {"USD": "6.00"}
    before = admin.get("/v1/analytics/resources?from=2025-09-09&to=2025-09-10").json["resources"][0]["days"][0]
    assert (before["revenue"], before["occupied_minutes"]) == ("0.00", 60)


# -- each session billed exactly once ---------------------------------------------------------

def resource_amounts(admin, invoice_id):
    return [l["amount"] for l in admin.get(f"/v1/invoices/{invoice_id}").json["lines"] if l["type"] == "resource"]


def test_a_session_ending_in_an_issued_period_is_billed_once_on_the_next_invoice(admin):
    """September is drafted and issued a few minutes before it ends (as_of may be
    up to 5 minutes ahead); a session stopped at 23:58 is late: it goes on
    October's invoice, once."""
    assert admin.post("/v1/plans", {"code": "base", "name": "Base", "currency": "USD", "base_fee": "10.00",
                                    "charges": []}).status == 201
    room = make_resource(admin)
    cid = make_customer(admin)
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "base", "start": "2025-09-01"}).status == 201
    pin("2025-09-30T23:00:00Z")
    session = start(admin, room["id"], cid).json
    pin("2025-09-30T23:56:00Z")
    (september,) = admin.post("/v1/invoices/run", {"as_of": "2025-10-01T00:00:00Z"}).json["invoice_ids"]
    assert admin.post(f"/v1/invoices/{september}/finalize", {}).json["total"] == "10.00"
    pin("2025-09-30T23:58:00Z")
    assert stop(admin, session["id"]).json["cost"] == "29.00"  # 58 min × 0.50
    assert resource_amounts(admin, september) == []  # the issued invoice does not change
    upcoming = admin.get(f"/v1/customers/{cid}/upcoming-invoice").json
    assert [l["amount"] for l in upcoming["lines"] if l["type"] == "resource"] == ["29.00"]
    pin("2025-11-02T00:00:00Z")
    (october,) = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    assert resource_amounts(admin, october) == ["29.00"]
    assert admin.post(f"/v1/invoices/{october}/finalize", {}).json["total"] == "39.00"
    pin("2025-12-02T00:00:00Z")
    (november,) = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    assert resource_amounts(admin, november) == []  # billed once


def test_a_backdated_subscription_does_not_bill_a_monthly_invoice_again(admin):
    assert admin.post("/v1/plans", {"code": "base2", "name": "Base", "currency": "USD", "base_fee": "10.00",
                                    "charges": []}).status == 201
    room = make_resource(admin)
    cid = make_customer(admin)
    run_session(admin, room["id"], cid, "2025-09-10T10:00:00Z", "2025-09-10T10:20:00Z")  # 10.00
    pin("2025-10-02T00:00:00Z")
    (monthly,) = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    assert admin.post(f"/v1/invoices/{monthly}/finalize", {}).json["total"] == "10.00"
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "base2", "start": "2025-09-01"}).status == 201
    (september,) = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    assert resource_amounts(admin, september) == []  # already on the monthly invoice
    # voiding the monthly invoice gives its sessions back: the subscription's September takes them
    assert admin.post(f"/v1/invoices/{monthly}/void", {"reason": "moved to the plan"}).status == 200
    assert resource_amounts(admin, september) == ["10.00"]


def test_currency_or_timezone_changes_wait_for_sessions_to_be_invoiced(admin):
    room = make_resource(admin)
    cid = make_customer(admin)
    run_session(admin, room["id"], cid, "2025-09-10T10:00:00Z", "2025-09-10T10:20:00Z")
    assert_error(admin.patch(f"/v1/customers/{cid}", {"currency": "EUR"}), 409, "conflict")
    assert_error(admin.patch(f"/v1/customers/{cid}", {"timezone": "Asia/Tokyo"}), 409, "conflict")
    assert_error(admin.delete(f"/v1/customers/{cid}"), 409, "conflict")  # not a 500
    pin("2025-10-02T00:00:00Z")
    (monthly,) = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    admin.post(f"/v1/invoices/{monthly}/finalize", {})
    # still not: its invoiced months are local months, and moving them could leave a session between two
    assert_error(admin.patch(f"/v1/customers/{cid}", {"timezone": "Asia/Tokyo"}), 409, "conflict")
    other = make_customer(admin)  # a customer never billed for sessions may move
    assert admin.patch(f"/v1/customers/{other}", {"timezone": "Asia/Tokyo"}).status == 200


def test_prices_are_bounded_and_a_limit_set_later_is_not_retroactive(server, admin):
    assert_validation(admin.post("/v1/resources", {"name": "Gold", "capacity": 1, "price_per_minute": "1000000.01",
                                                   "currency": "USD"}), "price_per_minute")
    room = make_resource(admin, price_per_minute="0.10")
    cid = make_customer(admin)
    pin("2025-08-01T10:00:00Z")
    session = start(admin, room["id"], cid).json
    pin("2025-09-10T12:00:00Z")
    assert admin.patch(f"/v1/resources/{room['id']}", {"max_duration_minutes": 60}).status == 200
    pin("2025-09-10T12:01:00Z")
    server.app.scheduler.run_once()
    stopped = admin.get(f"/v1/sessions/{session['id']}").json
    assert (stopped["ended_at"], stopped["auto_stopped"]) == ("2025-09-10T12:00:00Z", True)  # when the limit was set


def test_billed_sessions_count_toward_the_period_minimum_in_a_true_up(admin):
    """Minimum 100.00: September's 30.00 session + 70.00 top-up, issued. A late
    event of 1.00 makes usage 1.00: the true-up is −1.00 (not +29.00)."""
    assert admin.post("/v1/meters", {"key": "calls", "name": "Calls", "aggregation": "sum"}).status == 201
    assert admin.post("/v1/plans", {"code": "floor", "name": "Floor", "currency": "USD", "minimum_commitment": "100.00",
                                    "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "1.00"}]}).status == 201
    room = make_resource(admin)
    cid = make_customer(admin)
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "floor", "start": "2025-09-01"}).status == 201
    run_session(admin, room["id"], cid, "2025-09-10T10:00:00Z", "2025-09-10T11:00:00Z")  # 30.00
    pin("2025-10-02T00:00:00Z")
    (september,) = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    issued = admin.post(f"/v1/invoices/{september}/finalize", {}).json
    assert [(l["type"], l["amount"]) for l in issued["lines"]] == [
        ("usage", "0.00"), ("resource", "30.00"), ("minimum", "70.00")]
    reply = admin.post("/v1/events/batch", {"customer_id": cid, "events": [
        {"meter": "calls", "quantity": 1, "timestamp": "2025-09-20T00:00:00Z"}]})
    assert reply.status == 200
    pin("2025-11-02T00:00:00Z")
    (october,) = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    adjustments = [(l["meter"], l["amount"]) for l in admin.get(f"/v1/invoices/{october}").json["lines"]
                   if l["type"] == "adjustment"]
    assert adjustments == [("calls", "1.00"), (None, "-1.00")]


def test_editing_a_resource_does_not_move_when_its_limit_counts(server, admin):
    pin("2025-09-10T09:00:00Z")
    room = make_resource(admin, max_duration_minutes=60, price_per_minute="0.50")
    cid = make_customer(admin)
    pin("2025-09-10T10:00:00Z")
    session = start(admin, room["id"], cid).json
    pin("2025-09-10T11:30:00Z")
    assert admin.patch(f"/v1/resources/{room['id']}", {"name": "Renamed room"}).status == 200
    server.app.scheduler.run_once()
    stopped = admin.get(f"/v1/sessions/{session['id']}").json
    assert (stopped["ended_at"], stopped["cost"]) == ("2025-09-10T11:00:00Z", "30.00")
