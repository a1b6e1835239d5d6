"""`--demo`: fill an empty database with a small, believable company so the
dashboard is alive at first sight. Everything goes through the same
validation as the API; nothing is written if the database already has data."""

import json
import random
from decimal import Decimal
from datetime import timedelta

from .. import clock, jsonutil
from ..api import alert_eval, alerts, auth, estimates, invoices, lifecycle, objects, selfmeter, sessions, storage
from ..api import customers as customers_api
from ..api.events import ingest_for, store_new
from ..collect import GROUP_BY, METERS as COLLECTOR_METERS  # the collector's own meter definitions
from ..domain import money, plans, times
from ..errors import FieldErrors
from ..store.db import named, scalar

METERS = [
    ("api_calls", "API calls", "call", "sum", None, ["region", "endpoint"]),
    ("storage_gb", "Storage", "GB", "max", None, []),
    ("active_users", "Active users", "user", "unique_count", "user_id", []),
    ("compute_seconds", "Compute", "second", "sum", None, ["region"]),
]
CUSTOMERS = [
    ("acme", "Acme Analytics", "billing@acme.example", "America/New_York", "USD", 1.0),
    ("globex", "Globex GmbH", "finance@globex.example", "Europe/Berlin", "EUR", 0.6),
    ("initech", "Initech Ltd", "ap@initech.example", "Europe/London", "GBP", 0.3),
    ("hooli", "Hooli India", "accounts@hooli.example", "Asia/Kolkata", "INR", 0.8),
    ("umbrella", "Umbrella KK", "keiri@umbrella.example", "Asia/Tokyo", "JPY", 0.45),
    ("stark", "Stark Trading", "ar@stark.example", "Asia/Kuwait", "KWD", 0.2),
]
DAYS = 92
# currency: (base fee, commitment, price per 1,000 calls beyond the first tier, compute price per second)
PLAN_PRICES = {
    "USD": ("49.00", "100.00", "0.80", "0.0004"), "EUR": ("45.00", "90.00", "0.75", "0.0004"),
    "GBP": ("39.00", "80.00", "0.65", "0.0003"), "INR": ("3999.00", "8000.00", "60.00", "0.03"),
    "JPY": ("7400", "15000", "120", "0.06"), "KWD": ("15.000", "30.000", "0.250", "0.0001"),
}


def _plan_body(currency, prices):
    base_fee, commitment, per_thousand, per_second = prices
    return {"code": f"growth-{currency.lower()}", "name": f"Growth ({currency})", "currency": currency,
            "base_fee": base_fee, "minimum_commitment": commitment, "charges": [
                {"meter": "api_calls", "model": "graduated", "free_units": 10000,
                 "tiers": [{"up_to": 100000, "unit_price": str(Decimal(per_thousand) / 1000)},
                           {"up_to": None, "unit_price": str(Decimal(per_thousand) / 2000)}]},
                {"meter": "active_users", "model": "volume",
                 "tiers": [{"up_to": 50, "unit_price": str(Decimal(base_fee) / 20)},
                           {"up_to": None, "unit_price": str(Decimal(base_fee) / 25)}]},
                {"meter": "compute_seconds", "model": "per_unit", "unit_price": per_second},
                {"meter": "storage_gb", "model": "package", "package_size": 10,
                 "package_price": str(Decimal(per_thousand) * 2)}]}


RESOURCES = [  # name, description, capacity, price per minute, currency, max minutes, who uses it
    ("Atlas meeting room", "8 seats, screen and camera", 1, "0.50", "USD", 240, ["acme"]),
    ("Treadmills", "Gym floor, row A", 4, "0.20", "USD", 120, ["acme"]),
    ("Hot desks", "Open space, 2nd floor", 12, "0.05", "EUR", None, ["globex"]),
    ("Mass spectrometer", "Lab 3, booked by the minute", 2, "1.25", "GBP", 480, ["initech"]),
]


