"""The events' time index (billing/store/event_time.py): ordered by the
15-minute bucket (SQLite's integer division of ts), then seq. A range read
through it (or a one-sided bound) finds exactly the events a plain
`ts >= a AND ts < b` (`ts >= a`, `ts < b`) finds, before 1970 too, and
every statement that reads events by time names the key, so SQLite walks
the index instead of scanning or sorting every event."""

import random
import re
import sqlite3

import pytest

from billing.api import events as api_events
from billing.api import recommendations
from billing.api import rollups as api_rollups
from billing.ops import archiver
from billing.store import event_time, regroup, rollups
from billing.store.db import Database

B = event_time.BUCKET_US


@pytest.fixture
def db(tmp_path):
    database = Database(str(tmp_path / "t.db"), background=False)
    with database.transaction() as conn:
        conn.execute("INSERT INTO customers (name, email, created_at, updated_at) VALUES ('a', 'a@x', 0, 0)")
        conn.execute("INSERT INTO meters (key, name, aggregation, created_at, updated_at)"
                     " VALUES ('calls', 'Calls', 'sum', 0, 0)")
    yield database
    database.close()


def test_the_index_is_on_the_bucket_key(db):
    with db.reader() as conn:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events_time'").fetchone()
    assert sql == f"CREATE INDEX events_time ON events({event_time.KEY})"


def test_key_divides_as_sqlite_does():
    rng = random.Random(7)
    edges = [k * B + d for k in range(-3, 4) for d in (-1, 0, 1)]
    values = edges + [rng.randint(-10 ** 17, 10 ** 17) for _ in range(2_000)]
    conn = sqlite3.connect(":memory:")
    for value in values:
        (expected,) = conn.execute(f"SELECT ? / {B}", (value,)).fetchone()
        assert event_time.key(value) == expected, value


def _store(conn, stamps):
    conn.executemany("INSERT INTO events (customer_id, event_id, meter_id, ts, quantity, value, matched,"
                     " received_at, id_hash) VALUES (1, ?, 1, ?, 1, 1, 1, 0, ?)",
                     [(f"e{n}", ts, n) for n, ts in enumerate(stamps)])


def test_a_range_through_the_index_finds_what_a_plain_range_finds(db):
    rng = random.Random(11)
    edges = [k * B + d for k in range(-4, 5) for d in (-1, 0, 1)]
    stamps = [rng.choice(edges) if rng.random() < 0.4 else rng.randint(-5 * B, 5 * B) for _ in range(3_000)]
    with db.transaction() as conn:
        _store(conn, stamps)
    bounds = edges + [rng.randint(-5 * B, 5 * B) for _ in range(60)]
    with db.reader() as conn:
        for _ in range(400):
            a, b = sorted(rng.sample(bounds, 2))
            plain = conn.execute("SELECT seq FROM events WHERE ts >= ? AND ts < ? ORDER BY seq", (a, b)).fetchall()
            keyed = conn.execute(f"SELECT seq FROM events WHERE {event_time.RANGE} ORDER BY seq",
                                 event_time.range_params(a, b)).fetchall()
            assert keyed == plain, (a, b)
            assert len(plain) == sum(a <= ts < b for ts in stamps)
            for bound, params, plain_sql in ((event_time.SINCE, event_time.since_params(a), "ts >= ?"),
                                             (event_time.BEFORE, event_time.before_params(b), "ts < ?")):
                keyed = conn.execute(f"SELECT seq FROM events WHERE {bound} ORDER BY seq", params).fetchall()
                assert keyed == conn.execute(f"SELECT seq FROM events WHERE {plain_sql} ORDER BY seq",
                                             (params[1],)).fetchall(), (bound, a, b)


def _plan(conn, sql, params):
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


