"""Storage metering (§8) through the real server: storage_api_calls per
object request, storage_gb_days closed per local day by the scheduler (with
catch-up) and counted live until then. The clock is pinned; nothing sleeps."""

import sqlite3
from decimal import Decimal

import pytest

from billing import clock
from tests.harness import make_key
from tests.helpers import at
from tests.http.helpers import WriteCounter, create_customer

MB10 = 10 ** 7  # 10 MB objects: every figure below is 1/100 of the same figure for 1 GB


def put(client, key, size, customer_id=None, fill=b"\0"):
    query = f"?customer_id={customer_id}" if customer_id else ""
    reply = client.request("PUT", f"/v1/objects/{key}{query}", raw=fill * size,
                           headers={"Content-Type": "application/octet-stream"})
    assert reply.status in (200, 201), reply
    return reply


def run_jobs(admin):
    reply = admin.post("/v1/jobs/run")
    assert reply.status == 200 and reply.json["outcome"] == "ok", reply
    return reply.json["details"]


def day_events(server, customer_id):
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        return conn.execute(
            "SELECT e.event_id, e.ts, e.quantity FROM events e JOIN meters m ON m.id = e.meter_id"
            " WHERE m.key = 'storage_gb_days' AND e.customer_id = ? ORDER BY e.ts", (customer_id,)).fetchall()
    finally:
        conn.close()


def call_events(server, customer_id):
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        return [r[0] for r in conn.execute(
            "SELECT json_extract(e.properties, '$.operation') FROM events e JOIN meters m ON m.id = e.meter_id"
            " WHERE m.key = 'storage_api_calls' AND e.customer_id = ? ORDER BY e.seq", (customer_id,))]
    finally:
        conn.close()


def gb_days_usage(client, customer_id, start, end, window=None):
    query = f"from={start}&to={end}&meter=storage_gb_days" + (f"&window={window}" if window else "")
    reply = client.get(f"/v1/customers/{customer_id}/usage?{query}")
    assert reply.status == 200, reply
    return reply.json["usage"][0]


@pytest.fixture
def tenant(server):
    customer = create_customer(server.admin, name="Tenant", timezone="America/New_York")
    return customer, server.client(make_key(server, customer_id=customer["id"]))


# -- GB-days -------------------------------------------------------------------

def test_36_hours_from_local_midnight_close_into_two_day_events(server, tenant):
    """10 MB from 2025-09-10 00:00 New York (04:00Z), deleted 36 h later:
    day 1: 10⁷ B × 86,400 s ÷ (10⁹ × 86,400) = 0.010000 GB-day;
    day 2: 10⁷ × 43,200 ÷ (10⁹ × 86,400) = 0.005000; total 0.015 (1 GB: 1.5)."""
    customer, client = tenant
    clock.pin(at("2025-09-10T04:00:00Z"))
    put(client, "report.pdf", MB10)
    clock.pin(at("2025-09-11T16:00:00Z"))
    assert client.delete("/v1/objects/report.pdf").status == 200
    clock.pin(at("2025-09-13T05:00:00Z"))
    assert run_jobs(server.admin)["storage_days_closed"] == 2
    cid = customer["id"]
    assert day_events(server, cid) == [
        (f"storage-{cid}-2025-09-10", 1757476800 * 10 ** 6, 10_000),
        (f"storage-{cid}-2025-09-11", 1757563200 * 10 ** 6, 5_000)]
    usage = gb_days_usage(client, cid, "2025-09-01", "2025-10-01")
    assert Decimal(str(usage["value"])) == Decimal("0.015")


def test_a_25_hour_dst_day(server, tenant):
    """2025-11-02 in New York lasts 25 h: 10⁷ × 90,000 ÷ (10⁹ × 86,400) =
    0.0104166… → 0.010417 (1 GB: 1.041667); the 24-hour day before: 0.010000."""
    customer, client = tenant
    clock.pin(at("2025-11-01T04:00:00Z"))  # local midnight, EDT
    put(client, "kept.bin", MB10)
    clock.pin(at("2025-11-03T06:00:00Z"))  # 01:00 EST on the 3rd
    run_jobs(server.admin)
    assert [q for _, _, q in day_events(server, customer["id"])] == [10_000, 10_417]


