"""Reading usage from the rollups (§13): whole 15-minute buckets come from
the rollup tables, added up per window by SQLite (or, where one customer's
rows are few, in Python: `_row_by_row`), and only a bucket that a range edge
or a window boundary cuts is read from the raw events, so a figure costs
windows × groups (and the buckets added up), not events.

`pieces` returns (ts, group, Partial) triples: one per (window, group) of the
rollups (ts = the window's start) and one per raw event of a cut bucket.
Every piece lies wholly inside one window, so callers place it by its ts.

A cut bucket whose raw events were archived (billing/store/archive.py) cannot
be read that way: such a range is refused (400, naming the bucket), since a
figure over archived time is exact only on 15-minute boundaries.

While a meter's rollups are regrouped for a group_by key it gained
(`store.regroup`), figures grouped by that key come from the raw
events alone (`_raw_pieces`); every other figure reads the rollups as ever.

The events chart and the overview's events today (`count_events`) read the
per-bucket counts of every event received the same way: whole buckets from
`event_counts`, a cut one from the raw events, refused when archived.
"""

import bisect
import functools
import json
from typing import NamedTuple

from ..domain import times
from ..domain.rollup import Partial
from ..errors import ValidationError
from ..jsonutil import encode
from ..store import archive, event_time
from ..store.regroup import holds_key
from ..store.rollups import BUCKET_US, DAY_US, SPLIT

# the spans to read as rows (lo: their window's start; [a, b): the span), the rollups of each
# without the buckets a boundary cuts; `{column}` is the table's time column (bucket or day)
_WINDOWS = ("WITH w(lo, a, b) AS MATERIALIZED (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
            " json_extract(value, '$[2]') FROM json_each(?))")
_JOIN = (" FROM w CROSS JOIN {table} r ON r.customer_id = ? AND r.meter_id = ? AND r.{column} >= w.a"
         " AND r.{column} < w.b WHERE r.{column} NOT IN (SELECT value FROM json_each(?))")
# every customer (analytics): one index range per (span, customer)
_JOIN_ALL = (" FROM w CROSS JOIN customers c CROSS JOIN {table} r ON r.customer_id = c.id AND r.meter_id = ?"
             " AND r.{column} >= w.a AND r.{column} < w.b WHERE r.{column} NOT IN (SELECT value FROM json_each(?))")
# sums of total_lo in two parts, so no sum leaves 64 bits whatever the number of buckets
_SUMS = (_WINDOWS + " SELECT w.lo, {group} AS g, sum(r.n), sum(r.total_hi), sum(r.total_lo / 1000000),"
         " sum(r.total_lo % 1000000), min(r.low), max(r.high){join} GROUP BY w.lo, g")
# the latest (ts, seq, value) of each window and group
_LATEST = (_WINDOWS + " SELECT lo, g, last_ts, last_seq, last_value FROM (SELECT w.lo AS lo, {group} AS g,"
           " r.last_ts, r.last_seq, r.last_value, row_number() OVER (PARTITION BY w.lo, {group}"
           " ORDER BY r.last_ts DESC, r.last_seq DESC) AS k{join}) WHERE k = 1")
_VALUES = _WINDOWS + " SELECT DISTINCT w.lo, {group} AS g, r.value{join}"
# a range's raw events, through the time index (billing/store/event_time.py)
_RAW = f" FROM events WHERE customer_id = ? AND meter_id = ? AND {event_time.RANGE} AND matched = 1"
_RAW_ALL = f" FROM events WHERE meter_id = ? AND {event_time.RANGE} AND matched = 1"
_COUNT_RAW = f"SELECT count(*) AS n FROM events WHERE {event_time.RANGE}"  # every event, matched or not
BY_CUSTOMER = object()  # group_by: the customer (analytics), not a property


def cut_buckets(start_us, end_us, cuts=()):
    """The buckets a boundary falls inside (not on their start): read from raw events."""
    return {c - c % BUCKET_US for c in (start_us, end_us, *cuts) if c % BUCKET_US and start_us <= c <= end_us}


