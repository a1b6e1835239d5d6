"""Analytics (§10): the overview, revenue and usage over all customers, in
the answer shapes §10 gives, checked by hand. Money is per currency."""

import sqlite3
from decimal import Decimal

import pytest

from billing import clock
from billing.api import revenue as revenue_api, revenue_cache
from billing.api.revenue_cache import BucketCache
from billing.domain import times
from billing.store import migrations
from tests.helpers import at
from tests.http.helpers import assert_validation, create_customer, create_meter


PLANS = {"USD": ("49.00", "0.01"), "JPY": ("5000", "1"), "KWD": ("15.000", "0.003")}


@pytest.fixture
def world(server, admin):
    """September 2025 for four customers on per-unit plans (base fee + calls):
    - Acme (USD, New York, 10 % tax): 1,000 calls → 49.00 + 10.00 = 59.00 + 5.90 tax = 64.90;
    - Tokyo KK (JPY, Tokyo): 1,000 calls → 5000 + 1000 = 6000;
    - Kuwait Co (KWD, Kuwait): 1,000 calls → 15.000 + 3.000 = 18.000 (voided);
    - Gulf Trading (KWD, Kuwait): the same 18.000, issued 2025-11-10;
    - Draft Ltd (USD): its draft is not revenue.
    Acme is issued 2025-11-03T04:30Z (2 Nov 23:30 in New York, the 25-hour DST
    day), Tokyo KK 2025-11-03T05:30Z (3 Nov 00:30 in New York)."""
    create_meter(admin, key="api_calls", group_by=["region"])
    for currency, (base, price) in PLANS.items():
        plan = {"code": f"p-{currency}", "name": currency, "currency": currency, "base_fee": base,
                "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": price}]}
        assert admin.post("/v1/plans", plan).status == 201
    people = {}
    for name, currency, zone, tax in (("Acme", "USD", "America/New_York", "10"), ("Tokyo KK", "JPY", "Asia/Tokyo", "0"),
                                      ("Kuwait Co", "KWD", "Asia/Kuwait", "0"), ("Gulf Trading", "KWD", "Asia/Kuwait", "0"),
                                      ("Draft Ltd", "USD", "UTC", "0")):
        customer = create_customer(admin, name=name, currency=currency, timezone=zone, tax_rate=tax)
        people[name] = customer["id"]
        assert admin.post("/v1/subscriptions", {"customer_id": customer["id"], "plan": f"p-{currency}",
                                                "start": "2025-09-01"}).status == 201
        region = "eu" if name == "Acme" else "ap"
        assert admin.post("/v1/events/batch", {"customer_id": customer["id"], "events": [
            {"id": f"{name}-{i}", "meter": "api_calls", "quantity": 100, "timestamp": f"2025-09-{10 + i}T12:00:00Z",
             "properties": {"region": region}} for i in range(10)]}).json["accepted"] == 10
    ids = admin.post("/v1/invoices/run", {"as_of": "2025-10-02T00:00:00Z"}).json["invoice_ids"]
    by_customer = {admin.get(f"/v1/invoices/{i}").json["customer_id"]: i for i in ids}
    for name, moment in (("Acme", "2025-11-03T04:30:00Z"), ("Tokyo KK", "2025-11-03T05:30:00Z"),
                         ("Kuwait Co", "2025-11-03T06:00:00Z"), ("Gulf Trading", "2025-11-10T08:00:00Z")):
        clock.pin(at(moment))
        assert admin.post(f"/v1/invoices/{by_customer[people[name]]}/finalize").status == 200
    assert admin.post(f"/v1/invoices/{by_customer[people['Kuwait Co']]}/void", {"reason": "test"}).status == 200
    clock.pin(at("2025-11-20T12:00:00Z"))
    totals = {name: admin.get(f"/v1/invoices/{by_customer[cid]}").json["total"] for name, cid in people.items()}
    assert totals == {"Acme": "64.90", "Tokyo KK": "6000", "Kuwait Co": "18.000", "Gulf Trading": "18.000",
                      "Draft Ltd": "59.00"}
    return people


def test_revenue_by_month_excludes_drafts_and_void_and_never_mixes_currencies(admin, world):
    reply = admin.get("/v1/analytics/revenue?from=2025-10-01&to=2026-01-01&interval=month")
    assert reply.status == 200, reply
    body = reply.json
    assert body["totals"] == {"JPY": "6000", "KWD": "18.000", "USD": "64.90"}  # JPY whole, KWD to 3 decimals
    assert [(b["start"], b["totals"]) for b in body["data"]] == [
        ("2025-10-01T00:00:00Z", {}), ("2025-11-01T00:00:00Z", {"JPY": "6000", "KWD": "18.000", "USD": "64.90"}),
        ("2025-12-01T00:00:00Z", {})]
    assert (body["interval"], body["basis"], body["timezone"]) == ("month", "issued", "UTC")


