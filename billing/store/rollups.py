"""Rollups (§13): matched events pre-aggregated per (customer, meter, group,
15-minute bucket), written in the transaction that writes the events.

A bucket is the event's UTC instant floored to 15 minutes (µs); every local
day and hour boundary of every timezone in use today (DST and +05:45
included) falls on one. The group `grp` is a JSON object of the meter's
declared group_by keys and each event's values for them, built by SQLite the
way usage reads a group (`json_extract` of the properties); `{}` for a meter
without group_by. Adding a group_by key regroups the meter (`rebuild_meter`).

Per bucket: the count, the sum of integer micros in two integer columns
(sum = total_hi · 10¹² + total_lo, 0 ≤ total_lo < 10¹², so no addition ever
leaves SQLite's 64-bit range), min, max and the latest (ts, seq, value). For
`unique_count` meters (whose values are JSON text) the distinct values of each
bucket are kept in `rollup_values`.

A batch is aggregated in Python first (one partial per touched bucket), then
written with one UPSERT per bucket. A retraction recomputes its bucket from
the raw events still stored.
"""

BUCKET_US = 15 * 60 * 1_000_000
SPLIT = 10 ** 12
CHUNK = 50_000  # events aggregated per pass when rebuilding

# the group of an event: its values of the meter's group_by keys, as SQLite reads them
_GROUP = ("CASE WHEN m.group_by = '[]' THEN '{}' ELSE (SELECT json_group_object(g.value,"
          " json_quote(json_extract(e.properties, '$.\"' || g.value || '\"'))) FROM json_each(m.group_by) g) END")
_READ = (f"SELECT e.seq, e.customer_id, e.meter_id, e.ts, e.value, {_GROUP}"
         " FROM events e CROSS JOIN meters m ON m.id = e.meter_id WHERE e.matched = 1 AND ")

_UPSERT = (
    "INSERT INTO rollups (customer_id, meter_id, bucket, grp, n, total_hi, total_lo, low, high,"
    " last_ts, last_seq, last_value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (customer_id, meter_id, bucket, grp) DO UPDATE SET n = n + excluded.n,"
    f" total_hi = total_hi + excluded.total_hi + (total_lo + excluded.total_lo) / {SPLIT},"
    f" total_lo = (total_lo + excluded.total_lo) % {SPLIT},"
    " low = min(low, excluded.low), high = max(high, excluded.high),"
    " last_value = CASE WHEN (excluded.last_ts, excluded.last_seq) > (last_ts, last_seq)"
    " THEN excluded.last_value ELSE last_value END,"
    " last_seq = CASE WHEN (excluded.last_ts, excluded.last_seq) > (last_ts, last_seq)"
    " THEN excluded.last_seq ELSE last_seq END,"
    " last_ts = max(last_ts, excluded.last_ts)")
_ADD_VALUE = "INSERT OR IGNORE INTO rollup_values (customer_id, meter_id, bucket, grp, value) VALUES (?, ?, ?, ?, ?)"


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


def _write(conn, parts, values):
    conn.executemany(_UPSERT, [(*key, n, total // SPLIT, total % SPLIT, low, high, last_ts, last_seq, last)
                               for key, (n, total, low, high, last_ts, last_seq, last) in parts.items()])
    if values:
        conn.executemany(_ADD_VALUE, values)


def _add(conn, where, params):
    parts, values = _partials(conn.execute(_READ + where, params))
    if parts:
        _write(conn, parts, values)


def last_seq(conn):
    """The highest event seq stored (0 without events): call before inserting, then `add_since`."""
    (highest,) = conn.execute("SELECT coalesce(max(seq), 0) AS highest FROM events").fetchone()
    return highest


def add_since(conn, seq):
    """Add the events stored after `seq` (those this transaction just inserted) to the rollups."""
    _add(conn, "e.seq > ?", (seq,))


def recompute_bucket(conn, customer_id, meter_id, ts):
    """Rebuild the bucket holding `ts` from the stored events (after a retraction)."""
    bucket = ts - ts % BUCKET_US
    key = (customer_id, meter_id, bucket)
    for table in ("rollups", "rollup_values"):
        conn.execute(f"DELETE FROM {table} WHERE customer_id = ? AND meter_id = ? AND bucket = ?", key)
    _add(conn, "e.customer_id = ? AND e.meter_id = ? AND e.ts >= ? AND e.ts < ?", (*key[:2], bucket, bucket + BUCKET_US))


def _rebuild(conn, where, params):
    """Aggregate the events matching `where` in passes of CHUNK seqs (bounded memory)."""
    low = 0
    high = last_seq(conn)
    while low < high:
        _add(conn, f"e.seq > ? AND e.seq <= ? AND {where}", (low, low + CHUNK, *params))
        low += CHUNK


def rebuild_meter(conn, meter_id):
    """Regroup a meter's rollups (its group_by keys changed)."""
    for table in ("rollups", "rollup_values"):
        conn.execute(f"DELETE FROM {table} WHERE meter_id = ?", (meter_id,))
    _rebuild(conn, "e.meter_id = ?", (meter_id,))


def rebuild_all(conn):
    """Rollups of every stored event (the migration that adds them)."""
    conn.execute("DELETE FROM rollups")
    conn.execute("DELETE FROM rollup_values")
    _rebuild(conn, "1", ())
