"""Deduplication by (customer, id) through the 64-bit hash index: a hash
collision must never drop an event, and repeats are stored once."""

import threading

import pytest

from billing.api import events
from billing.store.db import Database
from tests.helpers import wait_for


def row(customer_id, event_id, hash_value=None, quantity=1):
    h = events.id_hash(customer_id, event_id) if hash_value is None else hash_value
    return (customer_id, event_id, 1, 0, quantity, quantity, 1, None, 0, h)


def open_db(tmp_path):
    db = Database(str(tmp_path / "e.db"))
    with db.transaction() as conn:
        for n in (1, 2):
            conn.execute("INSERT INTO customers (name, email, created_at, updated_at) VALUES (?, ?, 0, 0)",
                         (f"c{n}", f"c{n}@example.com"))
    return db


def test_colliding_hashes_keep_both_events(tmp_path):
    db = open_db(tmp_path)
    try:
        with db.transaction() as conn:
            stored = events.store_new(conn, [row(1, "a", 42), row(1, "b", 42), row(2, "a", 42)])
            assert len(stored) == 3
            again = events.store_new(conn, [row(1, "a", 42), row(1, "b", 42), row(1, "c", 42)])
            assert [r[1] for r in again] == ["c"]
        assert db.query_one("SELECT count(*) FROM events")[0] == 4
    finally:
        db.close()


def test_first_write_wins_within_a_batch(tmp_path):
    db = open_db(tmp_path)
    try:
        with db.transaction() as conn:
            stored = events.store_new(conn, [row(1, "x", quantity=5), row(1, "x", quantity=9)])
        assert len(stored) == 1
        assert db.query("SELECT quantity FROM events") == [(5,)]
    finally:
        db.close()


@pytest.mark.parametrize("filter_first", [False, True], ids=["filter-building", "filter-built"])
def test_group_commit_from_many_threads_stores_each_id_once(tmp_path, filter_first):
    """Either while the writer's filter of stored ids (billing/store/known_ids.py)
    is built, from the first write on, or with it built before: new ids then
    skip the lookup, and the overlapping ones are still found."""
    db = open_db(tmp_path)
    results = []
    try:
        if filter_first:
            db.build_known_ids()
            wait_for(lambda: db.known_ids_state()[0], message="the filter was never built")
        def send(n):
            batch = [row(1, f"id-{i}") for i in range(n, n + 200)]
            results.append(len(db.submit(lambda conn: events.store_new(conn, batch))))

        threads = [threading.Thread(target=send, args=(k * 100,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # ids 0..899 overlap between neighbours: exactly 900 distinct events
        assert sum(results) == 900
        assert db.query_one("SELECT count(*), count(DISTINCT event_id) FROM events") == (900, 900)
    finally:
        db.close()


def test_batches_stored_by_one_call_count_each_batch_as_if_one_came_after_the_other(tmp_path):
    db = open_db(tmp_path)
    try:
        first = [row(1, "a", quantity=1), row(1, "b"), row(1, "a", quantity=2)]  # "a" twice: the first wins
        second = [row(1, "b", quantity=3), row(2, "b"), row(1, "c")]  # (1, "b") came in the first batch
        third = [row(1, "c", quantity=4)]  # all stored by the second
        with db.transaction() as conn:
            assert events._store_batches(conn, [(first, {}), (second, {}), (third, {})]) == [2, 2, 0]
        assert db.query("SELECT customer_id, event_id, quantity FROM events ORDER BY seq") == [
            (1, "a", 1), (1, "b", 1), (2, "b", 1), (1, "c", 1)]
    finally:
        db.close()


def test_merged_batches_from_many_threads_store_each_id_once_and_a_refused_one_fails_alone(tmp_path):
    db = open_db(tmp_path)
    with db.transaction() as conn:
        conn.execute("INSERT INTO customers (name, email, created_at, updated_at, archived) VALUES ('gone', 'g@x', 0, 0, 1)")
    results, refused = [], []

    def send(n):
        batch = [row(1, f"id-{i}") for i in range(n, n + 200)]
        results.append(db.submit_merged(events._store_batches, (batch, {})))

    def send_refused():
        try:
            db.submit_merged(events._store_batches, ([row(3, "x")], {}))
        except Exception as exc:  # noqa: BLE001 - the refusal is what is checked
            refused.append(exc)

    try:
        threads = [threading.Thread(target=send, args=(k * 100,)) for k in range(8)]
        threads.insert(4, threading.Thread(target=send_refused))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(results) == 900 and len(results) == 8
        assert [type(exc).__name__ for exc in refused] == ["Conflict"]
        assert db.query_one("SELECT count(*), count(DISTINCT event_id) FROM events") == (900, 900)
    finally:
        db.close()


def test_a_failing_job_does_not_undo_its_group(tmp_path):
    db = open_db(tmp_path)
    try:
        def bad(conn):
            events.store_new(conn, [row(1, "doomed")])
            raise ValueError("refused")

        errors = []
        threads = [threading.Thread(target=lambda: db.submit(lambda c: events.store_new(c, [row(1, "kept")])))]

        def run_bad():
            try:
                db.submit(bad)
            except ValueError as exc:
                errors.append(exc)

        threads.append(threading.Thread(target=run_bad))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 1
        assert db.query("SELECT event_id FROM events") == [("kept",)]
    finally:
        db.close()


def test_events_for_a_customer_deleted_meanwhile_are_refused(tmp_path):
    from billing.errors import Conflict
    db = open_db(tmp_path)
    try:
        with db.transaction() as conn:
            conn.execute("DELETE FROM customers WHERE id = 2")
        try:
            db.submit(lambda conn: events.store_new(conn, [row(1, "ok"), row(2, "orphan")]))
            raise AssertionError("stored events for a deleted customer")
        except Conflict:
            pass
        assert db.query("SELECT count(*) FROM events") == [(0,)]
    finally:
        db.close()


def test_after_close_writes_and_reads_answer_503_instead_of_hanging(tmp_path):
    from billing.errors import ServiceUnavailable
    db = open_db(tmp_path)
    db.close()
    for attempt in (lambda: db.submit(lambda conn: events.store_new(conn, [row(1, "late")])),
                    lambda: db.query("SELECT 1"), lambda: db.transaction().__enter__()):
        try:
            attempt()
            raise AssertionError("a closed database accepted work")
        except ServiceUnavailable:
            pass