def _group(group_by, rollup):
    """The SQL of a piece's group (the customer id, or the JSON text of a
    property's value, as usage groups events) and its parameters."""
    prefix = "r." if rollup else ""
    if group_by is BY_CUSTOMER:
        return prefix + "customer_id", ()
    if group_by:
        return f"json_quote(json_extract({'r.grp' if rollup else 'properties'}, ?))", (f'$."{group_by}"',)
    return "NULL", ()


def _sql(template, group, table, column, customer_id):
    join = (_JOIN if customer_id is not None else _JOIN_ALL).format(table=table, column=column)
    return template.replace("{join}", join).format(group=group)


def _window_spans(windows, days):
    """What to read for the windows [lo, hi): (table, time column, [[lo, a, b], …])
    by the layout of SPANS (without `days`: no day rows, counted values'
    tables), non-empty spans only."""
    found = {}
    for lo, hi in windows:
        bounds = span_bounds(*whole_buckets(lo, hi), days)
        for table, column, low, high in SPANS:
            if days or table != "rollup_days":
                if bounds[low] < bounds[high]:
                    found.setdefault((table, column), []).append([lo, bounds[low], bounds[high]])
    rename = {} if days else {"rollups": "rollup_values", "rollups_hot": "rollup_values_hot"}
    return [(rename.get(table, table), column, spans) for (table, column), spans in found.items()]


class _Read(NamedTuple):
    """How to read one table's whole buckets of a set of windows."""
    table: str
    column: str
    spans: list       # [[lo, a, b], …]
    spans_json: str   # the same as JSON text, for the summing statements
    by_rows: bool     # few enough rows to add up in Python (_row_by_row)


_REMEMBERED_WINDOWS = 400  # longer window lists (up to 10,000) are planned afresh, not kept in memory


@functools.lru_cache(maxsize=32)
def _reads(windows, days):
    """The _Reads of the windows (a tuple of (lo, hi)); the same for every
    meter and customer a request reads over the same windows."""
    found = []
    for table, column, spans in _window_spans(windows, days):
        spans.sort(key=lambda span: span[1])
        found.append(_Read(table, column, spans, encode(spans), _row_by_row(table, column, spans)))
    return tuple(found)


def _bucket_pieces(conn, meter, customer_id, windows, cut, group_by):
    """The pieces of the settled buckets, the whole days and the hot buckets
    of the windows; unique_count meters' distinct values by bucket only."""
    found = []
    days = meter.aggregation != "unique_count"
    windows = tuple(windows)
    reads = _reads(windows, days) if len(windows) <= _REMEMBERED_WINDOWS else _reads.__wrapped__(windows, days)
    for read in reads:
        table_cut = cut if read.column == "bucket" else ()
        if customer_id is not None and days and read.by_rows:
            found += _row_pieces(conn, meter, customer_id, read.spans, table_cut, group_by, read.table, read.column)
        else:
            found += _table_pieces(conn, meter, customer_id, read.spans_json, table_cut, group_by, read.table,
                                   read.column)
    return found


def _row_by_row(table, column, spans):
    """Whether a customer's rows of `table` over the spans (in order) are few
    enough to add up in Python (`_row_pieces`): the hot buckets (the last
    hour's, and old ones a late event re-opened, until settled), or spans of
    at most one row per group each (a day window's whole day) with no long
    gaps between them. Then one plain index range beats SQLite adding them up
    per span, which costs a join and a sort per statement."""
    if table == "rollups_hot":
        return True
    unit = DAY_US if column == "day" else BUCKET_US
    # the range read holds at most twice the spans' rows: no long gaps between them
    return all(b - a <= unit for _, a, b in spans) and spans[-1][2] - spans[0][1] <= 2 * unit * len(spans)


