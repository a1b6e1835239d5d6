"""The two ways usage reads a customer's whole buckets give the same pieces:
SQLite adding up each span's rows (`_table_pieces`), and one index range
added up in Python span by span (`_row_pieces`, used for the hot buckets and
for spans of one row each). Random spans with gaps between them and cut
buckets inside them, over every table, aggregation and group_by key."""

import random

from billing.api import rollups as rollups_api
from billing.domain import times
from billing.store import rollups
from billing.store.rollups import BUCKET_US, DAY_US
from tests.http.test_rollups import post_crowded_batch, random_bound, zone_customers

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
