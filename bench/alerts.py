#!/usr/bin/env python3
"""Alert evaluation benchmark (SPEC §10, §12): POST /v1/alerts/evaluate over
HTTP against 10,000 customers, of whom 100 were active since the last
evaluation.

    python3 bench/alerts.py                       # 2 M events over 30 days (built once, cached)
    python3 bench/alerts.py --rounds 20           # more 100-customer evaluations
    python3 bench/alerts.py --profile /tmp/alerts.prof   # + a cProfile of the server's request threads
    python3 bench/alerts.py --no-own-spend-rules  # without the 200 customers' own spend rules

Standard library only; run by hand (pytest does not collect it). All traffic
goes to a server on 127.0.0.1.

What it does:

  build    (once, cached in --cache-dir, keyed by the schema, the build part
           of this file (from "# -- build" to "# -- run"), the UTC day,
           --events and --event-days) a database:
           the real server (`server.py`, fresh file) runs the migrations and
           creates 4 sum meters, a `bench_probe` meter no plan charges, and 15
           plans (basic / growth / pro in USD, EUR, GBP, JPY and KWD; pro has a
           minimum commitment) through the API. Then, with sqlite3 directly:
           10,000 customers in 16 timezones (Kathmandu +05:45 and Kolkata
           +05:30 included) and 5 currencies, each on a calendar subscription
           that started on the 1st of its local month 3 months ago (no
           invoices: the evaluation only reads the open period), each with a
           usage level (a multiplier 1-20, log-uniform); 40 % have a budget
           (monthly = their expected month's spend x 0.8-4, log-uniform;
           steps [50, 80, 100], some [75, 100] or [90]); 10 % a storage quota
           (no objects are stored); alert rules: a spend rule per currency
           for every customer, usage rules for every customer on api_calls
           and cpu_seconds, 200 customers' own spend rules and 100 customers'
           own usage rules. Then --events events (uuid4-shaped ids, customers
           and the 4 meters uniform, quantity 1-1000 x the customer's
           multiplier, timestamps rising over the last --event-days days up
           to a minute before the build) bulk-loaded like bench/analytics.py
           does (indexes dropped, one transaction per million rows, indexes
           re-created from the schema's own SQL). No sessions, no objects.
  run      A fresh copy; the real server (`server.py --quiet --no-scheduler`;
           its dispatcher writes the alert e-mails to <copy dir>/outbox/ in
           the background, as it would in production). A probe client posts a
           single event (POST /v1/events, customer X, meter bench_probe) every
           --probe-interval seconds, sequentially, for the whole run except
           from the catch-up evaluation to the first round (the idle
           evaluations and the checks); each latency is classed by what ran at
           the same time (an evaluation, a batch ingest, neither). The
           server's writer-transaction histogram (GET /metrics) is read
           around each evaluation and over the whole run, so a long latency
           can be told apart from a long write transaction.
           1. the first evaluation: every customer is looked at (nothing was
              evaluated yet);
           2. a catch-up evaluation (X, whose probe events arrived during 1),
              then --idle evaluations with the probe stopped: 0 customers;
           3. --rounds rounds: POST /v1/events/batch with 1-5 events each for
              100 customers (X, whose probe events count; 99 others drawn at
              random, in round 1 B and in rounds 2 and 3 S among them), then
              POST /v1/alerts/evaluate, timed (request sent -> body read),
              with its `customers_evaluated` and `fired`, the server's CPU
              seconds and its writer-transaction histogram (GET /metrics
              before and after).
  --no-own-spend-rules  deletes (deleted_at) the 200 customers' own spend rules
           on the run's copy before the start. For measuring around an
           evaluation that applies a customer's own spend rule (which carries
           that customer's currency) to every customer of the currency: the
           sample check below then names the foreign rules that fired, and
           the firing counts are dominated by them.
  check    - each evaluation's `customers_evaluated`: all customers first,
             then 1 (X), 0 idle, 100 per round;
           - 25 sample customers after the first evaluation: the alerts that
             fired are exactly those computed here from the live figures
             (GET upcoming-invoice subtotal vs budget steps and spend rules,
             GET usage vs usage rules, GET usage by local day vs the spike
             rule: > 3 x the average of the previous 7 days with usage, >= 10);
           - customer B (a budget, under 45 % of it): round 1 adds a
             cpu_seconds event that takes its subtotal to about 85 % of the
             budget: the 50 % and 80 % steps fire, not 100 %, and the new
             firings are exactly what the figures say (the cpu_seconds spike
             when its day history makes one, a rule it crossed);
           - customer S: round 2 takes today's `requests` to exactly 3 x its
             recent daily average (no spike), round 3 adds 0.000001 (spike);
           - at the end (sqlite3 on the stopped copy): one notification per
             firing, firings = the sum of the evaluations' `fired`.
"""

import argparse
import hashlib
import http.client
import json
import math
import os
import random
import shutil
import socket
import sqlite3
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from analytics import add_months, expect, loadavg, local_midnight_us, us  # noqa: E402
from ingest import ADMIN_KEY, UUID_SQL, ServerProcess, api, copy_db, log, percentile, remove_db  # noqa: E402

from billing.api.events import id_hash  # noqa: E402  (the server's own dedup key)
from billing.store import migrations, rollups  # noqa: E402

UTC = timezone.utc

# -- build -------------------------------------------------------------------------

CUSTOMERS = 10_000
# (key, name, unit, USD price per unit)
METERS = [
    ("api_calls", "API calls", "call", "0.001"),
    ("requests", "Requests", "request", "0.0005"),
    ("cpu_seconds", "CPU time", "second", "0.002"),
    ("data_transfer_gb", "Data transfer", "GB", "0.004"),
]
PROBE_METER = "bench_probe"
# currency: (minor digits, factor from USD)
CURRENCIES = {"USD": (2, "1"), "EUR": (2, "0.9"), "GBP": (2, "0.8"), "JPY": (0, "150"), "KWD": (3, "0.3")}
CURRENCY_CYCLE = ["USD"] * 5 + ["EUR"] * 2 + ["GBP", "JPY", "KWD"]
ZONES = ["UTC"] * 6 + ["America/New_York"] * 2 + ["Europe/Berlin"] * 2 + [
    "America/Los_Angeles", "Asia/Tokyo", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Sydney",
    "Europe/London"]
