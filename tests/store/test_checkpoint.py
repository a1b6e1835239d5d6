"""The checkpoint thread lets the WAL start over (billing/store/db.py,
`Database.checkpoint`): SQLite restarts the WAL only when a write
transaction begins with every page of it copied, which back-to-back commits
never allow, so a long WAL gets a last pass under the writer's lock; without
it the WAL grows until a COMMIT checkpoints by itself inside a request."""

import threading

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



class ScriptedConnection:
    """Answers each `PRAGMA wal_checkpoint(PASSIVE)` with the next scripted
    (busy, frames, copied) row, noting whether the writer's lock was held."""

    def __init__(self, db, rows):
        self.db, self.rows, self.locked = db, list(rows), []

    def execute(self, sql):
        assert sql == "PRAGMA wal_checkpoint(PASSIVE)"
        self.locked.append(self.db._write_lock.lock._owner == threading.get_ident())
        row = self.rows.pop(0)
        return type("Cursor", (), {"fetchone": lambda _self: row})()


@pytest.mark.parametrize("rows,locked", [
    # short: no lock
    ([(0, 500, 500)], []),
    # a reader still needs pages: no lock
    ([(0, 12_000, 9_000)], []),
    # the second pass found 1,000 new frames: the third, under the lock, has as few
    ([(0, 12_000, 12_000), (0, 13_000, 13_000), (0, 13_100, 13_100)], [3]),
    # commits outrun four passes, the WAL under FORCE_FRAMES: the next round tries again
    ([(0, 12_000, 12_000), (0, 15_000, 15_000), (0, 18_000, 18_000), (0, 21_000, 21_000)], []),
    # ... past FORCE_FRAMES: the last pass holds the lock anyway
    ([(0, 20_000, 20_000), (0, 23_000, 23_000), (0, 26_000, 26_000), (0, 29_000, 29_000), (0, 29_500, 29_500)], [5]),
    # the WAL started over between two passes
    ([(0, 12_000, 12_000), (0, 300, 300)], []),
])
def test_the_passes_and_when_the_last_one_holds_the_writer_lock(db, monkeypatch, rows, locked):
    monkeypatch.setattr(db_module, "RESTART_FRAMES", 10_000)
    monkeypatch.setattr(db_module, "LAST_PASS_FRAMES", 2_000)
    monkeypatch.setattr(db_module, "FORCE_FRAMES", 25_000)
    conn = ScriptedConnection(db, rows)
    assert db.checkpoint(conn) == rows[-1][1:]
    assert conn.rows == []  # every scripted pass ran, none more
    assert [i for i, held in enumerate(conn.locked, 1) if held] == locked
