"""Group commit (billing/store/db.py): jobs queued while the writer is busy
share one transaction; `submit_merged` items of one group share one call,
and a failing merged call is retried item by item so a bad item fails alone."""

import threading
import time

import pytest

from billing.api import events
from billing.errors import ServiceUnavailable
from billing.store.db import Database


@pytest.fixture
def db(tmp_path):
    database = Database(str(tmp_path / "g.db"))
    with database.transaction() as conn:
        conn.execute("CREATE TABLE notes (item TEXT NOT NULL UNIQUE)")
    yield database
    database.close()


def queued_together(db, calls):
    """Run each of `calls` (no-argument functions that submit one job) on its
    own thread while the writer is held busy, so all are queued before it
    takes the next group; returns each call's result or exception, in order."""
    running, release = threading.Event(), threading.Event()

    def hold(conn):
        running.set()
        return release.wait(10)

    blocker = threading.Thread(target=db.submit, args=(hold,))
    blocker.start()
    assert running.wait(10), "the writer never ran the blocking job"
    deadline = time.monotonic() + 10
    outcomes = [None] * len(calls)

    def run(index):
        try:
            outcomes[index] = calls[index]()
        except Exception as exc:  # the caller's error, kept for the assertions
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for queued, thread in enumerate(threads, 1):  # one at a time: they queue in the order given
        thread.start()
        while db.queue_depth() < queued and time.monotonic() < deadline:
            time.sleep(0.001)
        assert db.queue_depth() == queued, "the jobs did not all queue behind the busy writer"
    release.set()
    for thread in threads + [blocker]:
        thread.join(10)
    return outcomes


def test_merged_items_of_one_group_share_one_call_and_each_gets_its_result(db):
    batches = []

    def note_all(conn, items):
        batches.append(list(items))
        conn.executemany("INSERT INTO notes (item) VALUES (?)", [(item,) for item in items])
        return [item.upper() for item in items]

    outcomes = queued_together(db, [lambda i=i: db.submit_merged(note_all, f"n{i}") for i in range(5)])
    assert outcomes == ["N0", "N1", "N2", "N3", "N4"]
    assert batches == [["n0", "n1", "n2", "n3", "n4"]]
    assert sorted(item for (item,) in db.query("SELECT item FROM notes")) == ["n0", "n1", "n2", "n3", "n4"]


def test_a_failing_merged_call_is_retried_item_by_item_and_only_the_bad_item_fails(db):
    calls = []

    def note_all(conn, items):
        calls.append(list(items))
        conn.executemany("INSERT INTO notes (item) VALUES (?)", [(item,) for item in items])
        if "bad" in items:
            raise ValueError("bad item")
        return list(items)

    outcomes = queued_together(db, [lambda item=item: db.submit_merged(note_all, item) for item in ("a", "bad", "c")])
    assert outcomes[0] == "a" and outcomes[2] == "c"
    assert isinstance(outcomes[1], ValueError)
    assert calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    # the merged call's rows were rolled back; each good item's own call is committed once
    assert sorted(item for (item,) in db.query("SELECT item FROM notes")) == ["a", "c"]


def test_a_plain_job_between_merged_items_runs_in_its_place(db):
    calls = []

    def note_all(conn, items):
        calls.append(list(items))
        conn.executemany("INSERT INTO notes (item) VALUES (?)", [(item,) for item in items])
        return list(items)

    def count(conn):
        (found,) = conn.execute("SELECT count(*) FROM notes").fetchone()
        return found

    outcomes = queued_together(db, [lambda: db.submit_merged(note_all, "a"), lambda: db.submit_merged(note_all, "b"),
                                    lambda: db.submit(count), lambda: db.submit_merged(note_all, "c")])
    assert outcomes == ["a", "b", 2, "c"]
    assert calls == [["a", "b"], ["c"]]


def _customer_and_meter(db):
    with db.transaction() as conn:
        conn.execute("INSERT INTO customers (name, email, created_at, updated_at) VALUES ('c', 'c@example.com', 0, 0)")
        conn.execute("INSERT INTO meters (key, name, unit, aggregation, created_at, updated_at)"
                     " VALUES ('m', 'M', 'u', 'sum', 0, 0)")
        (customer_id,) = conn.execute("SELECT id FROM customers").fetchone()
        (meter_id,) = conn.execute("SELECT id FROM meters").fetchone()
    return customer_id, meter_id


def test_two_single_events_with_one_id_in_one_group_store_the_first(db, tmp_path):
    customer_id, meter_id = _customer_and_meter(db)
    marks = {}  # the app's one dict of lateness marks, shared by every item

    def single(event_id, quantity):
        row = events.EventRow(customer_id, event_id, meter_id, 1_000_000, quantity, quantity, 1, None, 0,
                              events.id_hash(customer_id, event_id))
        return lambda: db.submit_merged(events._store_singles, (row, marks))

    outcomes = queued_together(db, [single("x", 5_000_000), single("x", 9_000_000), single("y", 1_000_000)])
    (first, first_new), (second, second_new), (third, third_new) = outcomes
    assert (first_new, second_new, third_new) == (True, False, True)
    assert first["quantity"] == 5_000_000 and second["quantity"] == 5_000_000  # the duplicate answers the stored one
    assert sorted(db.query("SELECT event_id, quantity FROM events")) == [("x", 5_000_000), ("y", 1_000_000)]