# tier: (USD base fee, USD minimum commitment, meters charged)
TIERS = {
    "basic": ("29", "0", ["api_calls", "data_transfer_gb"]),
    "growth": ("99", "0", ["api_calls", "requests", "cpu_seconds"]),
    "pro": ("299", "500", ["api_calls", "requests", "cpu_seconds", "data_transfer_gb"]),
}
TIER_CYCLE = ["basic", "growth", "pro"]
MEAN_QUANTITY = Decimal("500.5")  # events carry (1 + random % 1000) x the customer's multiplier
# rules for every customer: spend per currency (USD amount converted), usage per meter (units)
ALL_SPEND_USD = "1000"
ALL_USAGE = [("api_calls", 400_000), ("cpu_seconds", 600_000)]
SUBSCRIPTION_MONTHS_AGO = 3
SEED = 20261201


def money_text(usd, currency):
    digits, factor = CURRENCIES[currency]
    return str((Decimal(usd) * Decimal(factor)).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP))


def minor(text, currency):
    return int(Decimal(text).scaleb(CURRENCIES[currency][0]))


def unit_price(meter, currency):
    price = dict((m[0], m[3]) for m in METERS)[meter]
    return (Decimal(price) * Decimal(CURRENCIES[currency][1])).normalize()


def plan_bodies():
    out = []
    for currency in CURRENCIES:
        for tier, (base, commitment, meters) in TIERS.items():
            body = {"code": f"{tier}-{currency.lower()}", "name": f"{tier.title()} ({currency})",
                    "currency": currency, "interval": "month", "base_fee": money_text(base, currency),
                    "charges": [{"meter": m, "model": "per_unit", "unit_price": str(unit_price(m, currency))}
                                for m, _, _, _ in METERS if m in meters]}
            if commitment != "0":
                body["minimum_commitment"] = money_text(commitment, currency)
            out.append(body)
    return out