@pytest.mark.parametrize("group_by,expected", [
    ("customer", None),
    ("meter", [({"meter": "api_calls"}, {"JPY": "1000", "KWD": "3.000", "USD": "10.00"}),
               ({"type": "base_fee"}, {"JPY": "5000", "KWD": "15.000", "USD": "49.00"}), ({"type": "tax"}, {"USD": "5.90"})]),
    ("plan", [({"plan": "p-JPY"}, {"JPY": "6000"}), ({"plan": "p-KWD"}, {"KWD": "18.000"}),
              ({"plan": "p-USD"}, {"USD": "64.90"})]),
    ("resource", [({"type": "base_fee"}, {"JPY": "5000", "KWD": "15.000", "USD": "49.00"}),
                  ({"type": "tax"}, {"USD": "5.90"}), ({"type": "usage"}, {"JPY": "1000", "KWD": "3.000", "USD": "10.00"})]),
])
def test_groups_add_up_to_their_bucket(admin, world, group_by, expected):
    body = admin.get(f"/v1/analytics/revenue?from=2025-11-01&to=2025-12-01&group_by={group_by}").json
    bucket = body["data"][0]
    groups = [(g["group"], g["totals"]) for g in bucket["groups"]]
    if expected is None:
        expected = [({"customer_id": world["Acme"]}, {"USD": "64.90"}),
                    ({"customer_id": world["Tokyo KK"]}, {"JPY": "6000"}),
                    ({"customer_id": world["Gulf Trading"]}, {"KWD": "18.000"})]
    assert groups == expected
    summed = {}
    for _, totals in groups:
        for currency, amount in totals.items():
            summed[currency] = summed.get(currency, Decimal(0)) + Decimal(amount)
    assert {c: Decimal(v) for c, v in bucket["totals"].items()} == summed


def test_day_buckets_follow_the_timezone_asked_for_across_dst(admin, world):
    """New York's 2 November lasts 25 hours, from 04:00Z (EDT) to 05:00Z on
    the 3rd (EST): Acme (04:30Z on the 3rd) falls on the 2nd there, Tokyo KK
    (05:30Z) on the 3rd; in UTC both fall on the 3rd."""
    ny = admin.get("/v1/analytics/revenue?from=2025-11-02&to=2025-11-04&interval=day"
                   "&timezone=America/New_York").json
    assert [(b["start"], b["end"], b["totals"]) for b in ny["data"]] == [
        ("2025-11-02T04:00:00Z", "2025-11-03T05:00:00Z", {"USD": "64.90"}),
        ("2025-11-03T05:00:00Z", "2025-11-04T05:00:00Z", {"JPY": "6000"})]
    utc = admin.get("/v1/analytics/revenue?from=2025-11-02&to=2025-11-04&interval=day").json
    assert [b["totals"] for b in utc["data"]] == [{}, {"JPY": "6000", "USD": "64.90"}]


def test_period_basis_buckets_by_the_customers_own_period(admin, world):
    """Both invoices are for September as each customer lived it, whatever
    the timezone of the report."""
    for zone in ("UTC", "Pacific/Honolulu", "Asia/Tokyo"):
        body = admin.get(f"/v1/analytics/revenue?from=2025-08-01&to=2025-11-01&basis=period&timezone={zone}").json
        assert [b["totals"] for b in body["data"]] == [{}, {"JPY": "6000", "KWD": "18.000", "USD": "64.90"}, {}], zone


def test_overview(admin, world, server):
    body = admin.get("/v1/analytics/overview").json
    assert body["customers"] == 5 and body["active_subscriptions"] == 5
    assert body["revenue_this_month"] == {"JPY": "6000", "KWD": "18.000", "USD": "64.90"}  # issued in November
    assert body["outstanding"] == {"JPY": "6000", "KWD": "18.000", "USD": "64.90"}
    assert body["overdue"] == {}
    clock.pin(at("2025-12-20T12:00:00Z"))  # net 30 has passed
    body = admin.get("/v1/analytics/overview").json
    assert body["overdue"] == {"JPY": "6000", "KWD": "18.000", "USD": "64.90"} and body["revenue_this_month"] == {}
    clock.pin(at("2025-12-05T12:00:00Z"))  # Gulf Trading's is due on 10 December; the others on 3 December
    assert admin.get("/v1/analytics/overview").json["overdue"] == {"JPY": "6000", "USD": "64.90"}
    assert body["events_today"] == 0 and body["active_sessions"] == 0 and body["stored_bytes"] == 0


