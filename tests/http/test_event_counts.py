"""The events chart (§10, §13): events received per local hour, day or month
over every customer and meter — matched by their meter's filter or not, less
retracted ones — read from the per-bucket counts the insert keeps, with a
range edge inside a bucket read from the raw events. Every figure equals a
count of the raw events written here, in timezones with DST (Lord Howe's of
half an hour) and +05:45."""

import random
import sqlite3

from billing.api import rollups as rollups_api
from billing.domain import times
from billing.store import archive, event_ids, migrations, rollups, schema_features
from billing.store.archive_files import COLUMNS
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


def _instant(bound, zone):
    """A bound as the API reads it: a date is the local midnight in `zone`."""
    if "T" in bound:
        return times.parse_instant(bound)
    return times.local_midnight(times.parse_date(bound), times.zone_or_error(zone))


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
        interval, zone = rng.choice(["hour", "day", "day", "month"]), rng.choice(ZONES)
        low, high = sorted([_bound(rng, days), _bound(rng, days)], key=lambda bound: _instant(bound, zone))
        if _instant(low, zone) == _instant(high, zone) or (interval == "hour" and low[:7] != high[:7]):
            continue  # an empty range, or too many hours
        reply = admin.get(f"/v1/analytics/events?from={low}&to={high}&interval={interval}&timezone={zone}")
        assert reply.status == 200, (reply, low, high, interval)
        body = reply.json
        windows = [(d["start"], d["end"]) for d in body["data"]]
        assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))  # contiguous
        assert [d["count"] for d in body["data"]] == _raw_counts(db_path, windows), (low, high, interval)
        assert body["total"] == sum(d["count"] for d in body["data"])
        checked += body["total"] > 0
    assert checked >= 30


def _forget_at_v19(conn, entries):
    """event_ids.forget_many as it was at V19 (the dedup index in two tables, V15)."""
    for table in ("event_ids", "event_ids_hot"):
        conn.executemany(f"DELETE FROM {table} WHERE id_hash = ? AND seq = ?", entries)


def _archive_at_v19(conn, seqs, remember_from, monkeypatch):
    """An archive pass before the counts were kept: the events `seqs` leave
    the database, their ids remembered where stamped at or after `remember_from`."""
    monkeypatch.setattr(event_ids, "forget_many", _forget_at_v19)
    conn.row_factory = sqlite3.Row
    records = [dict(zip(COLUMNS, [row[name] for name in COLUMNS]))
               for row in conn.execute(f"SELECT * FROM events WHERE seq IN ({','.join('?' * len(seqs))})", seqs)]
    conn.row_factory = None
    conn.execute("BEGIN")
    archive.mark(conn, records)
    archive.delete_chunk(conn, seqs, remember_from)
    conn.execute("COMMIT")
    monkeypatch.undo()
    return records


def test_the_migration_counts_stored_and_archived_events(tmp_path, monkeypatch):
    """A database from before the counts, with events archived before: every
    stored event is counted, and every archived one whose id is remembered or
    that its meter's filter matched (the rollups count it); only an unmatched
    one whose id was forgotten is lost. Timestamps before 1970 too. A restore
    afterwards leaves every bucket's count equal to its stored events but for
    those lost ones, and a retraction never takes a count below zero."""
    conn = old_database(str(tmp_path / "old.db"), 19, "(1, 's', 'sum', '[]'), (2, 'f', 'sum', '[]')")
    rng = random.Random(11)
    september = 1_756_684_800_000_000
    for seq in range(1, 2001):  # around 1970 (before it too) and around September 2025
        ts = rng.choice([0, september]) + rng.choice([-1, 1]) * rng.randrange(0, 40) * BUCKET // 3
        meter = rng.choice([1, 2])
        conn.execute("INSERT INTO events (seq, customer_id, event_id, meter_id, ts, quantity, value, matched, late,"
                     " received_at, id_hash) VALUES (?, 1, ?, ?, ?, 1, 1, ?, 0, 0, ?)",
                     (seq, f"e{seq}", meter, ts, 0 if meter == 2 and seq % 3 else 1, seq))
    rollups.rebuild_all(conn)
    rollups.rebuild_spans(conn)
    schema_features._index_event_ids(conn)  # V15's index, as the database had it at V19
    everything = dict(conn.execute(f"SELECT ts - ((ts % {BUCKET}) + {BUCKET}) % {BUCKET}, count(*) FROM events"
                                   " GROUP BY 1"))
    archived = [seq for (seq,) in conn.execute("SELECT seq FROM events WHERE seq % 4 = 0 AND seq < 2000")]
    remember_from = september  # ids of the events stamped from then on stay remembered
    records = _archive_at_v19(conn, archived, remember_from, monkeypatch)
    lost = {}
    for record in records:
        if record["ts"] < remember_from and record["meter_id"] == 2 and record["seq"] % 3:
            bucket = record["ts"] - record["ts"] % BUCKET
            lost[bucket] = lost.get(bucket, 0) + 1
    assert sum(lost.values()) > 20 and conn.execute("SELECT count(*) FROM archived_events").fetchone()[0] > 100
    assert migrations.migrate(conn) == list(range(20, len(migrations.MIGRATIONS) + 1))
    expected = {bucket: n - lost.get(bucket, 0) for bucket, n in everything.items() if n - lost.get(bucket, 0)}
    assert dict(conn.execute("SELECT bucket, n FROM event_counts")) == expected
    assert min(expected) < 0
    conn.execute("BEGIN")
    assert archive.restore_chunk(conn, records) == len(records)
    conn.execute("COMMIT")
    for bucket, n in everything.items():
        assert rollups_api.count_events(conn, [(bucket, bucket + BUCKET)]) == [n - lost.get(bucket, 0)]
    short = max(lost, key=lost.get)  # retract every stored event of the bucket with the most lost
    seqs = [seq for (seq,) in conn.execute("SELECT seq FROM events WHERE ts >= ? AND ts < ?", (short, short + BUCKET))]
    conn.execute("BEGIN")
    for seq in seqs:
        customer_id, meter_id, ts = conn.execute("SELECT customer_id, meter_id, ts FROM events WHERE seq = ?",
                                                 (seq,)).fetchone()
        conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
        rollups.forget_event(conn, customer_id, meter_id, ts)
    conn.execute("COMMIT")
    assert conn.execute("SELECT n FROM event_counts WHERE bucket = ?", (short,)).fetchone() == (0,)
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