# one customer's rows of one table in [low, high) of its time column: one index range
_RANGE = " FROM {table} r WHERE r.customer_id = ? AND r.meter_id = ? AND r.{column} >= ? AND r.{column} < ?"
_ROWS = "SELECT r.{column}, {group} AS g, r.n, r.total_hi, r.total_lo, r.low, r.high{last}" + _RANGE


def _row_pieces(conn, meter, customer_id, spans, cut, group_by, table, column):
    """What `_table_pieces` gives for one customer, from the table's rows of
    the spans' whole range, each added to the (window, group) of the span
    holding it; rows between the spans or in a cut bucket are left out. The
    spans are in order and do not overlap."""
    starts = [a for _, a, _ in spans]
    group, group_params = _group(group_by, True)
    found = {}
    last = ", r.last_ts, r.last_seq, r.last_value" if meter.aggregation == "latest" else ""
    for at, grp, n, hi, lo_part, low, high, *latest in conn.execute(
            _ROWS.format(table=table, column=column, group=group, last=last),
            (*group_params, customer_id, meter.id, starts[0], spans[-1][2])):
        index = bisect.bisect_right(starts, at) - 1
        if at >= spans[index][2] or at in cut:  # between two spans, or cut
            continue
        part = Partial(n, hi * SPLIT + lo_part, low, high, tuple(latest) if latest else None)
        key = (spans[index][0], grp)
        held = found.get(key)
        found[key] = part if held is None else held.merge(part)
    return [(lo, grp, part) for (lo, grp), part in found.items()]


def _table_pieces(conn, meter, customer_id, spans, cut, group_by, table, column):
    group, group_params = _group(group_by, True)
    where = (*(() if customer_id is None else (customer_id,)), meter.id, encode(sorted(cut)))
    if meter.aggregation == "unique_count":
        sql = _sql(_VALUES, group, table, column, customer_id)
        found = {}
        for lo, grp, value in conn.execute(sql, (spans, *group_params, *where)):
            found.setdefault((lo, grp), Partial()).values.add(value)
        for part in found.values():
            part.n = len(part.values)
        return [(lo, grp, part) for (lo, grp), part in found.items()]
    sql = _sql(_SUMS, group, table, column, customer_id)
    found = {(lo, grp): Partial(n, hi * SPLIT + (mid * 1_000_000 + lo_part), low, high)
             for lo, grp, n, hi, mid, lo_part, low, high in conn.execute(sql, (spans, *group_params, *where))}
    if meter.aggregation == "latest":
        sql = _sql(_LATEST, group, table, column, customer_id)
        for lo, grp, ts, seq, value in conn.execute(sql, (spans, *group_params, *group_params, *where)):
            found[(lo, grp)].last = (ts, seq, value)
    return [(lo, grp, part) for (lo, grp), part in found.items()]


# one customer's whole buckets of one range, no windows and no groups (the invoice run's case):
# [first whole bucket, first bucket past the last whole one), an index range with nothing to exclude
_RANGE_SUMS = ("SELECT sum(n), sum(total_hi), sum(total_lo / 1000000), sum(total_lo % 1000000), min(low), max(high)"
               + _RANGE)
_RANGE_LATEST = "SELECT last_ts, last_seq, last_value" + _RANGE + " ORDER BY last_ts DESC, last_seq DESC LIMIT 1"


