"""The events' time index (§13): `events_time` on `ts / 900000000`, the
15-minute bucket of an event's timestamp as SQLite's integer division gives
it (truncated toward zero), so its entries are ordered by (bucket, seq).

Why not by the timestamp itself: events arrive in seq order but with
timestamps spread over the last minutes or hours, so an index ordered by
time takes each insert at a random place among that span's entries — a
commit of 4,000 events rewrote about 1,060 pages of that index (of 1,581
pages written in all). Ordered by (bucket, seq), each bucket's entries grow at their end
only: the same commit writes just the pages its new entries fill at the end
of each bucket it touches (about 40 in all).

The price is at the reads: within a bucket the index gives no order by time
and no customer or meter, so a query by time reads every stored event of the
buckets it names and keeps those it wants (a bucket held about 1,700 events
at 10 M events over 60 days: about 0.2 ms). Only what the rollups cannot
answer reads events by time: a bucket a range edge cuts, the event list, an
archive pass, a regroup, a retraction's bucket — and, reading whole ranges
that way, usage grouped by a key its meter's rollups are still being
regrouped for (billing/api/rollups.py `_raw_pieces`) and the hourly usage of
a collector meter set up without its `service` group (recommendations).

A statement uses the index only when it names the key, so every range over
`ts` is written with `RANGE` (or `key_range` for a column of another table's
alias) and its parameters from `range_params`, and a one-sided bound with
`SINCE` / `since_params` or `BEFORE` / `before_params`. For ts ≥ 0 the key is the
start of the event's rollup bucket ÷ 900000000; before 1970 truncation moves
it by one toward zero, which only widens what is read: `range_params`
computes the keys the same way.
"""

BUCKET_US = 15 * 60 * 1_000_000
KEY = f"ts / {BUCKET_US}"  # the indexed expression, exactly as the index names it


def key(us):
    """The index key of a timestamp (µs), as SQLite divides integers."""
    whole = abs(us) // BUCKET_US
    return whole if us >= 0 else -whole


def key_range(column="ts"):
    """SQL of `column` in [?, ?) that the index serves: four parameters, range_params(a, b)."""
    return f"{column} / {BUCKET_US} BETWEEN ? AND ? AND {column} >= ? AND {column} < ?"


RANGE = key_range()


def range_params(start_us, end_us):
    """The parameters of RANGE for [start_us, end_us)."""
    return key(start_us), key(end_us - 1), start_us, end_us


SINCE = f"{KEY} >= ? AND ts >= ?"  # ts >= a: since_params(a)
BEFORE = f"{KEY} <= ? AND ts < ?"  # ts < b: before_params(b)


def since_params(start_us):
    return key(start_us), start_us


def before_params(end_us):
    return key(end_us - 1), end_us