def test_replaced_by_twice_the_size_at_noon(server, tenant):
    """10 MB 00:00–12:00, then 20 MB 12:00–24:00 (New York):
    (10⁷ × 43,200 + 2×10⁷ × 43,200) ÷ (10⁹ × 86,400) = 0.005 + 0.010 = 0.015."""
    customer, client = tenant
    clock.pin(at("2025-09-10T04:00:00Z"))
    assert put(client, "a.bin", MB10).status == 201
    clock.pin(at("2025-09-10T16:00:00Z"))
    assert put(client, "a.bin", 2 * MB10).status == 200
    clock.pin(at("2025-09-11T04:00:00Z"))
    run_jobs(server.admin)
    assert [q for _, _, q in day_events(server, customer["id"])] == [15_000]


def test_upload_and_delete_within_the_same_second(server, tenant):
    """Uploaded at 10:00:00.100, deleted at 10:00:00.900: instants count in whole
    seconds, so 0 byte-seconds and no event for the day."""
    customer, client = tenant
    clock.pin(at("2025-09-10T14:00:00.100000Z"))
    put(client, "blink.bin", MB10)
    clock.pin(at("2025-09-10T14:00:00.900000Z"))
    assert client.delete("/v1/objects/blink.bin").status == 200
    clock.pin(at("2025-09-12T14:00:00Z"))
    run_jobs(server.admin)
    assert day_events(server, customer["id"]) == []
    assert gb_days_usage(client, customer["id"], "2025-09-01", "2025-10-01")["value"] == 0


def test_catch_up_after_downtime_is_idempotent(server, tenant):
    """Five days pass without a scheduler run: one run writes all five days
    (0.010000 each), a second run writes nothing new; the ids are
    storage-<customer>-<local date>."""
    customer, client = tenant
    clock.pin(at("2025-09-10T04:00:00Z"))
    put(client, "kept.bin", MB10)
    clock.pin(at("2025-09-15T04:00:00Z"))
    assert run_jobs(server.admin)["storage_days_closed"] == 5
    assert run_jobs(server.admin)["storage_days_closed"] == 0
    events = day_events(server, customer["id"])
    assert [e[0] for e in events] == [f"storage-{customer['id']}-2025-09-{d}" for d in range(10, 15)]
    assert {e[2] for e in events} == {10_000}


def test_the_open_day_counts_live_in_usage_and_the_upcoming_invoice(server, tenant):
    """10 MB since 00:00 local, now 06:00: 10⁷ × 21,600 ÷ (10⁹ × 86,400) =
    0.0025 GB-day so far, in usage (day windows too) and on the upcoming
    invoice; two closed days plus the open one add up."""
    customer, client = tenant
    cid = customer["id"]
    plan = {"code": "st", "name": "Storage", "currency": "USD",
            "charges": [{"meter": "storage_gb_days", "model": "per_unit", "unit_price": "10"}]}
    assert server.admin.post("/v1/plans", plan).status == 201
    assert server.admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "st", "start": "2025-09-01"}).status == 201
    clock.pin(at("2025-09-10T04:00:00Z"))
    put(client, "kept.bin", MB10)
    clock.pin(at("2025-09-10T10:00:00Z"))
    usage = gb_days_usage(client, cid, "2025-09-10", "2025-09-12", window="day")
    assert Decimal(str(usage["value"])) == Decimal("0.0025")
    assert [Decimal(str(w["value"])) for w in usage["windows"]] == [Decimal("0.0025"), 0]
    clock.pin(at("2025-09-12T10:00:00Z"))  # two days ended, not closed yet: counted live too
    usage = gb_days_usage(client, cid, "2025-09-01", "2025-10-01")
    assert Decimal(str(usage["value"])) == Decimal("0.0225")
    upcoming = client.get(f"/v1/customers/{cid}/upcoming-invoice").json
    line = [l for l in upcoming["lines"] if l["meter"] == "storage_gb_days"][0]
    assert Decimal(str(line["quantity"])) == Decimal("0.0225")
    assert line["amount"] == "0.23"  # 0.0225 × 10 = 0.225 → 0.23 (half-up)
    run_jobs(server.admin)  # closing the days changes no figure
    assert Decimal(str(gb_days_usage(client, cid, "2025-09-01", "2025-10-01")["value"])) == Decimal("0.0225")
    assert len(day_events(server, cid)) == 2


