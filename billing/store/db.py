"""The database: WAL, one writer path, pooled readers, group commit.

All writes go through one writer connection guarded by one lock:
- `Database.transaction()`: `BEGIN IMMEDIATE … COMMIT` around a block of code;
- `Database.submit(job)`: for the hot ingest path. Jobs that arrive while the
  writer is busy are committed together in one transaction; every caller gets
  its answer only after the COMMIT that holds its rows. One commit then pays
  for many requests, which is what bounds throughput on a small machine.
- `Database.submit_merged(combine, item)`: the same, for work that is cheaper
  done once for many items (single events, event batches: one dedup lookup,
  one insert, one rollup update for all): consecutive items of one group
  with the same `combine` are passed to one call.
  How a group runs, and how one bad job fails alone: billing/store/group_commit.py.
Writers queue on a Python lock, taken in turn (`TurnLock`), instead of
spinning on SQLITE_BUSY. Reads use a pool of connections that see the last
committed state. WAL checkpoints run in a background thread so no request's
COMMIT pays for copying pages back, and another keeps the writer's in-memory
filter of stored event ids (billing/store/known_ids.py) built.
"""

import contextlib
import os
import time
import queue
import sqlite3
import threading

from ..errors import ServiceUnavailable
from . import group_commit
from . import event_ids, known_ids, migrations
from .id_tail import IdTail
from .known_ids import KnownIds
from .turnlock import TurnLock


def _closed():
    return ServiceUnavailable("The server is shutting down; try again.")

BUSY_TIMEOUT_MS = 5000
WRITER_CACHE_KIB = 64 * 1024        # page cache of the writer: hot index pages stay in memory
READER_CACHE_KIB = 8 * 1024
# prepared statements kept per connection: the writer's multi-row inserts come in
# about twenty sizes per table (store/multirow.py), more than sqlite3's default 128
WRITER_STATEMENTS = 512
READER_STATEMENTS = 128
CHECKPOINT_SECONDS = 1.0
SAFETY_AUTOCHECKPOINT_PAGES = 50_000  # if the checkpoint thread falls far behind
RESTART_FRAMES = 10_000  # WAL frames (about 40 MB) past which the checkpoint thread lets the WAL start over
LAST_PASS_FRAMES = 2_000  # new frames a pass may find before the last pass, which holds the writer's lock
CATCH_UP_PASSES = 4
FORCE_FRAMES = 25_000  # WAL frames past which the last pass holds the lock even when commits outrun the copying
MAX_GROUP_JOBS = 64


class WriterConnection(sqlite3.Connection):
    """The writer's connection: `known_ids` is its filter of stored event ids
    (billing/store/known_ids.py), set by a Database running its background
    threads (None asks SQLite for every id); `id_tail` is the dedup index's
    tail in memory (billing/store/id_tail.py), set by every Database (None
    reads the tail's rows)."""
    known_ids = None
    id_tail = None


def connect(path, writer=False):
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_MS / 1000, factory=WriterConnection if writer else sqlite3.Connection,
                           cached_statements=WRITER_STATEMENTS if writer else READER_STATEMENTS)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB if writer else READER_CACHE_KIB}")
    if writer:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {SAFETY_AUTOCHECKPOINT_PAGES}")
        conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def scalar(conn, sql, params=()):
    """The single value a one-column, one-row query answers (None for no row)."""
    found = conn.execute(sql, params).fetchone()
    return None if found is None else found[0]


def named(conn, sql, params=()):
    """Execute on `conn` with rows read by column name (sqlite3.Row)."""
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor.execute(sql, params)


class _Stopped(Exception):
    """The database is closing: a filter build stops where it is."""


