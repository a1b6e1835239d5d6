"""The deduplication index of events (§4): (id_hash, seq) of every stored
event, where `id_hash` is the 64-bit hash of (customer_id, id) the events
table keeps (billing/api/events.py compares the real ids of every match).

Hash order is random order: a B-tree of the hashes of all events takes a
random page for every entry, and at 10 M events merging even a sorted
batch of entries into it rewrote about one page per entry. So no entry is
ever inserted into a large B-tree:

- **The tail.** The events stored after the settled mark (`counters`
  'event_ids_settled') have no entry at all: their rows are their entries.
  The writer's connection keeps the tail's hashes in memory
  (billing/store/id_tail.py); another connection reads the tail's rows
  (`seq > mark`: a few tens of thousands at most).
- **Runs.** `event_id_runs` holds entries in runs, each written once, in
  hash order, with a run number above every other: a settling pass turns
  the tail into a new run (its pages are appended, each filled once), and a
  merge turns FANIN runs of one size tier into one larger run the same way
  (billing/store/event_id_runs.py). `event_id_run_list` lists the runs; a
  lookup seeks each listed run. Entries only ever move to a higher run.
- **Run 0** takes the entries of events put back under seqs below the mark
  (an archive restore); it is never merged.

Every stored event is in the tail or in a run at every moment (a pass's
insert and its move of the mark, a merge chunk's insert and delete, are
each one transaction), so a lookup asks both. The writer's connection also
keeps an in-memory filter of every hash in front of them
(billing/store/known_ids.py): `maybe_stored` leaves out the ids that surely
are not stored. What adds entries while the server runs tells the filter
(`add_since`, `add_entries`); passes and merges only move them; `rebuild`
runs in migrations and bulk loads, before a filter is built.

An archived event (billing/store/archive.py) keeps its entry while its id
must still be recognised: its columns are then in `archived_events` under
the same seq, and the tail and `stored` read both tables.
"""

import json
import sqlite3
from typing import NamedTuple

MARK = "event_ids_settled"
LOOSE_RUN = 0
EXTRA_ENTRIES = 10_000  # entries the writer's tail may hold beyond twice the tail before it is read again
LOWEST, HIGHEST = -(2 ** 63), 2 ** 63 - 1
_MARK_SQL = f"(SELECT value FROM counters WHERE name = '{MARK}')"
# a JSON array of hashes (or seqs), given as parameter ?1
_LIST = "(SELECT value FROM json_each(?1))"
# the tail's entries: the stored and archived events after the mark
TAIL = (f"SELECT id_hash, seq FROM events WHERE seq > {_MARK_SQL}"
        f" UNION ALL SELECT id_hash, seq FROM archived_events WHERE seq > {_MARK_SQL}")
_TAIL_SEQS = (f"SELECT seq FROM events WHERE seq > {_MARK_SQL} AND id_hash IN {_LIST}"
              f" UNION ALL SELECT seq FROM archived_events WHERE seq > {_MARK_SQL} AND id_hash IN {_LIST}")
# one seek per listed run and hash
_RUN_SEQS = ("SELECT r.seq FROM event_id_run_list l CROSS JOIN event_id_runs r"
             f" ON r.run = l.run AND r.id_hash IN {_LIST}")
_LISTED = "run IN (SELECT run FROM event_id_run_list)"
# the mark and the connection's data_version (the tail's state), in one call into SQLite;
# a writer may read them with what else it reads before storing (billing/api/events.py)
TAIL_STATE_COLUMNS = f"{_MARK_SQL}, (SELECT data_version FROM pragma_data_version)"
_TAIL_STATE = f"SELECT {TAIL_STATE_COLUMNS}"


class TailState(NamedTuple):
    """TAIL_STATE_COLUMNS as read inside the writer's transaction (neither
    changes within it but by `set_mark`, which this module calls last)."""
    mark: int
    version: int


def mark(conn):
    """The highest seq whose entry is in a run (the tail is above it)."""
    (value,) = conn.execute(f"SELECT {_MARK_SQL}").fetchone()
    return value


def set_mark(conn, seq):
    conn.execute("UPDATE counters SET value = ? WHERE name = ?", (seq, MARK))


def _tail(conn, state=None):
    """The writer connection's in-memory tail, up to date inside its transaction, or None.
    `state`: a TailState read earlier in this transaction, else read here."""
    tail = getattr(conn, "id_tail", None)
    if tail is None:
        return None
    settled, version = state if state is not None else conn.execute(_TAIL_STATE).fetchone()
    if tail.due(version) or settled < tail.mark:
        tail.load(settled, conn.execute(TAIL))
    elif settled > tail.mark:  # a settling pass committed
        tail.prune(settled)
    return tail


def seqs(conn, hashes, state=None):
    """The seqs of the entries with one of `hashes` (an event may come twice,
    and a seq whose event is gone may come too: callers read the events)."""
    if not hashes:
        return []
    tail = _tail(conn, state)
    if tail is None:  # the runs and the tail's rows in one statement: one snapshot, also outside a transaction
        return [seq for (seq,) in conn.execute(f"{_RUN_SEQS} UNION ALL {_TAIL_SEQS}", (json.dumps(hashes),))]
    return [seq for (seq,) in conn.execute(_RUN_SEQS, (json.dumps(hashes),))] + tail.seqs(hashes)


