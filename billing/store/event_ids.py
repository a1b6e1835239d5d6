"""The deduplication index of events (§4): (id_hash, seq) of every stored
event, where `id_hash` is the 64-bit hash of (customer_id, id) the events
table keeps (billing/api/events.py compares the real ids of every match).

Hash order is random order: an index of the hashes of all events takes a
random page for every new event, and a commit of a few thousand events then
rewrites thousands of pages. So the index has two parts, like the rollups:
inserts go to the small hot table `event_ids_hot`, whose pages a commit
rewrites few of, and `settle` moves the hot entries into the large settled
table `event_ids` in hash order, a chunk per short transaction — a pass
touches each settled page once for many entries. Every stored event is in
one part or the other at every moment (a chunk's insert and delete are one
transaction), so a lookup asks both.

The writer's connection keeps an in-memory filter of the index's hashes in
front of it (billing/store/known_ids.py): `maybe_stored` leaves out the ids
that surely are not stored, so only the rest are looked up. What adds
entries while the server runs tells the filter (`add_since`, `add_entries`;
`settle_chunk` only moves them); `rebuild` runs in migrations and bulk loads,
before a filter is built.

An archived event (billing/store/archive.py) keeps its entry while its id
must still be recognised: its columns are then in `archived_events` under
the same seq, and `stored_sql` reads both tables.
"""

import json

SETTLE_AT = 50_000     # hot entries that start a settling pass
SETTLE_CHUNK = 2_000   # entries moved per transaction: 20–35 ms at 10 M events, no dearer per entry than 5,000
_PARTS = ("event_ids", "event_ids_hot")
# the seqs of the events with these hashes: `{marks}` is the placeholders of one list of hashes
_SEQS = " UNION ALL ".join(f"SELECT seq FROM {table} WHERE id_hash IN ({{marks}})" for table in _PARTS)


def seqs_sql(count):
    """SQL of the seqs whose hash is one of `count` parameters (given twice: once per part)."""
    return _SEQS.format(marks=",".join("?" * count))


def stored_sql(columns, count):
    """SQL of `columns` (and `archived`: 0 or 1) of the stored and the archived
    events whose hash is one of `count` parameters (given twice: once per part)."""
    return (f"WITH found(seq) AS ({seqs_sql(count)}) SELECT {columns}, 0 AS archived FROM events"
            f" WHERE seq IN found UNION ALL SELECT {columns}, 1 AS archived FROM archived_events WHERE seq IN found")


def maybe_stored(conn, hashes):
    """Of `hashes`, those that may be in the index: all of them, or, on the
    writer's connection once its filter is built (billing/store/known_ids.py),
    only those the filter cannot rule out. Call inside the write transaction."""
    known = getattr(conn, "known_ids", None)
    if known is None or not known.usable(conn):
        return hashes
    return known.maybe_stored(hashes)


def add_since(conn, seq, hashes):
    """Index the events stored after `seq` (those this transaction just
    inserted, whose id hashes are `hashes`)."""
    conn.execute("INSERT INTO event_ids_hot (id_hash, seq) SELECT id_hash, seq FROM events WHERE seq > ?", (seq,))
    _note(conn, hashes)


def add_entries(conn, entries):
    """Index (id_hash, seq) pairs of events put back under their own seqs (a restore)."""
    conn.executemany("INSERT INTO event_ids_hot (id_hash, seq) VALUES (?, ?)", entries)
    _note(conn, [id_hash for id_hash, _seq in entries])


def _note(conn, hashes):
    known = getattr(conn, "known_ids", None)
    if known is not None:
        known.add(hashes)


def about_how_many(conn):
    """About how many ids the index holds, cheaply: the highest seq stored or archived."""
    (highest,) = conn.execute("SELECT max((SELECT coalesce(max(seq), 0) FROM events),"
                              " (SELECT coalesce(max(seq), 0) FROM archived_events))").fetchone()
    return highest


