"""Rollups (§13): per (customer, meter, group, 15-minute bucket), kept in the
transaction of every insert and retraction, equal to what a simple reference
computes from the raw events — for random events of every aggregation, with
filters, group_by keys, late and retracted events, huge quantities."""

import json
import random
import sqlite3
from decimal import Decimal

from billing.store import event_ids, migrations, rollups
from tests.http.helpers import basic_plan, finalize, pin, september_drafts, table_count

BUCKET = 15 * 60 * 1_000_000
SPLIT = 10 ** 12
MONTH_START_US = 1_756_684_800_000_000  # 2025-09-01T00:00:00Z
TWO_MONTHS_US = 61 * 86_400 * 1_000_000

METERS = [
    {"key": "r_sum", "aggregation": "sum", "group_by": ["region"]},
    {"key": "r_count", "aggregation": "count", "filter": {"tier": "hot"}},
    {"key": "r_max", "aggregation": "max", "group_by": ["region", "zone"]},
    {"key": "r_min", "aggregation": "min"},
    {"key": "r_avg", "aggregation": "avg", "filter": {"tier": ["hot", "warm"]}, "group_by": ["zone"]},
    {"key": "r_latest", "aggregation": "latest", "group_by": ["region"]},
    {"key": "r_users", "aggregation": "unique_count", "value_property": "user", "group_by": ["region"]},
    {"key": "r_bytes", "aggregation": "sum", "value_property": "bytes", "filter": {"tier": "hot"}},
]
REGIONS = ["eu", "us", "ap", 1, True, None, "é\"x"]


def iso(us):
    seconds, micros = divmod(us, 1_000_000)
    from datetime import datetime, timezone
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


def random_quantity(rng):
    return rng.choice([1, 0, Decimal("0.000001"), Decimal("2.5"), 10 ** 12, Decimal("999999999999.999999"),
                       rng.randrange(0, 10 ** 6), Decimal(rng.randrange(0, 10 ** 12)) / 1000])


