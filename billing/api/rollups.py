"""Reading usage from the rollups (§13): whole 15-minute buckets come from
the rollup tables, and only a bucket that a range edge or a window boundary
cuts is read from the raw events, so a figure costs buckets, not events.

`pieces` returns (ts, group, Partial) triples: one per rollup row (ts = its
bucket) and one per raw event of a cut bucket. Every piece lies wholly inside
one window, so callers place it by its ts.
"""

from ..domain.rollup import Partial
from ..store.db import named
from ..store.rollups import BUCKET_US, SPLIT

_BUCKETS = (" FROM rollups WHERE customer_id = ? AND meter_id = ? AND bucket >= ? AND bucket < ?")
_VALUES = (" FROM rollup_values WHERE customer_id = ? AND meter_id = ? AND bucket >= ? AND bucket < ?")
_RAW = " FROM events WHERE customer_id = ? AND meter_id = ? AND ts >= ? AND ts < ? AND matched = 1"


def cut_buckets(start_us, end_us, cuts=()):
    """The buckets a boundary falls inside (not on their start): read from raw events."""
    return {c - c % BUCKET_US for c in (start_us, end_us, *cuts) if c % BUCKET_US and start_us <= c <= end_us}


def _group_select(group_by, column):
    if group_by:
        return f", json_quote(json_extract({column}, ?)) AS g", (f'$."{group_by}"',)
    return ", NULL AS g", ()


def _bucket_pieces(conn, meter, customer_id, low, high, cut, group_by):
    select, params = _group_select(group_by, "grp")
    params = (*params, customer_id, meter.id, low, high)
    if meter.aggregation == "unique_count":
        merged = {}
        for row in named(conn, "SELECT bucket, value" + select + _VALUES, params):
            if row["bucket"] not in cut:
                part = merged.setdefault((row["bucket"], row["g"]), Partial())
                part.n += 1
                part.values.add(row["value"])
        return [(bucket, group, part) for (bucket, group), part in merged.items()]
    pieces = []
    for row in named(conn, "SELECT bucket, n, total_hi, total_lo, low, high, last_ts, last_seq, last_value"
                           + select + _BUCKETS, params):
        if row["bucket"] not in cut:
            pieces.append((row["bucket"], row["g"], Partial(
                row["n"], row["total_hi"] * SPLIT + row["total_lo"], row["low"], row["high"],
                (row["last_ts"], row["last_seq"], row["last_value"]))))
    return pieces


def pieces(conn, meter, customer_id, start_us, end_us, cuts=(), group_by=None):
    """(ts, group JSON text or None, Partial) of the matched events of
    [start_us, end_us), whole where no boundary of `cuts` falls inside a bucket."""
    cut = cut_buckets(start_us, end_us, cuts)
    found = _bucket_pieces(conn, meter, customer_id, start_us - start_us % BUCKET_US, end_us, cut, group_by)
    select, group_params = _group_select(group_by, "properties")
    for bucket in sorted(cut):
        low, high = max(start_us, bucket), min(end_us, bucket + BUCKET_US)
        if low >= high:
            continue
        for row in named(conn, "SELECT ts, seq, value" + select + _RAW,
                         (*group_params, customer_id, meter.id, low, high)):
            found.append((row["ts"], row["g"], Partial.of_event(row["ts"], row["seq"], row["value"])))
    return found


def live_pieces(rows, group_by):
    """Pieces of rows `(ts, seq, value[, group])` computed live (storage days not closed yet)."""
    return [(ts, rest[0] if group_by else None, Partial.of_event(ts, seq, value)) for ts, seq, value, *rest in rows]
