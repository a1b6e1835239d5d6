"""Archived raw events in SQLite (§13 "Raw event retention"): what an archive
pass (billing/ops/archiver.py) changes when it moves events into the archive
files (billing/store/archive_files.py), and what a restore undoes.

Moving events out changes no figure: the rollups (buckets, day rows,
counted values, latest values) and `event_spans` ("has events", which keeps
counting archived events) are left as they are, so every figure stays exact
from them. What the raw events gave besides, the archive keeps here:

- `archived_buckets`: every (customer, meter, 15-minute bucket) with archived
  events. A range edge that cuts such a bucket would read raw events that are
  gone, so it is refused (billing/api/rollups.py); a meter with archived
  events cannot gain a group_by key (regrouping reads raw events); an event of
  such a bucket cannot be retracted (its bucket is rebuilt from raw events).
- `archived_events`: the archived events whose timestamp is within the
  lateness window (BILLING_MAX_EVENT_AGE_DAYS; all of them when it is 0),
  by seq. Their dedup entries (billing/store/event_ids.py) stay, so a resent
  id is a duplicate as before and the reply shows the event; `prune` drops
  them, and their dedup entries, once the window has passed (a resend is
  then refused as too old anyway).

A seq is the events table's rowid and SQLite hands out max + 1, so a pass
leaves the newest event stored (`limit_seq`). A retraction of the newest
event still hands its seq to the next one, so a restore, which puts events
back under their own seqs, tells a retraction of the archived event itself
(same seq, customer and id, made after it was received) from one of an
earlier event under that seq.
"""

import json

from ..errors import Conflict
from . import event_ids, outbox
from .archive_files import COLUMNS, instant
from .rollups import BUCKET_US

DELETE_CHUNK = 200     # events marked or deleted per writer transaction (a few ms to tens of ms)
PRUNE_CHUNK = 1_000    # archived ids forgotten per writer transaction
RESTORE_CHUNK = 2_000  # events restored per writer transaction
_KEPT = "seq, customer_id, event_id, meter_id, ts, quantity, properties, late, received_at, id_hash"
_REMEMBER = (f"INSERT OR IGNORE INTO archived_events ({_KEPT}) SELECT {_KEPT} FROM events"
             " WHERE seq IN ({marks}) AND ts >= ?")
_MARK = ("INSERT OR IGNORE INTO archived_buckets (customer_id, meter_id, bucket) SELECT json_extract(value, '$[0]'),"
         " json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each(?)")
_RESTORE = f"INSERT OR IGNORE INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def limit_seq(conn, shipping=False):
    """The highest seq an archive pass may move: every stored event but the
    newest, so SQLite never hands a seq out again (the next rowid is max + 1);
    while events are shipped to ClickHouse (`shipping`), none it has not
    received yet (the outbox's shipped-through seq)."""
    (highest,) = conn.execute("SELECT coalesce(max(seq), 0) AS highest FROM events").fetchone()
    if shipping:
        return min(highest - 1, outbox.shipped_through(conn) or 0)
    return highest - 1


def _bucket(ts):
    return ts - ts % BUCKET_US


def mark(conn, rows):
    """In the writer's transaction, before the file is written: record the
    buckets of `rows` (mappings of the events' columns) as archived, leaving
    out the events of meters being regrouped (a regroup reads raw events);
    returns the rows to archive. A meter marked here cannot start a regroup."""
    busy = {meter_id for (meter_id,) in conn.execute("SELECT meter_id FROM rollup_regroups")}
    kept = [row for row in rows if row["meter_id"] not in busy]
    buckets = sorted({(row["customer_id"], row["meter_id"], _bucket(row["ts"])) for row in kept})
    conn.execute(_MARK, (json.dumps(buckets),))  # one call into SQLite for the whole chunk
    return kept


def delete_chunk(conn, seqs, remember_from):
    """Delete the archived events `seqs` (at most a chunk, in the caller's
    transaction); the ids of those stamped at or after `remember_from` (µs;
    None: all) stay recognised, the others' dedup entries go. Returns how
    many were deleted (an event retracted or deleted before is skipped)."""
    marks = ",".join("?" * len(seqs))
    floor = -(2 ** 63) if remember_from is None else remember_from
    conn.execute(_REMEMBER.format(marks=marks), (*seqs, floor))
    event_ids.forget_many(conn, conn.execute(f"SELECT id_hash, seq FROM events WHERE seq IN ({marks}) AND ts < ?",
                                             (*seqs, floor)).fetchall())
    return conn.execute(f"DELETE FROM events WHERE seq IN ({marks})", seqs).rowcount