def _walks_the_index(plan, name="events", bounds=()):
    """The plan reads events (`name`: the table or its alias) through
    events_time only, bounded by the key as `bounds` say ("<expr>>?": from a
    lower key, "<expr><?": up to an upper one), and never sorts all it reads
    (sorting each bucket's rows for an ORDER BY is the "RIGHT PART")."""
    reads = [step for step in plan if step.startswith((f"SCAN {name} ", f"SEARCH {name} ")) or step == f"SCAN {name}"]
    return (bool(reads) and all(re.search(r"\bINDEX events_time\b", step) for step in reads)
            and all(bound in step for step in reads for bound in bounds)
            and "USE TEMP B-TREE FOR ORDER BY" not in plan)


LOW, HIGH = "<expr>>?", "<expr><?"


def _list_statements():
    for cursor in (None, (5 * B + 7, 12)):
        for filter_values, bounds in [((None, None, None, None), ()), ((1, None, None, None), (LOW, HIGH)),
                                      ((None, 1, None, None), (LOW, HIGH)), ((1, 1, None, None), (LOW, HIGH)),
                                      ((None, None, 2 * B, None), (LOW,)), ((None, None, None, 9 * B + 3), (HIGH,)),
                                      ((1, 1, 2 * B + 1, 9 * B), (LOW, HIGH))]:
            sql, params = api_events.list_sql(filter_values, cursor)
            yield f"list {filter_values} {cursor}", sql, (*params, 51), bounds + ((HIGH,) if cursor else ())


def _range_statements():
    params = event_time.range_params(3 * B + 5, 4 * B)
    both = (LOW, HIGH)
    yield "usage: a cut bucket", "SELECT ts, seq, value" + api_rollups._RAW, (1, 1, *params), both
    yield "analytics: a cut bucket", "SELECT ts, seq, value" + api_rollups._RAW_ALL, (1, *params), both
    yield "events counted in a cut bucket", api_rollups._COUNT_RAW, params, both
    yield "hourly usage without groups", recommendations._HOURLY_EVENTS, (*params, 1, 1), both
    yield "regroup's next chunk", regroup._NEXT_EVENT, (event_time.key(3 * B), 3 * B, 1, 100), (LOW,)
    # a batch goes on from its place: bounded below by the place's key, not read from the oldest event
    yield "an archive batch", archiver._READ, (event_time.key(9 * B - 1), 9 * B, 10 ** 9, 3, 3, 0, 2_000), both


@pytest.mark.parametrize("name,sql,params,bounds", [*_list_statements(), *_range_statements()],
                         ids=lambda value: value if isinstance(value, str) and len(value) < 60 else "")
def test_every_read_by_time_walks_the_index(db, name, sql, params, bounds):
    with db.reader() as conn:
        plan = _plan(conn, sql, params)
    assert _walks_the_index(plan, bounds=bounds), (name, plan)


def test_counting_archived_buckets_reads_each_bucket_through_the_index(db):
    """rollups._ARCHIVED_BEFORE (the upgrade that adds the event counts, bulk loads)
    counts the stored events of each archived bucket by its key range."""
    with db.reader() as conn:
        plan = _plan(conn, rollups._ARCHIVED_BEFORE, ())
    stored = [step for step in plan if "events_time" in step]
    assert stored and all(LOW in step and HIGH in step for step in stored), plan
    assert not any(step.startswith("SCAN e") for step in plan), plan


def test_a_retraction_and_a_regroup_rebuild_buckets_through_the_index(db):
    """Their statements are built inside the store: traced as they run, then planned."""
    with db.transaction() as conn:
        _store(conn, [3 * B + n for n in range(50)])
    traced = []
    with db.transaction() as conn:
        conn.set_trace_callback(traced.append)
        rollups.recompute_bucket(conn, 1, 1, 3 * B + 7)
        rollups.regroup_range(conn, 1, 2 * B, 6 * B)
        conn.set_trace_callback(None)
        reads = [sql for sql in traced if "FROM events e" in sql and "e.ts" in sql]
        assert len(reads) == 2, traced
        for sql in reads:
            assert _walks_the_index(_plan(conn, sql, ()), "e", (LOW, HIGH)), sql