def whole_buckets(start_us, end_us):
    """[first, past) of the buckets lying wholly inside [start_us, end_us)."""
    return -(-start_us // BUCKET_US) * BUCKET_US, end_us - end_us % BUCKET_US


def whole_days(first, past):
    """[day_first, day_past) of the UTC days lying wholly inside the buckets
    [first, past); both `past` when none does."""
    day_first, day_past = -(-first // DAY_US) * DAY_US, past - past % DAY_US
    return (day_first, day_past) if day_first < day_past else (past, past)


# where the whole buckets [first, past) of a range are, as indexes into its span_bounds
# (first, first whole UTC day, first bucket past the whole days, past): the settled
# buckets of its partial days, its whole days' rows, and all its hot buckets
SPANS = (("rollups", "bucket", 0, 1), ("rollup_days", "day", 1, 2), ("rollups", "bucket", 2, 3),
         ("rollups_hot", "bucket", 0, 3))


def span_bounds(first, past, days=True):
    """(first, day_first, day_past, past) of the buckets [first, past); without
    `days` (or without a whole day) the settled span is the whole range."""
    day_first, day_past = whole_days(first, past) if days and first < past else (past, past)
    return first, day_first, day_past, past


def _range_spans(first, past):
    """Where the whole buckets [first, past) are: (table, its time column, low, high)."""
    bounds = span_bounds(first, past)
    return [(table, column, bounds[low], bounds[high]) for table, column, low, high in SPANS]


def _range_pieces(conn, meter, customer_id, start_us, end_us):
    """The whole buckets of one customer's range: a piece per table and span
    (the settled buckets of partial days, whole days, the hot buckets)."""
    first, past = whole_buckets(start_us, end_us)
    found = []
    for table, column, low, high in _range_spans(first, past):
        if low >= high:
            continue
        where = (customer_id, meter.id, low, high)
        n, hi, mid, lo_part, least, most = conn.execute(_RANGE_SUMS.format(table=table, column=column),
                                                         where).fetchone()
        if not n:
            continue
        part = Partial(n, hi * SPLIT + (mid * 1_000_000 + lo_part), least, most)
        if meter.aggregation == "latest":
            part.last = tuple(conn.execute(_RANGE_LATEST.format(table=table, column=column), where).fetchone())
        found.append((start_us, None, part))
    return found


def pieces(conn, meter, customer_id, start_us, end_us, cuts=(), group_by=None):
    """(ts, group or None, Partial) of the matched events of [start_us, end_us)
    of one customer (of all with `customer_id` None), whole where no boundary
    of `cuts` falls inside a bucket. The group is the JSON text of the
    `group_by` property's value, or with BY_CUSTOMER the customer id."""
    if isinstance(group_by, str) and not holds_key(conn, meter.id, group_by):
        return _raw_pieces(conn, meter, customer_id, start_us, end_us, cuts, group_by)
    if customer_id is not None and not _has_events(conn, meter, customer_id, start_us, end_us):
        return []
    cut = cut_buckets(start_us, end_us, cuts)
    if not cuts and group_by is None and customer_id is not None and meter.aggregation != "unique_count":
        found = _range_pieces(conn, meter, customer_id, start_us, end_us)
    else:
        bounds = [start_us, *cuts, end_us]
        found = _bucket_pieces(conn, meter, customer_id, list(zip(bounds, bounds[1:])), cut, group_by)
    select, group_params = _group(group_by, False)
    raw, whose = (_RAW, (customer_id,)) if customer_id is not None else (_RAW_ALL, ())
    check_stored(conn, meter, customer_id, start_us, end_us, cut)
    for bucket in sorted(cut):
        low, high = max(start_us, bucket), min(end_us, bucket + BUCKET_US)
        if low >= high:
            continue
        for ts, seq, value, grp in conn.execute(f"SELECT ts, seq, value, {select}" + raw,
                                                (*group_params, *whose, meter.id, *event_time.range_params(low, high))):
            found.append((ts, grp, Partial.of_event(ts, seq, value)))
    return found


def check_stored(conn, meter, customer_id, start_us, end_us, cut):
    """The raw events of the cut buckets are all stored: a ValidationError
    naming the first bucket whose events are archived, and the bound in it."""
    for bucket in sorted(cut):
        if archive.archived_bucket(conn, customer_id, meter.id, bucket):
            raise _archived_cut(bucket, start_us, end_us, f"raw events of meter {meter.key!r}",
                                "a range is exact only on 15-minute boundaries: start or end it on one")


def _archived_cut(bucket, start_us, end_us, whose, rule):
    """The 400 for a range edge inside a bucket whose raw events (`whose`) are
    archived, naming the bucket and the bound in it (`from`, `to`, or none
    for a window boundary)."""
    field = "from" if bucket <= start_us < bucket + BUCKET_US else "to" if bucket < end_us < bucket + BUCKET_US else None
    return ValidationError([{"field": field, "message": (
        f"falls inside the 15-minute bucket {times.format_micros(bucket)} – "
        f"{times.format_micros(bucket + BUCKET_US)}, whose {whose} are archived; over archived time {rule}")}])


def _has_events(conn, meter, customer_id, start_us, end_us):
    """Whether the customer's span of the meter's events meets [start_us, end_us)."""
    (found,) = conn.execute("SELECT count(*) AS found FROM event_spans WHERE customer_id = ? AND meter_id = ?"
                            " AND first_ts < ? AND last_ts >= ?", (customer_id, meter.id, end_us, start_us)).fetchone()
    return found > 0


def _raw_pieces(conn, meter, customer_id, start_us, end_us, cuts, group_by):
    """The pieces of `pieces` from the raw events alone, one per (window, group)."""
    starts = [start_us, *cuts]
    select, group_params = _group(group_by, False)
    raw, whose = (_RAW, (customer_id,)) if customer_id is not None else (_RAW_ALL, ())
    found = {}
    for ts, seq, value, grp in conn.execute(f"SELECT ts, seq, value, {select}" + raw, (
            *group_params, *whose, meter.id, *event_time.range_params(start_us, end_us))):
        key = (starts[bisect.bisect_right(starts, ts) - 1], grp)
        part = found.get(key)
        found[key] = Partial.of_event(ts, seq, value) if part is None else part.merge(Partial.of_event(ts, seq, value))
    return [(start, grp, part) for (start, grp), part in found.items()]


def live_pieces(rows, group_by):
    """Pieces of rows `(ts, seq, value[, group])` computed live (storage days not closed yet)."""
    return [(ts, rest[0] if group_by else None, Partial.of_event(ts, seq, value)) for ts, seq, value, *rest in rows]


# many customers' whole buckets at once (the invoice run's chunks): for each (customer, meter,
# range) the spans of SPANS (partial days' settled buckets, whole days, hot buckets),
# each an index range, all in one statement; each span's sums come back as a JSON array from
# a subquery (a GROUP BY over the ranges would sort every row read), and the whole answer as
# one JSON text of [c, m, lo, hi, span, span, …] rows, so Python decodes once per statement
# (statements per range and span over IN lists, a row back per sum, read faster alone but
# made the invoice run slower beside requests). A span is read only where it can hold rows:
# not when empty (a range of whole UTC days has no partial days), and its hot buckets not
# when the range ends before the oldest hot bucket (a past period, once its buckets settled);
# it is then null.
_SPAN = ("CASE WHEN {low} < {high}{guard} THEN json((SELECT json_array({{sums}}) FROM {table}"
         " WHERE customer_id = c AND meter_id = m AND {column} >= {low} AND {column} < {high})) END")
_HOT_GUARD = {"rollups_hot": " AND hi > (SELECT min(bucket) FROM rollups_hot)"}
_MANY = ("WITH q(c, m, lo, hi, d0, d1) AS MATERIALIZED (SELECT json_extract(value, '$[0]'),"
         " json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]'),"
         " json_extract(value, '$[4]'), json_extract(value, '$[5]') FROM json_each(?))"
         " SELECT json_group_array(json_array(c, m, lo, hi, "
         + ", ".join(_SPAN.format(table=table, column=column, low=("lo", "d0", "d1", "hi")[low],
                                  high=("lo", "d0", "d1", "hi")[high], guard=_HOT_GUARD.get(table, ""))
                     for table, column, low, high in SPANS)
         + ")) AS answer FROM q")
_MANY_SUMS = _MANY.format(sums="sum(n), sum(total_hi), sum(total_lo / 1000000), sum(total_lo % 1000000),"
                               " min(low), max(high)")
# sum and count need only the count and the sum: total_lo (< 10¹² a bucket) summed whole, where the
# range holds too few buckets for that sum to leave 64 bits
_MANY_TOTALS = _MANY.format(sums="sum(n), sum(total_hi), 0, sum(total_lo), NULL, NULL")
_WHOLE_LO_BUCKETS = (2 ** 63 - 1) // SPLIT


def many_pieces(conn, asks):
    """For each (customer id, meter, start_us, end_us) of `asks`: what
    `pieces(conn, meter, customer_id, start_us, end_us)` gives, keyed by
    (customer id, meter id, start_us, end_us), with no min or max where the
    meter's aggregation (sum, count) needs none. The whole buckets of ranges
    no bucket boundary cuts, of meters other than latest and unique_count,
    come from one statement per kind of sums; the others are read one by one."""
    found, batched = {}, ({}, {})
    for customer_id, meter, start_us, end_us in asks:
        key = (customer_id, meter.id, start_us, end_us)
        if cut_buckets(start_us, end_us) or meter.aggregation in ("latest", "unique_count"):
            found[key] = pieces(conn, meter, customer_id, start_us, end_us)
            continue
        found[key] = []
        first, past = whole_buckets(start_us, end_us)
        if first < past:
            light = meter.aggregation in ("sum", "count") and (past - first) // BUCKET_US <= _WHOLE_LO_BUCKETS
            batched[light].setdefault((customer_id, meter.id, first, past), []).append(key)
    for sql, ranges in ((_MANY_SUMS, batched[False]), (_MANY_TOTALS, batched[True])):
        if not ranges:
            continue
        asked = [(*key, *span_bounds(key[2], key[3])[1:3]) for key in ranges]
        (answer,) = conn.execute(sql, (encode(asked),)).fetchone()
        for c, m, lo, hi, *spans in json.loads(answer):
            for span in spans:
                if span is None:
                    continue  # not read: it cannot hold a row
                n, total_hi, mid, lo_part, low, high = span
                if n:
                    for key in ranges[(c, m, lo, hi)]:
                        found[key].append((key[2], None, Partial(n, total_hi * SPLIT + (mid * 1_000_000 + lo_part),
                                                                 low, high)))
    return found


# -- the events chart: events received per window ---------------------------------

# the sum of each window's whole buckets: one rowid range each, added up by SQLite
_COUNTS = ("SELECT (SELECT coalesce(sum(n), 0) FROM event_counts WHERE bucket >= json_extract(value, '$[0]')"
           " AND bucket < json_extract(value, '$[1]')) AS n FROM json_each(?) ORDER BY key")


def count_events(conn, bounds):
    """The events received in each window [a, b) of `bounds` (in time order):
    its whole 15-minute buckets from `event_counts` (a few rows a day, however
    many events, archived ones included), and a bucket a window's edge cuts
    from the raw events, refused (400) when some of them are archived."""
    wholes = [whole_buckets(a, b) for a, b in bounds]
    sums = [n for (n,) in conn.execute(_COUNTS, (encode(wholes),))]
    counts = []
    for (a, b), (whole_a, whole_b), whole in zip(bounds, wholes, sums):
        if whole_a >= whole_b:  # inside one bucket, or across one edge of two
            counts.append(_raw_count(conn, a, b, bounds))
        else:
            counts.append(whole + _raw_count(conn, a, whole_a, bounds) + _raw_count(conn, whole_b, b, bounds))
    return counts


def _raw_count(conn, a, b, bounds):
    """The stored events of [a, b), at most two buckets' parts, read from the raw events."""
    if a >= b:
        return 0
    for bucket in {a - a % BUCKET_US, (b - 1) - (b - 1) % BUCKET_US}:
        if archive.archived_bucket(conn, None, None, bucket):
            raise _archived_cut(bucket, bounds[0][0], bounds[-1][1], "raw events",
                                "events are counted only on 15-minute boundaries: start or end the range on one")
    (count,) = conn.execute(_COUNT_RAW, event_time.range_params(a, b)).fetchone()
    return count
