"""Usage over all customers and the event list, read from ClickHouse (§13)
when that gives what the node would: ClickHouse is configured and answered
lately, and the outbox holds nothing unshipped (so it has every stored event
and every retraction). Otherwise — or when the query fails or takes longer
than clickhouse.READ_TIMEOUT — these return None and the caller reads the
node, so an answer never lags and never fails for ClickHouse's sake.

The answers are built from integers exactly as the node's: usage as the
(ts, group, Partial) pieces of `rollups.pieces` (one per 15-minute bucket and
group, per timestamp in a bucket a boundary cuts), events as rows under the
names of `events.EVENT_COLUMNS`.
"""

from ..domain.rollup import Partial
from ..store import outbox
from .clickhouse import ClickHouseError, events_sql, usage_sql
from .common import now_micros
from .responses import Response
from .rollups import BY_CUSTOMER, check_stored, cut_buckets

SPLIT = 10 ** 12
HEADER = "X-Served-By"
EVENT_NAMES = ("seq", "customer_id", "event_id", "meter_id", "ts", "quantity", "properties", "late", "received_at")


def _ready(app, start_us=None):
    """The ClickHouse to read, or None (the node answers): also when the
    range starts (`start_us`) before ClickHouse has every event (events
    archived before its table was made never reached it)."""
    clickhouse = app.clickhouse
    if clickhouse is None or not clickhouse.usable():
        return None
    with app.db.reader() as conn:
        if outbox.has_backlog(conn) or (start_us is not None and start_us < outbox.complete_from(conn)):
            return None
    return clickhouse


def _rows(clickhouse, sql):
    try:
        rows = clickhouse.client.rows(sql)
    except ClickHouseError as exc:
        clickhouse.failed(exc, now_micros())
        return None
    clickhouse.answered()
    return rows


def served(app, body, by):
    """The answer, marked with who computed it once ClickHouse is configured."""
    if app.clickhouse is None:
        return body
    app.metrics.clickhouse_reads.inc(by)
    return Response(200, body, headers={HEADER: by})


def _partial(aggregation, n, hi, mid, lo, low, high, last_ts, last_seq, last_value, values):
    if aggregation == "unique_count":
        return Partial(int(n), values=set(values))
    return Partial(int(n), int(hi) * SPLIT + int(mid) * 1_000_000 + int(lo), int(low), int(high),
                   (int(last_ts), int(last_seq), int(last_value)))


def usage_pieces(app, meter, start_us, end_us, cuts, group_by):
    """What `rollups.pieces(conn, meter, None, start_us, end_us, cuts,
    group_by)` gives, from ClickHouse; None: read the node."""
    clickhouse = _ready(app, start_us)
    if clickhouse is None:
        return None
    cut = cut_buckets(start_us, end_us, cuts)
    if cut:  # an edge the node cannot read (archived raw events) is refused here too
        with app.db.reader() as conn:
            check_stored(conn, meter, None, start_us, end_us, cut)
    by_customer = group_by is BY_CUSTOMER
    sql = usage_sql(clickhouse.client.database, meter, start_us, end_us, cut, None if by_customer else group_by,
                    by_customer)
    rows = _rows(clickhouse, sql)
    if rows is None:
        return None
    found = []
    for key, group, *sums in rows:
        if by_customer:
            group = int(group)
        elif not group_by:
            group = None
        found.append((int(key), group, _partial(meter.aggregation, *sums)))
    return found


def event_rows(app, customer_id, meter_id, start_us, end_us, cursor, limit):
    """Up to `limit` events of the list's filters after `cursor` ([ts, seq]),
    newest first, as dicts of EVENT_NAMES; None: read the node."""
    clickhouse = _ready(app)
    if clickhouse is None:
        return None
    rows = _rows(clickhouse, events_sql(clickhouse.client.database, customer_id, meter_id, start_us, end_us,
                                        cursor, limit))
    if rows is None:
        return None
    found = []
    for seq, customer, event_id, meter, ts, quantity, properties, late, received_at in rows:
        found.append(dict(zip(EVENT_NAMES, (int(seq), int(customer), event_id, int(meter), int(ts), int(quantity),
                                            properties or None, int(late), int(received_at)))))
    return found
