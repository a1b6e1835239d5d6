"""Regrouping a meter's rollups in short transactions (§12, §13): adding a
group_by key to a meter that has events only marks it in `rollup_regroups`;
a background thread (billing/ops/scheduler.py) then rebuilds its rollups.

The rule: one writer transaction at a time takes the next range of buckets,
in time order over all customers, holding about `chunk` of the meter's
events (one bucket alone when it holds more), deletes the meter's rollup rows
of those buckets (hot and settled) and adds them again from the raw events,
grouped by the meter's group_by as it is now — what a retraction does to its
bucket. Every stored event stays counted once in its bucket all along, so
every figure without group_by, or grouped by a key the meter had before,
reads the rollups exactly throughout; a key the meter gained is read from
the raw events until the last range is done (`holds_key`). Events stored
meanwhile are grouped by the new keys as they arrive, wherever they fall.
Ranges are planned on a reader; the transaction first checks that the
regroup is still where the plan started (the same generation and bucket),
else it plans again.
"""

import json
from typing import NamedTuple

from . import event_time, rollups
from .db import named

REGROUP_CHUNK = 2_000  # events regrouped per writer transaction: tens of ms on the 2-core box
FIRST = -(2 ** 62) // rollups.BUCKET_US * rollups.BUCKET_US  # bucket bounds before and after every event
PAST = 2 ** 62 // rollups.BUCKET_US * rollups.BUCKET_US


def start_regroup(conn, meter_id, keys):
    """Mark the meter regrouping, in the transaction that adds its group_by
    keys; `keys` are those it had before. A regroup already under way starts
    over (the ranges it did lack the new key) and keeps its `keys`."""
    conn.execute("INSERT INTO rollup_regroups (meter_id, keys, generation, bucket) VALUES (?, ?, 1, ?)"
                 " ON CONFLICT (meter_id) DO UPDATE SET generation = generation + 1, bucket = excluded.bucket",
                 (meter_id, json.dumps(list(keys)), FIRST))


def _row(conn, sql, params=()):
    """One row read by column name, or None."""
    return named(conn, sql, params).fetchone()


def holds_key(conn, meter_id, key):
    """Whether every rollup row of the meter holds the group_by key `key` (not
    while a regroup that adds it is under way: read the raw events then)."""
    row = _row(conn, "SELECT keys FROM rollup_regroups WHERE meter_id = ?", (meter_id,))
    return row is None or key in json.loads(row["keys"])


def regroup(db, chunk=REGROUP_CHUNK, between_chunks=None, stop=None):
    """Regroup the rollups of every meter marked regrouping; returns the
    number of writer transactions it took. `between_chunks()` is called after
    each commit; `stop()` true ends the work until the next call."""
    chunks = 0
    while stop is None or not stop():
        with db.snapshot() as conn:
            plan = _plan(conn, chunk)
        if plan is None:
            return chunks
        with db.transaction() as conn:
            done = _apply(conn, plan)
        if done:
            chunks += 1
            if between_chunks is not None:
                between_chunks()
    return chunks


class _Plan(NamedTuple):
    meter_id: int
    place: tuple  # (generation, bucket) planned from
    low: int      # the buckets [low, high) of this chunk
    high: int
    finished: bool


# the timestamp of the meter's event `chunk` places on from `low` in the order of the time index
# (billing/store/event_time.py: by bucket, then as stored)
_NEXT_EVENT = (f"SELECT ts FROM events WHERE {event_time.SINCE} AND meter_id = ?"
               f" ORDER BY {event_time.KEY} LIMIT 1 OFFSET ?")


def _plan(conn, chunk):
    """The next chunk of the first meter regrouping (None: no meter is)."""
    row = _row(conn, "SELECT meter_id, generation, bucket FROM rollup_regroups ORDER BY meter_id LIMIT 1")
    if row is None:
        return None
    meter_id, low = row["meter_id"], row["bucket"]
    place = (row["generation"], low)
    past = _row(conn, _NEXT_EVENT, (*event_time.since_params(low), meter_id, chunk))
    if past is None:  # the rest holds at most a chunk
        return _Plan(meter_id, place, low, PAST, True)
    high = past["ts"] - past["ts"] % rollups.BUCKET_US
    if high == low:  # that bucket alone holds more
        high = low + rollups.BUCKET_US
    return _Plan(meter_id, place, low, high, False)


def _apply(conn, plan):
    """Regroup the planned buckets in the caller's transaction and move the
    regroup's place past them; False (nothing done) when the place moved."""
    now = _row(conn, "SELECT generation, bucket FROM rollup_regroups WHERE meter_id = ?", (plan.meter_id,))
    if now is None or (now["generation"], now["bucket"]) != plan.place:
        return False
    rollups.regroup_range(conn, plan.meter_id, plan.low, plan.high)
    if plan.finished:
        conn.execute("DELETE FROM rollup_regroups WHERE meter_id = ?", (plan.meter_id,))
    else:
        conn.execute("UPDATE rollup_regroups SET bucket = ? WHERE meter_id = ?", (plan.high, plan.meter_id))
    return True