def test_usage_over_all_customers(admin, world):
    """5 customers × 10 events of 100 calls, one a day from 10 to 19 September."""
    body = admin.get("/v1/analytics/usage?meter=api_calls&from=2025-09-10&to=2025-09-12&interval=day").json
    assert body["value"] == 1000 and [b["value"] for b in body["data"]] == [500, 500]
    grouped = admin.get("/v1/analytics/usage?meter=api_calls&from=2025-09-01&to=2025-10-01&interval=month"
                        "&group_by=region").json
    assert grouped["data"][0]["groups"] == [{"group": {"region": "ap"}, "value": 4000},
                                            {"group": {"region": "eu"}, "value": 1000}]
    by_customer = admin.get("/v1/analytics/usage?meter=api_calls&from=2025-09-01&to=2025-10-01&interval=month"
                            "&group_by=customer").json
    assert [g["value"] for g in by_customer["data"][0]["groups"]] == [1000] * 5


def test_events_per_day(admin, world):
    """5 customers × one event a day from 10 to 19 September (12:00Z)."""
    body = admin.get("/v1/analytics/events?from=2025-09-09&to=2025-09-12&timezone=Asia/Tokyo").json
    assert [(d["start"], d["count"]) for d in body["data"]] == [
        ("2025-09-08T15:00:00Z", 0), ("2025-09-09T15:00:00Z", 5), ("2025-09-10T15:00:00Z", 5)]
    assert body["total"] == 10


def test_bad_arguments_are_400(admin, world):
    for query, field in (("interval=week", "interval"), ("group_by=planet", "group_by"), ("basis=paid", "basis"),
                         ("timezone=Mars/Base", "timezone"), ("from=2025-12-01&to=2025-11-01", "to"),
                         ("from=yesterday", "from")):
        assert_validation(admin.get(f"/v1/analytics/revenue?{query}"), field)
    assert_validation(admin.get("/v1/analytics/usage"), "meter")
    assert_validation(admin.get("/v1/analytics/usage?meter=api_calls&group_by=nope"), "group_by")


def test_customers_cannot_read_analytics(server, world):
    from tests.harness import make_key
    tenant = server.client(make_key(server, customer_id=world["Acme"]))
    for path in ("/v1/analytics/overview", "/v1/analytics/revenue", "/v1/analytics/usage?meter=api_calls",
                 "/v1/analytics/events"):
        assert tenant.get(path).status == 403


def test_a_kept_revenue_answer_follows_every_change_of_the_revenue(admin, world, server):
    """Answers are kept until an invoice enters or leaves issued/paid: a void,
    an issue and a payment each give the next answer its new figures."""
    path = "/v1/analytics/revenue?from=2025-11-01&to=2025-12-01&group_by=customer"
    first = admin.get(path).json
    assert admin.get(path).raw == admin.get(path).raw  # kept
    acme = admin.get(f"/v1/invoices?customer_id={world['Acme']}").json["data"][0]
    assert admin.post(f"/v1/invoices/{acme['id']}/void", {"reason": "wrong"}).status == 200
    after_void = admin.get(path).json
    assert "USD" in first["totals"] and "USD" not in after_void["totals"]
    reissued = admin.post(f"/v1/invoices/{acme['id']}/reissue").json
    clock.pin(at("2025-11-21T09:00:00Z"))
    assert admin.post(f"/v1/invoices/{reissued['id']}/finalize").status == 200
    assert admin.get(path).json["totals"]["USD"] == "64.90"
    assert admin.post(f"/v1/invoices/{reissued['id']}/payments", {"amount": "64.90", "method": "wire"}).status == 201
    assert admin.get(path).json["totals"]["USD"] == "64.90"  # paid is still revenue


def _sums_counter(monkeypatch):
    """Count the buckets summed again (the server runs in this process)."""
    summed = []
    real = revenue_api._bucket_sums

    def counting(conn, basis, group_by, low, high):
        summed.append((basis, low))
        return real(conn, basis, group_by, low, high)

    monkeypatch.setattr(revenue_api, "_bucket_sums", counting)
    return summed


def _fresh(server, admin, path):
    """The answer computed from nothing (an empty cache)."""
    kept = server.app.revenue_parts
    server.app.revenue_parts = BucketCache()
    try:
        return admin.get(path).json
    finally:
        server.app.revenue_parts = kept


