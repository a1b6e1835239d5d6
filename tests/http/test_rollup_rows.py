"""The two ways usage reads a customer's whole buckets give the same pieces:
SQLite adding up each span's rows (`_table_pieces`), and one index range
added up in Python span by span (`_row_pieces`, used for the hot buckets and
for spans of one row each). Random spans with gaps between them and cut
buckets inside them, over every table, aggregation and group_by key."""

import random

from billing.api import rollups as rollups_api
from billing.domain import rollup, times
from billing.store import rollups
from billing.store.rollups import BUCKET_US, DAY_US
from tests.http.test_rollups import iso, post_crowded_batch, random_bound, random_event, zone_customers

TABLES = (("rollups", "bucket", BUCKET_US), ("rollup_days", "day", DAY_US), ("rollups_hot", "bucket", BUCKET_US))


def _random_spans(rng, unit, around):
    """Sorted [lo, a, b] spans on `unit` edges from the one holding `around`
    on, with gaps, some of one unit, some longer; lo is a window start at or
    before a."""
    at = around - around % unit
    spans = []
    for number in range(rng.randrange(1, 12)):
        at += rng.choice([0, 0, unit, 3 * unit]) if number else 0  # a gap, or none
        length = rng.choice([unit, unit, 2 * unit, 5 * unit])
        same_window = spans and rng.random() < 0.2  # a window's two partial days both in `rollups`
        spans.append([spans[-1][0] if same_window else at - rng.choice([0, unit // 2]), at, at + length])
        at += length
    return spans


def _cut(rng, spans, unit):
    """Some buckets inside and beside the spans (none for the day rows)."""
    if unit != BUCKET_US:
        return set()
    edges = [span[1] for span in spans] + [span[2] - BUCKET_US for span in spans]
    return set(rng.sample(edges, rng.randrange(0, len(edges) + 1)))


def _a_row_time(conn, rng, table, column, customer_id, meter):
    """The time of one of the customer's rows of the meter in `table`, or anywhere busy."""
    times_held = [at for (at,) in conn.execute(f"SELECT {column} FROM {table} WHERE customer_id = ? AND meter_id = ?",
                                                (customer_id, meter.id))]
    return rng.choice(times_held) if times_held else random_bound(rng)


def _shape(pieces, aggregation):
    return sorted((lo, grp, part.n, part.total, part.low, part.high, part.last if aggregation == "latest" else None)
                  for lo, grp, part in pieces)


def test_row_by_row_pieces_equal_the_summed_ones(server, admin):
    rng = random.Random(2718)
    cids = zone_customers(admin)
    for number in range(6):
        post_crowded_batch(admin, rng, cids)
        if number == 2:  # some buckets settled (and their days), the rest still hot
            with server.app.db.transaction() as conn:
                now = times.to_micros(times.parse_instant("2025-11-25T00:00:00Z"))
                assert rollups.settle(conn, rollups.settle_before(now), 400) == 400
    meters = {meter.id: meter for meter in server.app.catalog.meters().values() if meter.aggregation != "unique_count"}
    compared = 0
    with server.app.db.snapshot() as conn:
        held = {table: [(cid, meters[mid]) for cid, mid in conn.execute(
            f"SELECT DISTINCT customer_id, meter_id FROM {table} ORDER BY 1, 2") if mid in meters]
            for table, _, _ in TABLES}
        for table, column, unit in TABLES:
            assert held[table], table
            for _ in range(90):
                cid, meter = rng.choice(held[table])
                group_by = rng.choice([None, *meter.group_by])
                spans = _random_spans(rng, unit, _a_row_time(conn, rng, table, column, cid, meter))
                cut = _cut(rng, spans, unit)
                by_rows = rollups_api._row_pieces(conn, meter, cid, spans, cut, group_by, table, column)
                summed = rollups_api._table_pieces(conn, meter, cid, rollups_api.encode(spans), cut, group_by,
                                                   table, column)
                assert _shape(by_rows, meter.aggregation) == _shape(summed, meter.aggregation), \
                    (table, meter.key, group_by, spans, sorted(cut))
                compared += bool(summed)
    assert compared >= 150  # most comparisons found rows


def test_spans_far_apart_are_summed_by_sqlite():
    """A year of day windows cut a quarter hour into its first and last day:
    the settled buckets' two spans lie a year apart, so they are summed per
    span rather than read as one range of a year's buckets; the day rows
    (one a window, no gaps) and the hot buckets are read row by row."""
    start, end = times.parse_instant("2025-01-01T23:45:00Z"), times.parse_instant("2025-12-31T00:15:00Z")
    windows = tuple((times.to_micros(a), times.to_micros(b)) for a, b in times.windows(start, end, "day", times.UTC))
    reads = {read.table: read for read in rollups_api._reads(windows, True)}
    assert [len(reads["rollups"].spans), reads["rollups"].by_rows] == [2, False]
    assert reads["rollup_days"].by_rows and reads["rollups_hot"].by_rows
    assert len(reads["rollup_days"].spans) == len(windows) - 2


def _whole_bucket_ranges(rng, at):
    """A range on bucket edges (no bucket cut) holding instant `at`: whole UTC
    days, or a range with partial days at either end."""
    start = rng.choice([at - at % DAY_US, at - at % BUCKET_US - rng.randrange(0, 4) * BUCKET_US,
                        at - at % BUCKET_US - rng.randrange(1, 3) * DAY_US])
    length = rng.choice([BUCKET_US, 7 * BUCKET_US, DAY_US, rng.randrange(2, 6) * DAY_US])
    end = start + length + rng.choice([0, 0, rng.randrange(1, 96)]) * BUCKET_US
    return start, max(end, at - at % BUCKET_US + BUCKET_US)


def test_a_chunk_read_equals_the_ranges_read_one_by_one_whatever_the_hot_buckets_hold(server, admin):
    """many_pieces (the invoice run's read of a chunk) reads no empty span and
    no hot buckets of a range that ends before the oldest hot bucket: with the
    hot table holding buckets inside the ranges, with it empty, and with it
    holding only buckets after them, every range's figure equals what
    reading that range alone (`pieces`) gives."""
    rng = random.Random(1618)
    cids = zone_customers(admin)
    for _ in range(3):
        post_crowded_batch(admin, rng, cids)
    meters = [meter for meter in server.app.catalog.meters().values()
              if meter.aggregation not in ("latest", "unique_count")]
    with server.app.db.snapshot() as conn:  # ranges around stored events, and some anywhere
        stored = conn.execute("SELECT customer_id, meter_id, ts FROM events").fetchall()
    by_id = {meter.id: meter for meter in meters}
    asks = [(cid, by_id[mid], *_whole_bucket_ranges(rng, ts)) for cid, mid, ts in rng.sample(stored, 300)
            if mid in by_id][:120]
    asks += [(rng.choice(cids), rng.choice(meters), *_whole_bucket_ranges(rng, ts)) for *_, ts in rng.sample(stored, 30)]

    def compare():
        with server.app.db.snapshot() as conn:
            together = rollups_api.many_pieces(conn, asks)
            found = 0
            for cid, meter, start, end in asks:
                alone = rollups_api.pieces(conn, meter, cid, start, end)
                got = [part for _, _, part in together[(cid, meter.id, start, end)]]
                assert rollup.value_of(got, meter.aggregation) == \
                    rollup.value_of([part for _, _, part in alone], meter.aggregation), (cid, meter.key, start, end)
                found += bool(alone)
            return found

    def hot_buckets():
        with server.app.db.snapshot() as conn:
            return conn.execute("SELECT min(bucket), max(bucket) FROM rollups_hot").fetchone()

    low, high = hot_buckets()
    assert low < max(end for *_, end in asks) and high > min(start for *_, start, _ in asks)  # inside the ranges
    assert compare() >= 100
    assert server.app.settler.settle_rollups() > 0
    assert hot_buckets() == (None, None)
    assert compare() >= 100
    late = [random_event(rng, rng.choice(cids), []) for _ in range(50)]
    for event in late:  # the day before "now": after every range
        event["timestamp"] = iso(times.to_micros(times.parse_instant("2025-11-24T00:00:00Z")) + rng.randrange(DAY_US))
    assert admin.post("/v1/events/batch", {"events": late}).status == 200
    assert hot_buckets()[0] >= max(end for *_, end in asks)
    assert compare() >= 100
    # ranges ending just past the oldest hot bucket read it; ranges ending on it read no hot row
    with server.app.db.snapshot() as conn:
        oldest = [(cid, by_id[mid], bucket) for cid, mid, bucket in conn.execute(
            "SELECT customer_id, meter_id, bucket FROM rollups_hot WHERE bucket = (SELECT min(bucket) FROM rollups_hot)")
            if mid in by_id]
    assert oldest
    edge = [(cid, meter, bucket - back, bucket + ahead) for cid, meter, bucket in oldest
            for back in (BUCKET_US, DAY_US, DAY_US + 3 * BUCKET_US) for ahead in (0, BUCKET_US)]
    asks[:] = edge
    assert compare() == len(oldest) * 3  # each (customer, meter) of the oldest hot bucket, in the ranges past it
