"""The ClickHouse outbox (§13): what the node has stored and ClickHouse has
not yet received, kept in SQLite without costing ingest anything.

Two cursors in one row of `clickhouse_outbox` over tables that exist anyway:
- events: `shipped_seq`, every event with seq ≤ it has been answered 200 by
  ClickHouse. Events are read in seq order from the events table itself.
- retractions: `shipped_retraction`, every row of `retracted_events` (which a
  retraction writes in its own transaction) with id ≤ it has been shipped as
  a tombstone.

The row exists only once ClickHouse has been configured (`attach`); starting
from zero, events stored before that are shipped too. A cursor advances in
its own short writer transaction after ClickHouse answered (`advance`).

Deleting events must not lose shipping. SQLite gives a new event the highest
seq + 1, so deleting the newest event lets the next one reuse its seq; the
trigger of migration 18 (billing/store/schema_outbox.py) lowers
`shipped_seq` to the highest seq left when a delete takes the events below
it (a retraction, an archive), so reused seqs are shipped. `advance` does not move past a batch in which anything
was retracted meanwhile (it is sent again: resends are harmless).

Archived events (billing/store/archive.py) move out of SQLite only once
shipped, so a table that has received everything keeps them. A table that
starts from zero (`attach`, `restart`) gets the stored events only: usage
over the time of the events archived by then is read on the node, which
still counts them (`complete_from`, the end of the last bucket holding
archived events at that moment, kept in `counters`).

Versions (ReplacingMergeTree keeps the highest per (customer, id)): the
k-th retraction of an id ships a tombstone of version k·2⁴² − 1; an event
stored after k retractions of its id ships as k·2⁴² + seq. A tombstone thus
beats the event it retracts and loses to the event sent again with its id.
"""

from .db import named
from .rollups import BUCKET_US

GENERATION = 1 << 42  # above any seq
_COMPLETE_FROM = "clickhouse_complete_from"




_STATE = "SELECT target, shipped_seq, shipped_retraction, shipped_at FROM clickhouse_outbox WHERE id = 1"

# events after a seq, in order, with their properties as parallel arrays of
# names and JSON values (as usage groups them: SQLite's json_quote)
_EVENTS = (
    "SELECT e.seq, e.customer_id, e.event_id, e.meter_id, e.ts, e.quantity, e.value, e.matched,"
    " e.properties, e.late, e.received_at,"
    " (SELECT json_group_array(j.key) FROM json_each(e.properties) j) AS prop_keys,"
    " (SELECT json_group_array('' || json_quote(j.value)) FROM json_each(e.properties) j) AS prop_values,"
    " (SELECT count(*) FROM retracted_events r WHERE r.customer_id = e.customer_id"
    " AND r.event_id = e.event_id) AS generation"
    " FROM events e WHERE e.seq > ? ORDER BY e.seq LIMIT ?")
_RETRACTIONS = (
    "SELECT r.id, r.seq, r.customer_id, r.event_id, r.meter_id, r.ts,"
    " (SELECT count(*) FROM retracted_events p WHERE p.customer_id = r.customer_id"
    " AND p.event_id = r.event_id AND p.id <= r.id) AS generation"
    " FROM retracted_events r WHERE r.id > ? ORDER BY r.id LIMIT ?")
EXACT_BACKLOG = 100_000  # counted exactly up to this gap of seqs; beyond, the gap is the figure


def state(conn):
    """The outbox row (sqlite3.Row: target, shipped_seq, shipped_retraction,
    shipped_at), or None before ClickHouse was ever configured."""
    return named(conn, _STATE).fetchone()


def shipped_through(conn):
    """Events with seq ≤ this have reached ClickHouse; None when none must
    wait (ClickHouse never configured). Whatever deletes raw events for good
    (the archive) deletes only those at or below it."""
    row = state(conn)
    return None if row is None else row["shipped_seq"]


def attach(conn, target):
    """Make the outbox row for `target` (where ClickHouse keeps the table);
    a new target starts again from zero."""
    row = state(conn)
    if row is None:
        conn.execute("INSERT INTO clickhouse_outbox (id, target, shipped_seq, shipped_retraction)"
                     " VALUES (1, ?, 0, 0)", (target,))
        _mark_complete_from(conn)
    elif row["target"] != target:
        restart(conn, target)


