"""Database.snapshot: every read of one figure sees one instant."""

from billing.store.db import Database, scalar


def add_meter(conn, key):
    conn.execute("INSERT INTO meters (key, name, aggregation, unit, created_at, updated_at)"
                 " VALUES (?, ?, 'sum', 'unit', 0, 0)", (key, key.upper()))


def test_a_snapshot_does_not_see_a_write_committed_after_its_first_read(tmp_path):
    db = Database(str(tmp_path / "snap.db"))
    try:
        with db.transaction() as conn:
            add_meter(conn, 'm1')
        count = "SELECT count(*) FROM meters"
        with db.snapshot() as conn:
            before = scalar(conn, count)
            with db.transaction() as writer:  # another writer commits meanwhile
                add_meter(writer, 'm2')
            assert scalar(conn, count) == before  # the same instant
        with db.reader() as conn:  # a plain reader afterwards sees the write, and no read transaction lingers
            assert scalar(conn, count) == before + 1
            assert not conn.in_transaction
    finally:
        db.close()


def test_inside_a_write_transaction_a_snapshot_is_that_transaction(tmp_path):
    db = Database(str(tmp_path / "snap.db"))
    try:
        with db.transaction() as conn:
            add_meter(conn, 'm1')
            with db.snapshot() as inner:
                assert inner is conn
                assert scalar(inner, "SELECT count(*) FROM meters WHERE key = 'm1'") == 1
    finally:
        db.close()
