"""Rollups (§13): matched events pre-aggregated per (customer, meter, group,
15-minute bucket), written in the transaction that writes the events.

A bucket is the event's UTC instant floored to 15 minutes (µs); every local
day and hour boundary of every timezone in use today (DST and +05:45
included) falls on one. The group `grp` is a JSON object of the meter's
declared group_by keys and each event's values for them, built by SQLite the
way usage reads a group (`json_extract` of the properties); `{}` for a meter
without group_by. Adding a group_by key regroups the meter (billing/store/regroup.py).

Per bucket: the count, the sum of integer micros in two integer columns
(sum = total_hi · 10¹² + total_lo, 0 ≤ total_lo < 10¹², so no addition ever
leaves SQLite's 64-bit range), min, max and the latest (ts, seq, value). For
`unique_count` meters (whose values are JSON text) the distinct values of each
bucket are kept in `rollup_values`.

A batch is aggregated in Python first (one partial per touched bucket), then
written with one UPSERT per bucket. The rows just inserted are aggregated
from memory (their seqs follow the highest seq before the insert, one by one,
which `add_inserted` checks); only the rows of meters with group_by are read
back, so SQLite builds their group. A retraction recomputes its bucket from
the raw events still stored.

Hot and settled: inserts write the small hot tables (`rollups_hot`,
`rollup_values_hot`, ordered by bucket first), so a commit touches a few
pages however many customers its events spread over; `settle` later moves
buckets older than an hour into the settled tables (`rollups`,
`rollup_values`, ordered by customer, meter, bucket for the reads), in short
chunks, merging into any settled row of the same key. Readers add both
tables: a key may be in both at once (a late event re-opens an old bucket in
the hot table), and adding partials is exact for every aggregation. Rebuilds
and retractions write the settled tables directly.

Beside them, `event_spans` keeps per (customer, meter) the number of stored
events (matched or not) and their first and last timestamps: the same
insert adds to it, a retraction subtracts (the row goes at zero; the
timestamps stay as outer bounds). And `event_counts` keeps the number of
events received per 15-minute bucket over every customer and meter (matched
or not; the events chart): the same insert adds to it, a retraction
subtracts, and archiving leaves it as it is.
"""

import json
import operator

from . import event_ids, event_time, multirow
from .event_time import BUCKET_US

SPLIT = 10 ** 12
CHUNK = 50_000  # events aggregated per pass when rebuilding

# the group of an event: its values of the meter's group_by keys, as SQLite reads them
_GROUP = ("CASE WHEN m.group_by = '[]' THEN '{}' ELSE (SELECT json_group_object(g.value,"
          " json_quote(json_extract(e.properties, '$.\"' || g.value || '\"'))) FROM json_each(m.group_by) g) END")
_READ = (f"SELECT e.seq, e.customer_id, e.meter_id, e.ts, e.value, {_GROUP}"
         " FROM events e CROSS JOIN meters m ON m.id = e.meter_id WHERE e.matched = 1 AND ")

_COLUMNS = "customer_id, meter_id, bucket, grp, n, total_hi, total_lo, low, high, last_ts, last_seq, last_value"
_MERGE = (
    " DO UPDATE SET n = n + excluded.n,"
    f" total_hi = total_hi + excluded.total_hi + (total_lo + excluded.total_lo) / {SPLIT},"
    f" total_lo = (total_lo + excluded.total_lo) % {SPLIT},"
    " low = min(low, excluded.low), high = max(high, excluded.high),"
    " last_value = CASE WHEN (excluded.last_ts, excluded.last_seq) > (last_ts, last_seq)"
    " THEN excluded.last_value ELSE last_value END,"
    " last_seq = CASE WHEN (excluded.last_ts, excluded.last_seq) > (last_ts, last_seq)"
    " THEN excluded.last_seq ELSE last_seq END,"
    " last_ts = max(last_ts, excluded.last_ts)")
# each table's key (hot: bucket first), in the order of its primary key
_KEY = {True: ("bucket", "customer_id", "meter_id", "grp"), False: ("customer_id", "meter_id", "bucket", "grp")}
_UPSERT = {hot: f"INSERT INTO {'rollups_hot' if hot else 'rollups'} ({_COLUMNS}) VALUES ({', '.join('?' * 12)})"
                f" ON CONFLICT ({', '.join(key)})" + _MERGE for hot, key in _KEY.items()}