def prune(conn, before_us, limit=PRUNE_CHUNK):
    """Forget up to `limit` archived ids stamped before `before_us` (past the
    lateness window) with their dedup entries; returns how many."""
    rows = conn.execute("SELECT seq, id_hash FROM archived_events WHERE ts < ? LIMIT ?", (before_us, limit)).fetchall()
    event_ids.forget_many(conn, [(id_hash, seq) for seq, id_hash in rows])
    conn.executemany("DELETE FROM archived_events WHERE seq = ?", [(seq,) for seq, _ in rows])
    return len(rows)


def _retracted_since(record, retracted):
    """Whether the archived event was retracted after it was stored
    (`retracted`: {(seq, customer id, id): latest retracted_at}): the seq of a
    retracted newest event goes to the next event stored, which may even carry
    the same id again, so a retraction of the seq alone proves nothing."""
    at = retracted.get((record["seq"], record["customer_id"], record["event_id"]))
    return at is not None and at > record["received_at"]


def restore_chunk(conn, records):
    """Put archived events (dicts of the archive's COLUMNS) back under their
    own seqs, in the caller's transaction; returns how many came back. Never
    twice (a seq already stored is left as it is), never one retracted since;
    the rollups and spans already count them and are not touched."""
    seqs = [record["seq"] for record in records]
    marks = ",".join("?" * len(seqs))
    retracted = {}
    for seq, customer_id, event_id, at in conn.execute(
            f"SELECT seq, customer_id, event_id, retracted_at FROM retracted_events WHERE seq IN ({marks})", seqs):
        retracted[(seq, customer_id, event_id)] = max(at, retracted.get((seq, customer_id, event_id), at))
    fresh = [record for record in records if not _retracted_since(record, retracted)]
    before = conn.total_changes
    conn.executemany(_RESTORE, [tuple(record[name] for name in COLUMNS) for record in fresh])
    restored = conn.total_changes - before
    for record in fresh:  # one dedup entry each, whether it stayed or was pruned
        event_ids.forget(conn, record["id_hash"], record["seq"])
    event_ids.add_entries(conn, [(record["id_hash"], record["seq"]) for record in fresh])
    conn.execute(f"DELETE FROM archived_events WHERE seq IN ({marks})", seqs)
    conn.executemany("DELETE FROM archived_buckets WHERE customer_id = ? AND meter_id = ? AND bucket = ?",
                     {(record["customer_id"], record["meter_id"], _bucket(record["ts"])) for record in records})
    return restored


def archived_bucket(conn, customer_id, meter_id, bucket):
    """Whether the bucket holds archived events of the customer and meter
    (None: of any customer; of any meter too with `meter_id` None)."""
    if meter_id is None:
        sql, params = ("SELECT 1 AS found FROM archived_buckets WHERE meter_id IN (SELECT id FROM meters)"
                       " AND bucket = ? LIMIT 1", (bucket,))
    elif customer_id is None:
        sql, params = "SELECT 1 AS found FROM archived_buckets WHERE meter_id = ? AND bucket = ? LIMIT 1", (meter_id, bucket)
    else:
        sql = "SELECT 1 AS found FROM archived_buckets WHERE customer_id = ? AND meter_id = ? AND bucket = ?"
        params = (customer_id, meter_id, bucket)
    return conn.execute(sql, params).fetchone() is not None


def has_archived(conn, meter_id):
    """Whether the meter has archived events."""
    return conn.execute("SELECT 1 AS found FROM archived_buckets WHERE meter_id = ? LIMIT 1",
                        (meter_id,)).fetchone() is not None


def check_retractable(conn, customer_id, meter_id, ts):
    """A retraction rebuilds the event's bucket from the raw events: not while
    some of them are archived (Conflict)."""
    bucket = _bucket(ts)
    if archived_bucket(conn, customer_id, meter_id, bucket):
        raise Conflict(f"The event's 15-minute bucket ({instant(bucket)} – {instant(bucket + BUCKET_US)}) holds "
                       "archived events; restore its archive file (python3 -m billing.archive restore) to retract it.")