def _resources(app, rng):
    """Resources and a month of their sessions (some running now)."""
    now = clock.now()
    now_us = times.to_micros(now)
    made = 0
    with app.db.transaction() as conn:
        for name, description, capacity, price, currency, limit, users in RESOURCES:
            resource_id = conn.execute(
                "INSERT INTO resources (name, description, capacity, price_per_minute, currency, max_duration_minutes,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, description, capacity, price, currency, limit, now_us, now_us)).lastrowid
            customer_ids = [scalar(conn, "SELECT id FROM customers WHERE external_id = ?", (u,)) for u in users]
            for day in range(30, 0, -1):
                free_at = [now - timedelta(days=day)] * capacity  # when each unit of capacity is free again
                for _ in range(rng.randint(1, 2 * capacity)):
                    unit = rng.randrange(capacity)
                    start = free_at[unit] + timedelta(minutes=rng.randint(20, 180))
                    end = start + timedelta(minutes=rng.randint(15, min(limit or 240, 240)), seconds=rng.randint(0, 59))
                    if end >= now - timedelta(hours=1):
                        break
                    free_at[unit] = end
                    seconds = int((end - start).total_seconds())
                    conn.execute("INSERT INTO sessions (resource_id, customer_id, user, started_at, ended_at,"
                                 " duration_seconds, price_per_minute, currency, cost, stopped_by, started_by)"
                                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'demo', 'demo')",
                                 (resource_id, rng.choice(customer_ids), f"member-{rng.randint(1, 40)}",
                                  times.to_micros(start), times.to_micros(end), seconds, price, currency,
                                  sessions.cost_minor(seconds, price, currency)))
                    made += 1
            for _ in range(min(capacity, 2) - (1 if capacity == 1 else 0)):  # running now
                conn.execute("INSERT INTO sessions (resource_id, customer_id, user, started_at, price_per_minute,"
                             " currency, started_by) VALUES (?, ?, ?, ?, ?, ?, 'demo')",
                             (resource_id, customer_ids[0], f"member-{rng.randint(1, 40)}",
                              times.to_micros(now - timedelta(minutes=rng.randint(5, 50))), price, currency))
                made += 1
    return made


# The storage tenant (§8): BillFlow-style pricing, files in its portal, a month of history.
STORAGE_TENANT = ("nimbus", "Nimbus Drive", "ops@nimbus.example", "Europe/Amsterdam", "USD")
GB = 10 ** 9
BILLFLOW = {"code": "billflow", "name": "BillFlow storage", "currency": "USD", "charges": [
    {"meter": "storage_gb_days", "model": "per_unit", "unit_price": "0.25", "free_units_per_day": 1},
    {"meter": "storage_api_calls", "model": "per_unit", "unit_price": "0.001", "free_units": 1000}]}
TENANT_FILES = [  # key, size, content type, days ago
    ("contracts/2025/master-agreement.pdf", 180_000, "application/pdf", 40),
    ("reports/q3-usage.csv", 52_000, "text/csv", 25),
    ("photos/team-offsite.jpg", 1_400_000, "image/jpeg", 18),
    ("backups/db-snapshot-small.sql.gz", 3_200_000, "application/gzip", 6),
    ("README.txt", 2_100, "text/plain", 2),
]
# objects that came and went (their files are long gone): key, GB, from days ago, until days ago
PAST_OBJECTS = [("backups/full-2025.tar", 3, 44, 30), ("media/launch-video.mov", 2, 12, 4)]


