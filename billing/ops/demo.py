"""`--demo`: fill an empty database with a small, believable company so the
dashboard is alive at first sight. Everything goes through the same
validation as the API; nothing is written if the database already has data."""

import json
import random
from datetime import timedelta

from .. import clock
from ..api import auth
from ..api.events import Ingest, store_new
from ..domain import times

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


def fill(app, seed=7):
    """Create the demo company; returns a one-line summary."""
    db = app.db
    if db.query_one("SELECT 1 FROM customers LIMIT 1") or db.query_one("SELECT 1 FROM meters LIMIT 1"):
        return "Demo: the database already has data; nothing added."
    rng = random.Random(seed)
    now_us = times.to_micros(clock.now())
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
    app.catalog.invalidate_meters()
    app.catalog.invalidate_customers()
    ingest = Ingest(app)
    ingest.oldest_us = None  # history older than the lateness limit is the point here
    start = clock.now() - timedelta(days=DAYS)
    rows = []
    for external_id, *_, size in CUSTOMERS:
        for day in range(DAYS + 1):
            moment = start + timedelta(days=day)
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
                                        "properties": {"region": region, "endpoint": rng.choice(["/search", "/ingest", "/report"])}}))
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
    ingest.problems.raise_if_any()
    with db.transaction() as conn:
        stored = len(store_new(conn, rows))
    app.stats.events_ingested(stored)
    return (f"Demo: {len(CUSTOMERS)} customers, {len(METERS)} meters, {stored} events over {DAYS} days; "
            "users finance@localhost / finance-demo-1 and viewer@localhost / viewer-demo-1.")
