#!/usr/bin/env python3
"""Invoice-run benchmark (SPEC §12): one POST /v1/invoices/run drafting a month
for 10,000 customers, against a database that holds N events of that month.

    python3 bench/invoice_run.py                          # 1 M events in the billed month
    python3 bench/invoice_run.py --history-events 9000000 # + 9 M older events (10 M stored)
    python3 bench/invoice_run.py --events 10000000        # 10 M events in the billed month
    python3 bench/invoice_run.py --profile                # + the run's core in-process under cProfile

Standard library only; run by hand (pytest does not collect it).

What it does:

  build    (once, cached in --cache-dir, keyed by the schema, the parameters and
           this file's catalogue) a database with 5 sum meters, 3 USD plans
           (graduated / volume / per_unit / package, base fees, a minimum
           commitment), a 10 % coupon, 10,000 customers (60 % UTC, the rest in
           six other timezones, some with a tax rate, some with prepaid credits),
           each with a calendar-anchored subscription that starts on the 1st of
           the billed month (the month before the current one, so its period has
           ended everywhere; in the first hours of a month, before the last one
           has ended in every timezone, the month before that). All of that
           goes through the real API (a server on a fresh database, 4
           keep-alive client threads). Then --events events
           are bulk-loaded with sqlite3 inside the billed month (inside every
           timezone's local month), uniform over customers and meters,
           timestamps rising with insertion order, plus optional
           --history-events in the three months before (outside every billed
           period), the way bench/ingest.py loads its preload.
  run      A fresh copy; the real server (`server.py --quiet --no-scheduler`).
           One timed POST /v1/invoices/run with as_of = the latest local end of
           the billed month over the customers' timezones; must create 10,000
           drafts. Then a second timed run that must create 0.
  stalls   While run 1 runs, one keep-alive client thread POSTs single events
           (now, outside the billed month) one after another and records each
           request's latency: the longest wait and p99 during the run, and the
           same for as long again before it with nothing else running (the
           baseline). SPEC §12: no request waits more than 250 ms for the writer.
  check    Some invoices by hand through GET /v1/invoices/{id}: usage recomputed
           by SQL over the local period bounds computed here with zoneinfo, and
           every line, subtotal, discount, tax, total, credits_applied and
           amount_due recomputed with billing.domain.rating.price and Decimal
           arithmetic. Then, with the server stopped, every usage line of every
           invoice against SQL sums of its customer's period.
  profile  (--profile) On another copy, billing.api.invoices.run_as_of(app, conn,
           as_of) in-process (timed plainly, then under cProfile, each rolled
           back), the top functions, and timings of alternative ways to get the
           same usage numbers.
"""

import argparse
import cProfile
import hashlib
import http.client
import io
import json
import os
import pstats
import random
import sqlite3
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from ingest import ADMIN_KEY, UUID_SQL, ServerProcess, api, cached, copy_db, log, remove_db  # noqa: E402  (bench/ingest.py's helpers)

from billing.api.events import id_hash  # noqa: E402  (the server's own dedup key)
from billing.domain import rating  # noqa: E402
from billing.store import migrations, rollups  # noqa: E402

CUSTOMERS = 10_000
UTC = timezone.utc
# (key, name, unit) — all `sum` meters
METERS = [
    ("api_calls", "API calls", "call"),
    ("requests", "Requests", "request"),
    ("cpu_seconds", "CPU time", "second"),
    ("storage_gb_hours", "Storage", "GB-hour"),
    ("data_transfer_gb", "Data transfer", "GB"),
]
PLANS = [
    {"code": "bench-starter", "name": "Bench Starter", "currency": "USD", "interval": "month",
     "base_fee": "19.00", "charges": [
         {"meter": "api_calls", "model": "graduated", "free_units": 1000,
          "tiers": [{"up_to": 5000, "unit_price": "0.002"}, {"up_to": 20000, "unit_price": "0.0015"},
                    {"up_to": None, "unit_price": "0.001", "flat_fee": "5"}]},
         {"meter": "requests", "model": "package", "package_size": 1000, "package_price": "0.50",
          "free_units": 2000},
         {"meter": "cpu_seconds", "model": "per_unit", "unit_price": "0.0001", "minimum_charge": "1.00"}]},
    {"code": "bench-pro", "name": "Bench Pro", "currency": "USD", "interval": "month",
     "base_fee": "99.00", "minimum_commitment": "1000.00", "charges": [
         {"meter": "api_calls", "model": "volume",
          "tiers": [{"up_to": 5000, "unit_price": "0.003"}, {"up_to": 15000, "unit_price": "0.002", "flat_fee": "10"},
                    {"up_to": None, "unit_price": "0.001", "flat_fee": "25"}]},
         {"meter": "storage_gb_hours", "model": "per_unit", "unit_price": "0.00015"},
         {"meter": "data_transfer_gb", "model": "graduated", "free_units": 100,
          "tiers": [{"up_to": 10000, "unit_price": "0.09"}, {"up_to": None, "unit_price": "0.07"}]},
         {"meter": "cpu_seconds", "model": "per_unit", "unit_price": "0.00005"}]},
    {"code": "bench-scale", "name": "Bench Scale", "currency": "USD", "interval": "month",
     "base_fee": "0", "charges": [
         {"meter": "api_calls", "model": "package", "package_size": 100, "package_price": "0.10"},
         {"meter": "requests", "model": "graduated",
          "tiers": [{"up_to": 10000, "unit_price": "0.0004"}, {"up_to": None, "unit_price": "0.0002", "flat_fee": "2"}]},
         {"meter": "cpu_seconds", "model": "volume",
          "tiers": [{"up_to": 1000, "unit_price": "0.0002"}, {"up_to": None, "unit_price": "0.00015"}]},
         {"meter": "storage_gb_hours", "model": "per_unit", "unit_price": "0.0007", "minimum_charge": "0.50"},
         {"meter": "data_transfer_gb", "model": "per_unit", "unit_price": "0.05"}]},
]
COUPON = {"code": "BENCH10", "percent_off": "10", "duration": "forever"}
# customer i: timezone ZONES[i % 20]; plan PLANS[i % 3]; tax 8.25 % when i % 7 == 3;
# coupon when i % 10 == 4; 25.00 of credits when i % 25 == 5
ZONES = ["UTC"] * 12 + ["America/New_York"] * 2 + ["Europe/Berlin"] * 2 + [
    "Asia/Kolkata", "Australia/Sydney", "America/Los_Angeles", "Asia/Tokyo"]