@pytest.mark.parametrize("basis, touched", [("issued", "2025-11-01T00:00:00Z"), ("period", "2025-09-01")])
def test_only_the_buckets_a_change_touches_are_summed_again(admin, world, server, monkeypatch, basis, touched):
    """Voiding Gulf Trading's invoice (period September, issued 10 November)
    sums again only the bucket it falls in (November by issue date,
    September by period); every other bucket is reused, and the answer is
    the one computed from nothing."""
    path = f"/v1/analytics/revenue?from=2025-09-01&to=2026-01-01&group_by=customer&basis={basis}"
    summed = _sums_counter(monkeypatch)
    before = admin.get(path).json
    assert len(summed) == 4
    summed.clear()
    assert admin.get(path).json == before and summed == []
    gulf = admin.get(f"/v1/invoices?customer_id={world['Gulf Trading']}").json["data"][0]
    assert admin.post(f"/v1/invoices/{gulf['id']}/void", {"reason": "test"}).status == 200
    after = admin.get(path).json
    low = times.to_micros(at(touched)) if basis == "issued" else touched
    assert summed == [(basis, low)]
    assert after["totals"].get("KWD") is None and before["totals"]["KWD"] == "18.000"
    assert after == _fresh(server, admin, path)
    summed.clear()
    assert admin.get(path).json == after and summed == []  # the reused buckets now hold at the new version


def test_other_ranges_and_groupings_are_kept_apart(admin, world, server):
    """Each (timezone, interval, basis, group_by, bucket) is its own part."""
    paths = [f"/v1/analytics/revenue?from=2025-11-01&to=2025-12-01{extra}" for extra in
             ("", "&group_by=customer", "&group_by=meter", "&interval=day&timezone=America/New_York",
              "&interval=day&timezone=Asia/Tokyo", "&basis=period")]
    first = {path: admin.get(path).json for path in paths}
    for path in paths:
        assert admin.get(path).json == first[path] == _fresh(server, admin, path)


def _log_db():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrations.migrate(conn)
    conn.execute("PRAGMA foreign_keys = OFF")
    return conn


def _issue(conn, issued_at, period="2025-09-01", status="issued"):
    conn.execute("INSERT INTO invoices (customer_id, status, currency, period_start, period_end, period_start_date,"
                 " period_end_date, subtotal, discount, tax, total, credits_applied, amount_due, created_at,"
                 " updated_at, issued_at) VALUES (1, ?, 'USD', 0, 1, ?, '2025-10-01', 100, 0, 0, 100, 0, 100, 0, 0, ?)",
                 (status, period, issued_at))


def test_the_change_log_names_what_each_version_touched_and_keeps_the_last_thousand():
    conn = _log_db()
    version = revenue_cache.current_version
    start = version(conn)
    _issue(conn, 500, status="draft")  # not revenue: no change
    assert version(conn) == start
    conn.execute("UPDATE invoices SET status = 'issued' WHERE id = 1")
    conn.execute("UPDATE invoices SET status = 'paid' WHERE id = 1")  # still revenue: no change
    conn.execute("UPDATE invoices SET status = 'void' WHERE id = 1")
    assert conn.execute("SELECT version, issued_at, period_start_date FROM revenue_touched").fetchall() == [
        (start + 1, 500, "2025-09-01"), (start + 2, 500, "2025-09-01")]
    for n in range(1001):
        _issue(conn, 1000 + n)
    assert version(conn) == start + 1003
    assert conn.execute("SELECT count(*), min(version), max(version) FROM revenue_touched").fetchone() == (
        1000, start + 4, start + 1003)


def test_a_kept_bucket_holds_only_while_the_log_says_nothing_touched_it():
    conn = _log_db()
    base = revenue_cache.current_version(conn)
    part = revenue_cache.Part(base, {"USD": 100}, "{}")
    bounds = {0: (1000, 2000, "issued_at"), 1: (2000, 3000, "issued_at"), 2: ("2025-09-01", "2025-10-01",
                                                                             "period_start_date")}
    for issued_at, period in ((2500, "2025-10-01"), (2999, "2025-10-15")):
        _issue(conn, issued_at, period)
    now = base + 2
    valid = revenue_cache.still_valid(conn, {0: part, 1: part, 2: part}, now, bounds.get)
    assert set(valid) == {0, 2} and all(p.version == now for p in valid.values())
    _issue(conn, 1500, "2025-09-30")
    valid = revenue_cache.still_valid(conn, {0: part, 1: part, 2: part}, now + 1, bounds.get)
    assert valid == {}
    conn.execute("DELETE FROM revenue_touched WHERE version = ?", (base + 1,))  # the log no longer reaches back
    bounds[3] = (5000, 6000, "issued_at")  # never touched, but its part predates the log
    fresh_enough = revenue_cache.Part(now, {}, "{}")
    valid = revenue_cache.still_valid(conn, {3: part, 1: fresh_enough}, now + 1, bounds.get)
    assert set(valid) == {1} and valid[1].version == now + 1
