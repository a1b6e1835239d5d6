#!/usr/bin/env python3
"""Analytics benchmark (SPEC §10, §12): GET /v1/analytics/overview and
GET /v1/analytics/revenue over HTTP (one keep-alive client) against a database
holding 10,000 customers, 13 months of invoices and N events.

    python3 bench/analytics.py                    # 10 M events (the database is built once, cached)
    python3 bench/analytics.py --events 1000000   # 1 M

Standard library only; run by hand (pytest does not collect it). All traffic
goes to a server on 127.0.0.1.

What it does:

  build    (once, cached in --cache-dir, keyed by the schema, this file's
           catalogue, the UTC day, --events and --event-days) a database: the
           real server (`server.py`, fresh file) runs the migrations and creates
           5 sum meters, 15 plans (basic / growth / pro in USD, EUR, GBP, JPY
           and KWD with 2, 3 and 4 usage charges; pro has a minimum commitment)
           and 2 USD resources through the API. Then, with sqlite3 directly:
           10,000 customers in 8 timezones (Kathmandu +05:45 and Kolkata +05:30
           included) and 5 currencies (50 % USD, 20 % EUR, 10 % each GBP, JPY,
           KWD), one calendar subscription each, starting 13 months ago; one
           invoice per customer and local month for the 13 months before this
           one, as the invoice run and the lifecycle would leave them: lines
           base_fee, one usage line per plan charge (quantity × unit price,
           rounded half-up once), a resource line for some USD customers, the
           minimum-commitment top-up, a 10 % discount, tax; subtotal, discount,
           tax, total (= the sum of the lines), credits_applied, amount_due;
           issued a day or so after the period's local end (approval customers
           later), numbers INV-000001… gapless in issue order; older invoices
           paid (payments rows), a few overdue or partially paid; some customers'
           last invoice still pending approval or a held draft; some customers'
           invoice of 3 months ago voided and re-issued as revision 1. Finally
           --events events (uuid4-shaped ids, customers and meters uniform,
           timestamps rising over the last --event-days days up to a minute
           before the build) bulk-loaded the way bench/ingest.py loads its
           preload (indexes dropped, one big transaction per million rows,
           indexes re-created from the schema's own SQL). The build checks every
           invoice's total against its lines before caching.
  run      A fresh copy; the real server (`server.py --quiet --no-scheduler`).
           After a warm-up, one keep-alive client sends each query
           sequentially (up to --requests times or --budget seconds each) and
           the latency of each answer (request sent → body read) is recorded:
           the overview, revenue by customer over the last 12 months (the §10
           dashboard's range), by meter, basis=period, and without groups, and
           the dashboard's events chart (the last 30 days, per day and per hour).
           Also the very first by-customer answer after the start (nothing
           kept yet), and the first answer after each of 20 invoices enters
           the revenue (an approval issues an invoice waiting for it).
  check    For 3 customers (one with a voided and re-issued invoice, one with a
           pending approval, one with tax, discount and resource lines), each
           month's revenue in the group_by=customer answer equals the sum of
           those invoices' totals computed directly in SQL over month bounds
           computed here with zoneinfo; also each bucket's and the range's
           totals per currency, basis=period per customer, and the overview's
           revenue_this_month and outstanding.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import socket
import sqlite3
import sys
import time
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from ingest import ADMIN_KEY, UUID_SQL, ServerProcess, api, copy_db, log, percentile, remove_db  # noqa: E402

from billing.api.events import id_hash  # noqa: E402  (the server's own dedup key)
from billing.store import migrations, rollups  # noqa: E402

UTC = timezone.utc
CUSTOMERS = 10_000
MONTHS = 13  # invoiced local months before the current one
# (key, name, unit, USD price per unit, quantity range)
METERS = [
    ("api_calls", "API calls", "call", "0.0004", (10_000, 2_000_000)),
    ("requests", "Requests", "request", "0.0002", (10_000, 1_000_000)),
    ("cpu_seconds", "CPU time", "second", "0.00005", (1_000, 5_000_000)),
    ("storage_gb_hours", "Storage", "GB-hour", "0.0002", (100, 500_000)),
    ("data_transfer_gb", "Data transfer", "GB", "0.08", (1, 5_000)),
]
# currency: (minor digits, factor from USD)
CURRENCIES = {"USD": (2, "1"), "EUR": (2, "0.9"), "GBP": (2, "0.8"), "JPY": (0, "150"), "KWD": (3, "0.3")}
# customer i: CURRENCY_CYCLE[i % 10], ZONES[i % 16], TIERS[i % 3]
CURRENCY_CYCLE = ["USD"] * 5 + ["EUR"] * 2 + ["GBP", "JPY", "KWD"]
ZONES = ["UTC"] * 6 + ["America/New_York"] * 2 + ["Europe/Berlin"] * 2 + [
    "America/Los_Angeles", "Asia/Tokyo", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Sydney",
    "Europe/London"]
# tier: (USD base fee, USD minimum commitment, meters charged)
TIERS = {
    "basic": ("29", "0", ["api_calls", "data_transfer_gb"]),
    "growth": ("99", "0", ["api_calls", "requests", "storage_gb_hours"]),
    "pro": ("299", "1500", ["api_calls", "requests", "cpu_seconds", "storage_gb_hours"]),
}
TIER_CYCLE = ["basic", "growth", "pro"]
RESOURCES = [("gpu-a100", "0.50"), ("meeting-room", "0.10")]
TAXES = {"EUR": "19", "GBP": "20"}  # everyone in these currencies; others: i % 7 == 3 pays 8.25 %
SEED = 20261129


def money_text(usd_text, currency):
    """A USD amount converted to `currency`, with its minor digits (plan API form)."""
    digits, factor = CURRENCIES[currency]
    value = (Decimal(usd_text) * Decimal(factor)).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)
    return str(value)


def minor(text, currency):
    return int(Decimal(text).scaleb(CURRENCIES[currency][0]))


def plan_bodies():
    out = []
    for currency, (_, factor) in CURRENCIES.items():
        for tier, (base, commitment, meters) in TIERS.items():
            body = {"code": f"{tier}-{currency.lower()}", "name": f"{tier.title()} ({currency})",
                    "currency": currency, "interval": "month", "base_fee": money_text(base, currency),
                    "charges": [{"meter": m, "model": "per_unit",
                                 "unit_price": str((Decimal(price) * Decimal(factor)).normalize())}
                                for m, _, _, price, _ in METERS if m in meters]}
            if commitment != "0":
                body["minimum_commitment"] = money_text(commitment, currency)
            out.append(body)
    return out


def customer_profile(i):
    currency = CURRENCY_CYCLE[i % len(CURRENCY_CYCLE)]
    tax = TAXES.get(currency) or ("8.25" if i % 7 == 3 else "0")
    return {"currency": currency, "timezone": ZONES[i % len(ZONES)], "tier": TIER_CYCLE[i % 3],
            "tax_rate": tax, "coupon": i % 11 == 4, "credit": i % 23 == 5,
            "resource": currency == "USD" and i % 9 == 0,
            "approval": i % 47 == 7,          # last invoice pending approval; the others approved late
            "held": i % 97 == 3,              # last invoice a draft on hold (rejected)
            "voided": i % 37 == 11,           # the invoice of 3 months ago voided, re-issued as revision 1
            "overdue": i % 33 == 1, "partial": i % 33 == 2, "net_terms": 14 if i % 4 == 0 else 30}


# -- time --------------------------------------------------------------------------

def us(dt):
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def local_midnight_us(day, zone_name):
    return us(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone_name)).astimezone(UTC))


def add_months(day, n):
    y, m = divmod(day.month - 1 + n, 12)
    return date(day.year + y, m + 1, 1)


def this_month(now, zone_name):
    return now.astimezone(ZoneInfo(zone_name)).date().replace(day=1)


def rfc3339(micros):
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- build -------------------------------------------------------------------------

def cache_paths(cache_dir, events, event_days, day):
    schema = hashlib.sha256(repr(migrations.MIGRATIONS).encode()).hexdigest()[:10]
    catalogue = hashlib.sha256(json.dumps([CUSTOMERS, MONTHS, METERS, CURRENCIES, CURRENCY_CYCLE, ZONES, TIERS,
                                           RESOURCES, TAXES, SEED, 2]).encode()).hexdigest()[:8]
    base = os.path.join(cache_dir, f"analytics-{day}-{events}e-{event_days}d-{schema}-{catalogue}")
    return base + ".db", base + ".json"


def build(cache_dir, events, event_days, rebuild=False):
    os.makedirs(cache_dir, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    db_path, meta_path = cache_paths(cache_dir, events, event_days, now.date().isoformat())
    if not rebuild and os.path.exists(db_path) and os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        log(f"build: using cached {db_path} ({os.path.getsize(db_path) / 1e6:.0f} MB,"
            f" built in {meta['build_seconds']['total']} s)")
        meta["cached"] = True
        return db_path, meta
    tmp = db_path + ".building"
    remove_db(tmp)
    started = time.perf_counter()
    phases = {}

    # 1. the schema (the server's migrations), meters, plans and resources through the API
    t = time.perf_counter()
    server = ServerProcess(tmp, os.path.join(cache_dir, "server-analytics-setup.log"))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        for key, name, unit, _, _ in METERS:
            expect(*api(conn, "POST", "/v1/meters", {"key": key, "name": name, "unit": unit,
                                                     "aggregation": "sum"}), 201, "meter")
        for body in plan_bodies():
            expect(*api(conn, "POST", "/v1/plans", body), 201, "plan")
        for name, price in RESOURCES:
            expect(*api(conn, "POST", "/v1/resources", {"name": name, "capacity": 4, "currency": "USD",
                                                        "price_per_minute": price}), 201, "resource")
        conn.close()
    finally:
        server.stop()
    phases["api_setup"] = round(time.perf_counter() - t, 1)

    db = sqlite3.connect(tmp, isolation_level=None)
    db.create_function("id_hash", 2, id_hash, deterministic=True)
    db.execute("PRAGMA journal_mode = DELETE")
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -1048576")
    db.execute("PRAGMA threads = 2")

    # 2. customers, subscriptions, invoices, lines, payments, credits
    t = time.perf_counter()
    counts = fill_billing(db, now)
    phases["billing_rows"] = round(time.perf_counter() - t, 1)
    log(f"build: {counts['invoices']:,} invoices, {counts['lines']:,} lines in {phases['billing_rows']} s")

    # 3. events
    t = time.perf_counter()
    fill_events(db, events, event_days, now)
    phases["events"] = round(time.perf_counter() - t, 1)

    # 4. invariants
    bad = db.execute("SELECT count(*) FROM invoices i WHERE total != (SELECT coalesce(sum(amount), 0)"
                     " FROM invoice_lines l WHERE l.invoice_id = i.id)").fetchone()[0]
    bad += db.execute("SELECT count(*) FROM invoices WHERE subtotal - discount + tax != total"
                      " OR amount_due != total - credits_applied").fetchone()[0]
    bad += db.execute("SELECT count(*) FROM invoices WHERE (number IS NULL) != (issued_at IS NULL)").fetchone()[0]
    numbers = db.execute("SELECT count(*), max(number) FROM invoices WHERE number IS NOT NULL").fetchone()
    if bad or numbers[1] != f"INV-{numbers[0]:06d}":
        raise RuntimeError(f"built invoices break an invariant: {bad} bad rows, numbers {numbers}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("ANALYZE")  # what `PRAGMA optimize` would leave on a long-lived database
    db.close()
    os.replace(tmp, db_path)
    phases["total"] = round(time.perf_counter() - started, 1)
    meta = {"events": events, "event_days": event_days, "built_at": now.isoformat(), "counts": counts,
            "build_seconds": phases}
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    log(f"build: {db_path} ({os.path.getsize(db_path) / 1e6:.0f} MB) in {phases['total']} s {phases}")
    meta["cached"] = False
    return db_path, meta


def expect(status, body, wanted, what):
    if status != wanted:
        raise RuntimeError(f"{what}: HTTP {status} {body}")
    return body


def fill_billing(db, now):
    rng = random.Random(SEED)
    now_us = us(now)
    meters = {key: (name, price) for key, name, _, price, _ in METERS}
    qty_range = {key: rng_ for key, _, _, _, rng_ in METERS}
    plans = {}
    for pid, code, currency, base_fee, commitment, charges in db.execute(
            "SELECT id, code, currency, base_fee, minimum_commitment, charges FROM plans"):
        plans[code] = (pid, base_fee, commitment, [(c["meter"], Decimal(c["unit_price"])) for c in json.loads(charges)])
    resources = {name: (rid, Decimal(price)) for rid, name, price in
                 db.execute("SELECT id, name, price_per_minute FROM resources")}
    bounds = {}  # (zone, month) -> local midnight µs

    def midnight(zone, day):
        key = (zone, day)
        if key not in bounds:
            bounds[key] = local_midnight_us(day, zone)
        return bounds[key]

    customers, subscriptions, invoices, credit_rows = [], [], [], []
    for i in range(CUSTOMERS):
        cid = i + 1
        p = customer_profile(i)
        zone, currency = p["timezone"], p["currency"]
        current = this_month(now, zone)
        first = add_months(current, -MONTHS)
        created = midnight(zone, first) - 7 * 86400 * 10**6 + i * 1000
        customers.append((cid, f"an-{i}", f"Analytics customer {i}", f"an{i}@example.com", zone, currency,
                          f"billing{i}@example.com", p["tax_rate"], p["net_terms"], int(p["approval"]),
                          created, created))
        code = f"{p['tier']}-{currency.lower()}"
        pid, base_fee, commitment, charges = plans[code]
        subscriptions.append((cid, cid, pid, first.isoformat(), first.isoformat(), "BENCH10" if p["coupon"] else None,
                              created, created))
        credit = minor("25", currency) if p["credit"] else 0
        if credit:
            credit_rows.append((cid, credit, currency, "bench prepaid", None, "bench", created))
        for k in range(MONTHS):
            start_day = add_months(first, k)
            end_day = add_months(first, k + 1)
            start_us, end_us = midnight(zone, start_day), midnight(zone, end_day)
            last = k == MONTHS - 1
            lines = invoice_lines(rng, p, currency, base_fee, commitment, charges, meters, qty_range, resources)
            inv = {"customer_id": cid, "subscription_id": cid, "currency": currency, "period_start": start_us,
                   "period_end": end_us, "start_date": start_day.isoformat(), "end_date": end_day.isoformat(),
                   "created_at": end_us + rng.randint(60, 3600) * 10**6, "revision": 0, "hold": 0,
                   "void_reason": None, "voided_at": None, "amount_paid": 0}
            totals(inv, lines)
            if last and p["approval"]:
                inv.update(status="pending_approval", issued_at=None)
            elif last and p["held"]:
                inv.update(status="draft", issued_at=None, hold=1)
            else:
                delay = (1 + rng.randint(1, 3) * (1 if p["approval"] else 0)) * 86400 + rng.randint(60, 7200)
                inv["issued_at"] = inv["created_at"] + delay * 10**6
                if inv["issued_at"] > now_us - 60 * 10**6:
                    inv.update(status="pending_approval", issued_at=None)
            if inv.get("issued_at") is not None:
                inv["credits_applied"] = min(credit, inv["total"])
                credit -= inv["credits_applied"]
                inv["amount_due"] = inv["total"] - inv["credits_applied"]
                inv["due_at"] = inv["issued_at"] + p["net_terms"] * 86400 * 10**6
                if p["voided"] and k == MONTHS - 4:
                    voided_at = inv["issued_at"] + 3 * 86400 * 10**6
                    inv.update(status="void", void_reason="Billed on the wrong plan", voided_at=voided_at)
                    invoices.append((inv, lines))
                    lines = [dict(line, amount=line["amount"] * 9 // 10) if line["type"] == "usage" else line
                             for line in lines if line["type"] not in ("discount", "tax")]
                    inv = dict(inv, revision=1, void_reason=None, voided_at=None, created_at=voided_at,
                               issued_at=voided_at + 3600 * 10**6, due_at=voided_at + 3600 * 10**6
                               + p["net_terms"] * 86400 * 10**6)
                    totals(inv, lines, p)
                    inv["credits_applied"], inv["amount_due"] = 0, inv["total"]
                settle(rng, inv, p, now_us)
            else:
                inv.update(credits_applied=0, amount_due=inv["total"], due_at=None)
            invoices.append((inv, lines))

    # ids in creation order, numbers in issue order (gapless; a voided invoice keeps its number)
    invoices.sort(key=lambda il: (il[0]["created_at"], il[0]["customer_id"]))
    issued = sorted((il[0] for il in invoices if il[0].get("issued_at") is not None),
                    key=lambda inv: (inv["issued_at"], inv["customer_id"]))
    for n, inv in enumerate(issued, 1):
        inv["number"] = f"INV-{n:06d}"
    invoice_rows, line_rows, payment_rows = [], [], []
    for invoice_id, (inv, lines) in enumerate(invoices, 1):
        inv["id"] = invoice_id
        updated = inv.get("voided_at") or inv.get("paid_at") or inv.get("issued_at") or inv["created_at"]
        invoice_rows.append((invoice_id, inv.get("number"), inv["customer_id"], inv["subscription_id"], inv["status"],
                             inv.get("payment_status", "unpaid"), inv["currency"], inv["period_start"],
                             inv["period_end"], inv["start_date"], inv["end_date"], inv["revision"],
                             inv["subtotal"], inv["discount"], inv["tax"], inv["total"], inv["credits_applied"],
                             inv["amount_due"], inv["amount_paid"], inv.get("issued_at"), inv.get("due_at"),
                             inv["created_at"], updated, inv["hold"], inv["void_reason"], inv["voided_at"]))
        for position, line in enumerate(lines):
            line_rows.append((invoice_id, position, line["type"], line["description"], line["meter"],
                              line["quantity"], line["unit_price"], line["amount"], line.get("resource_id")))
        if inv["amount_paid"]:
            payment_rows.append((invoice_id, inv["amount_paid"], inv["currency"], "bank_transfer",
                                 f"PAY-{invoice_id}", "bench", inv["paid_at"]))
        if inv["credits_applied"]:
            credit_rows.append((inv["customer_id"], -inv["credits_applied"], inv["currency"],
                                f"Applied to {inv['number']}", invoice_id, "bench", inv["issued_at"]))

    db.execute("BEGIN")
    db.executemany("INSERT INTO customers (id, external_id, name, email, timezone, currency, billing_email,"
                   " tax_rate, net_terms_days, requires_approval, created_at, updated_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", customers)
    db.execute("INSERT OR IGNORE INTO coupons (code, name, percent_off, duration, created_at)"
               " VALUES ('BENCH10', '10 % off', '10', 'forever', ?)", (now_us,))
    db.executemany("INSERT INTO subscriptions (id, customer_id, plan_id, status, start_date, billing_anchor,"
                   " anchor_date, overrides, coupon, created_at, updated_at)"
                   " VALUES (?, ?, ?, 'active', ?, 'calendar', ?, '{}', ?, ?, ?)", subscriptions)
    db.executemany("INSERT INTO invoices (id, number, customer_id, subscription_id, status, payment_status, currency,"
                   " period_start, period_end, period_start_date, period_end_date, revision, subtotal, discount,"
                   " tax, total, credits_applied, amount_due, amount_paid, issued_at, due_at, created_at,"
                   " updated_at, hold, void_reason, voided_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   invoice_rows)
    db.executemany("INSERT INTO invoice_lines (invoice_id, position, type, description, meter, quantity,"
                   " unit_price, amount, resource_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", line_rows)
    db.executemany("INSERT INTO payments (invoice_id, amount, currency, method, reference, created_by, created_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)", payment_rows)
    db.executemany("INSERT INTO credit_entries (customer_id, amount, currency, reason, invoice_id, created_by,"
                   " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", credit_rows)
    db.execute("UPDATE counters SET value = ? WHERE name = 'invoice_number'", (len(issued),))
    db.execute("COMMIT")
    by_status = dict(db.execute("SELECT status, count(*) FROM invoices GROUP BY status"))
    return {"customers": len(customers), "invoices": len(invoice_rows), "lines": len(line_rows),
            "payments": len(payment_rows), "by_status": by_status}


def round_half_up(value):
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def invoice_lines(rng, p, currency, base_fee, commitment, charges, meters, qty_range, resources):
    """Lines as billing.domain.invoicing.build lays them out (amounts in minor units)."""
    scale = Decimal(10) ** CURRENCIES[currency][0]
    lines = [{"type": "base_fee", "description": "Base fee", "meter": None, "quantity": "1",
              "unit_price": str(Decimal(base_fee) / scale), "amount": base_fee}]
    for meter, price in charges:
        lo, hi = qty_range[meter]
        quantity = int(lo * (hi / lo) ** rng.random())  # log-uniform
        lines.append({"type": "usage", "description": f"{meters[meter][0]} (per unit)", "meter": meter,
                      "quantity": str(quantity), "unit_price": str(price),
                      "amount": round_half_up(quantity * price * scale)})
    if p["resource"]:
        name, (rid, price) = rng.choice(sorted(resources.items()))
        minutes = rng.randint(30, 6000)
        lines.append({"type": "resource", "description": f"{name}: {minutes} min", "meter": None,
                      "quantity": str(minutes), "unit_price": str(price), "amount": round_half_up(minutes * price * scale),
                      "resource_id": rid})
    counted = sum(line["amount"] for line in lines)
    if commitment and counted < commitment:
        lines.append({"type": "minimum", "description": "Minimum commitment top-up", "meter": None,
                      "quantity": None, "unit_price": str(Decimal(commitment) / scale),
                      "amount": commitment - counted})
    subtotal = sum(line["amount"] for line in lines)
    discount = round_half_up(Decimal(subtotal) / 10) if p["coupon"] else 0
    if discount:
        lines.append({"type": "discount", "description": "Discount", "meter": None, "quantity": None,
                      "unit_price": None, "amount": -discount})
    tax = round_half_up(Decimal(subtotal - discount) * Decimal(p["tax_rate"]) / 100)
    if tax:
        lines.append({"type": "tax", "description": f"Tax ({p['tax_rate']}%)", "meter": None, "quantity": None,
                      "unit_price": None, "amount": tax})
    return lines


def totals(inv, lines, p=None):
    """subtotal / discount / tax / total from the lines (re-adding discount and tax when `p` is given)."""
    if p is not None:
        subtotal = sum(line["amount"] for line in lines)
        discount = round_half_up(Decimal(subtotal) / 10) if p["coupon"] else 0
        if discount:
            lines.append({"type": "discount", "description": "Discount", "meter": None, "quantity": None,
                          "unit_price": None, "amount": -discount})
        tax = round_half_up(Decimal(subtotal - discount) * Decimal(p["tax_rate"]) / 100)
        if tax:
            lines.append({"type": "tax", "description": f"Tax ({p['tax_rate']}%)", "meter": None,
                          "quantity": None, "unit_price": None, "amount": tax})
    inv["subtotal"] = sum(line["amount"] for line in lines if line["type"] not in ("discount", "tax"))
    inv["discount"] = -sum(line["amount"] for line in lines if line["type"] == "discount")
    inv["tax"] = sum(line["amount"] for line in lines if line["type"] == "tax")
    inv["total"] = sum(line["amount"] for line in lines)


def settle(rng, inv, p, now_us):
    """Status and payment of an issued invoice: paid in full once old enough (a few overdue
    or partially paid), 40 % of the recent ones paid already."""
    inv["status"], inv["payment_status"] = "issued", "unpaid"
    if inv["amount_due"] == 0:
        inv.update(status="paid", payment_status="paid", paid_at=inv["issued_at"])
        return
    age_days = (now_us - inv["issued_at"]) / 86400e6
    if age_days > 40 and not (p["overdue"] and age_days < 100):
        paid = inv["amount_due"] // 2 if p["partial"] and age_days < 100 else inv["amount_due"]
    elif age_days <= 40 and rng.random() < 0.4:
        paid = inv["amount_due"]
    else:
        paid = 0
    if paid:
        paid_at = min(now_us - 60 * 10**6, inv["issued_at"] + rng.randint(1, 25) * 86400 * 10**6)
        inv.update(amount_paid=paid, paid_at=paid_at)
        if paid == inv["amount_due"]:
            inv.update(status="paid", payment_status="paid")
        else:
            inv["payment_status"] = "partially_paid"


def fill_events(db, events, event_days, now):
    meter_ids = sorted(i for (i,) in db.execute(
        f"SELECT id FROM meters WHERE key IN ({', '.join('?' * len(METERS))})", [m[0] for m in METERS]))
    if meter_ids != list(range(meter_ids[0], meter_ids[0] + len(METERS))):
        raise RuntimeError(f"meter ids are not contiguous: {meter_ids}")
    indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                         " AND tbl_name = 'events' AND sql IS NOT NULL").fetchall()
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')
    end_us = us(now) - 60 * 10**6
    start_us = end_us - event_days * 86400 * 10**6
    step = max(1, (end_us - start_us) // max(1, events))
    # as bench/ingest.py: uuid4-shaped ids, customers and meters uniform, timestamps
    # rising with insertion order (+ jitter), quantities in micros
    load_sql = f"""
        WITH RECURSIVE c(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM c WHERE x < ?),
        gen AS MATERIALIZED (
          SELECT 1 + abs(random()) % {CUSTOMERS} AS cust,
                 {UUID_SQL} AS eid,
                 {meter_ids[0]} + abs(random()) % {len(meter_ids)} AS meter,
                 min({start_us} + x * {step} + abs(random()) % {step}, {end_us}) AS ts,
                 (1 + abs(random()) % 1000) * 1000000 AS q,
                 '{{"region":"' || (CASE abs(random()) % 3 WHEN 0 THEN 'eu-west'
                                    WHEN 1 THEN 'us-east' ELSE 'ap-south' END) || '"}}' AS props
          FROM c)
        INSERT INTO events (customer_id, event_id, meter_id, ts, quantity, value, matched,
                            properties, received_at, id_hash)
        SELECT cust, eid, meter, ts, q, q, 1, props, ts + 1000000, id_hash(cust, eid) FROM gen"""
    started = time.perf_counter()
    done = 0
    while done < events:
        n = min(1_000_000, events - done)
        db.execute("BEGIN")
        db.execute(load_sql, (done, done + n - 1))
        db.execute("COMMIT")
        done += n
        log(f"build: {done:,}/{events:,} events ({time.perf_counter() - started:.0f} s)")
    for name, sql in indexes:
        t = time.perf_counter()
        db.execute(sql)
        log(f"build: index {name} in {time.perf_counter() - t:.1f} s")
    rollups.rebuild_derived(db)  # rollups, spans and dedup index of the bulk-loaded events


# -- run ---------------------------------------------------------------------------

def revenue_path(**params):
    return "/v1/analytics/revenue?" + urlencode(params)


def queries(now):
    first = add_months(now.date().replace(day=1), -11).isoformat()  # UTC (the default timezone)
    to = add_months(now.date().replace(day=1), 1).isoformat()
    base = {"from": first, "to": to, "interval": "month"}
    return [
        ("overview", "/v1/analytics/overview", 50),
        ("revenue by customer", revenue_path(**base, group_by="customer"), 200),
        ("revenue by meter", revenue_path(**base, group_by="meter"), None),
        ("revenue by customer, basis=period", revenue_path(**base, group_by="customer", basis="period"), None),
        ("revenue, no groups", revenue_path(**base), None),
        # the dashboard's events chart: the last 30 local days (the default range), per day and per hour
        ("events per day, last 30 days", "/v1/analytics/events?interval=day", 50),
        ("events per hour, last 30 days, Asia/Kathmandu", "/v1/analytics/events?interval=hour&timezone=Asia/Kathmandu",
         None),
    ]


class Client:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def post(self, path, body):
        self.conn.request("POST", path, body=json.dumps(body), headers={**self.headers,
                                                                        "Content-Type": "application/json"})
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {resp.status} {payload[:300]!r}")
        return json.loads(payload)

    def get(self, path):
        t = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        elapsed = time.perf_counter() - t
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status} {payload[:300]!r}")
        if resp.getheader("Connection", "").lower() == "close":
            raise RuntimeError("the server closed the keep-alive connection")
        return elapsed, payload


def phase_run(db_path, meta, work_dir, requests, budget, warmup):
    copy = copy_db(db_path, work_dir, "bench-analytics.db")
    built_at = datetime.fromisoformat(meta["built_at"])
    out = {"queries": []}
    try:
        server = ServerProcess(copy, os.path.join(work_dir, "server-analytics.log"))
        try:
            out["rss_idle_mb"] = server.status()["VmRSS"] / 1024
            client = Client(server.port)
            by_customer = queries(built_at)[1][1]
            # the first answer after start: nothing kept yet, every bucket summed
            elapsed, payload = client.get(by_customer)
            out["queries"].append(one_shot("revenue by customer, first after start", by_customer, [elapsed],
                                           len(payload), server))
            answers = {}
            for name, path, target in queries(built_at):
                warm = time.perf_counter()
                for _ in range(warmup):  # a slow query gets fewer warm-up requests
                    client.get(path)
                    if time.perf_counter() - warm > 3:
                        break
                latencies, sizes = [], []
                cpu = server.cpu_seconds()
                t0 = time.perf_counter()
                while len(latencies) < requests and (time.perf_counter() - t0 < budget or len(latencies) < 5):
                    elapsed, payload = client.get(path)
                    latencies.append(elapsed)
                    sizes.append(len(payload))
                wall = time.perf_counter() - t0
                answers[name] = json.loads(payload)
                rss = server.status()
                out["queries"].append({
                    "name": name, "path": path, "target_ms": target, "n": len(latencies),
                    "p50_ms": percentile(latencies, 50) * 1000, "p95_ms": percentile(latencies, 95) * 1000,
                    "max_ms": max(latencies) * 1000, "bytes": sizes[-1],
                    "server_cpu_per_req_ms": (server.cpu_seconds() - cpu) / len(latencies) * 1000,
                    "rss_mb": rss["VmRSS"] / 1024, "wall": wall})
                log(f"{name}: n={len(latencies)} p50 {out['queries'][-1]['p50_ms']:.1f} ms"
                    f" p95 {out['queries'][-1]['p95_ms']:.1f} ms")
            out["queries"].append(after_changes(client, server, by_customer))
            for name, path, _ in queries(built_at):  # the checks below read what the changes left
                answers[name] = json.loads(client.get(path)[1])
            client.conn.close()
            end = server.status()
            out["rss_end_mb"], out["rss_peak_mb"] = end["VmRSS"] / 1024, end["VmHWM"] / 1024
            out["cmd"] = " ".join(server.cmd)
        finally:
            server.stop()
        out["checks"] = check(copy, answers, built_at)
    finally:
        remove_db(copy)
    return out


def one_shot(name, path, latencies, size, server, target=None):
    rss = server.status()
    return {"name": name, "path": path, "target_ms": target, "n": len(latencies),
            "p50_ms": percentile(latencies, 50) * 1000, "p95_ms": percentile(latencies, 95) * 1000,
            "max_ms": max(latencies) * 1000, "bytes": size, "server_cpu_per_req_ms": float("nan"),
            "rss_mb": rss["VmRSS"] / 1024, "wall": sum(latencies)}


def after_changes(client, server, path, changes=20):
    """The first answer after each of `changes` invoices enters the revenue
    (an approval issues an invoice waiting for it, so this month's bucket
    changes): only what the change touched is summed again."""
    waiting = client.get("/v1/invoices?status=pending_approval&limit=%d" % changes)[1]
    latencies, size = [], 0
    for invoice in json.loads(waiting)["data"]:
        client.post(f"/v1/invoices/{invoice['id']}/approve", {"comment": "bench"})
        elapsed, payload = client.get(path)
        latencies.append(elapsed)
        size = len(payload)
    if not latencies:
        raise RuntimeError("no invoice waits for approval in the bench database")
    row = one_shot("revenue by customer, after an invoice change", path, latencies, size, server, target=200)
    log(f"{row['name']}: n={row['n']} p50 {row['p50_ms']:.1f} ms p95 {row['p95_ms']:.1f} ms")
    return row


# -- check -------------------------------------------------------------------------

def amounts(view):
    """{currency: "12.34"} → {currency: minor units}."""
    return {cur: minor(text, cur) for cur, text in view.items()}


def check(db_path, answers, built_at):
    """Revenue and overview answers against SQL over the invoices (bounds computed here)."""
    ro = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    problems, notes = [], []
    try:
        start_month = add_months(built_at.date().replace(day=1), -11)
        months = [add_months(start_month, k) for k in range(12)]
        bounds = [(local_midnight_us(m, "UTC"), local_midnight_us(add_months(m, 1), "UTC")) for m in months]
        by_customer = answers["revenue by customer"]
        if [b["start"] for b in by_customer["data"]] != [rfc3339(lo) for lo, _ in bounds]:
            problems.append("revenue: bucket starts differ from the UTC months computed here")
        # the 3 sample customers: a voided and re-issued invoice, a pending approval, tax + discount + resource
        voided = next(i for i in range(CUSTOMERS) if customer_profile(i)["voided"]
                      and customer_profile(i)["currency"] == "JPY")
        pending = next(i for i in range(CUSTOMERS) if customer_profile(i)["approval"]
                       and customer_profile(i)["currency"] == "KWD")
        rich = next(i for i in range(CUSTOMERS) if customer_profile(i)["resource"] and customer_profile(i)["coupon"]
                    and customer_profile(i)["tax_rate"] != "0")
        for i in (voided, pending, rich):
            cid = i + 1
            currency, zone = customer_profile(i)["currency"], customer_profile(i)["timezone"]
            excluded = ro.execute("SELECT group_concat(status || ' ' || period_start_date, ', ') FROM invoices"
                                  " WHERE customer_id = ? AND status NOT IN ('issued', 'paid')", (cid,)).fetchone()[0]
            got_months = []
            for (lo, hi), bucket in zip(bounds, by_customer["data"]):
                group = [g for g in bucket.get("groups", []) if g["group"] == {"customer_id": cid}]
                got = amounts(group[0]["totals"]) if group else {}
                want = ro.execute("SELECT currency, sum(total) FROM invoices WHERE customer_id = ?"
                                  " AND status IN ('issued', 'paid') AND issued_at >= ? AND issued_at < ?"
                                  " GROUP BY currency", (cid, lo, hi)).fetchall()
                if got != dict(want):
                    problems.append(f"customer {cid} {rfc3339(lo)[:7]}: answer {got}, SQL {dict(want)}")
                got_months.append(sum(got.values()))
            # basis=period: the invoice's local period start month
            period = answers["revenue by customer, basis=period"]
            for m, bucket in zip(months, period["data"]):
                group = [g for g in bucket.get("groups", []) if g["group"] == {"customer_id": cid}]
                got = amounts(group[0]["totals"]) if group else {}
                want = dict(ro.execute("SELECT currency, sum(total) FROM invoices WHERE customer_id = ?"
                                       " AND status IN ('issued', 'paid') AND period_start_date >= ?"
                                       " AND period_start_date < ? GROUP BY currency",
                                       (cid, m.isoformat(), add_months(m, 1).isoformat())).fetchall())
                if got != want:
                    problems.append(f"customer {cid} period {m:%Y-%m}: answer {got}, SQL {want}")
            notes.append(f"customer {cid} ({currency}, {zone}): 12 months by issued_at "
                         f"{'/'.join(str(x) for x in got_months)} minor units equal SQL; not counted: {excluded}")
        # every bucket and the range, per currency, for each grouping
        for name in ("revenue by customer", "revenue by meter", "revenue, no groups"):
            answer = answers[name]
            for (lo, hi), bucket in zip(bounds, answer["data"]):
                want = dict(ro.execute("SELECT currency, sum(total) FROM invoices WHERE status IN ('issued', 'paid')"
                                       " AND issued_at >= ? AND issued_at < ? GROUP BY currency", (lo, hi)))
                if amounts(bucket["totals"]) != want:
                    problems.append(f"{name} {rfc3339(lo)[:7]}: {bucket['totals']} vs SQL {want}")
                if "groups" in bucket:
                    summed = {}
                    for g in bucket["groups"]:
                        for cur, v in amounts(g["totals"]).items():
                            summed[cur] = summed.get(cur, 0) + v
                    if summed != want:
                        problems.append(f"{name} {rfc3339(lo)[:7]}: groups add up to {summed}, SQL {want}")
            want = dict(ro.execute("SELECT currency, sum(total) FROM invoices WHERE status IN ('issued', 'paid')"
                                   " AND issued_at >= ? AND issued_at < ? GROUP BY currency",
                                   (bounds[0][0], bounds[-1][1])))
            if amounts(answer["totals"]) != want:
                problems.append(f"{name} range totals {answer['totals']} vs SQL {want}")
        ov = answers["overview"]
        lo, hi = bounds[-1]
        want = dict(ro.execute("SELECT currency, sum(total) FROM invoices WHERE status IN ('issued', 'paid')"
                               " AND issued_at >= ? AND issued_at < ? GROUP BY currency", (lo, hi)))
        if amounts(ov["revenue_this_month"]) != want:
            problems.append(f"overview revenue_this_month {ov['revenue_this_month']} vs SQL {want}")
        want = dict(ro.execute("SELECT currency, sum(amount_due - amount_paid) FROM invoices WHERE status = 'issued'"
                               " AND payment_status != 'paid' GROUP BY currency"))
        if amounts(ov["outstanding"]) != want:
            problems.append(f"overview outstanding {ov['outstanding']} vs SQL {want}")
        if ov["customers"] != CUSTOMERS:
            problems.append(f"overview customers {ov['customers']}")
        notes.append(f"overview: customers {ov['customers']:,}, events_today {ov['events_today']:,}, "
                     f"revenue_this_month {ov['revenue_this_month']}")
        for name in ("events per day, last 30 days", "events per hour, last 30 days, Asia/Kathmandu"):
            chart = answers[name]  # every window against a count of the raw events
            for window in chart["data"]:
                (want,) = ro.execute("SELECT count(*) FROM events WHERE ts >= ? AND ts < ?",
                                     (us(datetime.fromisoformat(window["start"])),
                                      us(datetime.fromisoformat(window["end"])))).fetchone()
                if window["count"] != want:
                    problems.append(f"{name} {window['start']}: {window['count']} vs SQL {want}")
            notes.append(f"{name}: {len(chart['data'])} windows, {chart['total']:,} events")
    finally:
        ro.close()
    return {"problems": problems, "notes": notes}


# -- main --------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000, help="events stored (default 10,000,000)")
    p.add_argument("--event-days", type=int, default=90,
                   help="the events span this many days up to the build (default 90)")
    p.add_argument("--cache-dir", default="/tmp/meterline-bench")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--requests", type=int, default=200, help="timed requests per query at most (default 200)")
    p.add_argument("--budget", type=float, default=20.0, help="seconds per query at most (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed requests per query first (default 3)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    t = time.perf_counter()
    db_path, meta = build(args.cache_dir, args.events, args.event_days, args.rebuild)
    build_wall = time.perf_counter() - t
    work_dir = os.path.join(args.cache_dir, "work")
    os.makedirs(work_dir, exist_ok=True)
    load_before = loadavg()
    run = phase_run(db_path, meta, work_dir, args.requests, args.budget, args.warmup)
    run["loadavg"] = (load_before, loadavg())
    results = {"meta": meta, "build_wall": build_wall, "db_mb": os.path.getsize(db_path) / 1e6, "run": run,
               "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count()}
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if not run["checks"]["problems"] else 1


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def report(r):
    meta, run = r["meta"], r["run"]
    c = meta["counts"]
    out = [""]
    out.append(f"Meterline analytics benchmark — {c['customers']:,} customers, {c['invoices']:,} invoices "
               f"({', '.join(f'{k} {v:,}' for k, v in sorted(c['by_status'].items()))}), {c['lines']:,} lines, "
               f"{meta['events']:,} events over {meta['event_days']} days; DB {r['db_mb']:,.0f} MB")
    out.append(f"Python {r['python']}, SQLite {r['sqlite']}, {r['cpus']} CPUs; built at {meta['built_at']}")
    if meta.get("cached"):
        out.append(f"build: cached (first built in {meta['build_seconds']['total']} s: {meta['build_seconds']});"
                   f" this run {r['build_wall']:.1f} s to find it")
    else:
        out.append(f"build: {meta['build_seconds']['total']} s ({meta['build_seconds']})")
    out.append("")
    out.append(f"{'query (one keep-alive client, sequential)':<40} {'n':>4} {'p50':>9} {'p95':>9} {'max':>9} "
               f"{'srv CPU/req':>11} {'body':>9} {'RSS':>7}  target")
    out.append("-" * 118)
    for q in run["queries"]:
        target = "–"
        if q["target_ms"]:
            met = "met" if q["p95_ms"] <= q["target_ms"] else "MISSED"
            target = f"≤ {q['target_ms']} ms: {met}"
        out.append(f"{q['name']:<40} {q['n']:>4} {q['p50_ms']:>7.1f}ms {q['p95_ms']:>7.1f}ms {q['max_ms']:>7.1f}ms "
                   f"{q['server_cpu_per_req_ms']:>9.1f}ms {q['bytes'] / 1024:>7.0f}kB {q['rss_mb']:>5.0f}MB  {target}")
    out.append("")
    out.append(f"load average (1/5/15 min) before the run {run['loadavg'][0]}, after {run['loadavg'][1]}"
               f" on {r['cpus']} CPUs: anything above ~1 is other work sharing the machine")
    out.append(f"server RSS: idle {run['rss_idle_mb']:.0f} MB, end {run['rss_end_mb']:.0f} MB, "
               f"peak (VmHWM) {run['rss_peak_mb']:.0f} MB   bar: <= 300 MB")
    out.append("checks:")
    out.extend("  " + n for n in run["checks"]["notes"])
    if run["checks"]["problems"]:
        out.append(f"  {len(run['checks']['problems'])} PROBLEM(S):")
        out.extend("  " + x for x in run["checks"]["problems"][:20])
    else:
        out.append("  every checked amount equals SQL over the invoices (drafts, approvals pending and void excluded)")
    out.append("")
    for q in run["queries"]:
        out.append(f"  {q['name']}: GET {q['path']}")
    out.append(f"server: {run['cmd']}")
    print("\n".join(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