TAX_RATE = "8.25"
CREDIT = "25.00"


def customer_profile(i):
    return {"timezone": ZONES[i % len(ZONES)], "plan": PLANS[i % len(PLANS)]["code"],
            "tax_rate": TAX_RATE if i % 7 == 3 else "0", "coupon": COUPON["code"] if i % 10 == 4 else None,
            "credit": CREDIT if i % 25 == 5 else None}


# -- the billed month --------------------------------------------------------------

def billed_month(today=None):
    """The calendar month before the current one (or before `today`'s): (first day, first day of the next)."""
    today = today or datetime.now(UTC).date()
    first_this = today.replace(day=1)
    first_prev = (first_this - timedelta(days=1)).replace(day=1)
    return first_prev, first_this


def local_midnight_utc(day, zone_name):
    """00:00 local on `day` as a UTC datetime (computed here, independently of billing.domain.times)."""
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone_name)).astimezone(UTC)


def us(dt):
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def month_windows(month_start, month_end):
    """Event windows (µs): `inside` lies in every zone's local month; `history`
    is the three months before the earliest local start."""
    starts = [local_midnight_utc(month_start, z) for z in set(ZONES)]
    ends = [local_midnight_utc(month_end, z) for z in set(ZONES)]
    inside = (us(max(starts)), us(min(ends)))
    history = (us(min(starts) - timedelta(days=92)), us(min(starts) - timedelta(hours=1)))
    as_of = max(ends)
    return inside, history, as_of


# -- build -----------------------------------------------------------------------

def cache_paths(cache_dir, events, history, month_start):
    schema = hashlib.sha256(repr(migrations.MIGRATIONS).encode()).hexdigest()[:10]
    catalogue = hashlib.sha256(json.dumps([METERS, PLANS, COUPON, ZONES, TAX_RATE, CREDIT, CUSTOMERS])
                               .encode()).hexdigest()[:8]
    base = os.path.join(cache_dir, f"invoice-{month_start:%Y-%m}-{events}e-{history}h-{schema}-{catalogue}-rollups")
    return base + ".db", base + ".json"


def parallel(port, items, work, clients=4):
    """Run work(conn, item) for every item on `clients` keep-alive connections; results in order."""
    results = [None] * len(items)
    position = [0]
    lock = threading.Lock()
    errors = []

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while not errors:
                with lock:
                    i = position[0]
                    position[0] += 1
                if i >= len(items):
                    return
                results[i] = work(conn, items[i])
        except Exception as exc:  # noqa: BLE001 — reported below
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return results


def expect(status, body, wanted, what):
    if status != wanted:
        raise RuntimeError(f"{what}: HTTP {status} {body}")
    return body


