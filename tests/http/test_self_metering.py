"""Self-metering (§10): requests authenticated as a customer are counted in
memory per (customer, route pattern, status class, minute) and written as
`api_requests` and `api_request_ms` events by each flush; nothing is written
per request. The clock is pinned; nothing sleeps."""

import sqlite3
import threading
from decimal import Decimal

from billing import clock
from tests.harness import make_key
from tests.helpers import at
from tests.http.helpers import WriteCounter, create_customer


def settle(server, n):
    """Each request is counted just after its response is sent: wait (briefly)
    until the last one's count is in."""
    import time
    deadline = time.monotonic() + 5
    while server.app.requests.pending() < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.app.requests.pending() == n


def request_events(server, customer_id, meter="api_requests"):
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        return conn.execute(
            "SELECT e.event_id, e.ts, e.quantity, e.properties FROM events e JOIN meters m ON m.id = e.meter_id"
            " WHERE m.key = ? AND e.customer_id = ? ORDER BY e.seq", (meter, customer_id)).fetchall()
    finally:
        conn.close()


def usage(client, customer_id, meter, group_by=None):
    query = f"from=2025-09-01&to=2025-10-01&meter={meter}" + (f"&group_by={group_by}" if group_by else "")
    reply = client.get(f"/v1/customers/{customer_id}/usage?{query}")
    assert reply.status == 200, reply
    return reply.json["usage"][0]


def test_customer_requests_are_counted_per_route_and_status_class(server):
    customer = create_customer(server.admin)
    cid = customer["id"]
    tenant = server.client(make_key(server, customer_id=cid))
    clock.pin(at("2025-09-10T10:00:05Z"))
    for _ in range(3):
        assert tenant.get(f"/v1/customers/{cid}").status == 200
    assert tenant.get("/v1/customers/999999").status == 404
    assert tenant.get("/v1/plans").status == 403
    assert server.admin.get(f"/v1/customers/{cid}").status == 200  # staff: not the customer's traffic
    settle(server, 5)
    assert server.app.flusher.flush()["RequestMeter"] == 5
    groups = {g["group"]["route"]: g["value"] for g in usage(server.admin, cid, "api_requests", "route")["groups"]}
    assert groups == {"/v1/customers/{customer_id}": 4, "/v1/plans": 1}  # patterns, never raw paths
    by_status = {g["group"]["status"]: g["value"] for g in usage(server.admin, cid, "api_requests", "status")["groups"]}
    assert by_status == {"2xx": 3, "4xx": 2}
    events = request_events(server, cid)
    assert {e[1] for e in events} == {int(at("2025-09-10T10:00:00Z").timestamp()) * 10 ** 6}  # the minute
    assert all(e[0].startswith("self-") for e in events)
    ms = usage(server.admin, cid, "api_request_ms")["value"]
    assert Decimal(str(ms)) > 0 and Decimal(str(ms)).as_tuple().exponent >= -3  # whole microseconds


def test_two_flushes_within_one_minute_both_count(server):
    """3 requests at 10:00:10, a flush, 2 more at 10:00:40, a flush: 5 in
    the 10:00 minute, from two events with different ids."""
    customer = create_customer(server.admin)
    cid = customer["id"]
    tenant = server.client(make_key(server, customer_id=cid))
    clock.pin(at("2025-09-10T10:00:10Z"))
    for _ in range(3):
        assert tenant.get(f"/v1/customers/{cid}/usage").status == 200
    settle(server, 3)
    server.app.flusher.flush()
    clock.pin(at("2025-09-10T10:00:40Z"))
    for _ in range(2):
        assert tenant.get(f"/v1/customers/{cid}/usage").status == 200
    settle(server, 2)
    server.app.flusher.flush()
    events = request_events(server, cid)
    assert [e[2] for e in events] == [3_000_000, 2_000_000] and len({e[0] for e in events}) == 2
    assert usage(server.admin, cid, "api_requests")["value"] == 5


def test_no_request_adds_a_write_transaction(server):
    customer = create_customer(server.admin)
    tenant = server.client(make_key(server, customer_id=customer["id"]))
    with WriteCounter(server) as writes:
        for _ in range(20):
            assert tenant.get(f"/v1/customers/{customer['id']}").status == 200
        settle(server, 20)
    assert writes == []


def test_a_plan_bills_a_customer_keys_traffic(server):
    """Seed-style "0.01 per 1,000 requests, 10,000 free" as a package charge:
    11,001 requests in September → 1,001 billable → ceil(1,001 / 1,000) = 2
    packages × 0.01 = 0.02 on the September invoice."""
    admin = server.admin
    plan = {"code": "api", "name": "API", "currency": "USD", "charges": [
        {"meter": "api_requests", "model": "package", "package_size": 1000, "package_price": "0.01",
         "free_units": 10000}]}
    assert admin.post("/v1/plans", plan).status == 201
    customer = create_customer(admin)
    cid = customer["id"]
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "api", "start": "2025-09-01"}).status == 201
    key = make_key(server, customer_id=cid)
    clock.pin(at("2025-09-20T12:00:00Z"))

    def hammer(n):
        client = server.client(key)
        for _ in range(n):
            assert client.get(f"/v1/customers/{cid}").status == 200
        client.close()
    threads = [threading.Thread(target=hammer, args=(n,)) for n in (5501, 5500)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    settle(server, 11001)
    server.app.flusher.flush()
    clock.pin(at("2025-10-01T00:00:00Z"))
    ids = admin.post("/v1/invoices/run", {"as_of": "2025-10-01T00:00:00Z"}).json["invoice_ids"]
    invoice = admin.get(f"/v1/invoices/{ids[0]}").json
    line = [l for l in invoice["lines"] if l["meter"] == "api_requests"][0]
    assert (Decimal(str(line["quantity"])), line["amount"], invoice["total"]) == (Decimal(11001), "0.02", "0.02")
