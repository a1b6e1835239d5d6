"""The checkpoint thread lets the WAL start over (billing/store/db.py,
`Database.checkpoint`): SQLite restarts the WAL only when a write
transaction begins with every page of it copied, which back-to-back commits
never allow, so a long WAL gets a last pass under the writer's lock; without
it the WAL grows until a COMMIT checkpoints by itself inside a request."""

import pytest

from billing.store import db as db_module
from billing.store.db import Database, connect


class CountingLock:
    """The writer's lock, counting how often it is taken."""

    def __init__(self, lock):
        self.lock, self.taken = lock, 0

    def __enter__(self):
        self.taken += 1
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setattr(db_module, "RESTART_FRAMES", 40)
    monkeypatch.setattr(db_module, "LAST_PASS_FRAMES", 1_000)
    database = Database(str(tmp_path / "w.db"), background=False)
    with database.transaction() as conn:
        conn.execute("CREATE TABLE notes (n INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    database._write_lock = CountingLock(database._write_lock)
    yield database
    database.close()


def write(db, transactions, rows=20):
    for _ in range(transactions):
        with db.transaction() as conn:
            conn.executemany("INSERT INTO notes (body) VALUES (?)", [("x" * 900,)] * rows)


def wal_frames(conn):
    """The WAL's frames now (a PASSIVE checkpoint that finds nothing new copies nothing)."""
    return conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]


def test_a_long_wal_is_copied_under_the_writer_lock_and_the_next_write_starts_it_over(db):
    side = connect(db.path)
    try:
        write(db, 10)
        db._write_lock.taken = 0  # the writes took it
        frames, copied = db.checkpoint(side)
        assert frames >= 40 and copied == frames
        assert db._write_lock.taken == 1
        write(db, 1, rows=1)
        assert wal_frames(side) < 10  # started over: only the last transaction's pages
    finally:
        side.close()


def test_a_short_wal_is_copied_without_the_writer_lock(db):
    side = connect(db.path)
    try:
        write(db, 1, rows=1)
        db._write_lock.taken = 0  # the writes took it
        frames, copied = db.checkpoint(side)
        assert frames < 40 and copied == frames
        assert db._write_lock.taken == 0
    finally:
        side.close()


def test_while_a_reader_holds_old_pages_the_checkpoint_leaves_the_lock_alone(db):
    side, reader = connect(db.path), connect(db.path)
    try:
        write(db, 1)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM notes").fetchone()[0] == 20  # a snapshot before the rest
        write(db, 10)
        db._write_lock.taken = 0  # the writes took it
        frames, copied = db.checkpoint(side)
        assert copied < frames  # the reader still needs the WAL's later pages not overwritten
        assert db._write_lock.taken == 0
        reader.execute("ROLLBACK")
    finally:
        side.close()
        reader.close()

