"""Alerts (§10): rules and budgets, once per period for sure, spikes, who is
evaluated, and delivery (firings, notifications, webhook, e-mail)."""

import glob
import json
import os
import signal
import threading
from email import policy
from email.parser import BytesParser

import pytest

from billing import clock
from tests.harness import RunningServer, make_key, temp_db
from tests.http.helpers import assert_error, assert_validation, create_customer, create_meter, list_all, pin, unique
from tests.http.test_webhooks import Receiver, verify_signature

PLAN = {"code": "calls", "name": "Calls", "currency": "USD", "base_fee": "0.00",
        "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": "1.00"}]}
BUDGET = {"monthly": "100.00", "alert_at_percent": [50, 80, 100]}


def send(admin, customer_id, quantity, timestamp, meter="api_calls"):
    reply = admin.post("/v1/events/batch", {"customer_id": customer_id, "events": [
        {"id": unique("e"), "meter": meter, "quantity": quantity, "timestamp": timestamp}]})
    assert reply.status in (200, 201) and reply.json["accepted"] == 1, reply
    return reply


def evaluate(client):
    reply = client.post("/v1/alerts/evaluate", {})
    assert reply.status == 200, reply
    return reply.json


def firings(client, **query):
    path = "/v1/alerts/events" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    return list_all(client, path)


@pytest.fixture
def billed(admin):
    """A USD customer on 1.00 per call since 1 November 2026 with a 100.00
    budget (steps 50, 80, 100); the clock in mid-November."""
    pin("2026-11-10T12:00:00Z")
    create_meter(admin, key="api_calls")
    assert admin.post("/v1/plans", PLAN).status == 201
    customer = create_customer(admin, name="Budgeted Ltd", billing_email="ap@budgeted.example", budget=BUDGET)
    assert admin.post("/v1/subscriptions", {"customer_id": customer["id"], "plan": "calls",
                                            "start": "2026-11-01"}).status == 201
    return customer


# -- rules: validation -----------------------------------------------------------------

def test_rules_are_validated_and_a_bad_one_stores_nothing(admin, billed):
    cases = [({"type": "weather", "threshold": "1"}, "type"),
             ({"type": "usage", "meter": "nope", "threshold": 5}, "meter"),
             ({"type": "usage", "meter": "api_calls", "threshold": 0}, "threshold"),
             ({"type": "usage", "meter": "api_calls", "threshold": -3}, "threshold"),
             ({"type": "usage", "meter": "api_calls", "threshold": "many"}, "threshold"),
             ({"type": "spend", "threshold": "10.00"}, "currency"),
             ({"type": "spend", "currency": "XYZ", "threshold": "10.00"}, "currency"),
             ({"type": "spend", "currency": "USD", "threshold": "0.00"}, "threshold"),
             ({"type": "spend", "currency": "USD", "threshold": "1.001"}, "threshold"),
             ({"type": "spend", "currency": "USD", "threshold": 10}, "threshold"),
             ({"type": "spend", "customer_id": billed["id"], "currency": "EUR", "threshold": "5.00"}, "currency"),
             ({"type": "spend", "customer_id": 999999, "threshold": "5.00"}, "customer_id"),
             ({"type": "spend", "currency": "USD", "threshold": "5.00", "colour": "red"}, "colour"),
             ({"type": "usage", "meter": "api_calls", "currency": "USD", "threshold": 5}, "currency")]
    for body, field in cases:
        assert_validation(admin.post("/v1/alerts", body), field)
    assert admin.get("/v1/alerts").json["data"] == []
    for path in ("/v1/alerts", "/v1/alerts/events", "/v1/alerts/budgets", "/v1/notifications"):
        assert_validation(admin.get(path + "?customer_id=abc"), "customer_id")
    rule = admin.post("/v1/alerts", {"type": "spend", "customer_id": billed["id"], "threshold": "20.00",
                                     "name": "Twenty"})
    assert rule.status == 201, rule
    assert rule.json | {"id": 0, "created_at": ""} == {
        "id": 0, "name": "Twenty", "customer_id": billed["id"], "type": "spend", "meter": None, "currency": "USD",
        "threshold": "20.00", "created_at": ""}
    assert [r["id"] for r in admin.get("/v1/alerts").json["data"]] == [rule.json["id"]]
    assert admin.delete(f"/v1/alerts/{rule.json['id']}").status == 200
    assert admin.get("/v1/alerts").json["data"] == []
    assert_error(admin.delete(f"/v1/alerts/{rule.json['id']}"), 404, "not_found")