_ADD_VALUE = {
    True: "INSERT OR IGNORE INTO rollup_values_hot (customer_id, meter_id, bucket, grp, value) VALUES (?, ?, ?, ?, ?)",
    False: "INSERT OR IGNORE INTO rollup_values (customer_id, meter_id, bucket, grp, value) VALUES (?, ?, ?, ?, ?)",
}
DAY_US = 86_400 * 1_000_000


def floor_sql(column, unit):
    """SQL of `column` floored to a multiple of `unit` as Python floors (SQL's %
    truncates toward zero, so times before 1970 need the second modulo)."""
    return f"({column} - (({column} % {unit}) + {unit}) % {unit})"


_DAY_COLUMNS = _COLUMNS.replace("bucket", "day")
_DAY_UPSERT = (f"INSERT INTO rollup_days ({_DAY_COLUMNS}) VALUES ({', '.join('?' * 12)})"
               " ON CONFLICT (customer_id, meter_id, day, grp)" + _MERGE)
# the UTC day of a bucket, floored as Python floors (SQLite's % truncates before 1970)
_DAY_OF = floor_sql("bucket", DAY_US)
# a day's row from its settled buckets; its latest is that of the bucket with the highest (last_ts, last_seq)
_DAYS_FROM_BUCKETS = (
    f"INSERT INTO rollup_days ({_DAY_COLUMNS}) SELECT customer_id, meter_id, day, grp, sum(n),"
    f" sum(total_hi) + sum(total_lo) / {SPLIT}, sum(total_lo) % {SPLIT}, min(low), max(high),"
    " max(CASE WHEN k = 1 THEN last_ts END), max(CASE WHEN k = 1 THEN last_seq END),"
    " max(CASE WHEN k = 1 THEN last_value END)"
    f" FROM (SELECT *, {_DAY_OF} AS day, row_number() OVER (PARTITION BY customer_id, meter_id, {_DAY_OF}, grp"
    " ORDER BY last_ts DESC, last_seq DESC) AS k FROM rollups WHERE {where}) GROUP BY customer_id, meter_id, day, grp")
TABLES = ("rollups", "rollups_hot")
VALUE_TABLES = ("rollup_values", "rollup_values_hot")
SETTLE_AFTER_US = 3_600 * 1_000_000  # buckets older than this leave the hot tables
SETTLE_CHUNK = 2_000  # rows moved per transaction


def _partials(rows):
    """{(customer, meter, bucket, grp): [n, total, low, high, last_ts, last_seq, last_value]}
    and the set of (customer, meter, bucket, grp, value) of counted values."""
    parts, values = {}, set()
    # plain tuples in _READ's column order: sqlite3.Row would cost 1 µs an event here
    for seq, customer_id, meter_id, ts, value, grp in rows:
        key = (customer_id, meter_id, ts - ts % BUCKET_US, grp)
        part = parts.get(key)
        if type(value) is str:  # a counted value (unique_count): no sum, min or max
            values.add((*key, value))
            number, amount = None, 0
        else:
            number = amount = value
        if part is None:
            parts[key] = [1, amount, number, number, ts, seq, value]
            continue
        part[0] += 1
        part[1] += amount
        if number is not None:
            if number < part[2]:
                part[2] = number
            if number > part[3]:
                part[3] = number
        if (ts, seq) > (part[4], part[5]):
            part[4], part[5], part[6] = ts, seq, value
    return parts, values


# a table's key of its rows as written (_COLUMNS), and of its counted values' rows (_ADD_VALUE:
# the same first four columns, then the value)
_POSITION = {name: n for n, name in enumerate(_COLUMNS.split(", "))}
_KEY_ORDER = {hot: operator.itemgetter(*(_POSITION[name] for name in key)) for hot, key in _KEY.items()}
_VALUE_ORDER = {hot: operator.itemgetter(*(_POSITION[name] for name in key), 4) for hot, key in _KEY.items()}