# -- API calls -----------------------------------------------------------------

def test_every_tenant_object_request_is_one_call_with_its_operation(server, tenant):
    """put, get, head, list, delete — and 4xx outcomes (404, 400, 409) too.
    Writes are recorded with the change; the rest after a flush."""
    customer, client = tenant
    cid = customer["id"]
    assert server.admin.patch(f"/v1/customers/{cid}", {"storage_quota_bytes": 100}).status == 200
    put(client, "a.txt", 10)
    assert call_events(server, cid) == ["put"]  # in the upload's own transaction
    assert client.get("/v1/objects/a.txt").status == 200
    assert client.request("HEAD", "/v1/objects/a.txt").status == 200
    assert client.get("/v1/objects").status == 200
    assert client.get("/v1/objects/missing").status == 404
    assert client.get("/v1/objects/%2e%2e/x").status == 400
    assert client.request("PUT", "/v1/objects/big", raw=b"x" * 200).status == 409
    assert call_events(server, cid) == ["put"]  # reads and refusals wait for the flush
    assert client.delete("/v1/objects/a.txt").status == 200
    assert call_events(server, cid) == ["put", "delete"]
    assert run_jobs(server.admin)["storage_calls_written"] == 6
    assert sorted(call_events(server, cid)) == sorted(["put", "delete", "get", "head", "list", "get", "get", "put"])
    usage = client.get(f"/v1/customers/{cid}/usage?meter=storage_api_calls&group_by=operation").json["usage"][0]
    assert usage["value"] == 8
    assert {g["group"]["operation"]: g["value"] for g in usage["groups"]} == \
        {"delete": 1, "get": 3, "head": 1, "list": 1, "put": 2}


def test_server_errors_and_staff_requests_are_not_the_tenants_calls(server, tenant):
    customer, client = tenant
    cid = customer["id"]
    put(server.admin, "by-staff.txt", 5, customer_id=cid)
    assert server.admin.get(f"/v1/objects?customer_id={cid}").status == 200

    class Broken:  # the disk fails: a 5xx is not billed
        def new_upload(self):
            raise OSError("disk on fire")
    files, server.app.files = server.app.files, Broken()
    try:
        assert client.request("PUT", "/v1/objects/x", raw=b"abc").status == 500
    finally:
        server.app.files = files
    run_jobs(server.admin)
    assert call_events(server, cid) == []


def test_a_get_never_writes(server, tenant):
    """Reads are counted in memory: no write transaction during GET/HEAD/list."""
    customer, client = tenant
    put(client, "a.txt", 10)
    with WriteCounter(server) as writes:
        for _ in range(5):
            assert client.get("/v1/objects/a.txt").status == 200
            assert client.request("HEAD", "/v1/objects/a.txt").status == 200
            assert client.get("/v1/objects?prefix=a").status == 200
            assert client.get("/v1/objects/nope").status == 404
    assert writes == []
    assert server.app.storage.pending() == 20
    run_jobs(server.admin)
    assert len(call_events(server, customer["id"])) == 21