def restart(conn, target):
    """Ship everything again (ClickHouse lost its table, or it is another one)."""
    conn.execute("UPDATE clickhouse_outbox SET target = ?, shipped_seq = 0, shipped_retraction = 0 WHERE id = 1",
                 (target,))
    _mark_complete_from(conn)


_ARCHIVED_UNTIL = f"SELECT coalesce(max(bucket) + {BUCKET_US}, 0) AS until FROM archived_buckets"


def _mark_complete_from(conn):
    """The table starts from zero: it will never get the events archived by now."""
    (until,) = conn.execute(_ARCHIVED_UNTIL).fetchone()
    conn.execute("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (_COMPLETE_FROM, until))


def complete_from(conn):
    """The instant (µs) from which ClickHouse has every event (0: all of
    them); usage of an earlier range is read on the node."""
    row = named(conn, "SELECT value FROM counters WHERE name = ?", (_COMPLETE_FROM,)).fetchone()
    return 0 if row is None else row["value"]


def _highest(conn):
    (seq,) = conn.execute("SELECT coalesce(max(seq), 0) AS highest FROM events").fetchone()
    (retraction,) = conn.execute("SELECT coalesce(max(id), 0) AS highest FROM retracted_events").fetchone()
    return seq, retraction


def retraction_seen(conn):
    """The newest retraction's id (0: none): read before a batch's events, for `advance`."""
    return _highest(conn)[1]


def has_backlog(conn):
    """Whether anything stored is not shipped yet (True without the row)."""
    row = state(conn)
    if row is None:
        return True
    seq, retraction = _highest(conn)
    return seq > row["shipped_seq"] or retraction > row["shipped_retraction"]


def backlog(conn):
    """Events and retractions not shipped yet (all of them before the row
    exists). Past EXACT_BACKLOG seqs the events are the gap of seqs, which
    counts the deleted ones too."""
    row = state(conn)
    shipped_seq, shipped_retraction = (row["shipped_seq"], row["shipped_retraction"]) if row else (0, 0)
    seq, retraction = _highest(conn)
    gap = max(0, seq - shipped_seq)
    if 0 < gap <= EXACT_BACKLOG:
        (gap,) = conn.execute("SELECT count(*) AS n FROM events WHERE seq > ?", (shipped_seq,)).fetchone()
    return gap + max(0, retraction - shipped_retraction)


def events_after(conn, seq, limit):
    """Up to `limit` events after `seq` (sqlite3.Row, see _EVENTS), in seq order."""
    return named(conn, _EVENTS, (seq, limit)).fetchall()


def retractions_after(conn, after, limit):
    """Up to `limit` retractions after id `after` (sqlite3.Row), in order."""
    return named(conn, _RETRACTIONS, (after, limit)).fetchall()


def event_version(row):
    return row["generation"] * GENERATION + row["seq"]


def tombstone_version(row):
    return row["generation"] * GENERATION - 1


def advance(conn, shipped_seq, events_from, retraction_seen, shipped_retraction, now_us):
    """Record a shipment (in a writer transaction): events up to
    `shipped_seq` (read after `events_from` while retractions were read up
    to `retraction_seen`) and retractions up to `shipped_retraction`. The
    event cursor stays where it is when one of those events (or a newer
    one) was retracted since: the batch is sent again."""
    retracted = conn.execute("SELECT 1 AS found FROM retracted_events WHERE id > ? AND seq > ? LIMIT 1",
                             (retraction_seen, events_from)).fetchone()
    if shipped_seq is not None and retracted is None:
        conn.execute("UPDATE clickhouse_outbox SET shipped_seq = max(shipped_seq, ?) WHERE id = 1", (shipped_seq,))
    if shipped_retraction is not None:
        conn.execute("UPDATE clickhouse_outbox SET shipped_retraction = max(shipped_retraction, ?) WHERE id = 1",
                     (shipped_retraction,))
    conn.execute("UPDATE clickhouse_outbox SET shipped_at = ? WHERE id = 1", (now_us,))
