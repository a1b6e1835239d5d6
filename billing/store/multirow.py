"""Many rows written by a few statements.

`executemany` runs its statement once per row, and each run is a call into
SQLite that gives up the interpreter lock. In a busy server the request
threads are waiting for that lock, so after each row the writer waits to
take it back: with two threads busy in Python, a 1,000-row executemany took
over a second instead of 2 ms (micro-measured). The rows are therefore
written by INSERTs with many VALUES groups, each one call into SQLite:

- up to MAX_ROWS rows: one statement with exactly that many groups;
- more: statements of CHUNKS rows (the largest that fits, down to
  MAX_ROWS), then one for the rest; 1,000 rows are six calls.

Each statement's text is built once per count and kept (`statement`), and
the writer connection's cache of prepared statements (`cached_statements`,
billing/store/db.py) is large enough to keep every size prepared, so none is
parsed again. A statement never binds more parameters than SQLite allows
(six statements for 1,000 rows assume SQLite's limit since 3.32, 32,766;
with the older 999 there are more). The rows
are written in their order, and an ON CONFLICT clause applies to each row as
it would one row at a time.
"""

import functools
import sqlite3
from itertools import chain

MAX_ROWS = 16
_NARROW = 999 // MAX_ROWS  # rows this wide or narrower: MAX_ROWS of them fit any SQLite's limit
CHUNKS = (512, 256, 128, 64, 32, MAX_ROWS)


@functools.lru_cache(maxsize=256)
def statement(sql, count):
    """`sql` (INSERT … VALUES (?, …) [ON CONFLICT …]) with `count` VALUES groups."""
    head, group, tail = _parts(sql)
    return f"{head} VALUES " + ", ".join([f"({group})"] * count) + tail


@functools.lru_cache(maxsize=64)
def _parts(sql):
    """(what comes before VALUES, its one group, what follows it)."""
    head, found, rest = sql.partition(" VALUES (")
    group, closed, tail = rest.partition(")")
    if not found or not closed or "(" in group:
        raise ValueError(f"not an INSERT with one VALUES group: {sql[:80]!r}")
    return head, group, tail


def width(sql):
    """The parameters one row of `sql` binds."""
    return _parts(sql)[1].count("?")


def sizes(count, width, limit):
    """The row counts of the statements that write `count` rows of `width`
    parameters each, with at most `limit` parameters a statement."""
    most = max(1, limit // max(width, 1))
    out = []
    while count:
        if count <= MAX_ROWS and count <= most:
            out.append(count)
            break
        size = next((size for size in CHUNKS if size <= count and size <= most), min(count, most))
        out.append(size)
        count -= size
    return out


def write(conn, sql, rows):
    """Run `sql` for each of `rows` (tuples of its parameters), in their
    order. Returns the rowid of the last row inserted (sqlite3's lastrowid
    of the last statement), or None without rows."""
    if not rows:
        return None
    row_width = width(sql)
    if len(rows) <= MAX_ROWS and row_width <= _NARROW:  # one statement, under SQLite's least limit (999)
        return conn.execute(statement(sql, len(rows)), list(chain.from_iterable(rows))).lastrowid
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    start = 0
    for size in sizes(len(rows), row_width, limit):
        part = rows[start:start + size]
        start += size
        last = conn.execute(statement(sql, size), list(chain.from_iterable(part))).lastrowid
    return last