def _storage_tenant(app, rng):
    """Nimbus Drive on the BillFlow plan since the start of last month: its
    files, past objects in the GB-day history, API calls, a customer user."""
    now = clock.now()
    now_us = times.to_micros(now)
    external_id, name, email, zone_name, currency = STORAGE_TENANT
    zone = times.zone_or_error(zone_name)
    start = times.add_months(times.local_date(now, zone).replace(day=1), -1)
    meters = app.catalog.meters()
    with app.db.transaction() as conn:
        customer_id = conn.execute(
            "INSERT INTO customers (external_id, name, email, billing_email, timezone, currency, storage_quota_bytes,"
            " budget, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (external_id, name, email, email, zone_name, currency, 20_000_000,
             jsonutil.encode({"monthly": "10.00", "alert_at_percent": [50, 80, 100]}), now_us, now_us)).lastrowid
        problems = FieldErrors()
        values = plans.check_plan(BILLFLOW, meters, problems)
        problems.raise_if_any()
        values["charges"] = jsonutil.encode(values["charges"])
        columns = list(values) + ["created_at", "updated_at"]
        plan_id = conn.execute(f"INSERT INTO plans ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                               (*values.values(), now_us, now_us)).lastrowid
        conn.execute("INSERT INTO subscriptions (customer_id, plan_id, status, start_date, billing_anchor, anchor_date,"
                     " created_at, updated_at) VALUES (?, ?, 'active', ?, 'calendar', ?, ?, ?)",
                     (customer_id, plan_id, start.isoformat(), start.isoformat(), now_us, now_us))
        conn.execute("INSERT INTO users (email, name, role, password_hash, created_at, updated_at, customer_id)"
                     " VALUES ('tenant@localhost', 'Nina Nimbus', 'customer', ?, ?, ?, ?)",
                     (auth.hash_password("tenant-demo-1"), now_us, now_us, customer_id))
        for key, size, first, last in PAST_OBJECTS:
            conn.execute("INSERT INTO storage_spans (customer_id, object_id, size, start_s, end_s) VALUES (?, 0, ?, ?, ?)",
                         (customer_id, size * GB, (now_us // 10 ** 6) - first * 86_400,
                          (now_us // 10 ** 6) - last * 86_400))
    app.catalog.invalidate_customers()
    for key, size, content_type, days_ago in TENANT_FILES:
        with clock.at(now - timedelta(days=days_ago, minutes=rng.randint(0, 600))):
            objects.store_bytes(app, customer_id, key, rng.randbytes(size), content_type)
    calls = []
    for day in range(45, -1, -1):
        for _ in range(rng.randint(25, 70)):
            ts = now - timedelta(days=day, seconds=rng.randint(0, 86_399))
            if ts < now:
                operation = rng.choice(["get", "get", "get", "head", "list", "list", "put", "delete"])
                calls.append(app.storage.call_row(customer_id, operation, times.to_micros(ts)))
    with app.db.transaction() as conn:
        store_new(conn, calls)
    return app.storage.close_days()


# The platform team (§10): internal services metered by the collector, billed per core-hour.
PLATFORM = ("platform", "Platform Team", "platform@meterline.example", "UTC", "USD")
COMPUTE_PLAN = {"code": "compute", "name": "Compute (per core-hour)", "currency": "USD", "charges": [
    {"meter": "cpu_allocated_core_seconds", "model": "per_unit", "unit_price": "0.0001"},  # 0.36 per core-hour
    {"meter": "memory_gb_seconds", "model": "per_unit", "unit_price": "0.000002"}]}
# service, allocated cores, hourly CPU use as a share of one core (low, high), memory GB
SERVICES = [("checkout-api", 4, (0.25, 0.9), 3), ("search-indexer", 2, (0.7, 1.6), 6)]
COLLECTOR_KEY_NAME = "demo collector"


def _platform(app, rng):
    """The platform team on the compute plan, with the collector's meters and
    a week of hourly history (the checkout API is over-provisioned)."""
    now = clock.now()
    now_us = times.to_micros(now)
    meters = app.catalog.meters()
    external_id, name, email, zone_name, currency = PLATFORM
    with app.db.transaction() as conn:
        for key, (meter_name, unit) in COLLECTOR_METERS.items():
            if key not in meters:
                conn.execute("INSERT INTO meters (key, name, unit, aggregation, group_by, created_at, updated_at)"
                             " VALUES (?, ?, ?, 'sum', ?, ?, ?)", (key, meter_name, unit, json.dumps(GROUP_BY), now_us, now_us))
        customer_id = conn.execute(
            "INSERT INTO customers (external_id, name, email, billing_email, timezone, currency, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (external_id, name, email, email, zone_name, currency, now_us, now_us)).lastrowid
    app.catalog.invalidate_meters()
    app.catalog.invalidate_customers()
    with app.db.transaction() as conn:
        problems = FieldErrors()
        values = plans.check_plan(COMPUTE_PLAN, app.catalog.meters(), problems)
        problems.raise_if_any()
        values["charges"] = jsonutil.encode(values["charges"])
        columns = list(values) + ["created_at", "updated_at"]
        plan_id = conn.execute(f"INSERT INTO plans ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                               (*values.values(), now_us, now_us)).lastrowid
        start = times.add_months(times.local_date(now, times.UTC).replace(day=1), -1)
        conn.execute("INSERT INTO subscriptions (customer_id, plan_id, status, start_date, billing_anchor, anchor_date,"
                     " created_at, updated_at) VALUES (?, ?, 'active', ?, 'calendar', ?, ?, ?)",
                     (customer_id, plan_id, start.isoformat(), start.isoformat(), now_us, now_us))
    ingest = ingest_for(app, age_days=0)
    rows = []
    first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=7)
    for n in range(7 * 24):
        hour = first_hour + timedelta(hours=n)
        stamp = times.format_instant(hour)
        for service, cores, (low, high), memory in SERVICES:
            used = round(rng.uniform(low, high) * 3600)
            for metric, value in (("cpu_allocated_core_seconds", cores * 3600), ("cpu_core_seconds", used),
                                  ("memory_gb_seconds", memory * 3600), ("network_bytes", rng.randint(10 ** 7, 10 ** 9)),
                                  ("disk_bytes", rng.randint(10 ** 6, 10 ** 8))):
                rows.append(ingest.row({"id": f"{service}-{metric}-{int(hour.timestamp())}", "customer_id": customer_id,
                                        "meter": metric, "quantity": value, "timestamp": stamp,
                                        "properties": {"service": service, "host": "demo-node", "cores": cores}}))
    ingest.problems.raise_if_any()
    with app.db.transaction() as conn:
        store_new(conn, rows)
    return len(rows)


def collector_credentials(app):
    """(customer id, a fresh ingest key) for the demo's collector, which meters
    the server's own process for the platform team; None without the demo.
    Earlier demo collector keys are revoked: only the running one is valid."""
    customer = app.db.row("SELECT id FROM customers WHERE external_id = ?", (PLATFORM[0],))
    if customer is None:
        return None
    key = auth.new_secret(auth.KEY_PREFIX)
    now_us = times.to_micros(clock.now())
    with app.db.transaction() as conn:
        conn.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                     (now_us, COLLECTOR_KEY_NAME))
        conn.execute("INSERT INTO api_keys (name, role, prefix, digest, created_at, created_by)"
                     " VALUES (?, 'ingest', ?, ?, ?, 'system')", (COLLECTOR_KEY_NAME, key[:8], auth.digest(key), now_us))
    app.auth.invalidate()
    return customer["id"], key


def _billing(app, now_us):
    """Plans in each currency, a subscription per customer from three months
    back, a coupon and credits, then the invoice run as of now."""
    db = app.db
    meters = app.catalog.meters()
    with db.transaction() as conn:
        for currency, prices in PLAN_PRICES.items():
            problems = FieldErrors()
            values = plans.check_plan(_plan_body(currency, prices), meters, problems)
            problems.raise_if_any()
            values["charges"] = jsonutil.encode(values["charges"])
            columns = list(values) + ["created_at", "updated_at"]
            conn.execute(f"INSERT INTO plans ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                         (*values.values(), now_us, now_us))
        conn.execute("INSERT INTO coupons (code, name, percent_off, duration, periods, created_at)"
                     " VALUES ('LAUNCH20', 'Launch 20% off', '20', 'repeating', 2, ?)", (now_us,))
        for n, (external_id, *_rest) in enumerate(CUSTOMERS):
            customer = named(conn, "SELECT id, timezone, currency FROM customers WHERE external_id = ?",
                             (external_id,)).fetchone()
            customer_id, currency = customer["id"], customer["currency"]
            local_today = times.local_date(clock.now(), times.zone_or_error(customer["timezone"]))
            start = times.add_months(local_today.replace(day=1), -3)
            anchor = "anniversary" if external_id == "initech" else "calendar"
            if anchor == "anniversary":
                start = start.replace(day=15)
            plan_id = scalar(conn, "SELECT id FROM plans WHERE code = ?", (f"growth-{currency.lower()}",))
            conn.execute(
                "INSERT INTO subscriptions (customer_id, plan_id, status, start_date, billing_anchor, anchor_date,"
                " coupon, created_at, updated_at) VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?)",
                (customer_id, plan_id, start.isoformat(), anchor, start.isoformat(),
                 "LAUNCH20" if external_id == "globex" else None, now_us, now_us))
            if external_id == "acme":
                conn.execute("INSERT INTO credit_entries (customer_id, amount, currency, reason, created_by,"
                             " created_at) VALUES (?, 5000, 'USD', 'Onboarding credit', 'system', ?)",
                             (customer_id, now_us))
        if conn.execute("SELECT 1 FROM customers WHERE external_id = 'hooli'").fetchone():
            conn.execute("UPDATE customers SET tax_rate = '18' WHERE external_id = 'hooli'")
        return len(invoices.run_as_of(app, clock.now()))  # inside this transaction


def _catalog(db, now_us):
    """The demo's meters, customers and staff users."""
    with db.transaction() as conn:
        for key, name, unit, aggregation, prop, group_by in METERS:
            conn.execute(
                "INSERT INTO meters (key, name, unit, aggregation, value_property, group_by, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, name, unit, aggregation, prop, json.dumps(group_by), now_us, now_us))
        for external_id, name, email, zone, currency, _ in CUSTOMERS:
            conn.execute(
                "INSERT INTO customers (external_id, name, email, billing_email, timezone, currency,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (external_id, name, email, email, zone, currency, now_us, now_us))
        conn.execute("INSERT INTO users (email, name, role, password_hash, created_at, updated_at)"
                     " VALUES ('finance@localhost', 'Fiona Finance', 'finance', ?, ?, ?)",
                     (auth.hash_password("finance-demo-1"), now_us, now_us))
        conn.execute("INSERT INTO users (email, name, role, password_hash, created_at, updated_at)"
                     " VALUES ('viewer@localhost', 'Victor Viewer', 'viewer', ?, ?, ?)",
                     (auth.hash_password("viewer-demo-1"), now_us, now_us))


def _usage(app, rng):
    """Three months of the customers' usage (API calls, compute, active users,
    storage), stored; returns how many events."""
    ingest = ingest_for(app, age_days=0)  # history older than the lateness limit is the point here
    start = clock.now() - timedelta(days=DAYS)
    rows = []
    for external_id, *_, size in CUSTOMERS:
        for day in range(DAYS + 1):
            rows += _day_usage(ingest, rng, external_id, size, day, start + timedelta(days=day))
    ingest.problems.raise_if_any()
    with app.db.transaction() as conn:
        stored = len(store_new(conn, rows))
    app.stats.events_ingested(stored)
    return stored


def _day_usage(ingest, rng, external_id, size, day, moment):
    """One customer's events of one day: every three hours its calls, compute
    and active users, and the day's stored GB."""
    rows = []
    growth = 1 + day / DAYS
    weekday = 0.55 if moment.weekday() >= 5 else 1.0
    for hour in range(0, 24, 3):
        ts = moment.replace(hour=hour, minute=rng.randrange(60), second=0, microsecond=0)
        if ts > clock.now():
            break
        stamp = times.format_instant(ts)
        calls = int(rng.randint(300, 900) * size * growth * weekday)
        region = rng.choice(["eu", "us", "us", "ap"])
        rows.append(ingest.row({"id": f"demo-{external_id}-calls-{day}-{hour}", "customer": external_id,
                                "meter": "api_calls", "quantity": calls, "timestamp": stamp,
                                "properties": {"region": region,
                                               "endpoint": rng.choice(["/search", "/ingest", "/report"])}}))
        rows.append(ingest.row({"id": f"demo-{external_id}-cpu-{day}-{hour}", "customer": external_id,
                                "meter": "compute_seconds", "quantity": int(rng.randint(200, 1800) * size),
                                "timestamp": stamp, "properties": {"region": region}}))
        for n in range(int(3 * size) + 1):
            rows.append(ingest.row({"id": f"demo-{external_id}-user-{day}-{hour}-{n}", "customer": external_id,
                                    "meter": "active_users", "timestamp": stamp,
                                    "properties": {"user_id": f"u{rng.randrange(int(40 * size) + 5)}"}}))
    rows.append(ingest.row({"id": f"demo-{external_id}-gb-{day}", "customer": external_id,
                            "meter": "storage_gb", "quantity": round(50 * size * growth),
                            "timestamp": times.format_instant(min(moment, clock.now()))}))
    return rows


def fill(app, seed=7):
    """Create the demo company; returns a one-line summary."""
    db = app.db
    own = [meter[0] for meter in storage.METERS + selfmeter.METERS]  # the meters the server makes itself
    if db.row("SELECT 1 FROM customers LIMIT 1") or db.row(
            f"SELECT 1 FROM meters WHERE key NOT IN ({', '.join('?' * len(own))}) LIMIT 1", own):
        return "Demo: the database already has data; nothing added."
    rng = random.Random(seed)
    now_us = times.to_micros(clock.now())
    _catalog(db, now_us)
    app.catalog.invalidate_meters()
    app.catalog.invalidate_customers()
    stored = _usage(app, rng)
    sessions_made = _resources(app, rng)
    _storage_tenant(app, rng)
    collected = _platform(app, rng)
    drafted = _billing(app, now_us)
    states = _history(app)
    fired = _alerts(app)
    summary = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in sorted(states.items()))
    return (f"Demo: {len(CUSTOMERS) + 2} customers, {len(METERS)} meters, {stored} events over {DAYS} days, "
            f"a week of collected CPU, memory, network and disk ({collected} events) for the platform team, "
            f"{len(RESOURCES)} resources with {sessions_made} sessions, a storage tenant with "
            f"{len(TENANT_FILES)} files, {len(PLAN_PRICES) + 2} plans, {drafted} invoices ({summary}), "
            f"{fired} alerts fired (budgets, a spend rule, a usage spike) with unread notifications; users "
            "finance@localhost / finance-demo-1, success@localhost / success-demo-1, viewer@localhost / "
            "viewer-demo-1, and tenant@localhost / tenant-demo-1 (the Nimbus Drive portal).")


def _history(app):
    """Replay the invoices' past: each issued the day after its period (Stark
    needs approval, from its CSM), most paid ten days later, Initech's last one
    half paid and overdue, one of Umbrella's voided and reissued. The newest
    drafts are left for the scheduler to issue once their grace has passed."""
    now = clock.now()
    with app.db.transaction() as conn:
        finance, success = _history_people(conn, times.to_micros(now))
        invoices_ = named(conn, "SELECT i.id, i.period_end, c.external_id AS who FROM invoices i JOIN customers c"
                                " ON c.id = i.customer_id ORDER BY i.period_end, i.id").fetchall()
        by_customer = {}
        for invoice in invoices_:
            by_customer.setdefault(invoice["who"], []).append(invoice["id"])
        for invoice in invoices_:
            _replay(app, conn, invoice, by_customer[invoice["who"]], now, finance, success)
        return {r["status"]: r["n"] for r in named(conn, "SELECT status, count(*) AS n FROM invoices GROUP BY status")}


def _history_people(conn, stamp):
    """(finance, customer success) actors; Stark needs approval from its CSM, Initech pays in 14 days."""
    cur = conn.execute("INSERT INTO users (email, name, role, password_hash, created_at, updated_at)"
                       " VALUES ('success@localhost', 'Sam Success', 'customer_success', ?, ?, ?)",
                       (auth.hash_password("success-demo-1"), stamp, stamp))
    success = auth.Actor("user", cur.lastrowid, "customer_success", name="Sam Success", user_id=cur.lastrowid)
    finance_id = scalar(conn, "SELECT id FROM users WHERE email = 'finance@localhost'")
    finance = auth.Actor("user", finance_id, "finance", name="Fiona Finance", user_id=finance_id)
    conn.execute("UPDATE customers SET requires_approval = 1, csm_user_id = ? WHERE external_id = 'stark'",
                 (success.id,))
    conn.execute("UPDATE invoices SET requires_approval = 1 WHERE status = 'draft' AND customer_id ="
                 " (SELECT id FROM customers WHERE external_id = 'stark')")  # as the API does when it is turned on
    conn.execute("UPDATE customers SET net_terms_days = 14 WHERE external_id = 'initech'")
    return finance, success


def _replay(app, conn, invoice, mine, now, finance, success):
    """Issue one invoice the day after its period (Umbrella's first voided and
    reissued), and record its payment ten days later. `mine`: the ids of the
    customer's invoices, oldest first."""
    invoice_id, who = invoice["id"], invoice["who"]
    issue_at = times.from_micros(invoice["period_end"]) + timedelta(days=1)
    if invoice_id == mine[-1] or issue_at > now:
        return  # the scheduler issues these
    with clock.at(issue_at):
        view = lifecycle.finalize_row(app, conn, invoice_id, finance)
        if view["status"] == "pending_approval":
            view = lifecycle.issue(app, conn, invoice_id, success, "approve", "Usage checked with the customer")
    if who == "umbrella" and invoice_id == mine[0]:
        with clock.at(issue_at + timedelta(hours=3)):
            lifecycle.void_row(conn, invoice_id, "Sent to the wrong department", finance)
            new = lifecycle.reissue_row(app, conn, invoice_id, finance)
            view = lifecycle.finalize_row(app, conn, new["id"], finance)
            invoice_id = new["id"]
    due = money.parse_amount(view["amount_due"], view["currency"])
    paid_at = issue_at + timedelta(days=10)
    if view["status"] != "issued" or not due or paid_at > now:
        return
    amount = due // 2 if who == "initech" and invoice_id == mine[-2] else due  # half paid, then overdue
    with clock.at(paid_at):
        lifecycle.record_payment(conn, invoice_id, amount, "bank transfer", f"DEMO-{invoice_id:05d}", finance)


def _customer(conn, external_id):
    return named(conn, f"SELECT {customers_api.COLUMNS} FROM customers WHERE external_id = ?",
                 (external_id,)).fetchone()


def _alerts(app):
    """Budgets (Acme has spent 85% of its, so 50% and 80% fire; Globex a
    third of its), a spend alert for Hooli under what it has spent, one for
    large USD spend that nobody reaches, and a burst of Initech's API calls
    just now (a usage spike); then one evaluation, as the scheduler would run
    it: the firings and their unread notifications."""
    with app.db.reader() as conn:
        spend = {who: estimates.upcoming(app, conn, _customer(conn, who))[0].subtotal
                 for who in ("acme", "globex", "hooli")}
    with app.db.transaction() as conn:
        for who, share in (("acme", 85), ("globex", 33)):
            monthly = max(spend[who] * 100 // share, 100)
            currency = _customer(conn, who)["currency"]
            conn.execute("UPDATE customers SET budget = ? WHERE external_id = ?", (jsonutil.encode(
                {"monthly": money.format_minor(monthly, currency), "alert_at_percent": [50, 80, 100]}), who))
        hooli = _customer(conn, "hooli")
        for body in ({"name": "Hooli spend watch", "customer_id": hooli["id"], "type": "spend",
                      "threshold": money.format_minor(max(spend["hooli"] // 2, 100), "INR")},
                     {"name": "Large USD invoice", "type": "spend", "currency": "USD", "threshold": "25000.00"}):
            alerts.insert_rule(conn, alerts.check_rule(app, conn, body))
    ingest = ingest_for(app)
    burst = ingest.row({"id": "demo-initech-burst", "customer": "initech", "meter": "api_calls",
                        "quantity": 40000, "timestamp": times.format_instant(clock.now() - timedelta(seconds=1)),
                        "properties": {"region": "eu", "endpoint": "/export"}})
    ingest.problems.raise_if_any()
    with app.db.transaction() as conn:
        store_new(conn, [burst])
    return alert_eval.evaluate(app)["fired"]