def random_event(rng, cid, ids):
    properties = {"tier": rng.choice(["hot", "warm", "cold"]), "user": rng.choice(["a", "b", "c", 7, False]),
                  "bytes": rng.choice([0, 1, 10 ** 12, Decimal("0.5")])}
    for name in ("region", "zone"):
        value = rng.choice(REGIONS)
        if value is not None:
            properties[name] = value
    # times on bucket edges, just before them, and anywhere
    base = MONTH_START_US + rng.randrange(0, TWO_MONTHS_US // BUCKET) * BUCKET
    ts = base + rng.choice([0, -1, 1, BUCKET - 1, rng.randrange(BUCKET)])
    event = {"customer_id": cid, "meter": rng.choice(METERS)["key"], "quantity": random_quantity(rng),
             "timestamp": iso(ts), "properties": properties}
    if rng.random() < 0.7:
        event["id"] = rng.choice(ids) if ids and rng.random() < 0.1 else f"e{rng.randrange(10 ** 9)}"
        ids.append(event["id"])
    return event


def reference(db_path):
    """{(customer, meter, bucket, grp as a dict): (n, sum, min, max, latest, distinct values)} from raw events."""
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    group_by = {r["id"]: json.loads(r["group_by"]) for r in conn.execute("SELECT id, group_by FROM meters")}
    expected = {}
    for row in conn.execute("SELECT seq, customer_id, meter_id, ts, value, properties FROM events WHERE matched = 1"):
        group = {}
        for key in group_by[row["meter_id"]]:
            text = conn.execute("SELECT json_quote(json_extract(?, ?))",
                                (row["properties"], f'$."{key}"')).fetchone()[0]
            group[key] = json.loads(text)
        bucket_key = (row["customer_id"], row["meter_id"], row["ts"] // BUCKET * BUCKET,
                      json.dumps(group, sort_keys=True))
        expected.setdefault(bucket_key, []).append((row["ts"], row["seq"], row["value"]))
    conn.close()
    result = {}
    for key, rows in expected.items():
        values = [v for _, _, v in rows]
        latest = max(rows)[2]
        if isinstance(values[0], str):
            result[key] = (len(rows), 0, None, None, latest, sorted(set(values)))
        else:
            result[key] = (len(rows), sum(values), min(values), max(values), latest, [])
    return result


def stored(db_path):
    """The rollups as the reference shapes them: the settled and the hot tables
    added key by key (a key may be in both)."""
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    distinct = {}
    for table in ("rollup_values", "rollup_values_hot"):
        for row in conn.execute(f"SELECT * FROM {table}"):
            key = (row["customer_id"], row["meter_id"], row["bucket"],
                   json.dumps(json.loads(row["grp"]), sort_keys=True))
            distinct.setdefault(key, set()).add(row["value"])
    merged = {}
    for table in ("rollups", "rollups_hot"):
        for row in conn.execute(f"SELECT * FROM {table}"):
            assert 0 <= row["total_lo"] < SPLIT
            key = (row["customer_id"], row["meter_id"], row["bucket"],
                   json.dumps(json.loads(row["grp"]), sort_keys=True))
            part = (row["n"], row["total_hi"] * SPLIT + row["total_lo"], row["low"], row["high"],
                    (row["last_ts"], row["last_seq"], row["last_value"]))
            if key in merged:
                n, total, low, high, last = merged[key]
                part = (n + part[0], total + part[1], min(x for x in (low, part[2]) if x is not None)
                        if low is not None or part[2] is not None else None,
                        max(x for x in (high, part[3]) if x is not None) if high is not None or part[3] is not None
                        else None, max(last, part[4], key=lambda t: t[:2]))
            merged[key] = part
    conn.close()
    result = {key: (n, total, low, high, last[2], sorted(distinct.pop(key, [])))
              for key, (n, total, low, high, last) in merged.items()}
    assert not distinct  # no counted values without their bucket
    return result


def assert_days_add_up(db_path):
    """Each day row is the sum of that UTC day's settled buckets (none without them)."""
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    want = {}
    for row in conn.execute("SELECT * FROM rollups"):
        key = (row["customer_id"], row["meter_id"], row["bucket"] // 86_400_000_000 * 86_400_000_000, row["grp"])
        n, total, low, high, last = want.get(key, (0, 0, None, None, None))
        last_here = (row["last_ts"], row["last_seq"], row["last_value"])
        want[key] = (n + row["n"], total + row["total_hi"] * SPLIT + row["total_lo"],
                     row["low"] if low is None or (row["low"] is not None and row["low"] < low) else low,
                     row["high"] if high is None or (row["high"] is not None and row["high"] > high) else high,
                     last_here if last is None or last_here[:2] > last[:2] else last)
    days = {(row["customer_id"], row["meter_id"], row["day"], row["grp"]):
            (row["n"], row["total_hi"] * SPLIT + row["total_lo"], row["low"], row["high"],
             (row["last_ts"], row["last_seq"], row["last_value"])) for row in conn.execute("SELECT * FROM rollup_days")}
    conn.close()
    assert days == want
    return len(days)


def make_meters(admin):
    for meter in METERS:
        assert admin.post("/v1/meters", {"name": meter["key"], **meter}).status == 201


def test_rollups_equal_the_raw_events(server, admin):
    """Random events of every aggregation (batches with duplicate ids, single
    posts, events flagged late for an issued period, retractions, a group_by
    key added afterwards): each bucket equals the reference, sums exact past 2⁶³."""
    rng = random.Random(14)
    basic_plan(admin)
    (draft,) = september_drafts(admin, 1)
    finalize(admin, draft)  # September of this customer is issued: its events are late now
    late_cid = admin.get(f"/v1/invoices/{draft}").json["customer_id"]
    pin("2025-11-01T00:00:00Z")
    make_meters(admin)
    cids = [late_cid] + [admin.post("/v1/customers", {"name": f"C{i}", "email": f"rollup{i}@example.com"}).json["id"]
                         for i in range(3)]
    ids = []
    for _ in range(12):
        batch = [random_event(rng, rng.choice(cids), ids) for _ in range(rng.randrange(1, 120))]
        reply = admin.post("/v1/events/batch", {"events": batch})
        assert reply.status == 200, reply
    for _ in range(20):
        assert admin.post("/v1/events", random_event(rng, rng.choice(cids), ids)).status in (200, 201)
    # twenty events of 10^12 in one bucket: 2·10^19 µs, past SQLite's 64-bit integers
    huge = [{"customer_id": cids[1], "meter": "r_sum", "quantity": 10 ** 12, "timestamp": "2025-10-05T10:07:00Z"}] * 20
    assert admin.post("/v1/events/batch", {"events": huge}).status == 200
    late = server.app.db.rows("SELECT count(*) AS n FROM events WHERE late = 1")[0]["n"]
    assert late > 0
    assert stored(server.app.config.db_path) == reference(server.app.config.db_path)
    # every hot bucket settles (into the day rows too); then retractions and regroups recompute them
    assert server.app.settler.settle_rollups() > 0
    assert assert_days_add_up(server.app.config.db_path)

    others = [r for r in server.app.db.rows("SELECT customer_id, event_id FROM events WHERE customer_id != ?"
                                            " AND meter_id != (SELECT id FROM meters WHERE key = 'api_calls')",
                                            (late_cid,))]
    for row in rng.sample(others, 25):
        reply = admin.delete(f"/v1/customers/{row['customer_id']}/events/{row['event_id']}")
        assert reply.status == 200, reply
    assert stored(server.app.config.db_path) == reference(server.app.config.db_path)

    assert assert_days_add_up(server.app.config.db_path)
    assert admin.patch("/v1/meters/r_sum", {"group_by": ["region", "zone"]}).status == 200
    assert admin.patch("/v1/meters/r_min", {"group_by": ["tier"]}).status == 200
    assert stored(server.app.config.db_path) != reference(server.app.config.db_path)  # regrouped by the scheduler
    run = admin.post("/v1/jobs/run", {}).json
    assert run["outcome"] == "ok" and run["details"]["regroup_chunks"] == 2  # one per meter
    assert stored(server.app.config.db_path) == reference(server.app.config.db_path)
    assert assert_days_add_up(server.app.config.db_path)


def old_database(path, version, meters):
    """A database at schema `version` (the migrations before a change) with
    customer 1 and the meters of `meters` (VALUES rows: id, key, aggregation,
    group_by); its connection."""
    conn = sqlite3.connect(path, isolation_level=None)
    migrations.migrate(conn, migrations.MIGRATIONS[:version])
    conn.execute("INSERT INTO customers (id, name, email, created_at, updated_at) VALUES (1, 'A', 'a@x', 0, 0)")
    conn.execute("INSERT INTO meters (id, key, name, aggregation, group_by, created_at, updated_at)"
                 " SELECT column1, column2, column2, column3, column4, 0, 0 FROM (VALUES " + meters + ")")
    return conn


def test_the_migration_builds_rollups_of_stored_events(tmp_path):
    """A database from before rollups: the migration aggregates what it holds."""
    path = str(tmp_path / "old.db")
    conn = old_database(path, 11, "(1, 's', 'sum', '[\"region\"]'), (2, 'u', 'unique_count', '[]')")
    rng = random.Random(7)
    for seq in range(1, 3000):
        meter = rng.choice([1, 2])
        value = f'"{rng.choice("abc")}"' if meter == 2 else rng.choice([1, 10 ** 18, 5 * 10 ** 17])
        conn.execute("INSERT INTO events (seq, customer_id, event_id, meter_id, ts, quantity, value, matched,"
                     " properties, received_at, id_hash) VALUES (?, 1, ?, ?, ?, 1, ?, ?, ?, 0, ?)",
                     (seq, f"e{seq}", meter, MONTH_START_US + rng.randrange(0, 40) * BUCKET // 3, value,
                      rng.choice([1, 1, 0]), json.dumps({"region": rng.choice(["eu", "us"])}), seq))
    assert migrations.migrate(conn) == list(range(12, len(migrations.MIGRATIONS) + 1))
    # the dedup index: every stored event in one run (V15's table, moved by V21), the tail empty
    assert conn.execute("SELECT run, id_hash, seq FROM event_id_runs").fetchall() == conn.execute(
        "SELECT 1, id_hash, seq FROM events ORDER BY id_hash, seq").fetchall()
    assert event_ids.mark(conn) == 2999
    spans = conn.execute("SELECT customer_id, meter_id, n, first_ts, last_ts FROM event_spans").fetchall()
    assert spans == conn.execute("SELECT customer_id, meter_id, count(*), min(ts), max(ts) FROM events"
                                 " GROUP BY customer_id, meter_id ORDER BY 1, 2").fetchall()
    assert len(spans) == 2
    conn.close()
    assert stored(path) == reference(path)


# -- usage and invoices read the rollups ----------------------------------------------------

ZONES = ["UTC", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]
AGGREGATION = {meter["key"]: meter["aggregation"] for meter in METERS}


def raw_rows(db_path, customer_id, meter_key, group_by):
    """(ts, seq, value, group JSON text) of the customer's matched events of the meter."""
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT ts, seq, value, json_quote(json_extract(properties, ?)) FROM events"
                            " WHERE customer_id = ? AND matched = 1 AND meter_id = (SELECT id FROM meters"
                            " WHERE key = ?)", (f'$."{group_by or "-"}"', customer_id, meter_key)).fetchall()
    finally:
        conn.close()


def all_rows(db_path, meter_key, group_by):
    """(ts, seq, value, group) of every customer's matched events of the meter;
    the group is the customer id with group_by "customer"."""
    conn = sqlite3.connect(db_path)
    group = "customer_id" if group_by == "customer" else "json_quote(json_extract(properties, ?))"
    params = () if group_by == "customer" else (f'$."{group_by or "-"}"',)
    try:
        return conn.execute(f"SELECT ts, seq, value, {group} FROM events WHERE matched = 1 AND meter_id ="
                            " (SELECT id FROM meters WHERE key = ?)", (*params, meter_key)).fetchall()
    finally:
        conn.close()


def check_analytics(admin, db_path, meter_key, query, group_by):
    reply = admin.get(f"/v1/analytics/usage?meter={meter_key}&{query}" + (f"&group_by={group_by}" if group_by else ""))
    assert reply.status == 200, reply
    body, aggregation = reply.json, AGGREGATION[meter_key]
    rows = all_rows(db_path, meter_key, group_by)
    inside = [r for r in rows if parse_us(body["from"]) <= r[0] < parse_us(body["to"])]
    assert as_micros(body["value"]) == expected_micros(aggregation, inside), query
    for bucket in body["data"]:
        part = [r for r in inside if parse_us(bucket["start"]) <= r[0] < parse_us(bucket["end"])]
        assert as_micros(bucket["value"]) == expected_micros(aggregation, part), (query, bucket)
        if group_by:
            expected = {}
            for row in part:
                expected.setdefault(row[3] if group_by == "customer" else json.dumps(json.loads(row[3])), []).append(row)
            got = {(g["group"]["customer_id"] if group_by == "customer" else json.dumps(g["group"][group_by])):
                   as_micros(g["value"]) for g in bucket["groups"]}
            assert got == {key: expected_micros(aggregation, rows) for key, rows in expected.items()}


def expected_micros(aggregation, rows):
    """The reference: a meter value in integer micros (None where undefined)."""
    values = [value for _, _, value, _ in rows]
    if aggregation == "count":
        return len(values) * 10 ** 6
    if aggregation == "unique_count":
        return len(set(values)) * 10 ** 6
    if aggregation == "sum":
        return sum(values)
    if not values:
        return None
    if aggregation == "avg":
        return (2 * sum(values) + len(values)) // (2 * len(values))
    return {"max": max, "min": min}.get(aggregation, lambda _: max(rows)[2])(values)


def as_micros(value):
    return None if value is None else int(Decimal(value) * 10 ** 6)


def parse_us(text):
    from billing.domain import times
    return times.to_micros(times.parse_instant(text))


def check_groups(aggregation, groups, rows, group_by):
    expected = {}
    for row in rows:
        expected.setdefault(row[3], []).append(row)
    got = {json.dumps(g["group"][group_by]): as_micros(g["value"]) for g in groups}
    assert got == {json.dumps(json.loads(key)): expected_micros(aggregation, part) for key, part in expected.items()}


def check_usage(admin, db_path, cid, meter_key, query, group_by):
    reply = admin.get(f"/v1/customers/{cid}/usage?meter={meter_key}&{query}" + (f"&group_by={group_by}" if group_by else ""))
    assert reply.status == 200, reply
    body = reply.json
    (entry,) = body["usage"]
    aggregation = AGGREGATION[meter_key]
    rows = raw_rows(db_path, cid, meter_key, group_by)
    start, end = parse_us(body["from"]), parse_us(body["to"])
    inside = [r for r in rows if start <= r[0] < end]
    assert as_micros(entry["value"]) == expected_micros(aggregation, inside), (query, group_by)
    for window in entry.get("windows", []):
        low, high = parse_us(window["start"]), parse_us(window["end"])
        part = [r for r in inside if low <= r[0] < high]
        assert as_micros(window["value"]) == expected_micros(aggregation, part), (query, window)
        if group_by:
            check_groups(aggregation, window["groups"], part, group_by)
    if group_by:
        check_groups(aggregation, entry["groups"], inside, group_by)


# where events crowd: buckets spread over September to November, and those around the
# DST changes of New York (2 November) and Lord Howe (5 October, half an hour)
HOT = sorted({MONTH_START_US + k * 3_701 * BUCKET // 37 // BUCKET * BUCKET for k in range(0, 60)}
             | {edge + d * BUCKET for edge in (1_762_063_200_000_000, 1_759_591_800_000_000)
                for d in range(-6, 7)})


PLAN = {"code": "rolled", "name": "Rolled", "currency": "USD",
        "charges": [{"meter": meter["key"], "model": "per_unit", "unit_price": "0.01"} for meter in METERS]}


def check_invoices(admin, db_path, cids):
    """The drafts of September and October, and the upcoming invoice: each
    usage line's quantity equals the reference over the invoice's period."""
    invoices = [admin.get(f"/v1/invoices/{i}").json for i in admin.post("/v1/invoices/run", {}).json["invoice_ids"]]
    assert len(invoices) == 2 * len(cids)
    invoices += [admin.get(f"/v1/customers/{cid}/upcoming-invoice").json for cid in cids]
    for invoice in invoices:
        start, end = parse_us(invoice["period_start"]), parse_us(invoice["period_end"])
        lines = {line["meter"]: line["quantity"] for line in invoice["lines"] if line["type"] == "usage"}
        assert set(lines) == set(AGGREGATION)
        for key, quantity in lines.items():
            rows = [r for r in raw_rows(db_path, invoice["customer_id"], key, None) if start <= r[0] < end]
            assert as_micros(quantity) == (expected_micros(AGGREGATION[key], rows) or 0), (invoice["period_start"], key)


def random_bound(rng):
    """An instant in a crowded bucket: on its start, just around it, or anywhere inside."""
    return rng.choice(HOT) + rng.choice([0, 0, 1, -1, BUCKET - 1, rng.randrange(BUCKET)])


def settle_some(server, number):
    """Between batches: one chunk of hot rows settled, later all of them, so
    figures read keys from the hot table, the settled one and both at once."""
    if number == 2:
        with server.app.db.transaction() as conn:
            assert rollups.settle(conn, rollups.settle_before(parse_us("2025-11-25T00:00:00Z")), 150) == 150
    if number == 4:
        assert server.app.settler.settle_rollups() > 0
        assert table_count(server, "rollups_hot") == table_count(server, "rollup_values_hot") == 0


def zone_customers(admin):
    """The meters, the plan and a customer in each of ZONES (ids), on 2025-11-25."""
    pin("2025-11-25T00:00:00Z")
    make_meters(admin)
    cids = [admin.post("/v1/customers", {"name": zone, "email": f"z{i}@example.com", "timezone": zone}).json["id"]
            for i, zone in enumerate(ZONES)]
    assert admin.post("/v1/plans", PLAN).status == 201
    return cids


def post_crowded_batch(admin, rng, cids):
    """300 random events of the customers in crowded buckets, September to
    late November (DST changes included)."""
    batch = [random_event(rng, rng.choice(cids), []) for _ in range(300)]
    for event in batch:
        event["timestamp"] = iso(random_bound(rng))
    assert admin.post("/v1/events/batch", {"events": batch}).status == 200


def test_usage_equals_the_raw_events(server, admin):
    """Random ranges whose edges fall inside buckets, local windows across DST
    changes and +05:45, groups: every figure equals the reference."""
    rng = random.Random(1414)
    cids = zone_customers(admin)
    for cid in cids:
        assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "rolled", "start": "2025-09-01"}).status == 201
    for number in range(8):
        post_crowded_batch(admin, rng, cids)
        settle_some(server, number)
    db_path = server.app.config.db_path
    assert table_count(server, "rollups") and table_count(server, "rollups_hot")
    assert stored(db_path) == reference(db_path)
    for _ in range(60):
        cid, meter = rng.choice(cids), rng.choice(METERS)
        low, high = sorted([random_bound(rng), random_bound(rng)])
        if low == high:
            continue
        group_by = rng.choice([None, *meter.get("group_by", [])])
        window = rng.choice([None, "day", "month"] + (["hour"] if high - low < 4 * 86_400 * 10 ** 6 else []))
        query = f"from={iso(low)}&to={iso(high)}" + (f"&window={window}" if window else "")
        check_usage(admin, db_path, cid, meter["key"], query, group_by)
    check_invoices(admin, db_path, cids)
    for _ in range(25):  # analytics: every customer, per local bucket, by customer or property
        meter, zone = rng.choice(METERS), rng.choice(ZONES)
        low, high = sorted([random_bound(rng), random_bound(rng)])
        if low == high:
            continue
        interval = rng.choice(["day", "month"] + (["hour"] if high - low < 4 * 86_400 * 10 ** 6 else []))
        check_analytics(admin, db_path, meter["key"], f"from={iso(low)}&to={iso(high)}&interval={interval}"
                        f"&timezone={zone}", rng.choice([None, "customer", *meter.get("group_by", [])]))
    for cid in cids:  # local dates: windows and ranges on local midnights
        for meter in METERS:
            check_usage(admin, db_path, cid, meter["key"], "from=2025-09-15&to=2025-11-20&window=day",
                        rng.choice([None, *meter.get("group_by", [])]))