def test_read_counts_are_written_in_the_background_and_at_a_clean_stop(tmp_path):
    """The flusher thread writes counted reads by itself (every 5 s; 50 ms
    here), and closing the server writes what is left."""
    import time

    from tests.harness import RunningServer, temp_db
    server = RunningServer(temp_db(tmp_path))
    try:
        customer = create_customer(server.admin)
        client = server.client(make_key(server, customer_id=customer["id"]))
        server.app.flusher.interval = 0.05
        server.app.flusher.start()
        assert client.get("/v1/objects").status == 200
        deadline = time.monotonic() + 10
        while call_events(server, customer["id"]) != ["list"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert call_events(server, customer["id"]) == ["list"]
        server.app.flusher.stop()  # from now on only the close writes
        assert client.get("/v1/objects/nothing").status == 404
        assert call_events(server, customer["id"]) == ["list"]
    finally:
        server.stop()
    assert call_events(server, customer["id"]) == ["list", "get"]


# -- billing: the BillFlow plan ------------------------------------------------

GB = 10 ** 9
BILLFLOW = {"code": "billflow", "name": "BillFlow storage", "currency": "USD", "charges": [
    {"meter": "storage_gb_days", "model": "per_unit", "unit_price": "0.25", "free_units_per_day": 1},
    {"meter": "storage_api_calls", "model": "per_unit", "unit_price": "0.001", "free_units": 1000}]}


def zeros(size, chunk=4 * 1024 * 1024):
    block = b"\0" * chunk
    while size > 0:
        yield block[:min(chunk, size)]
        size -= chunk


def put_big(client, key, size):
    reply = client.request("PUT", f"/v1/objects/{key}", raw=zeros(size),
                           headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
    assert reply.status in (200, 201), reply


def heads(client, key, n):
    for _ in range(n):
        assert client.request("HEAD", f"/v1/objects/{key}").status == 200


def invoice_for(admin, customer_id, month):
    invoices = admin.get(f"/v1/invoices?customer_id={customer_id}&period={month}").json["data"]
    assert len(invoices) == 1, invoices
    return admin.get(f"/v1/invoices/{invoices[0]['id']}").json


@pytest.fixture
def big_server(tmp_path):
    from tests.harness import RunningServer, temp_db
    running = RunningServer(temp_db(tmp_path), env={"BILLING_MAX_EVENT_AGE_DAYS": "0",
                                                    "BILLING_MAX_OBJECT_BYTES": str(3 * GB)})
    yield running
    running.stop()


def test_billflow_plan_one_gb_free_each_day_and_1000_calls_free(big_server):
    """BillFlow: 1 GB-day free per local day, then 0.25 per GB-day; 1,000 calls
    free, then 0.001 per call.
    - September (30 days): exactly 1 GB kept all month = 30 GB-days, 30 free;
      1 PUT + 999 HEADs = 1,000 calls, 1,000 free → 0.00.
    - October (31 days): 1 GB all month = 31 GB-days, 31 free; no calls → 0.00.
    - December (31 days): replaced at 1 Dec 00:00 by 2 GB = 62 GB-days, 31
      free → 31 × 0.25 = 7.75; 1 PUT + 1,499 HEADs = 1,500 calls, 500 billable
      × 0.001 = 0.50; total 8.25."""
    server = big_server
    admin = server.admin
    customer = create_customer(admin, name="BillFlow tenant")
    cid = customer["id"]
    client = server.client(make_key(server, customer_id=cid))
    assert admin.post("/v1/plans", BILLFLOW).status == 201
    clock.pin(at("2025-09-01T00:00:00Z"))
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "billflow", "start": "2025-09-01"}).status == 201
    put_big(client, "data.bin", GB)
    heads(client, "data.bin", 999)
    for month_end in ("2025-10-01", "2025-11-01", "2025-12-01"):
        clock.pin(at(month_end + "T00:00:00Z"))
        run_jobs(admin)
    put_big(client, "data.bin", 2 * GB)
    heads(client, "data.bin", 1499)
    clock.pin(at("2026-01-01T00:00:00Z"))
    run_jobs(admin)

    def lines(invoice):
        return {l["meter"]: (Decimal(str(l["quantity"])), l["amount"]) for l in invoice["lines"] if l["meter"]}
    september = invoice_for(admin, cid, "2025-09")
    assert lines(september) == {"storage_gb_days": (Decimal(30), "0.00"), "storage_api_calls": (Decimal(1000), "0.00")}
    assert september["total"] == "0.00"
    october = invoice_for(admin, cid, "2025-10")
    assert lines(october)["storage_gb_days"] == (Decimal(31), "0.00") and october["total"] == "0.00"
    december = invoice_for(admin, cid, "2025-12")
    assert lines(december) == {"storage_gb_days": (Decimal(62), "7.75"), "storage_api_calls": (Decimal(1500), "0.50")}
    assert december["total"] == "8.25"
    storage_line = [l for l in december["lines"] if l["meter"] == "storage_gb_days"][0]
    assert "31 free (1/day × 31 days)" in storage_line["description"]