def test_closing_while_jobs_wait_answers_every_caller_truthfully(tmp_path):
    """Each caller is answered: stored (and its row is there) or told the
    server is closing (and its row is not); none waits forever."""
    database = Database(str(tmp_path / "c.db"))
    with database.transaction() as conn:
        conn.execute("CREATE TABLE notes (item TEXT NOT NULL UNIQUE)")

    def note_all(conn, items):
        conn.executemany("INSERT INTO notes (item) VALUES (?)", [(item,) for item in items])
        return list(items)

    answers = {}

    def send(item):
        try:
            answers[item] = database.submit_merged(note_all, item)
        except ServiceUnavailable:
            answers[item] = "closed"

    threads = [threading.Thread(target=send, args=(f"n{i}",)) for i in range(64)]
    for thread in threads:
        thread.start()
    database.close()
    for thread in threads:
        thread.join(15)
    assert not any(thread.is_alive() for thread in threads), "a caller was never answered"
    check = Database(str(tmp_path / "c.db"))
    try:
        stored = {item for (item,) in check.query("SELECT item FROM notes")}
    finally:
        check.close()
    assert stored == {item for item, answer in answers.items() if answer != "closed"}
    assert all(answer in (item, "closed") for item, answer in answers.items())


def test_a_job_alone_in_its_group_runs_without_a_savepoint_and_fails_alone(db):
    """A group of one job is its own transaction: no SAVEPOINT; when the job
    fails, its caller gets the error and nothing it wrote is kept."""
    statements = []
    db._writer.set_trace_callback(statements.append)

    def refused(conn):
        conn.execute("INSERT INTO notes (item) VALUES ('half written')")
        raise ValueError("refused by the job")

    try:
        with pytest.raises(ValueError, match="refused by the job"):
            db.submit(refused)
        assert db.submit(lambda conn: conn.execute("INSERT INTO notes (item) VALUES ('next')").rowcount) == 1
    finally:
        db._writer.set_trace_callback(None)
    assert [row[0] for row in db.query("SELECT item FROM notes")] == ["next"]
    assert statements.count("BEGIN IMMEDIATE") == 2
    assert not [sql for sql in statements if "SAVEPOINT" in sql or sql.startswith("RELEASE")]


def test_a_group_of_single_events_is_seven_calls_into_sqlite(db):
    """Each statement is a call into SQLite that gives up the interpreter lock
    (the writer then waits to take it back from the request threads): a group
    of single events (new ids, none late, a meter without group_by) is BEGIN,
    one read, one write per table, COMMIT — no SAVEPOINT, and the same calls
    for 2 events as for 4. All are stored."""
    customer_id, meter_id = _customer_and_meter(db)
    statements = []

    def singles(count, start):
        rows = [events.EventRow(customer_id, f"e{start + i}", meter_id, 1_000_000 * (i + 1), 1_000_000, 1_000_000,
                                1, None, 0, events.id_hash(customer_id, f"e{start + i}")) for i in range(count)]
        return [lambda row=row: db.submit_merged(events._store_singles, (row, {})) for row in rows]

    singles(1, 100)[0]()  # the first event stored reads what the writer then keeps in memory (the id tail)
    db.build_known_ids()  # and the filter of stored ids: until it answers, every id is looked up
    deadline = time.monotonic() + 10
    while not db.known_ids_state()[0]:
        assert time.monotonic() < deadline, "the filter of stored ids was never built"
        time.sleep(0.01)

    for count, start in ((4, 0), (2, 10)):
        db._writer.set_trace_callback(statements.append)
        try:
            outcomes = queued_together(db, singles(count, start))
        finally:
            db._writer.set_trace_callback(None)
        assert [inserted for _stored, inserted in outcomes] == [True] * count
        # after the blocking job's transaction; "-- PRAGMA …" is the read's pragma function, within its call
        group = [sql for sql in statements[statements.index("BEGIN IMMEDIATE", 2):] if not sql.startswith("--")]
        assert [sql.split(" (")[0].split(" WHERE")[0] for sql in group] == [
            "BEGIN IMMEDIATE", "SELECT", "INSERT INTO events", "INSERT INTO event_spans", "INSERT INTO event_counts",
            "INSERT INTO rollups_hot", "COMMIT"], group
        statements.clear()
    assert db.query("SELECT count(*) FROM events") == [(7,)]


def test_a_merged_call_answering_the_wrong_count_fails_every_job_and_keeps_nothing(db):
    """A bug, not a refusal: with or without a SAVEPOINT around the call (a
    group of only its items, or with a plain job too), every job of the group
    — the plain one too — gets the error and nothing of the group is kept."""
    def short(conn, items):
        conn.executemany("INSERT INTO notes (item) VALUES (?)", [(item,) for item in items])
        return list(items)[:-1]

    alone = queued_together(db, [lambda item=item: db.submit_merged(short, item) for item in ("a", "b")])
    mixed = queued_together(db, [lambda: db.submit(lambda conn: "plain"),
                                 lambda: db.submit_merged(short, "c"), lambda: db.submit_merged(short, "d")])
    for outcome in alone + mixed:
        assert isinstance(outcome, ValueError) and "a merged call answered 1 results for 2 items" in str(outcome)
    assert db.query("SELECT item FROM notes") == []