# -- budgets and once per period -------------------------------------------------------------

def test_budget_steps_fire_once_each_and_again_next_period(admin, billed):
    cid = billed["id"]
    send(admin, cid, 40, "2026-11-05T00:00:00Z")
    assert evaluate(admin)["fired"] == 0
    send(admin, cid, 45, "2026-11-06T00:00:00Z")  # 85.00: 50 % and 80 %
    assert evaluate(admin)["fired"] == 2
    assert evaluate(admin)["fired"] == 0
    send(admin, cid, 10, "2026-11-07T00:00:00Z")  # 95.00: nothing new
    assert evaluate(admin)["fired"] == 0
    send(admin, cid, 10, "2026-11-08T00:00:00Z")  # 105.00: 100 %
    assert evaluate(admin)["fired"] == 1
    fired = firings(admin, customer_id=cid)
    assert [(f["type"], f["percent"], f["threshold"], f["value"]) for f in reversed(fired)] == [
        ("budget", 50, "50.00", "85.00"), ("budget", 80, "80.00", "85.00"), ("budget", 100, "100.00", "105.00")]
    assert {f["period_start"] for f in fired} == {"2026-11-01T00:00:00Z"}
    pin("2026-12-05T12:00:00Z")  # the next period: the same steps fire again
    send(admin, cid, 60, "2026-12-02T00:00:00Z")
    assert evaluate(admin)["fired"] == 1
    latest = firings(admin, customer_id=cid)[0]
    assert (latest["percent"], latest["period_start"], latest["value"]) == (50, "2026-12-01T00:00:00Z", "60.00")


def test_a_late_event_for_a_closed_period_never_fires_for_it(admin, billed):
    cid = billed["id"]
    rule = admin.post("/v1/alerts", {"type": "usage", "customer_id": cid, "meter": "api_calls", "threshold": 50})
    assert rule.status == 201
    send(admin, cid, 30, "2026-11-05T00:00:00Z")
    pin("2026-12-03T12:00:00Z")
    assert evaluate(admin)["fired"] == 0
    send(admin, cid, 30, "2026-11-20T00:00:00Z")  # November now has 60, but November has closed
    assert evaluate(admin)["fired"] == 0
    assert firings(admin) == []
    send(admin, cid, 55, "2026-12-02T00:00:00Z")  # December crosses on its own (and half its budget)
    assert evaluate(admin)["fired"] == 2
    assert [(f["type"], f["period_start"], f["value"]) for f in firings(admin, type="usage")] == [
        ("usage", "2026-12-01T00:00:00Z", "55")]


