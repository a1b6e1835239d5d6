"""The invoice run reads the usage of many periods at once (§7, §13): what it
stores on each draft is what rating that one period alone gives — every
aggregation, customers in timezones whose midnights fall on the hour, the half
hour and the quarter hour, events on both sides of each period's edges, and
more customers than fit in one chunk."""

import sqlite3
from decimal import Decimal

import pytest

from billing.api import invoice_run
from billing.domain import times
from tests.http.helpers import pin, table_count

AGGREGATIONS = ("sum", "count", "max", "min", "avg", "latest", "unique_count")
ZONES = ("UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "Australia/Adelaide")
# per-unit charges at 1.00 a unit, so every amount shows its quantity
PLAN = {"code": "all", "name": "Every aggregation", "currency": "USD", "base_fee": "0",
        "charges": [{"meter": f"m_{a}", "model": "per_unit", "unit_price": "1"} for a in AGGREGATIONS]}
AS_OF = "2025-10-02T00:00:00Z"


def _catalog(admin, customers):
    pin("2025-08-20T00:00:00Z")
    for a in AGGREGATIONS:
        body = {"key": f"m_{a}", "name": f"Meter {a}", "aggregation": a}
        if a == "unique_count":
            body["value_property"] = "user"
        assert admin.post("/v1/meters", body).status == 201
    assert admin.post("/v1/plans", PLAN).status == 201
    ids = []
    for n in range(customers):
        zone = ZONES[n % len(ZONES)]
        cid = admin.post("/v1/customers", {"name": f"C{n}", "email": f"c{n}@example.com", "timezone": zone,
                                           "tax_rate": "0"}).json["id"]
        assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "all", "start": "2025-09-01"}).status == 201
        ids.append((cid, zone))
    return ids


def _events(n, customer_id, zone):
    """Events of every meter around the customer's local September: just
    before its first instant, on it, inside (two in one bucket), just before
    its end and on it."""
    start = times.to_micros(times.local_midnight(times.parse_date("2025-09-01"), times.zone_or_error(zone)))
    end = times.to_micros(times.local_midnight(times.parse_date("2025-10-01"), times.zone_or_error(zone)))
    offsets = [start - 1_000_000, start, start + 86_400_000_000 + 60_000_000, start + 86_400_000_000 + 120_000_000,
               end - 1_000_000, end]
    events = []
    for i, ts in enumerate(offsets):
        for a in AGGREGATIONS:
            event = {"id": f"e{n}-{i}-{a}", "customer_id": customer_id, "meter": f"m_{a}",
                     "quantity": Decimal(f"{(n * 7 + i * 3) % 11 + 1}.{i}5"), "timestamp": times.format_micros(ts)}
            if a == "unique_count":
                event["properties"] = {"user": f"u{(n + i) % 4}"}
            events.append(event)
    return events


def _stored_usage(server):
    """{invoice id: [(meter, quantity text, amount)]} of the usage lines as the run stored them."""
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        found = {}
        for invoice_id, meter, quantity, amount in conn.execute(
                "SELECT invoice_id, meter, quantity, amount FROM invoice_lines WHERE type = 'usage'"
                " ORDER BY invoice_id, position"):
            found.setdefault(invoice_id, []).append((meter, quantity, amount))
        return found
    finally:
        conn.close()


def _cents(text):
    whole, _, cents = text.partition(".")
    return int(whole) * 100 + int(cents or 0)


@pytest.mark.parametrize("chunk", [5, 12])
def test_the_run_stores_what_rating_each_period_alone_gives(server, admin, chunk):
    """Chunks of 5 customers in 5 zones (no two periods alike), or all 12 in
    one chunk, where customers of one zone ask the chunk's read for the same
    range."""
    ids = _catalog(admin, 12)
    pin("2025-10-01T12:00:00Z")  # after every event
    for n, (cid, zone) in enumerate(ids):
        assert admin.post("/v1/events/batch", {"events": _events(n, cid, zone)}).status == 200
        if n == len(ids) // 2:  # the first seven customers' buckets settled (and their whole days), the rest hot
            assert server.app.settler.settle_rollups() > 0
    assert table_count(server, "rollups_hot") and table_count(server, "rollup_days")
    pin("2025-10-05T00:00:00Z")
    created = invoice_run.run_as_of(server.app, times.parse_instant(AS_OF), chunk=chunk)
    assert len(created) == len(ids)
    stored = _stored_usage(server)
    for invoice_id in created:
        # a draft's GET rates its period alone, from the events stored now
        shown = admin.get(f"/v1/invoices/{invoice_id}").json
        usage = [(line["meter"], line["quantity"], _cents(line["amount"])) for line in shown["lines"]
                 if line["type"] == "usage"]
        assert [(meter, str(quantity), amount) for meter, quantity, amount in usage] == \
            [(meter, quantity, amount) for meter, quantity, amount in stored[invoice_id]]
        assert [meter for meter, _, _ in usage] == [f"m_{a}" for a in AGGREGATIONS]
        assert all(quantity for _, quantity, _ in usage)  # every meter has events in the period


def test_the_figures_of_one_period_by_hand(server, admin):
    """Customer 0 (UTC), n = 0: the events inside September are i = 1, 2, 3, 4
    with quantities 4.15, 7.25, 10.35, 2.45 (users u1, u2, u3, u0)."""
    ids = _catalog(admin, 1)
    pin("2025-10-01T12:00:00Z")  # after every event
    assert admin.post("/v1/events/batch", {"events": _events(0, *ids[0])}).status == 200
    pin("2025-10-05T00:00:00Z")
    [invoice_id] = invoice_run.run_as_of(server.app, times.parse_instant(AS_OF))
    stored = {meter: (quantity, amount) for meter, quantity, amount in _stored_usage(server)[invoice_id]}
    assert stored == {"m_sum": ("24.2", 2420), "m_count": ("4", 400), "m_max": ("10.35", 1035),
                      "m_min": ("2.45", 245), "m_avg": ("6.05", 605), "m_latest": ("2.45", 245),
                      "m_unique_count": ("4", 400)}