def build(cache_dir, events, history, month_start, month_end, rebuild=False):
    os.makedirs(cache_dir, exist_ok=True)
    db_path, meta_path = cache_paths(cache_dir, events, history, month_start)
    meta = cached(db_path, meta_path, rebuild)
    if meta is not None:
        return db_path, meta
    tmp = db_path + ".building"
    remove_db(tmp)
    started = time.perf_counter()
    inside, hist_window, _ = month_windows(month_start, month_end)

    log(f"build: {len(METERS)} meters, {len(PLANS)} plans, a coupon, {CUSTOMERS:,} customers and "
        "subscriptions through the API")
    server = ServerProcess(tmp, os.path.join(cache_dir, "server-invoice-setup.log"))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        for key, name, unit in METERS:
            expect(*api(conn, "POST", "/v1/meters", {"key": key, "name": name, "unit": unit,
                                                     "aggregation": "sum"}), 201, "meter")
        for plan in PLANS:
            expect(*api(conn, "POST", "/v1/plans", plan), 201, "plan")
        expect(*api(conn, "POST", "/v1/coupons", COUPON), 201, "coupon")
        conn.close()

        def make_customer(c, i):
            p = customer_profile(i)
            body = {"name": f"Invoice bench customer {i}", "email": f"inv{i}@example.com",
                    "external_id": f"inv-{i}", "timezone": p["timezone"], "currency": "USD",
                    "tax_rate": p["tax_rate"]}
            return expect(*api(c, "POST", "/v1/customers", body), 201, "customer")["id"]

        t = time.perf_counter()
        customer_ids = parallel(server.port, list(range(CUSTOMERS)), make_customer)
        log(f"build: {CUSTOMERS:,} customers in {time.perf_counter() - t:.1f} s")

        def make_subscription(c, i):
            p = customer_profile(i)
            body = {"customer_id": customer_ids[i], "plan": p["plan"], "start": month_start.isoformat(),
                    "billing_anchor": "calendar"}
            if p["coupon"]:
                body["coupon"] = p["coupon"]
            sub = expect(*api(c, "POST", "/v1/subscriptions", body), 201, "subscription")
            if p["credit"]:
                expect(*api(c, "POST", f"/v1/customers/{customer_ids[i]}/credits",
                            {"amount": p["credit"], "reason": "bench prepaid"}), 201, "credit")
            return sub["id"]

        t = time.perf_counter()
        subscription_ids = parallel(server.port, list(range(CUSTOMERS)), make_subscription)
        log(f"build: {CUSTOMERS:,} subscriptions (+ credits) in {time.perf_counter() - t:.1f} s")
    finally:
        server.stop()

    db = sqlite3.connect(tmp, isolation_level=None)
    db.create_function("id_hash", 2, id_hash, deterministic=True)
    meter_ids = {k: i for i, k in db.execute("SELECT id, key FROM meters")}
    first = min(customer_ids)
    if sorted(customer_ids) != list(range(first, first + CUSTOMERS)):
        raise RuntimeError("customer ids are not contiguous")
    mids = sorted(meter_ids.values())
    if mids != list(range(mids[0], mids[0] + len(mids))):
        raise RuntimeError("meter ids are not contiguous")
    db.execute("PRAGMA journal_mode = DELETE")
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -1048576")
    db.execute("PRAGMA threads = 2")
    indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                         " AND tbl_name = 'events' AND sql IS NOT NULL").fetchall()
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')
    cpu_id = meter_ids["cpu_seconds"]
    # uuid4-shaped ids; customers and meters uniform; timestamps rising with the
    # insertion order (+ jitter); cpu_seconds in thousandths (0.001 .. 1000 s),
    # the other meters whole units 1 .. 1000; quantities in micros.
    load_sql = f"""
        WITH RECURSIVE c(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM c WHERE x < ?),
        gen AS MATERIALIZED (
          SELECT {first} + abs(random()) % {CUSTOMERS} AS cust,
                 {UUID_SQL} AS eid,
                 {mids[0]} + abs(random()) % {len(mids)} AS meter,
                 ? + x * ? + abs(random()) % ? AS ts,
                 abs(random()) AS r,
                 '{{"region":"' || (CASE abs(random()) % 3 WHEN 0 THEN 'eu-west'
                                    WHEN 1 THEN 'us-east' ELSE 'ap-south' END) || '"}}' AS props
          FROM c),
        q AS MATERIALIZED (
          SELECT cust, eid, meter, ts, props,
                 CASE WHEN meter = {cpu_id} THEN (1 + r % 1000000) * 1000
                      ELSE (1 + r % 1000) * 1000000 END AS qty
          FROM gen)
        INSERT INTO events (customer_id, event_id, meter_id, ts, quantity, value, matched,
                            properties, received_at, id_hash)
        SELECT cust, eid, meter, ts, qty, qty, 1, props, ts + 1000000, id_hash(cust, eid) FROM q"""
    chunk = 1_000_000
    for label, count, (lo, hi) in (("history", history, hist_window), ("billed month", events, inside)):
        if not count:
            continue
        step = max(1, (hi - lo) // count)
        done = 0
        while done < count:
            n = min(chunk, count - done)
            db.execute("BEGIN")
            db.execute(load_sql, (done, done + n - 1, lo, step, step))
            db.execute("COMMIT")
            done += n
            log(f"build: {label}: {done:,}/{count:,} events  ({time.perf_counter() - started:.0f} s)")
    for name, sql in indexes:
        t = time.perf_counter()
        db.execute(sql)
        log(f"build: index {name} built in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    db.execute("BEGIN")
    rollups.rebuild_derived(db)  # rollups, spans and dedup index of the bulk-loaded events
    db.execute("COMMIT")
    log(f"build: rollups built in {time.perf_counter() - t:.1f} s")
    db.execute("PRAGMA journal_mode = WAL")
    total = db.execute("SELECT count(*) FROM events").fetchone()[0]
    out_of_window = db.execute("SELECT count(*) FROM events WHERE ts >= ?", (inside[1],)).fetchone()[0]
    db.close()
    if total != events + history or out_of_window:
        raise RuntimeError(f"build holds {total} events ({out_of_window} after the window)")
    os.replace(tmp, db_path)
    meta = {"events": events, "history": history, "month": month_start.isoformat(),
            "customer_ids": customer_ids, "subscription_ids": subscription_ids, "meters": meter_ids,
            "built_seconds": round(time.perf_counter() - started, 1)}
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    log(f"build: {db_path} ({os.path.getsize(db_path) / 1e6:.0f} MB) in {meta['built_seconds']} s")
    return db_path, meta


# -- hand checks -------------------------------------------------------------------

CENT = Decimal("0.01")


def to_cents(amount):
    """An exact Decimal in dollars, rounded once half-up, as integer cents."""
    return int((amount / CENT).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def cents(text):
    return int(Decimal(text) / CENT)


def charge_of(raw):
    d = lambda v: Decimal(str(v)) if v is not None else Decimal(0)  # noqa: E731
    tiers = tuple(rating.Tier(None if t["up_to"] is None else Decimal(str(t["up_to"])), d(t["unit_price"]),
                              d(t.get("flat_fee"))) for t in raw.get("tiers", ()))
    return rating.Charge(raw["meter"], raw["model"], d(raw.get("free_units")), d(raw.get("unit_price")), tiers,
                         int(raw.get("package_size") or 1), d(raw.get("package_price")),
                         d(raw.get("minimum_charge")))


def period_usage(db, customer_id, meter_id, start_us, end_us):
    micros = db.execute("SELECT coalesce(sum(quantity), 0) FROM events WHERE customer_id = ? AND meter_id = ?"
                        " AND ts >= ? AND ts < ?", (customer_id, meter_id, start_us, end_us)).fetchone()[0]
    return Decimal(micros) / 1_000_000


def check_invoice(db, invoice, index, customer_id, meter_ids, month_start, month_end):
    """Recompute one invoice from the events and the plan; returns a one-line summary."""
    p = customer_profile(index)
    plan = next(x for x in PLANS if x["code"] == p["plan"])
    start = local_midnight_utc(month_start, p["timezone"])
    end = local_midnight_utc(month_end, p["timezone"])
    problems = []

    def same(what, got, want):
        if got != want:
            problems.append(f"{what}: invoice {got!r}, expected {want!r}")

    same("status", invoice["status"], "draft")
    same("period_start", invoice["period_start"], start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    same("period_end", invoice["period_end"], end.strftime("%Y-%m-%dT%H:%M:%SZ"))
    lines = {(line["type"], line["meter"]): line for line in invoice["lines"]}
    counted = 0
    base = cents(plan.get("base_fee", "0"))
    if base:
        same("base_fee line", cents(lines[("base_fee", None)]["amount"]), base)
        counted += base
    usage_shown = {}
    for raw in plan["charges"]:
        charge = charge_of(raw)
        q = period_usage(db, customer_id, meter_ids[raw["meter"]], us(start), us(end))
        line = lines.get(("usage", raw["meter"]))
        if line is None:
            problems.append(f"no usage line for {raw['meter']}")
            continue
        same(f"{raw['meter']} quantity", Decimal(str(line["quantity"])), q)
        amount = to_cents(rating.price(charge, q, "USD").exact)
        same(f"{raw['meter']} amount", cents(line["amount"]), amount)
        usage_shown[raw["meter"]] = (q, amount)
        counted += amount
    subtotal = counted
    commitment = cents(plan.get("minimum_commitment", "0"))
    if commitment and counted < commitment:
        same("minimum line", cents(lines[("minimum", None)]["amount"]), commitment - counted)
        subtotal = commitment
    elif ("minimum", None) in lines:
        problems.append("unexpected minimum line")
    same("subtotal", cents(invoice["subtotal"]), subtotal)
    discount = 0
    if p["coupon"] and subtotal > 0:
        discount = int((Decimal(subtotal) * Decimal(COUPON["percent_off"]) / 100)
                       .quantize(Decimal(1), rounding=ROUND_HALF_UP))
    same("discount", cents(invoice["discount"]), discount)
    tax = int((Decimal(subtotal - discount) * Decimal(p["tax_rate"]) / 100).quantize(Decimal(1),
                                                                                     rounding=ROUND_HALF_UP))
    same("tax", cents(invoice["tax"]), tax)
    total = subtotal - discount + tax
    same("total", cents(invoice["total"]), total)
    same("sum of lines", sum(cents(line["amount"]) for line in invoice["lines"]), total)
    credit = cents(p["credit"]) if p["credit"] else 0
    same("credits_applied", cents(invoice["credits_applied"]), min(credit, total))
    same("amount_due", cents(invoice["amount_due"]), total - min(credit, total))
    if problems:
        raise RuntimeError(f"invoice {invoice['id']} (customer {customer_id}): " + "; ".join(problems))
    extras = ",".join(x for x in (p["coupon"] and "coupon", p["tax_rate"] != "0" and "tax",
                                  p["credit"] and "credits") if x) or "-"
    return (f"  customer {customer_id:>6} {p['timezone']:<20} {p['plan']:<14} {extras:<20} "
            f"{len(invoice['lines'])} lines, total {invoice['total']:>9}, due {invoice['amount_due']:>9}  ok")


def check_all_usage(db_path, meta, month_start, month_end):
    """Every usage line of every invoice against the SQL sum of its customer's local period."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        meter_ids = meta["meters"]
        by_zone = {}
        for i, cid in enumerate(meta["customer_ids"]):
            by_zone.setdefault(customer_profile(i)["timezone"], []).append(cid)
        expected = {}
        for zone, ids in by_zone.items():
            lo, hi = us(local_midnight_utc(month_start, zone)), us(local_midnight_utc(month_end, zone))
            wanted = set(ids)
            for cid, mid, micros in db.execute(
                    "SELECT customer_id, meter_id, sum(quantity) FROM events WHERE ts >= ? AND ts < ?"
                    " GROUP BY customer_id, meter_id", (lo, hi)):
                if cid in wanted:
                    expected[(cid, mid)] = micros
        lines = db.execute("SELECT i.customer_id, l.meter, l.quantity FROM invoice_lines l"
                           " JOIN invoices i ON i.id = l.invoice_id WHERE l.type = 'usage'").fetchall()
        bad = 0
        for cid, meter, quantity in lines:
            got = int(Decimal(quantity) * 1_000_000)
            if got != expected.get((cid, meter_ids[meter]), 0):
                bad += 1
        invoices, subs, drafts = db.execute(
            "SELECT count(*), count(DISTINCT subscription_id), sum(status = 'draft') FROM invoices").fetchone()
    finally:
        db.close()
    return {"usage_lines": len(lines), "usage_lines_wrong": bad, "invoices": invoices,
            "distinct_subscriptions": subs, "drafts": drafts}


# -- the timed run ---------------------------------------------------------------

def get_exact(conn, path):
    """GET with JSON numbers parsed as Decimal (quantities compared exactly)."""
    conn.request("GET", path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read(), parse_float=Decimal)


class StallProbe:
    """A client thread POSTing single events (keep-alive) one after another,
    each request's latency recorded, until stopped."""

    def __init__(self, port, customer_ids, seed):
        self.port, self.customer_ids = port, customer_ids
        self.rng = random.Random(seed)
        self.latencies, self.errors = [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _body(self):
        ts = datetime.now(UTC) - timedelta(seconds=self.rng.randint(1, 600))
        return json.dumps({"id": f"stall-{self.rng.getrandbits(64):016x}",
                           "customer_id": self.rng.choice(self.customer_ids), "meter": METERS[0][0],
                           "quantity": 1, "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}).encode()

    def _loop(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
        try:
            while not self._stop.is_set():
                body = self._body()
                t = time.perf_counter()
                conn.request("POST", "/v1/events", body, headers)
                resp = conn.getresponse()
                payload = resp.read()
                self.latencies.append(time.perf_counter() - t)
                if resp.status not in (200, 201, 202):
                    self.errors.append(f"HTTP {resp.status} {payload[:200]!r}")
        finally:
            conn.close()

    def summary(self):
        """(requests, longest ms, p99 ms, errors)."""
        ms = sorted(x * 1000 for x in self.latencies)
        p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))] if ms else float("nan")
        return {"requests": len(ms), "max_ms": ms[-1] if ms else float("nan"), "p99_ms": p99,
                "errors": len(self.errors)}


def writer_transactions(port):
    """{upper bound (text): cumulative count} of the server's write transactions
    (the meterline_writer_transaction_seconds histogram of GET /metrics)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    text = conn.getresponse().read().decode()
    conn.close()
    found = {}
    for line in text.splitlines():
        if line.startswith("meterline_writer_transaction_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            found[bound] = int(float(line.rsplit(" ", 1)[1]))
    return found


def longest_writer_transactions(before, after):
    """Write transactions between two scrapes, by the histogram's buckets:
    [(upper bound, count in that bucket)] from 50 ms up, empty buckets left out."""
    bounds = [b for b in after if b == "+Inf" or float(b) >= 0.05]
    out, below = [], after.get("0.025", 0) - before.get("0.025", 0)
    for bound in bounds:
        cumulative = after[bound] - before.get(bound, 0)
        if cumulative - below:
            out.append((bound, cumulative - below))
        below = cumulative
    return out, below


def timed_run(server, as_of):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3600)
    cpu = server.cpu_seconds()
    t = time.perf_counter()
    status, body = api(conn, "POST", "/v1/invoices/run", {"as_of": as_of})
    wall = time.perf_counter() - t
    cpu = server.cpu_seconds() - cpu
    conn.close()
    expect(status, body, 200, "invoice run")
    return wall, cpu, body


def phase_run(db_path, meta, work_dir, month_start, month_end, as_of_text, samples):
    copy = copy_db(db_path, work_dir, "bench-invoice-run.db")
    result = {}
    try:
        server = ServerProcess(copy, os.path.join(work_dir, "server-invoice-run.log"))
        try:
            # as bench/ingest.py: the filter of stored ids is built at start (a core for about 7-9 s
            # at 10 M events); a run timed during it measures that build, not the run
            server.wait_filter()
            result["rss_idle_mb"] = server.status()["VmRSS"] / 1024
            log(f"run 1: POST /v1/invoices/run as_of={as_of_text}, a client POSTing single events meanwhile")
            histogram = writer_transactions(server.port)
            with StallProbe(server.port, meta["customer_ids"], 11) as during:
                wall, cpu, body = timed_run(server, as_of_text)
            result["writer_run"] = longest_writer_transactions(histogram, writer_transactions(server.port))
            result["stalls_run"] = during.summary()
            with StallProbe(server.port, meta["customer_ids"], 12) as quiet:
                time.sleep(wall)  # the baseline: as long again with nothing else running
            result["stalls_quiet"] = quiet.summary()
            result.update(first_wall=wall, first_cpu=cpu, first_created=body["created"])
            log(f"run 1: created {body['created']:,} in {wall:.2f} s")
            after_first = server.status()
            result["rss_after_first_mb"] = after_first["VmRSS"] / 1024
            log("run 2: the same again")
            wall2, cpu2, body2 = timed_run(server, as_of_text)
            result.update(second_wall=wall2, second_cpu=cpu2, second_created=body2["created"])
            log(f"run 2: created {body2['created']:,} in {wall2:.2f} s")
            # hand checks through the API (GET re-rates a draft from the stored events)
            ro = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
            try:
                by_customer = dict(ro.execute("SELECT customer_id, id FROM invoices"))
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                checks = []
                for index in samples:
                    cid = meta["customer_ids"][index]
                    status, invoice = get_exact(conn, f"/v1/invoices/{by_customer[cid]}")
                    expect(status, invoice, 200, "get invoice")
                    checks.append(check_invoice(ro, invoice, index, cid, meta["meters"], month_start, month_end))
                conn.close()
            finally:
                ro.close()
            result["checks"] = checks
            end = server.status()
            result["rss_end_mb"] = end["VmRSS"] / 1024
            result["rss_peak_mb"] = end["VmHWM"] / 1024
            result["cmd"] = " ".join(server.cmd)
        finally:
            server.stop()
        t = time.perf_counter()
        result["all"] = check_all_usage(copy, meta, month_start, month_end)
        log(f"check: all usage lines in {time.perf_counter() - t:.1f} s")
    finally:
        remove_db(copy)
    return result


# -- in-process profile ----------------------------------------------------------

class _Rollback(Exception):
    pass


def phase_profile(db_path, meta, work_dir, as_of, top, skip_grouped=False):
    from billing.api import invoices as invoices_api
    from billing.app import App
    from billing.config import Config

    copy = copy_db(db_path, work_dir, "bench-invoice-profile.db")
    out = {}
    try:
        config = Config(db_path=copy, admin_key=ADMIN_KEY, max_event_age_days=0, log_requests=False)
        app = App(config)
        try:
            def run_once(profile=None):
                created = []
                t = time.perf_counter()
                try:
                    with app.db.transaction() as conn:
                        if profile:
                            profile.enable()
                        try:
                            created = invoices_api.run_as_of(app, as_of)  # inside this transaction
                        finally:
                            if profile:
                                profile.disable()
                        raise _Rollback()
                except _Rollback:
                    pass
                return time.perf_counter() - t, len(created)

            out["plain_wall"], n = run_once()
            log(f"profile: run_as_of in-process {out['plain_wall']:.2f} s ({n:,} drafts, rolled back)")
            profile = cProfile.Profile()
            out["profiled_wall"], _ = run_once(profile)
            log(f"profile: under cProfile {out['profiled_wall']:.2f} s")
            buf = io.StringIO()
            stats = pstats.Stats(profile, stream=buf)
            stats.sort_stats("tottime").print_stats(top)
            stats.sort_stats("cumulative").print_stats(top)
            out["stats"] = buf.getvalue()
            out["alternatives"] = alternatives(app, meta, as_of, skip_grouped=skip_grouped)
            # what-if: an index that covers the usage query (no table row per event)
            t = time.perf_counter()
            with app.db.transaction() as conn:
                conn.execute(f"CREATE INDEX {COVERING_INDEX}")
            out["covering_build"] = time.perf_counter() - t
            log(f"profile: what-if index built in {out['covering_build']:.1f} s")
            with app.db.reader() as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # EXPLAIN alone keeps a stale schema
                out["covering_plan"] = " | ".join(r[3] for r in conn.execute(
                    "EXPLAIN QUERY PLAN SELECT ts, seq, value FROM events WHERE customer_id = ? AND meter_id = ?"
                    " AND ts >= ? AND ts < ? AND matched = 1", (1, 1, 0, 1)))
            out["covering_wall"], _ = run_once()
            log(f"profile: run_as_of with the covering index {out['covering_wall']:.2f} s")
            alt = alternatives(app, meta, as_of, only=("A", "B"))
            out["alternatives"]["H_A_with_covering_index"] = alt["A_rows_fetched_per_sub_meter"]
            out["alternatives"]["H_B_with_covering_index"] = alt["B_sql_sum_per_sub_meter"]
        finally:
            app.close()
    finally:
        remove_db(copy)
    return out


COVERING_INDEX = "bench_events_usage_cover ON events(customer_id, meter_id, ts, matched, value)"


def alternatives(app, meta, as_of, only=None, skip_grouped=False):
    """The usage numbers of the run, fetched in other ways (reader connection, timed)."""
    from billing.api import subscriptions as subscriptions_api
    from billing.api import plans as plans_api
    from billing.domain import plans as plans_domain
    from billing import jsonutil

    month_start, month_end = billed_month(as_of.date())
    meter_ids = meta["meters"]
    res = {}
    with app.db.reader() as conn:
        subs = conn.execute(f"SELECT {subscriptions_api.COLUMNS} FROM {subscriptions_api.FROM}").fetchall()
        plan_rows = {r[0]: r for r in conn.execute(f"SELECT {plans_api.COLUMNS} FROM plans")}
        tz = dict(conn.execute("SELECT id, timezone FROM customers"))
        bounds = {z: (us(local_midnight_utc(month_start, z)), us(local_midnight_utc(month_end, z)))
                  for z in set(tz.values())}
        charged = {pid: [meter_ids[c["meter"]] for c in jsonutil.decode(r[9])] for pid, r in plan_rows.items()}
        pairs = [(s[1], mid, *bounds[tz[s[1]]]) for s in subs for mid in charged[s[12]]]
        res["queries_per_run"] = len(pairs)

        t = time.perf_counter()
        rows = 0
        for cid, mid, lo, hi in pairs:
            rows += len(conn.execute("SELECT ts, seq, value FROM events WHERE customer_id = ? AND meter_id = ?"
                                     " AND ts >= ? AND ts < ? AND matched = 1", (cid, mid, lo, hi)).fetchall())
        res["A_rows_fetched_per_sub_meter"] = (time.perf_counter() - t, f"{len(pairs):,} queries, {rows:,} rows")

        t = time.perf_counter()
        for cid, mid, lo, hi in pairs:
            conn.execute("SELECT coalesce(sum(value), 0) FROM events WHERE customer_id = ? AND meter_id = ?"
                         " AND ts >= ? AND ts < ? AND matched = 1", (cid, mid, lo, hi)).fetchone()
        res["B_sql_sum_per_sub_meter"] = (time.perf_counter() - t, f"{len(pairs):,} queries")

        if only:
            return res

        # the per-subscription Python work other than usage
        t = time.perf_counter()
        for s in subs:
            plans_domain.to_charges(jsonutil.decode(plan_rows[s[12]][9]))
        res["E_decode_plan_charges_per_sub"] = (time.perf_counter() - t, f"{len(subs):,} decodes")
        t = time.perf_counter()
        for s in subs:
            conn.execute("SELECT coalesce(sum(amount), 0) FROM credit_entries WHERE customer_id = ?",
                         (s[1],)).fetchone()
        res["F_credit_balance_per_sub"] = (time.perf_counter() - t, f"{len(subs):,} queries")
        t = time.perf_counter()
        for _ in subs:
            {m.key: m.name for m in app.catalog.meters().values()}
        res["G_meter_names_per_sub"] = (time.perf_counter() - t, f"{len(subs):,} dicts")

        if skip_grouped:  # each of these reads every event of the month once per zone
            return res
        sql = ("SELECT customer_id, sum(value) FROM events WHERE meter_id = ? AND ts >= ? AND ts < ?"
               " AND matched = 1 GROUP BY customer_id")
        plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, (1, 0, 1)))
        t = time.perf_counter()
        n = 0
        for lo, hi in set(bounds.values()):
            for mid in meter_ids.values():
                n += 1
                conn.execute(sql, (mid, lo, hi)).fetchall()
        res["C_grouped_per_meter_and_zone_bounds"] = (time.perf_counter() - t, f"{n} queries; plan: {plan}")

        sql2 = ("SELECT customer_id, meter_id, sum(value) FROM events WHERE ts >= ? AND ts < ?"
                " AND matched = 1 GROUP BY customer_id, meter_id")
        plan2 = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql2, (0, 1)))
        t = time.perf_counter()
        for lo, hi in set(bounds.values()):
            conn.execute(sql2, (lo, hi)).fetchall()
        res["D_grouped_all_meters_per_zone_bounds"] = (time.perf_counter() - t,
                                                       f"{len(set(bounds.values()))} queries; plan: {plan2}")
    return res


# -- main --------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="events inside the billed month (default 1,000,000)")
    p.add_argument("--history-events", type=int, default=0,
                   help="extra events in the three months before the billed periods (default 0)")
    p.add_argument("--cache-dir", default="/tmp/meterline-bench")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--profile", action="store_true", help="also profile run_as_of in-process")
    p.add_argument("--no-server", action="store_true", help="skip the HTTP run (with --profile)")
    p.add_argument("--top", type=int, default=30, help="functions shown per profile listing")
    p.add_argument("--checks", type=int, default=24, help="invoices checked by hand through the API")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    month_start, month_end = billed_month()
    _, _, as_of = month_windows(month_start, month_end)
    if as_of > datetime.now(UTC):  # the first hours of a month: the last one has not ended in every zone yet
        month_start, month_end = billed_month(month_start)
        _, _, as_of = month_windows(month_start, month_end)
    as_of_text = as_of.strftime("%Y-%m-%dT%H:%M:%SZ")
    db_path, meta = build(args.cache_dir, args.events, args.history_events, month_start, month_end, args.rebuild)
    work_dir = os.path.join(args.cache_dir, "work")
    os.makedirs(work_dir, exist_ok=True)
    results = {"events": args.events, "history": args.history_events, "month": month_start.isoformat(),
               "as_of": as_of_text, "cpus": os.cpu_count(), "python": sys.version.split()[0],
               "sqlite": sqlite3.sqlite_version, "db_mb": os.path.getsize(db_path) / 1e6}
    # the first 12 customers cover every plan, extra and most zones; the rest at random
    rng = random.Random(7)
    samples = list(range(min(12, args.checks))) + rng.sample(range(12, CUSTOMERS), max(0, args.checks - 12))
    if not args.no_server:
        results["run"] = phase_run(db_path, meta, work_dir, month_start, month_end, as_of_text, samples)
    if args.profile:
        results["profile"] = phase_profile(db_path, meta, work_dir, as_of, args.top,
                                           skip_grouped=args.events > 2_000_000)
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: v for k, v in results.items()}, f, indent=2, default=str)
    ok = True
    if "run" in results:
        r = results["run"]
        ok = (r["first_created"] == CUSTOMERS and r["second_created"] == 0 and r["all"]["usage_lines_wrong"] == 0
              and r["all"]["invoices"] == CUSTOMERS and not r["stalls_run"]["errors"])
    return 0 if ok else 1


def report(r):
    out = []
    total = r["events"] + r["history"]
    out.append("")
    out.append(f"Meterline invoice-run benchmark — {CUSTOMERS:,} customers/subscriptions, {len(METERS)} meters, "
               f"{len(PLANS)} plans; {total:,} events stored ({r['events']:,} in the billed month "
               f"{r['month'][:7]}, {r['history']:,} older); DB {r['db_mb']:.0f} MB")
    out.append(f"Python {r['python']}, SQLite {r['sqlite']}, {r['cpus']} CPUs; as_of {r['as_of']}")
    if "run" in r:
        x = r["run"]
        out.append("")
        out.append(f"run 1: created {x['first_created']:,} drafts in {x['first_wall']:.2f} s = "
                   f"{x['first_created'] / x['first_wall']:,.0f} invoices/s  (server CPU {x['first_cpu']:.2f} s)"
                   f"   bar: <= 3 s (§12)")
        for name, what in (("stalls_run", "during run 1"), ("stalls_quiet", "no run (baseline)")):
            st = x[name]
            out.append(f"single-event POST {what}: {st['requests']:,} requests, longest {st['max_ms']:.0f} ms,"
                       f" p99 {st['p99_ms']:.0f} ms, {st['errors']} errors"
                       + ("   bar: longest <= 250 ms" if name == "stalls_run" else ""))
        buckets, total = x["writer_run"]
        out.append(f"write transactions during run 1: {total:,}; above 25 ms, by bucket: "
                   + (", ".join(f"<= {b} s: {n}" for b, n in buckets) or "none"))
        out.append(f"run 2: created {x['second_created']:,} in {x['second_wall']:.2f} s  "
                   f"(server CPU {x['second_cpu']:.2f} s)")
        out.append(f"server RSS: idle {x['rss_idle_mb']:.0f} MB, after run 1 {x['rss_after_first_mb']:.0f} MB, "
                   f"end {x['rss_end_mb']:.0f} MB, peak (VmHWM) {x['rss_peak_mb']:.0f} MB   bar: <= 300 MB")
        a = x["all"]
        out.append(f"all invoices: {a['invoices']:,} rows, {a['distinct_subscriptions']:,} subscriptions, "
                   f"{a['drafts']:,} drafts; {a['usage_lines']:,} usage lines, {a['usage_lines_wrong']} differ "
                   "from the SQL sums of their period")
        out.append(f"checked by hand ({len(x['checks'])} invoices, GET /v1/invoices/{{id}}):")
        out.extend(x["checks"])
        out.append(f"server: {x['cmd']}")
    if "profile" in r:
        pr = r["profile"]
        out.append("")
        out.append(f"in-process run_as_of: {pr['plain_wall']:.2f} s plain, {pr['profiled_wall']:.2f} s under cProfile")
        out.append(f"what-if CREATE INDEX {COVERING_INDEX}: built in {pr['covering_build']:.1f} s;"
                   f" run_as_of then {pr['covering_wall']:.2f} s; usage query plan: {pr['covering_plan']}")
        out.append("same usage numbers fetched other ways (one reader connection):")
        for name, value in pr["alternatives"].items():
            if name == "queries_per_run":
                continue
            secs, note = value
            out.append(f"  {name:<40} {secs:7.2f} s   {note}")
        out.append("")
        out.append(pr["stats"])
    print("\n".join(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