def test_racing_evaluations_fire_once(admin, billed, server):
    """Eight threads evaluate explicitly while the scheduler runs: one firing per step."""
    send(admin, billed["id"], 120, "2026-11-05T00:00:00Z")
    results, errors = [], []
    barrier = threading.Barrier(9)

    def explicit():
        client = server.client(admin.token)
        barrier.wait()
        try:
            results.append(evaluate(client)["fired"])
        except Exception as exc:  # reported below
            errors.append(exc)

    def scheduled():
        barrier.wait()
        results.append(server.app.scheduler.run_once()["details"]["alerts"]["fired"])

    threads = [threading.Thread(target=explicit) for _ in range(8)] + [threading.Thread(target=scheduled)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(results) == 3
    assert sorted(f["percent"] for f in firings(admin)) == [50, 80, 100]
    assert len(list_all(admin, "/v1/notifications")) == 3


def test_two_processes_on_one_database_and_a_restart_fire_once(tmp_path):
    """A second server process on the same file evaluates at the same moment;
    then the first is restarted and evaluates again: still one firing per step."""
    from tests.test_server_process import start  # the real `server.py`
    db = temp_db(tmp_path)
    first = RunningServer(db)
    try:
        admin = first.admin
        customer = _budgeted_customer(admin)
        send(admin, customer["id"], 90, _recent())
        proc, port, _ = start(["--db", db], {"BILLING_ADMIN_KEY": admin.token, "BILLING_MAX_EVENT_AGE_DAYS": "0"})
        try:
            other = first.client(admin.token)
            other.port = port
            results = []
            barrier = threading.Barrier(2)

            def run(client):
                barrier.wait()
                results.append(evaluate(client)["fired"])

            threads = [threading.Thread(target=run, args=(c,)) for c in (first.client(admin.token), other)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sum(results) == 2, results
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    finally:
        first.stop()
    again = RunningServer(db)
    try:
        assert evaluate(again.admin)["fired"] == 0
        send(again.admin, customer["id"], 1, _recent())
        assert evaluate(again.admin)["fired"] == 0
        assert sorted(f["percent"] for f in firings(again.admin)) == [50, 80]
    finally:
        again.stop()


def _recent():
    return clock.now().replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _budgeted_customer(admin):
    create_meter(admin, key="api_calls")
    assert admin.post("/v1/plans", PLAN).status == 201
    customer = create_customer(admin, name="Two Processes", budget=BUDGET)
    start = clock.now().date().replace(day=1).isoformat()
    assert admin.post("/v1/subscriptions", {"customer_id": customer["id"], "plan": "calls",
                                            "start": start}).status == 201
    return customer


# -- who is evaluated ------------------------------------------------------------------------

def test_only_customers_whose_figures_may_move_are_evaluated(admin, billed, server):
    quiet = [create_customer(admin, name=f"Quiet {i}", budget=BUDGET)["id"] for i in range(5)]
    evaluate(admin)  # the new customers (budgets set) are looked at once
    assert evaluate(admin)["customers_evaluated"] == 0
    send(admin, billed["id"], 1, "2026-11-05T00:00:00Z")
    assert evaluate(admin)["customers_evaluated"] == 1
    assert evaluate(admin)["customers_evaluated"] == 0
    # a running session keeps its customer looked at; a budget change makes one
    resource = admin.post("/v1/resources", {"name": "Room", "capacity": 2, "price_per_minute": "0.50",
                                            "currency": "USD"}).json
    session = admin.post("/v1/sessions", {"resource_id": resource["id"], "customer_id": quiet[0]}).json
    assert admin.patch(f"/v1/customers/{quiet[1]}", {"budget": {"monthly": "5.00"}}).status == 200
    assert evaluate(admin)["customers_evaluated"] == 2
    assert evaluate(admin)["customers_evaluated"] == 1  # the session still runs
    pin("2026-11-10T12:30:00Z")
    assert admin.post(f"/v1/sessions/{session['id']}/stop", {}).status == 200
    assert evaluate(admin)["customers_evaluated"] == 1  # it ended since the last evaluation
    assert evaluate(admin)["customers_evaluated"] == 0


def test_a_crossing_is_noticed_by_the_next_scheduler_run(admin, billed):
    send(admin, billed["id"], 55, "2026-11-05T00:00:00Z")
    run = admin.post("/v1/jobs/run", {})
    assert run.status == 200, run
    assert run.json["details"]["alerts"] == {"customers_evaluated": 1, "fired": 1}
    assert [f["percent"] for f in firings(admin)] == [50]


# -- spikes -------------------------------------------------------------------------------

def test_a_spike_is_measured_in_local_days_across_a_dst_change(admin):
    """New York: 2 November 2025 has 25 hours. Days with usage among the 7
    before 3 November average 10; 31 on 3 November (local) is a spike, 30
    would not be; an event at 04:30Z on 3 November is still 2 November there."""
    create_meter(admin, key="api_calls")
    customer = create_customer(admin, name="Spiky", timezone="America/New_York")
    cid = customer["id"]
    pin("2025-11-03T20:00:00Z")
    for day, quantity in (("2025-10-28", 8), ("2025-10-30", 12), ("2025-11-01", 10)):
        send(admin, cid, quantity, f"{day}T15:00:00Z")
    send(admin, cid, 10, "2025-11-02T23:00:00Z")  # 2 Nov 18:00 local... and 04:30Z tomorrow is 2 Nov too
    send(admin, cid, 20, "2025-11-03T04:30:00Z")  # 2 Nov 23:30 local: 2 Nov has 30 now
    evaluate(admin)
    send(admin, cid, 30, "2025-11-03T14:00:00Z")  # 3 Nov: 30, not over 3 × 15 (the average with 2 Nov at 30)
    assert evaluate(admin)["fired"] == 0
    send(admin, cid, 16, "2025-11-03T15:00:00Z")  # 46 > 45
    assert evaluate(admin)["fired"] == 1
    spike = firings(admin)[0]
    assert (spike["type"], spike["meter"], spike["day"], spike["value"], spike["threshold"]) == (
        "usage_spike", "api_calls", "2025-11-03", "46", "15")
    assert spike["period_start"] == "2025-11-03T05:00:00Z"  # local midnight, EST
    send(admin, cid, 100, "2025-11-03T16:00:00Z")
    assert evaluate(admin)["fired"] == 0  # once per local day


def test_no_spike_without_history_or_below_the_minimum(admin):
    create_meter(admin, key="api_calls")
    fresh = create_customer(admin, name="Fresh")["id"]
    small = create_customer(admin, name="Small")["id"]
    pin("2026-11-10T20:00:00Z")
    send(admin, fresh, 500, "2026-11-10T10:00:00Z")  # no usage in the 7 days before: no spike
    send(admin, small, 1, "2026-11-08T10:00:00Z")
    send(admin, small, 9, "2026-11-10T10:00:00Z")  # 9 > 3 × 1, but under BILLING_SPIKE_MIN (10)
    assert evaluate(admin)["fired"] == 0
    send(admin, small, 1, "2026-11-10T11:00:00Z")  # 10: at the minimum
    assert evaluate(admin)["fired"] == 1


# -- delivery -------------------------------------------------------------------------------

def test_a_firing_notifies_signs_a_webhook_and_emails_the_billing_address(admin, billed, server):
    receiver = Receiver()
    try:
        hook = admin.post("/v1/webhooks", {"url": receiver.url(), "events": ["alert.triggered"]}).json
        send(admin, billed["id"], 55, "2026-11-05T00:00:00Z")
        assert evaluate(admin)["fired"] == 1
        assert server.app.dispatcher.run_once()["webhooks"]["delivered"] == 1
        request = receiver.requests[0]
        verify_signature(request, hook["secret"])
        payload = json.loads(request["body"])
        assert payload["type"] == "alert.triggered"
        assert payload["data"]["alert"]["percent"] == 50 and payload["data"]["alert"]["customer_id"] == billed["id"]
    finally:
        receiver.stop()
    outbox = glob.glob(os.path.join(server.app.config.data_dir, "outbox", "*alert*.eml"))
    assert len(outbox) == 1
    with open(outbox[0], "rb") as handle:
        message = BytesParser(policy=policy.default).parse(handle)
    assert message["To"] == "ap@budgeted.example"
    assert "50% of your budget reached" in message["Subject"]
    body = message.get_content()
    assert "55.00 USD" in body and "100.00 USD" in body


def _other(admin):
    other = create_customer(admin, name="Other Co", budget={"monthly": "1.00", "alert_at_percent": [100]})
    assert admin.post("/v1/subscriptions", {"customer_id": other["id"], "plan": "calls",
                                            "start": "2026-11-01"}).status == 201
    return other


def test_notifications_are_read_per_user_and_scoped_to_their_customer(admin, billed, server):
    other = _other(admin)
    send(admin, billed["id"], 55, "2026-11-05T00:00:00Z")
    send(admin, other["id"], 5, "2026-11-05T00:00:00Z")
    assert evaluate(admin)["fired"] == 2
    finance = _user(admin, server, "finance")
    tenant = _user(admin, server, "customer", customer_id=billed["id"])
    listed = finance.get("/v1/notifications?unread=true").json
    assert listed["unread_count"] == 2 and len(listed["data"]) == 2
    mine = tenant.get("/v1/notifications").json
    assert [n["customer_id"] for n in mine["data"]] == [billed["id"]] and mine["unread_count"] == 1
    theirs = next(n for n in listed["data"] if n["customer_id"] == other["id"])
    assert_error(tenant.post(f"/v1/notifications/{theirs['id']}/read", {}), 404, "not_found")
    read = tenant.post(f"/v1/notifications/{mine['data'][0]['id']}/read", {})
    assert read.status == 200 and read.json["read"] is True
    assert tenant.get("/v1/notifications?unread=true").json["data"] == []
    assert finance.get("/v1/notifications?unread=true").json["unread_count"] == 2  # read state is per user
    assert finance.post("/v1/notifications/read-all", {}).json == {"marked": 2}
    assert finance.get("/v1/notifications?unread=true").json["unread_count"] == 0
    later = _user(admin, server, "customer", customer_id=billed["id"])  # created after the firing
    assert later.get("/v1/notifications?unread=true").json["unread_count"] == 1
    key_view = admin.get("/v1/notifications").json["data"]
    assert {n["read"] for n in key_view} == {None}  # a key has no read state
    assert_error(admin.post("/v1/notifications/read-all", {}), 403, "forbidden")


def test_a_customer_sees_only_its_own_alerts_firings_and_notifications(admin, billed, server):
    other = _other(admin)
    theirs = admin.post("/v1/alerts", {"type": "usage", "customer_id": other["id"], "meter": "api_calls",
                                       "threshold": 1}).json
    mine = admin.post("/v1/alerts", {"type": "usage", "customer_id": billed["id"], "meter": "api_calls",
                                     "threshold": 1}).json
    send(admin, billed["id"], 5, "2026-11-05T00:00:00Z")
    send(admin, other["id"], 5, "2026-11-05T00:00:00Z")
    evaluate(admin)
    other_firing = firings(admin, customer_id=other["id"])[0]
    other_note = admin.get(f"/v1/notifications?customer_id={other['id']}").json["data"][0]
    for token in (make_key(server, customer_id=billed["id"]), _user(admin, server, "customer",
                                                                    customer_id=billed["id"]).token):
        tenant = server.client(token)
        assert [r["id"] for r in tenant.get("/v1/alerts").json["data"]] == [mine["id"]]
        assert {f["customer_id"] for f in firings(tenant)} == {billed["id"]}
        assert {n["customer_id"] for n in tenant.get("/v1/notifications").json["data"]} == {billed["id"]}
        for path in (f"/v1/alerts?customer_id={other['id']}", f"/v1/alerts/events?customer_id={other['id']}",
                     f"/v1/notifications?customer_id={other['id']}", f"/v1/alerts/budgets?customer_id={other['id']}"):
            assert_error(tenant.get(path), 404, "not_found")
        assert tenant.post(f"/v1/notifications/{other_note['id']}/read", {}).status in (403, 404)
        for method, path in (("DELETE", f"/v1/alerts/{theirs['id']}"), ("POST", "/v1/alerts/evaluate"),
                             ("POST", "/v1/alerts")):
            assert tenant.request(method, path, {}).status == 403
    assert other_firing["customer_id"] == other["id"]


def test_a_webhook_that_gives_up_notifies_staff_only(admin, billed, server):
    receiver = Receiver(default=500)
    try:
        admin.post("/v1/webhooks", {"url": receiver.url(), "events": ["alert.triggered"]})
        send(admin, billed["id"], 55, "2026-11-05T00:00:00Z")
        evaluate(admin)
        for _ in range(10):
            server.app.dispatcher.run_once()
            with server.app.db.transaction() as conn:  # make the next retry due now
                conn.execute("UPDATE webhook_deliveries SET next_attempt_at = 0 WHERE status = 'pending'")
    finally:
        receiver.stop()
    staff = [n for n in admin.get("/v1/notifications").json["data"] if n["kind"] == "webhook_failed"]
    assert len(staff) == 1 and staff[0]["customer_id"] is None and "gave up after 10 attempts" in staff[0]["message"]
    tenant = server.client(make_key(server, customer_id=billed["id"]))
    assert all(n["kind"] == "alert" for n in tenant.get("/v1/notifications").json["data"])


def test_storage_quota_notifies_at_80_and_100_percent_once_per_period(admin, server):
    pin("2026-11-10T12:00:00Z")
    tenant = create_customer(admin, name="Tenant", storage_quota_bytes=1000)
    key = make_key(server, customer_id=tenant["id"])
    client = server.client(key)
    assert client.request("PUT", "/v1/objects/a.bin", raw=b"x" * 700).status == 201
    assert evaluate(admin)["fired"] == 0
    assert client.request("PUT", "/v1/objects/b.bin", raw=b"x" * 150).status == 201
    assert evaluate(admin)["fired"] == 1
    assert client.request("DELETE", "/v1/objects/b.bin").status in (200, 204)
    assert client.request("PUT", "/v1/objects/b.bin", raw=b"x" * 150).status == 201
    assert evaluate(admin)["fired"] == 0  # 80 % already told this period
    assert client.request("PUT", "/v1/objects/c.bin", raw=b"x" * 150).status == 201
    assert evaluate(admin)["fired"] == 1
    quota = firings(admin, type="storage_quota")
    assert [f["percent"] for f in quota] == [100, 80]
    assert [n["title"] for n in client.get("/v1/notifications").json["data"]] == [
        "Storage 100% of quota: Tenant", "Storage 80% of quota: Tenant"]


def test_reading_alerts_and_notifications_never_writes(admin, billed, server):
    from tests.http.helpers import WriteCounter
    send(admin, billed["id"], 55, "2026-11-05T00:00:00Z")
    evaluate(admin)
    with WriteCounter(server) as writes:
        for path in ("/v1/alerts", "/v1/alerts/events", "/v1/alerts/budgets", "/v1/notifications?unread=true",
                     "/v1/analytics/overview"):
            assert admin.get(path).status == 200
    assert writes == []
    assert admin.get("/v1/analytics/overview").json["alerts_this_month"] == 1


def _user(admin, server, role, customer_id=None):
    email = f"{unique('u')}@example.com"
    body = {"email": email, "name": "Someone", "role": role, "password": "a-long-password-1"}
    if customer_id is not None:
        body["customer_id"] = customer_id
    assert admin.post("/v1/users", body).status == 201
    login = server.client().post("/v1/auth/login", {"email": email, "password": "a-long-password-1"})
    assert login.status == 200, login
    return server.client(login.json["token"])


def test_a_firing_appears_on_the_live_stream_of_staff_and_of_its_customer_only(admin, billed, server):
    from tests.http.test_stream import Stream
    other = _other(admin)
    staff = Stream(server.port, admin.token)
    mine = Stream(server.port, make_key(server, customer_id=billed["id"]))
    theirs = Stream(server.port, make_key(server, customer_id=other["id"]))
    try:
        send(admin, billed["id"], 55, "2026-11-05T00:00:00Z")
        assert evaluate(admin)["fired"] == 1
        for stream in (staff, mine):
            fired = stream.wait_for("alert.triggered")
            assert (fired["alert"]["customer_id"], fired["alert"]["percent"]) == (billed["id"], 50)
            stream.wait_for("notification.created")
        send(admin, other["id"], 5, "2026-11-05T00:00:00Z")
        assert evaluate(admin)["fired"] == 1
        staff.wait_for("alert.triggered", lambda d: d["alert"]["customer_id"] == other["id"])
        theirs.wait_for("alert.triggered")
        assert [d["alert"]["customer_id"] for d in mine.of("alert.triggered")] == [billed["id"]]
    finally:
        for stream in (staff, mine, theirs):
            stream.close()


def test_a_customers_own_spend_rule_never_fires_for_another_customer(admin, billed):
    """Both USD: the rule of one is not the rule of the other; a rule for
    every USD customer is everyone's."""
    other = _other(admin)
    own = admin.post("/v1/alerts", {"type": "spend", "customer_id": other["id"], "threshold": "10.00"}).json
    send(admin, billed["id"], 40, "2026-11-05T00:00:00Z")
    send(admin, other["id"], 40, "2026-11-05T00:00:00Z")
    evaluate(admin)
    fired = [(f["customer_id"], f["rule_id"]) for f in firings(admin, type="spend")]
    assert fired == [(other["id"], own["id"])]
    everyone = admin.post("/v1/alerts", {"type": "spend", "currency": "USD", "threshold": "30.00"}).json
    send(admin, billed["id"], 1, "2026-11-05T01:00:00Z")
    send(admin, other["id"], 1, "2026-11-05T01:00:00Z")
    evaluate(admin)
    fired = sorted((f["customer_id"], f["rule_id"]) for f in firings(admin, type="spend"))
    assert fired == sorted([(other["id"], own["id"]), (billed["id"], everyone["id"]), (other["id"], everyone["id"])])