def hash_chunks(conn, size):
    """Every id hash of the index, a range of hashes at a time: about `size`
    settled ones and the hot ones of the same range, both read in one short
    read transaction (a settling chunk moves entries between the parts in one
    transaction, so none is missed), never one snapshot held for the whole
    index (which would keep the WAL from starting over meanwhile). An entry
    added after its range was read is not in it: the caller learns of those
    otherwise (billing/store/known_ids.py: the writer adds them)."""
    low, first = _LOWEST[0], True
    while True:
        above = ">=" if first else ">"
        conn.execute("BEGIN")
        try:
            last = conn.execute(f"SELECT id_hash FROM event_ids WHERE id_hash {above} ? ORDER BY id_hash"
                                " LIMIT 1 OFFSET ?", (low, size - 1)).fetchone()
            high = last[0] if last is not None else _HIGHEST[0]
            chunk = [id_hash for (id_hash,) in conn.execute(" UNION ALL ".join(
                f"SELECT id_hash FROM {table} WHERE id_hash {above} ? AND id_hash <= ?" for table in _PARTS),
                (low, high) * len(_PARTS))]
        finally:
            conn.execute("COMMIT")
        yield chunk
        if high == _HIGHEST[0]:  # the last range: no settled entry was left past `size`, or the top hash
            return
        low, first = high, False


def forget(conn, id_hash, seq):
    """The event was deleted (retracted): its id may be sent again."""
    for table in _PARTS:
        conn.execute(f"DELETE FROM {table} WHERE id_hash = ? AND seq = ?", (id_hash, seq))


def forget_many(conn, entries):
    """forget() for each (id_hash, seq) of `entries`: one statement per part,
    the pairs passed as one JSON array (one call into SQLite, not one a pair)."""
    pairs = json.dumps([[id_hash, seq] for id_hash, seq in entries])
    for table in _PARTS:
        conn.execute(f"DELETE FROM {table} WHERE (id_hash, seq) IN"
                     " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))", (pairs,))


def rebuild(conn):
    """The index of every stored event (the migration that adds it; bulk loads)."""
    for table in _PARTS:
        conn.execute(f"DELETE FROM {table}")
    conn.execute("INSERT INTO event_ids (id_hash, seq) SELECT id_hash, seq FROM events ORDER BY id_hash, seq")


def hot_count(conn):
    (count,) = conn.execute("SELECT count(*) AS n FROM event_ids_hot").fetchone()
    return count


_LOWEST, _HIGHEST = (-(2 ** 63), -(2 ** 63)), (2 ** 63 - 1, 2 ** 63 - 1)
_RANGE = "(id_hash, seq) > (?, ?) AND (id_hash, seq) <= (?, ?)"


def settle_chunk(conn, after, limit=SETTLE_CHUNK):
    """Move the next `limit` hot entries after the key `after` ((id_hash, seq),
    or None for the start) into the settled table, in one transaction; returns
    the last key moved, or None when the pass has reached the end. The entries
    go by SQL alone (no row through Python): a pass over 50,000 entries took
    52 instead of 82 ms at 1 M events, all of it under the writer's lock."""
    low = after if after is not None else _LOWEST
    last = conn.execute("SELECT id_hash, seq FROM event_ids_hot WHERE (id_hash, seq) > (?, ?)"
                        " ORDER BY id_hash, seq LIMIT 1 OFFSET ?", (*low, limit - 1)).fetchone()
    high = tuple(last) if last is not None else _HIGHEST  # fewer than `limit` left: all of them
    conn.execute(f"INSERT OR IGNORE INTO event_ids (id_hash, seq) SELECT id_hash, seq FROM event_ids_hot"
                 f" WHERE {_RANGE} ORDER BY id_hash, seq", (*low, *high))
    conn.execute(f"DELETE FROM event_ids_hot WHERE {_RANGE}", (*low, *high))
    return high if last is not None else None
