"""A few rows written by one statement.

`executemany` runs its statement once per row, and each run is a call into
SQLite that gives up the interpreter lock. In a busy server the request
threads are waiting for that lock, so after each row the writer waits to
take it back. Up to MAX_ROWS rows are therefore written by one INSERT with
that many VALUES groups (its text built once per count and kept), one call
for them all; more rows go through executemany, which prepares its
statement once. Either way the rows are written in their order, and an
ON CONFLICT clause applies to each row as it would one row at a time.
"""

import functools

MAX_ROWS = 16


@functools.lru_cache(maxsize=256)
def statement(sql, count):
    """`sql` (INSERT … VALUES (?, …) [ON CONFLICT …]) with `count` VALUES groups."""
    head, found, rest = sql.partition(" VALUES (")
    group, closed, tail = rest.partition(")")
    if not found or not closed or "(" in group:
        raise ValueError(f"not an INSERT with one VALUES group: {sql[:80]!r}")
    return f"{head} VALUES " + ", ".join([f"({group})"] * count) + tail


def write(conn, sql, rows):
    """Run `sql` for each of `rows` (tuples of its parameters). Returns the
    rowid of the last row inserted when one statement wrote them all
    (sqlite3's lastrowid), else None (no rows, or executemany)."""
    if not rows:
        return None
    if len(rows) > MAX_ROWS:
        conn.executemany(sql, rows)
        return None
    return conn.execute(statement(sql, len(rows)), [value for row in rows for value in row]).lastrowid