def stored(conn, columns, hashes, state=None):
    """`columns` (and `archived`: 0 or 1) of the stored and the archived events
    whose hash is one of `hashes`, as named rows; callers compare the ids.
    `state`: the tail's state if read already (`_tail`)."""
    found = seqs(conn, hashes, state)
    if not found:
        return []
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor.execute(f"SELECT {columns}, 0 AS archived FROM events WHERE seq IN {_LIST}"
                          f" UNION ALL SELECT {columns}, 1 AS archived FROM archived_events WHERE seq IN {_LIST}",
                          (json.dumps(sorted(set(found))),)).fetchall()


def maybe_stored(conn, hashes, state=None):
    """Of `hashes`, those that may be in the index: all of them, or, on the
    writer's connection once its filter is built (billing/store/known_ids.py),
    only those the filter cannot rule out. Call inside the write transaction
    (`state`: its TailState if read already)."""
    known = getattr(conn, "known_ids", None)
    if known is None or not known.usable(conn, state.version if state is not None else None):
        return hashes
    return known.maybe_stored(hashes)


def add_since(conn, seq, hashes, highest, state=None):
    """The events stored after `seq` (those this transaction just inserted, in
    order, whose id hashes are `hashes`; `highest` the highest seq stored
    now) join the tail. `state`: the tail's state if read already (`_tail`)."""
    tail = _tail(conn, state)
    settled = tail.mark if tail is not None else mark(conn)
    if seq < settled:
        # the newest events were deleted and SQLite hands their seqs out again:
        # the tail starts lower (no run holds an entry of a stored seq above
        # `seq`; an archived event's above it is in a run and now in the tail
        # too, so the next pass writes it again: harmless, merges keep one)
        set_mark(conn, seq)  # the writer's tail, above the old mark, is read again: `_tail` sees it lower
    elif tail is not None:
        if highest == seq + len(hashes):
            tail.add_run(hashes, seq + 1)
        else:  # not one after another: the tail is read again
            tail.stale = True
        if len(tail) > 2 * (highest - settled) + EXTRA_ENTRIES:
            tail.stale = True  # mostly extras (rolled-back inserts, kept by a prune): read again
    _note(conn, hashes)


def add_entries(conn, entries):
    """Index (id_hash, seq) pairs of events put back under their own seqs (a restore)."""
    settled = mark(conn)
    conn.executemany(f"INSERT OR IGNORE INTO event_id_runs (run, id_hash, seq) VALUES ({LOOSE_RUN}, ?, ?)",
                     [(id_hash, seq) for id_hash, seq in entries if seq <= settled])
    tail = _tail(conn)
    if tail is not None:
        tail.add((id_hash, seq) for id_hash, seq in entries if seq > settled)
    _note(conn, [id_hash for id_hash, _seq in entries])


def _note(conn, hashes):
    known = getattr(conn, "known_ids", None)
    if known is not None:
        known.add(hashes)


def highest_seq(conn):
    """The highest seq stored or archived (0 without any): where a settling
    pass may take the mark, and about how many ids the index holds."""
    (highest,) = conn.execute("SELECT max((SELECT coalesce(max(seq), 0) FROM events),"
                              " (SELECT coalesce(max(seq), 0) FROM archived_events))").fetchone()
    return highest


def hash_chunks(conn, size):
    """Every id hash of the index, never one snapshot held for the whole of
    it (which would keep the WAL from starting over meanwhile): the tail's
    in one short read transaction, then the runs' `size` entries at a time in
    (run, hash) order, each in its own. Entries only ever leave the tail for
    a new run, or a run for a higher one, so each is read where it was or
    where it went. An entry added after the tail was read is not in it: the
    caller learns of those otherwise (billing/store/known_ids.py: the writer
    adds them)."""
    conn.execute("BEGIN")
    try:
        chunk = [id_hash for id_hash, _seq in conn.execute(TAIL)]
    finally:
        conn.execute("COMMIT")
    yield chunk
    key = (-1, LOWEST, LOWEST)
    while True:
        conn.execute("BEGIN")
        try:
            rows = conn.execute("SELECT run, id_hash, seq FROM event_id_runs WHERE (run, id_hash, seq) > (?, ?, ?)"
                                " ORDER BY run, id_hash, seq LIMIT ?", (*key, size)).fetchall()
        finally:
            conn.execute("COMMIT")
        yield [id_hash for _run, id_hash, _seq in rows]
        if len(rows) < size:
            return
        key = tuple(rows[-1])


def forget(conn, id_hash, seq):
    """The event was deleted (retracted): its id may be sent again."""
    forget_many(conn, [(id_hash, seq)])


def forget_many(conn, entries):
    """forget() for each (id_hash, seq) of `entries`, in every run, the pairs
    passed as one JSON array (one call into SQLite, not one a pair). An entry
    of the tail goes with its event's row."""
    if not entries:
        return
    conn.execute(f"DELETE FROM event_id_runs WHERE {_LISTED} AND (id_hash, seq) IN"
                 " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))",
                 (json.dumps([[id_hash, seq] for id_hash, seq in entries]),))


def rebuild(conn):
    """The index of every stored and archived event as one run, nothing in
    the tail (the migration that adds runs; bulk loads)."""
    conn.execute("DELETE FROM event_id_runs")
    conn.execute("DELETE FROM event_id_run_list")
    conn.execute(f"INSERT INTO event_id_run_list (run, entries) VALUES ({LOOSE_RUN}, 0)")
    count = conn.execute("INSERT INTO event_id_runs (run, id_hash, seq) SELECT 1, id_hash, seq FROM"
                         " (SELECT id_hash, seq FROM events UNION ALL SELECT id_hash, seq FROM archived_events)"
                         " ORDER BY id_hash, seq").rowcount
    if count:
        conn.execute("INSERT INTO event_id_run_list (run, entries) VALUES (1, ?)", (count,))
    set_mark(conn, highest_seq(conn))
