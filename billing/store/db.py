"""The database: WAL, one writer path, pooled readers.

All writes go through `Database.transaction()`: one process-wide lock and one
writer connection in `BEGIN IMMEDIATE`, so writers queue on a Python lock
instead of spinning on SQLITE_BUSY. Reads use a small pool of connections that
see the last committed state (WAL readers never block the writer).
"""

import contextlib
import os
import queue
import sqlite3
import threading

from . import migrations

BUSY_TIMEOUT_MS = 5000


def connect(path):
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class Database:
    def __init__(self, path, readers=8):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self.created = not os.path.exists(path) or os.path.getsize(path) == 0
        self._writer = connect(path)
        self._writer.execute("PRAGMA journal_mode = WAL")
        self._write_lock = threading.RLock()
        self._depth = 0
        self._owner = None
        migrations.migrate(self._writer)
        self._readers = queue.LifoQueue()
        self._reader_count = readers
        for _ in range(readers):
            self._readers.put(connect(path))
        self._closed = False

    @contextlib.contextmanager
    def transaction(self):
        """Yield the writer connection inside BEGIN IMMEDIATE … COMMIT.

        Nested use joins the outer transaction. Any exception rolls back."""
        with self._write_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._writer
                finally:
                    self._depth -= 1
                return
            self._writer.execute("BEGIN IMMEDIATE")
            self._depth, self._owner = 1, threading.get_ident()
            try:
                yield self._writer
            except BaseException:
                self._depth, self._owner = 0, None
                self._writer.execute("ROLLBACK")
                raise
            self._depth, self._owner = 0, None
            self._writer.execute("COMMIT")

    def in_transaction(self):
        return self._owner == threading.get_ident()

    @contextlib.contextmanager
    def reader(self):
        """A read connection (the writer itself when called inside a transaction,
        so a handler reads its own uncommitted writes)."""
        if self.in_transaction():
            yield self._writer
            return
        conn = self._readers.get()
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._readers.put(conn)

    def query(self, sql, params=()):
        with self.reader() as conn:
            return conn.execute(sql, params).fetchall()

    def query_one(self, sql, params=()):
        with self.reader() as conn:
            return conn.execute(sql, params).fetchone()

    def close(self):
        if self._closed:
            return
        self._closed = True
        with self._write_lock:
            try:
                self._writer.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._writer.close()
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                break