def _write(conn, parts, values, hot):
    rows = [(*key, n, total // SPLIT, total % SPLIT, low, high, last_ts, last_seq, last)
            for key, (n, total, low, high, last_ts, last_seq, last) in parts.items()]
    # in the table's key order, SQLite visits its pages in order: a 1,000-row upsert into the
    # hot table took 2.3 µs a row instead of 3.0 at 1 M events stored (micro-measured)
    rows.sort(key=_KEY_ORDER[hot])
    multirow.write(conn, _UPSERT[hot], rows)
    multirow.write(conn, _ADD_VALUE[hot], sorted(values, key=_VALUE_ORDER[hot]))


def _add(conn, where, params, hot=False):
    parts, values = _partials(conn.execute(_READ + where, params))
    if parts:
        _write(conn, parts, values, hot)


LAST_SEQ = "SELECT coalesce(max(seq), 0) AS highest FROM events"


def last_seq(conn):
    """The highest event seq stored (0 without events): call before inserting, then `add_since`."""
    (highest,) = conn.execute(LAST_SEQ).fetchone()
    return highest


def add_since(conn, seq):
    """Add the events stored after `seq` (those this transaction just inserted) to the rollups."""
    _add(conn, "e.seq > ?", (seq,), hot=True)


_SPAN = ("INSERT INTO event_spans (customer_id, meter_id, n, first_ts, last_ts) VALUES (?, ?, ?, ?, ?)"
         " ON CONFLICT (customer_id, meter_id) DO UPDATE SET n = n + excluded.n,"
         " first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)")


def _add_spans(conn, rows):
    spans = {}
    for customer_id, meter_id, ts, _value, _matched in rows:
        span = spans.get((customer_id, meter_id))
        if span is None:
            spans[(customer_id, meter_id)] = [1, ts, ts]
            continue
        span[0] += 1
        if ts < span[1]:
            span[1] = ts
        elif ts > span[2]:
            span[2] = ts
    multirow.write(conn, _SPAN, [(*key, *span) for key, span in sorted(spans.items())])  # in key order (_write)


_COUNT = ("INSERT INTO event_counts (bucket, n) VALUES (?, ?)"
          " ON CONFLICT (bucket) DO UPDATE SET n = n + excluded.n")


def _add_counts(conn, rows):
    counts = {}
    for _customer_id, _meter_id, ts, _value, _matched in rows:
        bucket = ts - ts % BUCKET_US
        counts[bucket] = counts.get(bucket, 0) + 1
    multirow.write(conn, _COUNT, list(counts.items()))


def forget_event(conn, customer_id, meter_id, ts):
    """A stored event was deleted (retracted): its bucket, its span and its count."""
    recompute_bucket(conn, customer_id, meter_id, ts)
    # never below zero: an event archived before the counts were kept may have been left out (rebuild_counts)
    conn.execute("UPDATE event_counts SET n = max(n - 1, 0) WHERE bucket = ?", (ts - ts % BUCKET_US,))
    key = (customer_id, meter_id)
    conn.execute("UPDATE event_spans SET n = n - 1 WHERE customer_id = ? AND meter_id = ?", key)
    conn.execute("DELETE FROM event_spans WHERE customer_id = ? AND meter_id = ? AND n <= 0", key)


def rebuild_spans(conn):
    """event_spans of every stored event (the migration that adds it), CHUNK
    events at a time in the order stored: no sort of all events."""
    conn.execute("DELETE FROM event_spans")
    cursor = conn.execute("SELECT customer_id, meter_id, ts, NULL, NULL FROM events")
    while rows := cursor.fetchmany(CHUNK):
        _add_spans(conn, rows)


# the meters whose events' groups SQLite builds (a JSON list of ids), read before an insert
GROUPED_METERS = "SELECT json_group_array(id) FROM meters WHERE group_by != '[]'"


def add_inserted(conn, before, rows, highest, grouped):
    """Add the events this transaction just inserted to the rollups and spans:
    `rows` are (customer_id, meter_id, ts, value, matched) in insertion
    order, stored with the seqs after `before` (the highest seq before);
    `highest` is the highest seq stored now, `grouped` the JSON of
    GROUPED_METERS (both read by the caller: billing/api/events.py)."""
    _add_spans(conn, rows)
    _add_counts(conn, rows)
    if highest != before + len(rows):  # seqs not consecutive: read them back instead
        add_since(conn, before)
        return
    grouped = set(json.loads(grouped))
    parts, values = _partials((seq, customer_id, meter_id, ts, value, "{}")
                              for seq, (customer_id, meter_id, ts, value, matched) in enumerate(rows, before + 1)
                              if matched and meter_id not in grouped)
    if grouped and any(matched and meter_id in grouped for _c, meter_id, _ts, _v, matched in rows):
        more, more_values = _partials(conn.execute(
            _READ + f"e.seq > ? AND e.meter_id IN ({','.join('?' * len(grouped))})", (before, *grouped)))
        parts.update(more)  # disjoint keys: other meters
        values |= more_values
    if parts:
        _write(conn, parts, values, hot=True)


# events archived before the counts were kept, per archived (customer, meter, bucket): those
# still remembered (all of them, unless their lateness window passed), or, if more, the matched
# ones the rollups count beyond the stored ones
_ARCHIVED_BEFORE = (
    "SELECT a.bucket, max((SELECT count(*) FROM archived_events e WHERE e.ts >= a.bucket AND e.ts < a.bucket + {b}"
    " AND e.customer_id = a.customer_id AND e.meter_id = a.meter_id),"
    " (SELECT coalesce(sum(n), 0) FROM rollups r WHERE r.customer_id = a.customer_id AND r.meter_id = a.meter_id"
    " AND r.bucket = a.bucket) + (SELECT coalesce(sum(n), 0) FROM rollups_hot h WHERE h.customer_id = a.customer_id"
    " AND h.meter_id = a.meter_id AND h.bucket = a.bucket) - (SELECT count(*) FROM events e"
    " WHERE e.ts / {b} BETWEEN a.bucket / {b} AND (a.bucket + {b} - 1) / {b} AND e.ts >= a.bucket"
    " AND e.ts < a.bucket + {b} AND e.customer_id = a.customer_id AND e.meter_id = a.meter_id AND e.matched = 1))"
    " AS k FROM archived_buckets a").format(b=BUCKET_US)


def rebuild_counts(conn):
    """event_counts of every stored event, and of the events archived before
    (the migration that adds it; bulk loads): of those, every one whose id is
    still remembered, and otherwise every one its meter's filter matched (the
    rollups count them); an unmatched one whose id was forgotten is lost."""
    conn.execute("DELETE FROM event_counts")
    stored = f"SELECT {floor_sql('ts', BUCKET_US)} AS bucket, count(*) AS k FROM events GROUP BY 1"
    conn.execute(f"INSERT INTO event_counts (bucket, n) SELECT bucket, sum(k) FROM ({stored} UNION ALL"
                 f" {_ARCHIVED_BEFORE}) GROUP BY bucket HAVING sum(k) > 0")


def recompute_bucket(conn, customer_id, meter_id, ts):
    """Rebuild the bucket holding `ts` from the stored events (after a retraction)."""
    bucket = ts - ts % BUCKET_US
    key = (customer_id, meter_id, bucket)
    for table in TABLES + VALUE_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE customer_id = ? AND meter_id = ? AND bucket = ?", key)
    _add(conn, "e.customer_id = ? AND e.meter_id = ? AND " + event_time.key_range("e.ts"),
         (*key[:2], *event_time.range_params(bucket, bucket + BUCKET_US)))
    day = bucket - bucket % DAY_US
    _recompute_days(conn, "customer_id = ? AND meter_id = ?", key[:2], day, day + DAY_US)


def _recompute_days(conn, whose, params, low, high):
    """Rebuild the day rows of the days [low, high) from the settled buckets."""
    conn.execute(f"DELETE FROM rollup_days WHERE {whose} AND day >= ? AND day < ?", (*params, low, high))
    conn.execute(_DAYS_FROM_BUCKETS.format(where=f"{whose} AND bucket >= ? AND bucket < ?"), (*params, low, high))


def rebuild_days(conn):
    """The day rows of every settled bucket (the migration that adds them)."""
    conn.execute("DELETE FROM rollup_days")
    conn.execute(_DAYS_FROM_BUCKETS.format(where="1"))


def _rebuild(conn, where, params):
    """Aggregate the events matching `where` in passes of CHUNK seqs (bounded memory)."""
    low = 0
    high = last_seq(conn)
    while low < high:
        _add(conn, f"e.seq > ? AND e.seq <= ? AND {where}", (low, low + CHUNK, *params))
        low += CHUNK


def regroup_range(conn, meter_id, low, high):
    """Rebuild the meter's rollups of the buckets [low, high) from the raw
    events, grouped by the meter's group_by as it is now (a regroup's chunk)."""
    whose = "customer_id IN (SELECT customer_id FROM event_spans WHERE meter_id = ?) AND meter_id = ?"
    for table in TABLES + VALUE_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE {whose} AND bucket >= ? AND bucket < ?", (meter_id, meter_id, low, high))
    _add(conn, "e.meter_id = ? AND " + event_time.key_range("e.ts"), (meter_id, *event_time.range_params(low, high)))
    _recompute_days(conn, whose, (meter_id, meter_id), low - low % DAY_US, (high - 1) - (high - 1) % DAY_US + DAY_US)


def rebuild_all(conn):
    """Rollups of every stored event (the migration that adds them)."""
    for table in TABLES + VALUE_TABLES:
        if table_exists(conn, table):  # the hot tables came after the migration that calls this
            conn.execute(f"DELETE FROM {table}")
    _rebuild(conn, "1", ())
    if table_exists(conn, "rollup_days"):
        rebuild_days(conn)


def rebuild_derived(conn):
    """Every table derived from the stored events, for events loaded in bulk
    (the benches): the rollups, the spans, the counts and the dedup index."""
    rebuild_all(conn)
    rebuild_spans(conn)
    rebuild_counts(conn)
    event_ids.rebuild(conn)


def table_exists(conn, name):
    return conn.execute("SELECT 1 AS found FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def settle_before(now_us):
    """Buckets before this one may leave the hot tables."""
    cutoff = now_us - SETTLE_AFTER_US
    return cutoff - cutoff % BUCKET_US


_TAKE = (f"SELECT {_COLUMNS} FROM rollups_hot WHERE bucket < ? ORDER BY bucket, customer_id, meter_id, grp LIMIT ?")
_TAKE_VALUES = ("SELECT customer_id, meter_id, bucket, grp, value FROM rollup_values_hot WHERE bucket < ?"
                " ORDER BY bucket, customer_id, meter_id, grp, value LIMIT ?")


def has_settling(conn, before):
    """Whether a hot row or counted value of a bucket before `before` waits."""
    return any(conn.execute(f"SELECT 1 AS due FROM {table} WHERE bucket < ? LIMIT 1", (before,)).fetchone()
               for table in ("rollups_hot", "rollup_values_hot"))


def settle(conn, before, limit=SETTLE_CHUNK):
    """Move at most `limit` hot rows (and as many counted values) of buckets
    before `before` into the settled tables; returns how many rows moved.
    Call in one transaction, again until it returns less than `limit`."""
    rows = conn.execute(_TAKE, (before, limit)).fetchall()
    if rows:
        conn.executemany(_UPSERT[False], rows)
        conn.executemany(_DAY_UPSERT, [(c, m, b - b % DAY_US, *rest) for c, m, b, *rest in rows])
        customer_id, meter_id, bucket, grp, *_ = rows[-1]
        conn.execute("DELETE FROM rollups_hot WHERE bucket < ? AND (bucket, customer_id, meter_id, grp) <= (?, ?, ?, ?)",
                     (before, bucket, customer_id, meter_id, grp))
    values = conn.execute(_TAKE_VALUES, (before, limit)).fetchall()
    if values:
        conn.executemany(_ADD_VALUE[False], values)
        customer_id, meter_id, bucket, grp, value = values[-1]
        conn.execute("DELETE FROM rollup_values_hot WHERE bucket < ?"
                     " AND (bucket, customer_id, meter_id, grp, value) <= (?, ?, ?, ?, ?)",
                     (before, bucket, customer_id, meter_id, grp, value))
    return max(len(rows), len(values))
