"""The events chart (§10, §13): events received per local hour, day or month
over every customer and meter — matched by their meter's filter or not, less
retracted ones — read from the per-bucket counts the insert keeps, with a
range edge inside a bucket read from the raw events. Every figure equals a
count of the raw events written here, in timezones with DST (Lord Howe's of
half an hour) and +05:45."""

import random
import sqlite3

from billing.domain import times
from billing.store import migrations
from tests.http.helpers import pin
from tests.http.test_rollups import BUCKET, HOT, METERS, iso, make_meters, old_database, random_event, zone_customers

ZONES = ["UTC", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]
NOW = "2025-11-25T00:00:00Z"


def _raw_counts(db_path, windows):
    """The stored events of each [start, end) (RFC 3339), counted in SQL."""
    conn = sqlite3.connect(db_path)
    try:
        return [conn.execute("SELECT count(*) FROM events WHERE ts >= ? AND ts < ?",
                             (times.to_micros(times.parse_instant(a)), times.to_micros(times.parse_instant(b))))
                .fetchone()[0] for a, b in windows]
    finally:
        conn.close()


def _bound(rng, day_range):
    """A date, or an instant on a bucket edge or inside a bucket."""
    day = rng.choice(day_range)
    if rng.random() < 0.4:
        return day
    at = times.to_micros(times.parse_instant(f"{day}T00:00:00Z")) + rng.randrange(96) * BUCKET
    return iso(at + rng.choice([0, 1, BUCKET // 2, BUCKET - 1]))


def _send_events(admin, rng, cids):
    """Batches and single events around the crowded buckets (every meter, some
    outside their meter's filter), then some retracted."""
    sent = []
    for number in range(6):
        batch = [random_event(rng, rng.choice(cids), []) for _ in range(200)]
        for i, event in enumerate(batch):
            event["id"] = f"b{number}-{i}"
            event["timestamp"] = iso(rng.choice(HOT) + rng.choice([0, 1, BUCKET // 2, BUCKET - 1]))
        assert admin.post("/v1/events/batch", {"events": batch}).status == 200
        sent += batch
    for event in sent[:20]:
        assert admin.post("/v1/events", event).status == 200  # a duplicate: not counted again
        assert admin.post("/v1/events", {**event, "id": event["id"] + "-one"}).status == 201
    for event in rng.sample(sent, 25):
        assert admin.delete(f"/v1/customers/{event['customer_id']}/events/{event['id']}").status == 200


def test_the_chart_counts_every_event_received(server, admin):
    rng = random.Random(4242)
    cids = zone_customers(admin)
    pin(NOW)
    _send_events(admin, rng, cids)
    db_path = server.app.config.db_path
    conn = sqlite3.connect(db_path)
    unmatched = conn.execute("SELECT count(*) FROM events WHERE matched = 0").fetchone()[0]
    conn.close()
    assert unmatched > 50  # events outside their meter's filter are counted too
    days = [f"2025-{month:02d}-{day:02d}" for month in (9, 10, 11) for day in range(1, 29)]
    checked = 0
    for _ in range(60):
        interval = rng.choice(["hour", "day", "day", "month"])
        low, high = sorted([_bound(rng, days), _bound(rng, days)])
        if low == high or (interval == "hour" and (low[:10] != high[:10] and low[5:7] != high[5:7])):
            continue  # an empty range, or too many hours
        reply = admin.get(f"/v1/analytics/events?from={low}&to={high}&interval={interval}"
                          f"&timezone={rng.choice(ZONES)}")
        assert reply.status == 200, (reply, low, high, interval)
        body = reply.json
        windows = [(d["start"], d["end"]) for d in body["data"]]
        assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))  # contiguous
        assert [d["count"] for d in body["data"]] == _raw_counts(db_path, windows), (low, high, interval)
        assert body["total"] == sum(d["count"] for d in body["data"])
        checked += body["total"] > 0
    assert checked >= 30


def test_the_migration_counts_stored_and_archived_events(tmp_path):
    """A database from before the counts: stored events and the archived ones
    still remembered are counted per bucket (before 1970 too)."""
    conn = old_database(str(tmp_path / "old.db"), 19, "(1, 's', 'sum', '[]')")
    rng = random.Random(11)
    stamps = [rng.choice([-1, 1]) * rng.randrange(0, 40) * BUCKET // 3 + 1_756_684_800_000_000 * rng.choice([0, 1])
              for _ in range(2000)]
    for seq, ts in enumerate(stamps, 1):
        table = "archived_events" if seq % 4 == 0 else "events"
        extra = ("", "") if table == "archived_events" else (", value, matched", ", 1, 1")
        conn.execute(f"INSERT INTO {table} (seq, customer_id, event_id, meter_id, ts, quantity, late, received_at,"
                     f" id_hash{extra[0]}) VALUES (?, 1, ?, 1, ?, 1, 0, 0, ?{extra[1]})", (seq, f"e{seq}", ts, seq))
    assert migrations.migrate(conn) == list(range(20, len(migrations.MIGRATIONS) + 1))
    expected = {}
    for ts in stamps:
        expected[ts - ts % BUCKET] = expected.get(ts - ts % BUCKET, 0) + 1
    assert dict(conn.execute("SELECT bucket, n FROM event_counts")) == expected
    assert min(expected) < 0
    conn.close()


def test_a_new_database_counts_from_its_first_event(server, admin):
    pin("2025-11-25T00:00:00Z")
    make_meters(admin)
    cid = admin.post("/v1/customers", {"name": "A", "email": "a@example.com"}).json["id"]
    assert admin.get("/v1/analytics/events?from=2025-11-24&to=2025-11-25").json["total"] == 0
    for i in range(3):
        assert admin.post("/v1/events", {"id": f"x{i}", "customer_id": cid, "meter": METERS[0]["key"],
                                         "timestamp": "2025-11-24T10:00:00Z"}).status == 201
    assert admin.post("/v1/events", {"id": "x0", "customer_id": cid, "meter": METERS[0]["key"],
                                     "timestamp": "2025-11-24T10:00:00Z"}).status == 200  # a duplicate: not counted
    body = admin.get("/v1/analytics/events?from=2025-11-24&to=2025-11-25").json
    assert body["total"] == 3 and [d["count"] for d in body["data"]] == [3]
    # the overview's events today: the 24th is still today in New York, no longer in UTC
    assert admin.get("/v1/analytics/overview?timezone=America/New_York").json["events_today"] == 3
    assert admin.get("/v1/analytics/overview").json["events_today"] == 0