def create_private(path):
    """Make the database file's folder (0700) and the file itself (0600) when
    missing, before SQLite opens it: SQLite gives the -wal and -shm files the
    mode of the database file, so they are 0600 too. Existing ones are left
    as they are."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class Database:
    def __init__(self, path, readers=8, background=True):
        self.path = path
        create_private(path)
        self._writer = connect(path, writer=True)
        self._writer.id_tail = IdTail()
        self._write_lock = TurnLock()  # taken in turn: a background loop cannot keep it from the writer
        self._depth = 0
        self._owner = None
        if migrations.migrate(self._writer):
            # what a migration rewrote (a secret it scrubbed) leaves the WAL now
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        self._readers = queue.LifoQueue()
        for _ in range(readers):
            self._readers.put(connect(path))
        self._closed = False
        self._stop = threading.Event()
        self._jobs = queue.SimpleQueue()
        self.on_transaction = None  # called with each write transaction's seconds (metrics)
        self._threads = []
        if background:
            self._writer.known_ids = KnownIds()
            for target, name in ((self._write_loop, "db-writer"), (self._checkpoint_loop, "db-checkpoint"),
                                 (self._known_ids_loop, "db-known-ids")):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    # -- the writer path -------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self):
        """Yield the writer connection inside BEGIN IMMEDIATE … COMMIT.

        Nested use joins the outer transaction. Any exception rolls back."""
        with self._write_lock:
            if self._closed and threading.current_thread().name != "db-writer":
                raise _closed()  # the writer still commits the jobs queued before close()
            if self._depth:
                self._depth += 1
                try:
                    yield self._writer
                finally:
                    self._depth -= 1
                return
            self._writer.execute("BEGIN IMMEDIATE")
            began = time.perf_counter()
            self._depth, self._owner = 1, threading.get_ident()
            try:
                yield self._writer
            except BaseException:
                self._depth, self._owner = 0, None
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise
            self._depth, self._owner = 0, None
            try:
                self._writer.execute("COMMIT")
            except BaseException:
                if self._writer.in_transaction:  # never leave the writer stuck mid-transaction
                    self._writer.execute("ROLLBACK")
                raise
            if self.on_transaction is not None:
                self.on_transaction(time.perf_counter() - began)

    def overwrite(self, fn):
        """Run `fn(conn)` in one write transaction whose replaced bytes are
        zeroed (secure_delete), then checkpoint and truncate the WAL, so what
        `fn` rewrote (a plain secret) is left neither in the database file nor
        in the WAL. Returns fn's result."""
        with self._write_lock:
            with self.transaction() as conn:
                conn.execute("PRAGMA secure_delete = ON")
                try:
                    result = fn(conn)
                finally:
                    conn.execute("PRAGMA secure_delete = OFF")
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return result

    def submit(self, fn):
        """Run `fn(conn)` in the writer thread, grouped with other jobs into one
        transaction; returns its result once committed (or raises its error)."""
        return self._wait(group_commit.Job(fn))

    def submit_merged(self, combine, item):
        """Run `combine(conn, items)` in the writer thread for `item` and the
        items of the same `combine` grouped with it; `combine` answers one
        result per item, in order. Returns this item's result once committed
        (or raises its error: a failing merged call is retried item by item)."""
        return self._wait(group_commit.Job(lambda conn: combine(conn, [item])[0], combine, item))

    def _wait(self, job):
        if not self._threads or self.in_transaction():
            with self.transaction() as conn:
                return job.fn(conn)
        if self._closed:
            raise _closed()
        self._jobs.put(job)
        while not job.done.acquire(timeout=1.0):
            if not self._threads[0].is_alive():  # the writer has exited
                if job.done.acquire(blocking=False):
                    break  # it answered this job just before
                raise _closed()  # closed before reaching this job
        if job.error is not None:
            raise job.error
        return job.result

    def _write_loop(self):
        while True:
            job = self._jobs.get()
            if job is None:
                return
            group = [job]
            while len(group) < MAX_GROUP_JOBS:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)  # stop after this group
                    break
                group.append(more)
            self._run_group(group)

    def _run_group(self, group):
        group_commit.run_group(self.transaction, group)

    def _checkpoint_loop(self):
        conn = connect(self.path)
        try:
            while not self._stop.wait(CHECKPOINT_SECONDS):
                try:
                    self.checkpoint(conn)
                except sqlite3.Error:
                    pass  # busy or locked: the next round catches up
        finally:
            conn.close()

    def checkpoint(self, conn):
        """Copy the WAL's pages into the database file (on `conn`, not the
        writer). SQLite starts the WAL over only when a write transaction
        begins with every page of it copied and no read begun before still
        open, which commits every few milliseconds never allow: the WAL would
        grow to SAFETY_AUTOCHECKPOINT_PAGES, where a COMMIT checkpoints by
        itself (300–700 ms at 10 M events, inside a request's wait). So once
        it holds RESTART_FRAMES, a last pass runs holding the writer's lock —
        when a pass has found few new frames, so that the last one is short,
        or, if commits keep outrunning the copying, once it holds
        FORCE_FRAMES — and with no commit after it, the next write
        transaction starts it over. Returns the WAL's frames and those
        copied, as the last pass counted them."""
        before = 0
        for _ in range(CATCH_UP_PASSES):
            _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames < RESTART_FRAMES or copied < frames:
                return frames, copied  # short yet (or started over), or a reader still needs its pages
            if frames - before <= LAST_PASS_FRAMES:
                break  # this pass had few frames to copy, so the one under the lock has few too
            before = frames
        else:
            if frames < FORCE_FRAMES:
                return frames, copied  # commits outrun the copying: the next round tries again
        with self._write_lock:  # in turn: after the transaction under way
            _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return frames, copied

    def known_ids_state(self):
        """(whether the writer's filter of stored ids answers, its bytes); (False, 0) without one."""
        known = self._writer.known_ids
        return known.state() if known is not None else (False, 0)

    def build_known_ids(self):
        """Build the writer's filter of stored ids now, in the background (the
        server at start), instead of when the first event is stored."""
        if self._writer.known_ids is not None:
            self._writer.known_ids.wanted.set()

    def _known_ids_loop(self):
        """Build the writer's filter of stored ids whenever one is due (at
        start, after another connection's commit, when the ids outgrow it)."""
        known = self._writer.known_ids
        conn = connect(self.path)
        try:
            while not self._stop.is_set():
                # close() sets `wanted` too, to wake this thread at once
                if not known.wanted.wait(CHECKPOINT_SECONDS) or self._stop.is_set():
                    continue
                try:
                    known.build(lambda start: self._begin_known_ids(conn, start), lambda: self._hash_chunks(conn))
                except _Stopped:
                    return
                except Exception:  # locked or busy, or out of memory: the filter stays aside; again after a pause
                    known.wanted.set()
                    self._stop.wait(CHECKPOINT_SECONDS)
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
        finally:
            conn.close()

    def _begin_known_ids(self, conn, start):
        """The start of a filter build, while no write transaction is under way
        (so every one after it adds to the fresh filter). The writer's
        data_version is read before any of the index: another process's
        commit after it is then seen by the writer's next `usable` (and the
        build set aside), never counted as read before the reads began."""
        with self._write_lock:
            (version,) = self._writer.execute("PRAGMA data_version").fetchone()
            start(version, event_ids.highest_seq(conn))

    def _hash_chunks(self, conn):
        for chunk in event_ids.hash_chunks(conn, known_ids.BUILD_CHUNK):
            if self._stop.is_set():
                raise _Stopped()  # never a short read taken for the whole index
            yield chunk

    def queue_depth(self):
        """Grouped write jobs waiting for the writer."""
        return self._jobs.qsize()

    def in_transaction(self):
        return self._owner == threading.get_ident()

    # -- reads -----------------------------------------------------------------
    @contextlib.contextmanager
    def reader(self):
        """A read connection (the writer itself when called inside a transaction,
        so a handler reads its own uncommitted writes)."""
        if self.in_transaction():
            yield self._writer
            return
        if self._closed:
            raise _closed()
        conn = self._readers.get()
        try:
            yield conn
        finally:
            if self._closed:
                conn.close()  # returned after close(): nobody will take it again
            else:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._readers.put(conn)

    @contextlib.contextmanager
    def snapshot(self):
        """A reader whose reads all see one instant: a read transaction, so a
        figure made of several queries (a draft re-rated for display) never
        mixes states. Inside the caller's own write transaction, that one."""
        with self.reader() as conn:
            if not conn.in_transaction:
                conn.execute("BEGIN")  # deferred: the snapshot is taken at the first read
            yield conn  # reader() rolls the read transaction back when it is returned

    def rows(self, sql, params=()):
        """All rows as sqlite3.Row (read by column name)."""
        with self.reader() as conn:
            return named(conn, sql, params).fetchall()

    def row(self, sql, params=()):
        """One row as sqlite3.Row, or None."""
        with self.reader() as conn:
            return named(conn, sql, params).fetchone()

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
        self._stop.set()
        if self._writer.known_ids is not None:
            self._writer.known_ids.wanted.set()  # wakes its thread, which then stops
        self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        with self._write_lock:
            try:
                self._writer.execute("PRAGMA optimize")
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._writer.close()
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                break