def customer_profile(i):
    """Everything about customer i (id i + 1) that does not depend on the day."""
    rng = random.Random(SEED * 100_003 + i)
    currency = CURRENCY_CYCLE[i % len(CURRENCY_CYCLE)]
    steps = [[50, 80, 100], [50, 80, 100], [50, 80, 100], [75, 100], [90]][rng.randrange(5)]
    return {"currency": currency, "timezone": ZONES[i % len(ZONES)], "tier": TIER_CYCLE[i % 3],
            "mult": int(math.exp(rng.uniform(0, math.log(20.999)))),
            "budget": i % 5 in (0, 2), "budget_factor": math.exp(rng.uniform(math.log(0.8), math.log(4))),
            "steps": steps, "quota": i % 10 == 7,
            "own_spend": i % 50 == 1, "own_spend_factor": rng.uniform(0.5, 1.5),
            "own_usage": i % 100 == 3, "own_usage_meter": METERS[(i // 100) % len(METERS)][0],
            "own_usage_factor": rng.uniform(0.5, 1.5),
            "tax_rate": {"EUR": "19", "GBP": "20"}.get(currency, "8.25" if i % 7 == 3 else "0")}


def expected_units(events, event_days, mult, days):
    """Expected units of one meter for a customer over `days` days of history."""
    per_day = Decimal(events) / event_days / CUSTOMERS / len(METERS)
    return per_day * Decimal(min(days, event_days)) * MEAN_QUANTITY * mult


def expected_spend(p, events, event_days, days):
    """Expected subtotal (minor units) of `days` days of the period."""
    currency = p["currency"]
    base, commitment, meters = TIERS[p["tier"]]
    usage = sum(expected_units(events, event_days, p["mult"], days) * unit_price(m, currency) for m in meters)
    total = Decimal(money_text(base, currency)) + usage
    return max(minor(money_text(commitment, currency), currency), int(total.scaleb(CURRENCIES[currency][0])))


def build_key(events, event_days, day):
    schema = hashlib.sha256(repr(migrations.MIGRATIONS).encode()).hexdigest()[:10]
    with open(os.path.abspath(__file__), encoding="utf-8") as f:
        source = f.read()
    code = hashlib.sha256(source.split("\n# -- build ---")[1].split("\n# -- run ---")[0].encode()).hexdigest()[:8]
    return f"alerts-{day}-{events}e-{event_days}d-{schema}-{code}"


def build(cache_dir, events, event_days, rebuild=False):
    os.makedirs(cache_dir, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    base = os.path.join(cache_dir, build_key(events, event_days, now.date().isoformat()))
    db_path, meta_path = base + ".db", base + ".json"
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

    # 1. the schema (the server's migrations), meters and plans through the API
    t = time.perf_counter()
    server = ServerProcess(tmp, os.path.join(cache_dir, "server-alerts-setup.log"))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        for key, name, unit, _ in METERS + [(PROBE_METER, "Bench probe", "ping", None)]:
            expect(*api(conn, "POST", "/v1/meters", {"key": key, "name": name, "unit": unit,
                                                     "aggregation": "sum"}), 201, "meter")
        for body in plan_bodies():
            expect(*api(conn, "POST", "/v1/plans", body), 201, "plan")
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
    if db.execute("SELECT count(*) FROM customers").fetchone()[0]:
        raise RuntimeError("the fresh database already holds customers")

    # 2. customers, subscriptions, rules
    t = time.perf_counter()
    counts = fill_customers(db, now, events, event_days)
    phases["customers_and_rules"] = round(time.perf_counter() - t, 1)

    # 3. events
    t = time.perf_counter()
    fill_events(db, events, event_days, now)
    phases["events"] = round(time.perf_counter() - t, 1)
    counts["events"] = db.execute("SELECT count(*) FROM events").fetchone()[0]
    counts["customers_with_events"] = db.execute("SELECT count(DISTINCT customer_id) FROM events").fetchone()[0]
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


def fill_customers(db, now, events, event_days):
    plans = {code: pid for pid, code in db.execute("SELECT id, code FROM plans")}
    now_us = us(now)
    customers, subscriptions, rules = [], [], []
    for i in range(CUSTOMERS):
        cid = i + 1
        p = customer_profile(i)
        zone, currency = p["timezone"], p["currency"]
        current = now.astimezone(ZoneInfo(zone)).date().replace(day=1)
        start = add_months(current, -SUBSCRIPTION_MONTHS_AGO)
        created = local_midnight_us(start, zone) - 86400 * 10**6 + i * 1000
        period_start = local_midnight_us(current, zone)
        month_days = (local_midnight_us(add_months(current, 1), zone) - period_start) / 86400e6
        month_spend = expected_spend(p, events, event_days, month_days)
        digits = CURRENCIES[currency][0]
        budget = None
        if p["budget"]:
            monthly = Decimal(month_spend * p["budget_factor"]).scaleb(-digits).quantize(Decimal(1))
            budget = json.dumps({"monthly": str(monthly.quantize(Decimal(1).scaleb(-digits))),
                                 "alert_at_percent": p["steps"]})
        customers.append((cid, f"al-{i}", f"Alert customer {i}", f"al{i}@example.com", zone, currency,
                          f"billing{i}@example.com" if i % 2 else None, p["tax_rate"], budget,
                          10 * 10**9 if p["quota"] else None, json.dumps({"bench_mult": p["mult"]}),
                          created, created))
        subscriptions.append((cid, cid, plans[f"{p['tier']}-{currency.lower()}"], start.isoformat(),
                              start.isoformat(), created, created))
        if p["own_spend"]:
            threshold = int(month_spend * p["own_spend_factor"]) // 10**digits * 10**digits or 10**digits
            rules.append((f"Customer {i} spend", cid, "spend", None, currency, threshold, created))
        if p["own_usage"]:
            units = expected_units(events, event_days, p["mult"], month_days) * Decimal(p["own_usage_factor"])
            rules.append((f"Customer {i} {p['own_usage_meter']}", cid, "usage", p["own_usage_meter"], None,
                          max(1, int(units)) * 10**6, created))
    for currency in CURRENCIES:
        rules.append((f"High spend ({currency})", None, "spend", None, currency,
                      minor(money_text(ALL_SPEND_USD, currency), currency), now_us - 86400 * 10**6))
    for meter, units in ALL_USAGE:
        rules.append((f"Heavy {meter}", None, "usage", meter, None, units * 10**6, now_us - 86400 * 10**6))
    db.execute("BEGIN")
    db.executemany("INSERT INTO customers (id, external_id, name, email, timezone, currency, billing_email,"
                   " tax_rate, budget, storage_quota_bytes, metadata, created_at, updated_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", customers)
    db.executemany("INSERT INTO subscriptions (id, customer_id, plan_id, status, start_date, billing_anchor,"
                   " anchor_date, overrides, coupon, created_at, updated_at)"
                   " VALUES (?, ?, ?, 'active', ?, 'calendar', ?, '{}', NULL, ?, ?)", subscriptions)
    db.executemany("INSERT INTO alert_rules (name, customer_id, type, meter, currency, threshold, created_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)", rules)
    db.execute("COMMIT")
    return {"customers": len(customers), "budgets": sum(1 for c in customers if c[8]),
            "quotas": sum(1 for c in customers if c[9]), "rules": len(rules),
            "rules_for_everyone": sum(1 for r in rules if r[1] is None)}


def fill_events(db, events, event_days, now):
    meter_ids = [i for (i,) in db.execute(
        f"SELECT id FROM meters WHERE key IN ({', '.join('?' * len(METERS))}) ORDER BY id", [m[0] for m in METERS])]
    if meter_ids != list(range(meter_ids[0], meter_ids[0] + len(METERS))):
        raise RuntimeError(f"meter ids are not contiguous: {meter_ids}")
    db.execute("CREATE TEMP TABLE bench_mult (cust INTEGER PRIMARY KEY, mult INTEGER NOT NULL)")
    db.executemany("INSERT INTO bench_mult VALUES (?, ?)",
                   [(i + 1, customer_profile(i)["mult"]) for i in range(CUSTOMERS)])
    indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                         " AND tbl_name = 'events' AND sql IS NOT NULL").fetchall()
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')
    end_us = us(now) - 60 * 10**6
    start_us = end_us - event_days * 86400 * 10**6
    step = max(1, (end_us - start_us) // max(1, events))
    # as bench/analytics.py: uuid4-shaped ids, customers and meters uniform, timestamps
    # rising with insertion order (+ jitter), quantities in micros (x the customer's multiplier)
    load_sql = f"""
        WITH RECURSIVE c(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM c WHERE x < ?),
        gen AS MATERIALIZED (
          SELECT 1 + abs(random()) % {CUSTOMERS} AS cust,
                 {UUID_SQL} AS eid,
                 {meter_ids[0]} + abs(random()) % {len(meter_ids)} AS meter,
                 min({start_us} + x * {step} + abs(random()) % {step}, {end_us}) AS ts,
                 1 + abs(random()) % 1000 AS q,
                 '{{"region":"' || (CASE abs(random()) % 3 WHEN 0 THEN 'eu-west'
                                    WHEN 1 THEN 'us-east' ELSE 'ap-south' END) || '"}}' AS props
          FROM c),
        scaled AS (SELECT gen.*, q * m.mult * 1000000 AS qm FROM gen JOIN bench_mult m ON m.cust = gen.cust)
        INSERT INTO events (customer_id, event_id, meter_id, ts, quantity, value, matched,
                            properties, received_at, id_hash)
        SELECT cust, eid, meter, ts, qm, qm, 1, props, ts + 1000000, id_hash(cust, eid) FROM scaled"""
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
    db.execute("DROP TABLE bench_mult")


# -- run ---------------------------------------------------------------------------

class Client:
    """One keep-alive connection (reopened when idle for 10 s: the server closes it at 15 s)."""

    def __init__(self, port, timeout=3600):
        self.port, self.timeout = port, timeout
        self.conn, self.last = None, 0.0
        self.headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def _connection(self):
        if self.conn is None or time.monotonic() - self.last > 10:
            if self.conn is not None:
                self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.conn

    def call(self, method, path, body=None, wanted=200):
        """(seconds from request sent to body read, decoded JSON or text)."""
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        t = time.perf_counter()
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.conn = None
            raise
        elapsed = time.perf_counter() - t
        self.last = time.monotonic()
        if resp.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        if resp.status != wanted:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status} {payload[:300]!r}")
        kind = resp.getheader("Content-Type", "")
        return elapsed, (json.loads(payload) if kind.startswith("application/json") else payload.decode())

    def get(self, path, **params):
        return self.call("GET", path + ("?" + urlencode(params) if params else ""))[1]

    def close(self):
        if self.conn is not None:
            self.conn.close()


class Probe(threading.Thread):
    """Posts one event at a time for customer X and keeps (start, end, latency) of each."""

    def __init__(self, port, customer_id, interval):
        super().__init__(daemon=True)
        self.port, self.customer_id, self.interval = port, customer_id, interval
        self.samples = []
        self.errors = []
        self.running = threading.Event()
        self.stopping = False
        self.sent = 0

    def run(self):
        client = Client(self.port, timeout=60)
        while not self.stopping:
            if not self.running.wait(0.1):
                continue
            body = {"id": f"probe-{uuid.uuid4().hex}", "customer_id": self.customer_id, "meter": PROBE_METER,
                    "quantity": 1}
            t0 = time.perf_counter()
            try:
                client.call("POST", "/v1/events", body, wanted=201)
                self.samples.append((t0, time.perf_counter()))
                self.sent += 1
            except Exception as exc:  # noqa: BLE001  (reported, the run goes on)
                self.errors.append(repr(exc)[:200])
            time.sleep(self.interval)
        client.close()

    def pause(self):
        """Stop posting and wait for the request in flight to end."""
        self.running.clear()
        time.sleep(self.interval + 0.3)
        deadline = time.monotonic() + 60
        count = len(self.samples) + len(self.errors)
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = len(self.samples) + len(self.errors)
            if now == count:
                return
            count = now


def writer_histogram(client):
    """{bound (float, inf last): cumulative count} of meterline_writer_transaction_seconds."""
    text = client.get("/metrics")
    out = {}
    for line in text.splitlines():
        if line.startswith('meterline_writer_transaction_seconds_bucket{le="'):
            bound = line.split('"')[1]
            out[float("inf") if bound == "+Inf" else float(bound)] = int(float(line.rsplit(" ", 1)[1]))
    return out


def histogram_delta(before, after):
    """(longest bucket bound any transaction fell in, count above 0.25 s, count) between two snapshots."""
    bounds = sorted(after)
    longest, previous_delta = 0.0, 0
    for bound in bounds:
        delta = after[bound] - before.get(bound, 0)
        if delta > previous_delta:
            longest = bound
        previous_delta = delta
    total = after[float("inf")] - before.get(float("inf"), 0)
    over = total - (after[0.25] - before.get(0.25, 0))
    return longest, over, total


class Runner:
    def __init__(self, client, server):
        self.client, self.server = client, server
        self.windows = []       # (kind, start, end) for classing probe latencies
        self.evaluations = []   # one dict per evaluation

    def evaluate(self, kind):
        hist = writer_histogram(self.client)
        cpu = self.server.cpu_seconds()
        start = time.perf_counter()
        elapsed, answer = self.client.call("POST", "/v1/alerts/evaluate", {})
        end = time.perf_counter()
        cpu = self.server.cpu_seconds() - cpu
        longest, over, transactions = histogram_delta(hist, writer_histogram(self.client))
        self.windows.append((kind, start, end))
        row = {"kind": kind, "seconds": elapsed, "cpu": cpu, "customers": answer["customers_evaluated"],
               "fired": answer["fired"], "longest_tx": longest, "tx_over_250ms": over, "transactions": transactions}
        self.evaluations.append(row)
        log(f"{kind}: {elapsed * 1000:,.1f} ms, {row['customers']:,} customers, {row['fired']:,} fired,"
            f" server CPU {cpu:.2f} s, longest writer transaction <= {longest} s")
        return row

    def ingest(self, events):
        start = time.perf_counter()
        elapsed, answer = self.client.call("POST", "/v1/events/batch", {"events": events})
        self.windows.append(("ingest", start, time.perf_counter()))
        if answer["accepted"] != len(events):
            raise RuntimeError(f"batch: {answer}")
        return elapsed


# -- what should have fired ----------------------------------------------------------

def load_world(db_path):
    """Customers (budget, currency, zone, mult) and live rules, read from the copy before the start."""
    ro = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        customers = {}
        for cid, currency, zone, budget, quota, metadata in ro.execute(
                "SELECT id, currency, timezone, budget, storage_quota_bytes, metadata FROM customers"):
            customers[cid] = {"id": cid, "currency": currency, "timezone": zone,
                              "budget": json.loads(budget) if budget else None, "quota": quota,
                              "mult": json.loads(metadata).get("bench_mult", 1)}
        rules = [dict(zip(("id", "customer_id", "type", "meter", "currency", "threshold"), r)) for r in ro.execute(
            "SELECT id, customer_id, type, meter, currency, threshold FROM alert_rules WHERE deleted_at IS NULL")]
        tiers = dict(ro.execute("SELECT s.customer_id, substr(p.code, 1, instr(p.code, '-') - 1)"
                                " FROM subscriptions s JOIN plans p ON p.id = s.plan_id"))
        for cid, tier in tiers.items():
            customers[cid]["tier"] = tier
    finally:
        ro.close()
    return customers, rules


def budget_steps(monthly_minor, percents):
    """As §10 says: each step's threshold is the percentage of the monthly amount, rounded half-up once."""
    return [(p, max(1, int((Decimal(monthly_minor) * p / 100).quantize(Decimal(1), ROUND_HALF_UP))))
            for p in sorted(set(percents))]


def json_number(value):
    """A Decimal with at most 6 places as a float whose JSON text is exactly that number
    (the server reads JSON numbers as Decimals; json.dumps cannot write a Decimal)."""
    number = float(value)
    if Decimal(repr(number)) != value:
        raise RuntimeError(f"{value} does not survive as a JSON float")
    return number


def local_today(zone):
    return datetime.now(UTC).astimezone(ZoneInfo(zone)).date()


def day_values(client, cid, meter, zone):
    """(previous 7 local days' values, today's value) of a meter, from GET usage with day windows."""
    today = local_today(zone)
    answer = client.get(f"/v1/customers/{cid}/usage", meter=meter, window="day",
                        **{"from": (today - timedelta(days=7)).isoformat(),
                           "to": (today + timedelta(days=1)).isoformat()})
    values = [Decimal(str(w["value"] or 0)) for w in answer["usage"][0]["windows"]]
    if len(values) != 8:
        raise RuntimeError(f"customer {cid}: {len(values)} day windows")
    return values[:-1], values[-1]


def is_spike(previous, today, minimum=Decimal(10)):
    used = [v for v in previous if v > 0]
    return bool(used) and today >= minimum and today * len(used) > 3 * sum(used)


def crossed_now(client, customer, rules, spike_meters):
    """The sources (budget:P, rule:ID, spike:METER) that have crossed for a customer now,
    computed from the live figures the API shows."""
    cid, currency = customer["id"], customer["currency"]
    out = set()
    subtotal = minor(client.get(f"/v1/customers/{cid}/upcoming-invoice")["subtotal"], currency)
    if customer["budget"]:
        monthly = minor(customer["budget"]["monthly"], currency)
        out |= {f"budget:{p}" for p, threshold in budget_steps(monthly, customer["budget"]["alert_at_percent"])
                if subtotal >= threshold}
    for rule in rules:
        if rule["type"] == "spend" and (rule["customer_id"] == cid or
                                        (rule["customer_id"] is None and rule["currency"] == currency)):
            if subtotal >= rule["threshold"]:
                out.add(f"rule:{rule['id']}")
    usage_cache = {}
    for rule in rules:
        if rule["type"] == "usage" and rule["customer_id"] in (None, cid):
            meter = rule["meter"]
            if meter not in usage_cache:
                value = client.get(f"/v1/customers/{cid}/usage", meter=meter)["usage"][0]["value"]
                usage_cache[meter] = Decimal(str(value or 0))
            if usage_cache[meter] * 10**6 >= rule["threshold"]:
                out.add(f"rule:{rule['id']}")
    for meter in spike_meters:
        previous, today = day_values(client, cid, meter, customer["timezone"])
        if is_spike(previous, today):
            out.add(f"spike:{meter}")
    return out, subtotal


def describe_mismatch(cid, got, want, rules):
    """One line: what fired that the figures do not say (rules named by whose they are), and the reverse."""
    owner = {f"rule:{r['id']}": r["customer_id"] for r in rules}
    extra, missing = sorted(got - want), sorted(want - got)
    foreign = [src for src in extra if owner.get(src) not in (None, cid)]
    text = f"customer {cid}: {len(got)} fired, {len(want)} expected"
    if len(want) <= 5:
        text += f" ({', '.join(sorted(want)) or 'none'})"
    if foreign:
        text += (f"; {len(foreign)} of those fired are other customers' own rules (e.g. {foreign[0]} of customer"
                 f" {owner[foreign[0]]})")
    other = [src for src in extra if src not in foreign]
    if other:
        text += f"; also fired: {', '.join(other[:8])}"
    if missing:
        text += f"; not fired: {', '.join(missing[:8])}"
    return text


def fired_sources(client, cid):
    """The sources of every firing of a customer (all pages)."""
    out, params = set(), {"customer_id": cid, "limit": 1000}
    while True:
        answer = client.get("/v1/alerts/events", **params)
        for f in answer["data"]:
            out.add({"budget": f"budget:{f['percent']}", "spend": f"rule:{f['rule_id']}",
                     "usage": f"rule:{f['rule_id']}", "usage_spike": f"spike:{f['meter']}",
                     "storage_quota": f"quota:{f['percent']}"}[f["type"]])
        if not answer.get("next_cursor"):
            return out
        params["cursor"] = answer["next_cursor"]


# -- the run ---------------------------------------------------------------------------

def pick(customers, rules, rng):
    """X (probe: no budget, no rule of its own), B (budget steps 50/80/100 on growth, so
    cpu_seconds is charged), S (no budget, no own rule, local time far from midnight)."""
    own = {r["customer_id"] for r in rules if r["customer_id"] is not None}
    plain = [c for c in customers.values() if not c["budget"] and c["id"] not in own and not c["quota"]]
    x = plain[-1]["id"]
    budgeted = [c["id"] for c in customers.values() if c["budget"] and c["id"] not in own
                and c["budget"]["alert_at_percent"] == [50, 80, 100] and c["tier"] == "growth"]
    rng.shuffle(budgeted)
    calm = [c["id"] for c in plain[:-1]
            if 2 <= datetime.now(UTC).astimezone(ZoneInfo(c["timezone"])).hour <= 21]
    rng.shuffle(calm)
    return x, budgeted, calm


def phase_run(db_path, meta, work_dir, args):
    rng = random.Random(args.seed)
    copy = copy_db(db_path, work_dir, "bench-alerts.db")
    if args.no_own_spend_rules:
        rw = sqlite3.connect(copy, isolation_level=None)
        gone = rw.execute("UPDATE alert_rules SET deleted_at = created_at WHERE type = 'spend'"
                          " AND customer_id IS NOT NULL").rowcount
        rw.close()
        log(f"--no-own-spend-rules: {gone} customers' own spend rules deleted on the run's copy")
    customers, rules = load_world(copy)
    x, b_candidates, s_candidates = pick(customers, rules, rng)
    out = {"checks": [], "problems": []}
    check = lambda ok, text: (out["checks"] if ok else out["problems"]).append(text)  # noqa: E731
    server = ServerProcess(copy, os.path.join(work_dir, "server-alerts.log"), profile_out=args.profile)
    probe = None
    try:
        out["rss_idle_mb"] = server.status()["VmRSS"] / 1024
        client = Client(server.port)
        runner = Runner(client, server)
        client.get("/v1/alerts", limit=1)
        hist_start = writer_histogram(client)
        probe = Probe(server.port, x, args.probe_interval)
        probe.start()
        probe.running.set()
        time.sleep(args.quiet_seconds)

        # 1. the first evaluation: every customer
        first = runner.evaluate("first evaluation, all customers")
        check(first["customers"] == len(customers),
              f"first evaluation looked at {first['customers']:,} customers (all {len(customers):,})")
        time.sleep(args.quiet_seconds)
        probe.pause()
        catch_up = runner.evaluate("catch-up (probe customer X only)")
        check(catch_up["customers"] == 1, f"catch-up evaluation looked at {catch_up['customers']} customer (X)")
        catch_up["fired_expected"] = 0
        for _ in range(args.idle):
            idle = runner.evaluate("idle (0 active)")
            if idle["customers"] != 0 or idle["fired"] != 0:
                out["problems"].append(f"an idle evaluation looked at {idle['customers']} customers,"
                                       f" fired {idle['fired']}")

        # 25 sample customers: what fired = what the live figures say
        log("check: 25 sample customers against their live figures")
        sample = rng.sample([c for c in customers.values() if c["budget"] and c["id"] != x], 20) + \
            rng.sample([c for c in customers.values() if not c["budget"] and c["id"] != x], 5)
        meters = [m[0] for m in METERS]
        mismatched = 0
        sample_fired = 0
        for c in sample:
            want, _ = crossed_now(client, c, rules, meters)
            got = fired_sources(client, c["id"])
            sample_fired += len(got)
            if want != got:
                mismatched += 1
                out["problems"].append(describe_mismatch(c["id"], got, want, rules))
        check(mismatched == 0, f"25 sample customers (20 with budgets), {sample_fired:,} firings after the first"
                               f" evaluation: {25 - mismatched} fired exactly the crossings computed here from the"
                               f" live figures, {mismatched} did not")

        # B: under 45 % of its budget now
        b = b_state = None
        for cid in b_candidates[:40]:
            crossed, subtotal = crossed_now(client, customers[cid], rules, [])
            monthly = minor(customers[cid]["budget"]["monthly"], customers[cid]["currency"])
            if subtotal < monthly * 45 // 100 and not fired_sources(client, cid):
                b, b_state = cid, (subtotal, monthly)
                break
        if b is None:
            raise RuntimeError("no budgeted growth customer under 45 % of its budget among 40 tried")
        # S: a spike-able day history on `requests`
        s = s_plan = None
        for cid in s_candidates[:40]:
            previous, today = day_values(client, cid, "requests", customers[cid]["timezone"])
            used = [v for v in previous if v > 0]
            if not used or "spike:requests" in fired_sources(client, cid):
                continue
            target = (3 * sum(used) / len(used)).quantize(Decimal("0.000001"), ROUND_FLOOR)
            while target * len(used) > 3 * sum(used):  # the average's last digit rounded up
                target -= Decimal("0.000001")
            if target > today and target >= 10:
                s, s_plan = cid, (target - today, target, len(used), sum(used))
                break
        if s is None:
            raise RuntimeError("no customer for the spike check among 40 tried")
        log(f"X = {x} (probe), B = {b} (subtotal {b_state[0]} of a {b_state[1]} budget, minor units),"
            f" S = {s} (requests push {s_plan[0]})")
        out["xbs"] = (x, b, s)

        # 3. the rounds
        others = [cid for cid in customers if cid not in (x, b, s)]
        probe.running.set()
        time.sleep(args.quiet_seconds)
        for n in range(1, args.rounds + 1):
            special = {1: [b], 2: [s], 3: [s]}.get(n, [])
            chosen = rng.sample(others, 100 - 1 - len(special))
            events = []
            for cid in chosen:
                mult = customers[cid]["mult"]
                for _ in range(rng.randint(1, 5)):
                    events.append({"id": str(uuid.uuid4()), "customer_id": cid, "meter": rng.choice(meters),
                                   "quantity": rng.randint(1, 1000) * mult})
            before = {}
            if n == 1:
                currency = customers[b]["currency"]
                price = unit_price("cpu_seconds", currency).scaleb(CURRENCIES[currency][0])  # minor per unit
                quantity = math.ceil((b_state[1] * 85 // 100 - b_state[0]) / price)
                events.append({"id": str(uuid.uuid4()), "customer_id": b, "meter": "cpu_seconds",
                               "quantity": quantity})
                before[b] = fired_sources(client, b)
            elif n in (2, 3):
                quantity = s_plan[0] if n == 2 else Decimal("0.000001")
                events.append({"id": str(uuid.uuid4()), "customer_id": s, "meter": "requests",
                               "quantity": json_number(quantity)})
                before[s] = fired_sources(client, s)
            rng.shuffle(events)
            runner.ingest(events)
            time.sleep(args.pause)
            row = runner.evaluate("100 active customers")
            row["events"] = len(events)
            if row["customers"] != 100:
                out["problems"].append(f"round {n}: {row['customers']} customers evaluated, not 100")
            for cid, was in before.items():
                spike_meters = ["cpu_seconds"] if cid == b else ["requests"]
                want, subtotal = crossed_now(client, customers[cid], rules, spike_meters)
                got = fired_sources(client, cid)
                new = got - was
                if got != was | want:
                    out["problems"].append(describe_mismatch(cid, got, was | want, rules))
                if cid == b:
                    monthly = b_state[1]
                    ok = got == was | want and {"budget:50", "budget:80"} <= new and "budget:100" not in got
                    check(ok, f"round 1, B = customer {b}: subtotal {b_state[0]} -> {subtotal} minor units of a"
                              f" {monthly} budget ({subtotal * 100 / monthly:.1f} %): new firings {sorted(new)}"
                              f" (the figures say {sorted(want - was)})")
                else:
                    spike_wanted = n == 3
                    ok = got == was | want and (("spike:requests" in new) == spike_wanted)
                    check(ok, f"round {n}, S = customer {s}: today's requests"
                              f" {'= 3 x' if n == 2 else '= 0.000001 over 3 x'} the average of {s_plan[2]} days:"
                              f" new firings {sorted(new)} (spike {'expected' if spike_wanted else 'not expected'})")
            time.sleep(args.pause)
        rounds = [e for e in runner.evaluations if e["kind"] == "100 active customers"]
        check(all(r["customers"] == 100 for r in rounds),
              f"each of the {len(rounds)} rounds looked at exactly 100 customers")
        probe.pause()
        probe.stopping = True
        probe.running.set()
        out["probe_errors"] = probe.errors
        if probe.errors:
            out["problems"].append(f"probe: {len(probe.errors)} failed requests, e.g. {probe.errors[0]}")
        out["fired_total"] = sum(e["fired"] for e in runner.evaluations)
        _, over, total = histogram_delta(hist_start, writer_histogram(client))
        out["tx_outside"] = (over - sum(e["tx_over_250ms"] for e in runner.evaluations),
                             total - sum(e["transactions"] for e in runner.evaluations))
        end = server.status()
        out["rss_end_mb"], out["rss_peak_mb"] = end["VmRSS"] / 1024, end["VmHWM"] / 1024
        out["cmd"] = " ".join(server.cmd)
        out["evaluations"] = runner.evaluations
        out["windows"] = runner.windows
        out["probe"] = probe.samples
        out["ingest"] = [w for w in runner.windows if w[0] == "ingest"]
        client.close()
    finally:
        if probe is not None:
            probe.stopping = True
            probe.running.set()
        server.stop()
    ro = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        firings = ro.execute("SELECT count(*) FROM alert_firings").fetchone()[0]
        notes = ro.execute("SELECT count(*) FROM notifications WHERE firing_id IS NOT NULL").fetchone()[0]
        out["by_type"] = dict(ro.execute("SELECT type, count(*) FROM alert_firings GROUP BY type"))
        out["emails"] = dict(ro.execute("SELECT status, count(*) FROM emails GROUP BY status"))
    finally:
        ro.close()
    check(firings == out["fired_total"] == notes,
          f"{firings:,} firings stored = the evaluations' fired summed ({out['fired_total']:,})"
          f" = notifications ({notes:,})")
    if not args.keep:
        remove_db(copy)
        shutil.rmtree(os.path.join(work_dir, "outbox"), ignore_errors=True)
    return out


def probe_table(run):
    """Probe latencies classed by what overlapped them (the first class that applies)."""
    classes = {"during the first evaluation": [], "during the 100-customer evaluations": [],
               "during idle/catch-up evaluations": [], "during a batch ingest": [],
               "outside evaluations and batches": []}
    names = {"first evaluation, all customers": "during the first evaluation",
             "100 active customers": "during the 100-customer evaluations", "ingest": "during a batch ingest"}
    for t0, t1 in run["probe"]:
        kinds = {names.get(kind, "during idle/catch-up evaluations") for kind, a, b in run["windows"]
                 if t0 < b and t1 > a}
        classes[next((k for k in classes if k in kinds), "outside evaluations and batches")].append(t1 - t0)
    return classes


def report(r, args):
    meta, run = r["meta"], r["run"]
    c = meta["counts"]
    out = [""]
    out.append(f"Meterline alert evaluation benchmark — {c['customers']:,} customers ({c['budgets']:,} with budgets,"
               f" {c['quotas']:,} with storage quotas, no objects, no sessions), {c['rules']} alert rules"
               f" ({c['rules_for_everyone']} for every customer), {c['events']:,} events over"
               f" {meta['event_days']} days; DB {r['db_mb']:,.0f} MB")
    out.append(f"Python {r['python']}, SQLite {r['sqlite']}, {r['cpus']} CPUs; built at {meta['built_at']}")
    if args.no_own_spend_rules:
        out.append("--no-own-spend-rules: the customers' own spend rules were deleted on this run's copy")
    if meta.get("cached"):
        out.append(f"build: cached (first built in {meta['build_seconds']['total']} s: {meta['build_seconds']});"
                   f" this run {r['build_wall']:.1f} s to find it")
    else:
        out.append(f"build: {meta['build_seconds']['total']} s ({meta['build_seconds']})")
    out.append("")
    out.append(f"{'POST /v1/alerts/evaluate':<34} {'n':>3} {'customers':>10} {'fired':>7} {'p50':>10} {'p95':>10}"
               f" {'max':>10} {'srv CPU':>9} {'writer tx max':>13} {'tx>250ms':>8}")
    out.append("-" * 124)
    kinds = []
    for e in run["evaluations"]:
        if e["kind"] not in kinds:
            kinds.append(e["kind"])
    for kind in kinds:
        rows = [e for e in run["evaluations"] if e["kind"] == kind]
        secs = [e["seconds"] for e in rows]
        customers = sorted({e["customers"] for e in rows})
        shown = f"{customers[0]:,}" if len(customers) == 1 else f"{customers[0]}-{customers[-1]}"
        fired = sum(e["fired"] for e in rows)
        out.append(f"{kind:<34} {len(rows):>3} {shown:>10} {fired:>7,} {fmt_s(percentile(secs, 50)):>10}"
                   f" {fmt_s(percentile(secs, 95)):>10} {fmt_s(max(secs)):>10}"
                   f" {fmt_s(sum(e['cpu'] for e in rows) / len(rows)):>9}"
                   f" {'<= ' + fmt_bound(max(e['longest_tx'] for e in rows)):>13}"
                   f" {sum(e['tx_over_250ms'] for e in rows):>8}")
    rounds = [e for e in run["evaluations"] if e["kind"] == "100 active customers"]
    if rounds:
        per = [e["seconds"] / max(1, e["customers"]) * 1000 for e in rounds]
        first = run["evaluations"][0]
        cpu = [e["cpu"] / max(1, e["customers"]) * 1000 for e in rounds]
        out.append(f"  per customer: {percentile(per, 50):.1f} ms wall, {percentile(cpu, 50):.1f} ms server CPU"
                   f" (100 active, p50); {first['seconds'] / max(1, first['customers']) * 1000:.1f} ms wall,"
                   f" {first['cpu'] / max(1, first['customers']) * 1000:.1f} ms CPU (first evaluation);"
                   f" fired per round: {', '.join(str(e['fired']) for e in rounds)};"
                   f" events per round ~{sum(e.get('events', 0) for e in rounds) // len(rounds)}")
    ingest = [b - a for _, a, b in run["ingest"]]
    if ingest:
        out.append(f"  batch ingest before each round (100 customers, 1-5 events each): p50 {fmt_s(percentile(ingest, 50))},"
                   f" max {fmt_s(max(ingest))}")
    out.append("  srv CPU = the server process's CPU seconds per evaluation (all its threads);"
               " writer tx = the server's own meterline_writer_transaction_seconds histogram over the call")
    out.append(f"  outside the evaluations (batches, probe, checks, e-mail dispatcher): {run['tx_outside'][1]:,}"
               f" writer transactions, {run['tx_outside'][0]} over 250 ms")
    out.append("")
    out.append(f"{'single-event POST (1 client, every ' + str(int(args.probe_interval * 1000)) + ' ms)':<44}"
               f" {'n':>6} {'p50':>9} {'p99':>9} {'max':>9}   bar (§12: no wait > 250 ms for the writer)")
    out.append("-" * 124)
    over_by_class = {"during the first evaluation": ["first evaluation, all customers"],
                     "during the 100-customer evaluations": ["100 active customers"],
                     "during idle/catch-up evaluations": ["catch-up (probe customer X only)", "idle (0 active)"]}
    for name, latencies in probe_table(run).items():
        if not latencies:
            out.append(f"{name:<44} {0:>6}")
            continue
        worst = max(latencies)
        verdict = ""
        if name in over_by_class:
            held = sum(e["tx_over_250ms"] for e in run["evaluations"] if e["kind"] in over_by_class[name])
            if worst <= 0.25:
                verdict = "met"
            elif held:
                verdict = f"MISSED: {held} writer transaction(s) over 250 ms meanwhile"
            else:
                verdict = "over 250 ms, but no writer transaction was: CPU/GIL, not the writer"
        out.append(f"{name:<44} {len(latencies):>6} {fmt_s(percentile(latencies, 50)):>9}"
                   f" {fmt_s(percentile(latencies, 99)):>9} {fmt_s(worst):>9}   {verdict}")
    out.append("")
    out.append(f"firings stored by type: {run.get('by_type')}; alert e-mails: {run.get('emails')}")
    out.append(f"load average (1/5/15 min) before the run {run['loadavg'][0]}, after {run['loadavg'][1]}"
               f" on {r['cpus']} CPUs: anything above ~1 is other work sharing the machine")
    out.append(f"server RSS: idle {run['rss_idle_mb']:.0f} MB, end {run['rss_end_mb']:.0f} MB, "
               f"peak (VmHWM) {run['rss_peak_mb']:.0f} MB   bar: <= 300 MB")
    out.append(f"customers: X = {run['xbs'][0]} (probe), B = {run['xbs'][1]} (budget push), S = {run['xbs'][2]} (spike)")
    out.append("checks:")
    out.extend("  ok: " + n for n in run["checks"])
    if run["problems"]:
        out.append(f"  {len(run['problems'])} PROBLEM(S):")
        out.extend("  " + (x if len(x) <= 400 else x[:400] + "…") for x in run["problems"][:20])
    out.append(f"server: {run['cmd']}")
    print("\n".join(out), flush=True)


def fmt_s(seconds):
    if seconds != seconds:
        return "–"
    return f"{seconds:.2f} s" if seconds >= 10 else f"{seconds * 1000:.1f} ms"


def fmt_bound(bound):
    return "inf" if bound == float("inf") else f"{bound:g} s"


def print_profile(path):
    import pstats
    stats = pstats.Stats(path)
    print(f"\nprofile of the server's request threads ({path}), top 25 by own time:", flush=True)
    stats.sort_stats("tottime").print_stats(25)
    print("by cumulative time, billing/ only:", flush=True)
    stats.sort_stats("cumulative").print_stats(r"billing/", 30)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=2_000_000, help="events stored (default 2,000,000)")
    p.add_argument("--event-days", type=int, default=30,
                   help="the events span this many days up to the build (default 30)")
    p.add_argument("--rounds", type=int, default=10, help="100-customer evaluations (default 10, at least 3)")
    p.add_argument("--idle", type=int, default=5, help="evaluations with nothing new (default 5)")
    p.add_argument("--probe-interval", type=float, default=0.01,
                   help="pause between the probe's single-event POSTs, seconds (default 0.01)")
    p.add_argument("--pause", type=float, default=0.5, help="seconds between an ingest and the evaluation")
    p.add_argument("--quiet-seconds", type=float, default=3.0,
                   help="probe-only seconds before the first evaluation and the rounds")
    p.add_argument("--cache-dir", default="/tmp/meterline-bench")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the run's copy of the database")
    p.add_argument("--profile", default=None, metavar="OUT.prof",
                   help="run the server under bench/profserver.py (CPU clock) and print the top functions")
    p.add_argument("--no-own-spend-rules", action="store_true",
                   help="delete the customers' own spend rules on the run's copy before the start")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (rounds 1-3 carry the checks)")
    if args.profile:
        os.environ["MLB_PROFILE_CLOCK"] = "cpu"
        args.profile = os.path.abspath(args.profile)

    t = time.perf_counter()
    db_path, meta = build(args.cache_dir, args.events, args.event_days, args.rebuild)
    build_wall = time.perf_counter() - t
    work_dir = os.path.join(args.cache_dir, "work", "alerts")
    os.makedirs(work_dir, exist_ok=True)
    load_before = loadavg()
    run = phase_run(db_path, meta, work_dir, args)
    run["loadavg"] = (load_before, loadavg())
    results = {"meta": meta, "build_wall": build_wall, "db_mb": os.path.getsize(db_path) / 1e6, "run": run,
               "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count()}
    report(results, args)
    if args.profile:
        print_profile(args.profile)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: v for k, v in results.items() if k != "run"} | {
                "run": {k: v for k, v in run.items() if k not in ("probe", "windows")}}, f, indent=2, default=str)
    return 0 if not run["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
