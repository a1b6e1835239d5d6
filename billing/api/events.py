"""Events (§4): validated, deduplicated by (customer, id), stored atomically.

This is the ingest hot path: validation (`billing/api/event_rows.py`) runs
against the in-memory catalog — for a large batch in an ingest worker
process (`billing/api/ingest_pool.py`), so that the writer thread does not
wait for the interpreter lock while request threads validate — a whole batch
is a few multi-row INSERTs in one transaction, and duplicates are
found through the dedup index (billing/store/event_ids.py): the first write
wins. Single events that reach the writer together are stored by one call
(`_store_singles`, through `Database.submit_merged`), and so are batches
(`_store_batches`).

One row layout: `EventRow` names the columns an insert writes; a stored
event is read back by column name (EVENT_COLUMNS), and a row just inserted
is shown through the names `view` reads (`_as_stored`).
"""

import json
from urllib.parse import unquote

from .. import jsonutil
from ..domain import quantities, times
from ..errors import Conflict, NotFound, ValidationError
from ..store import archive, event_ids, event_time, multirow, rollups
from .responses import Response, created
from . import clickhouse_reads, invoices
from .common import audit, decode_cursor, int_arg, now_micros, page, page_limit, path_int
from .event_rows import MAX_BATCH, EventRow, Ingest, batch_rows, id_hash, system_row  # noqa: F401  (re-exported)

_INSERT = f"INSERT INTO events ({', '.join(EventRow._fields)}"
INSERT_SQL = f"{_INSERT}) VALUES ({', '.join('?' * len(EventRow._fields))})"
INSERT_LATE_SQL = f"{_INSERT}, late) VALUES ({', '.join('?' * len(EventRow._fields))}, 1)"
# what a stored event is read back as (by these names)
EVENT_COLUMNS = "seq, customer_id, event_id, meter_id, ts, quantity, properties, late, received_at"

# store_new takes EventRows, or plain tuples in their order (the dedup tests
# build those), so it reads the four fields it needs by their position in
# EventRow. Making an EventRow of every row first (EventRow._make) would cost
# 0.5 µs per event, about 2% of validating and storing one (about 24 µs
# in-process: 11 Ingest.row, 13 store_new; micro-measured with 1,000-event batches).
_CUSTOMER, _EVENT_ID, _METER, _TS, _VALUE, _MATCHED, _HASH = (
    EventRow._fields.index(name) for name in ("customer_id", "event_id", "meter_id", "ts", "value", "matched", "id_hash"))


def store_new(conn, rows, invoiced_through=None):
    """Insert the rows (EventRow) whose (customer_id, id) is not stored yet, the
    first of a batch winning over later ones; returns the rows stored. Runs
    inside the writer's transaction, so no concurrent ingest can slip in between.
    `invoiced_through` (customer id → µs): events before it are stored as late.

    Each statement is a call into SQLite that gives up the interpreter lock, and
    single events pay them once per group: what is read before writing is read
    by one statement (`_read_before`), the rows are written by a few
    statements per table (billing/store/multirow.py: one for a small group,
    six for 1,000 rows), and the highest seq is then the insert's lastrowid."""
    fresh = {}
    for row in rows:
        fresh.setdefault((row[_CUSTOMER], row[_EVENT_ID]), row)
    if not fresh:
        return []
    before, tail_state, grouped = _read_before(conn, {row[_CUSTOMER] for row in fresh.values()})
    _drop_stored(conn, fresh, tail_state)
    new_rows = list(fresh.values())
    if not new_rows:  # every one a duplicate: nothing to write
        return []
    late = [r for r in new_rows if r[_TS] < invoiced_through.get(r[_CUSTOMER], -1)] if invoiced_through else []
    inserted = new_rows
    if late:
        late_ids = {id(r) for r in late}
        rest = [r for r in new_rows if id(r) not in late_ids]
        inserted = late + rest
        highest = multirow.write(conn, INSERT_LATE_SQL, late)
        if rest:
            highest = multirow.write(conn, INSERT_SQL, rest)
    else:
        highest = multirow.write(conn, INSERT_SQL, new_rows)
    # in the same transaction as the events, in the order they were inserted
    rollups.add_inserted(conn, before, [(r[_CUSTOMER], r[_METER], r[_TS], r[_VALUE], r[_MATCHED]) for r in inserted],
                         highest, grouped)
    event_ids.add_since(conn, before, [r[_HASH] for r in inserted], highest, tail_state)
    return new_rows


# what store_new reads before it writes, in one statement: whether the customers are live
# (validation read the catalog before this transaction), the highest seq, the dedup tail's
# state, and the meters with group_by
_BEFORE = ("SELECT (SELECT count(*) FROM customers WHERE archived = 0 AND id IN (SELECT value FROM json_each(?))),"
           f" ({rollups.LAST_SEQ}), {event_ids.TAIL_STATE_COLUMNS}, ({rollups.GROUPED_METERS})")


def _read_before(conn, customers):
    """(the highest seq, the dedup tail's state, the meters with group_by as
    JSON); 409 when a customer was deleted or archived since validation."""
    # the customers as one JSON array: a group of merged batches may name more than SQLite's parameters
    live, highest, mark, version, grouped = conn.execute(_BEFORE, (json.dumps(list(customers)),)).fetchone()
    if live != len(customers):
        raise Conflict("A customer of this batch was deleted or archived meanwhile; nothing was stored.")
    return highest, event_ids.TailState(mark, version), grouped


def _drop_stored(conn, fresh, tail_state):
    """Remove from `fresh` ((customer_id, event_id) → row) the ids already stored."""
    hashes = event_ids.maybe_stored(conn, list({row[_HASH] for row in fresh.values()}), tail_state)
    for found in event_ids.stored(conn, "customer_id, event_id", hashes, tail_state):
        fresh.pop((found["customer_id"], found["event_id"]), None)


def find_stored(conn, customer_id, event_id):
    """The stored (or archived) event (sqlite3.Row of EVENT_COLUMNS and
    `archived`) with this id, or None."""
    for found in event_ids.stored(conn, EVENT_COLUMNS, [id_hash(customer_id, event_id)]):
        if found["customer_id"] == customer_id and found["event_id"] == event_id:
            return found
    return None


def _as_stored(row, late):
    """An EventRow just inserted, under the names `view` reads."""
    return {**row._asdict(), "late": 1 if late else 0}


def ingest_for(app, scope=None, age_days=None):
    """A validator of events received now, against the app's catalog: older
    ones refused past `age_days` (the app's BILLING_MAX_EVENT_AGE_DAYS unless
    given; 0: none), a customer-scoped caller's `scope` kept to its own."""
    age_days = app.config.max_event_age_days if age_days is None else age_days
    return Ingest(app.catalog, now_micros(), age_days, scope)


def _ingest(request):
    return ingest_for(request.app, request.customer_scope)


def ingest_batch(request):
    app = request.app
    ingest = _ingest(request)
    rows = None
    if app.ingest_pool.takes(len(request.body)):
        rows = app.ingest_pool.rows(request.json_bytes(), ingest)
    if rows is None:  # a small batch, or no worker process to take it
        rows = batch_rows(request.json(), ingest)
    if not rows:
        return {"accepted": 0, "duplicates": 0}
    accepted = app.db.submit_merged(_store_batches, (rows, app.lateness.through))
    app.stats.events_ingested(accepted)
    app.stats.duplicates(len(rows) - accepted)
    return {"accepted": accepted, "duplicates": len(rows) - accepted}


def view(app, row):
    """A stored event (by the names of EVENT_COLUMNS: an sqlite3.Row or `_as_stored`) as JSON."""
    meter = app.catalog.meter_by_id(row["meter_id"])
    customer = app.catalog.customer(row["customer_id"])
    properties = jsonutil.decode(row["properties"]) if row["properties"] else {}
    return {"id": row["event_id"], "customer_id": row["customer_id"],
            "customer": customer.external_id if customer else None,
            "meter": meter.key if meter else None,
            "quantity": quantities.from_micros(row["quantity"]), "timestamp": times.format_micros(row["ts"]),
            "properties": properties, "late": bool(row["late"]),
            "received_at": times.format_micros(row["received_at"])}


def _store_batches(conn, items):
    """The writer's merged job for batches: `items` are (rows, lateness
    marks); one store_new for the rows of all of them, in order, as if each
    batch had come after the one before. Answers, per item, how many of its
    rows were stored. One call aggregates the rollups of every batch and
    writes each table in key order once (billing/store/rollups.py)."""
    through = items[0][1]  # every item carries the app's one dict of marks
    # (store_new inserts a group's late rows first: only their seqs' order among batches differs)
    rows = [row for batch, _marks in items for row in batch]
    new_rows = store_new(conn, rows, through)
    if len(new_rows) == len(rows):  # no duplicate (the usual case)
        return [len(batch) for batch, _marks in items]
    stored = {id(row) for row in new_rows}
    return [sum(id(row) in stored for row in batch) for batch, _marks in items]


def _store_singles(conn, items):
    """The writer's merged job for single-event POSTs: `items` are (row,
    lateness marks); one store_new for all of them, the first of two equal
    ids winning as if they had come one after the other. Answers, per item,
    (the stored event, True) or (the event stored before with its id, False)."""
    through = items[0][1]  # every item carries the app's one dict of marks
    stored = {id(row) for row in store_new(conn, [row for row, _marks in items], through)}
    return [(_as_stored(row, row.ts < through.get(row.customer_id, -1)), True) if id(row) in stored
            else (find_stored(conn, row.customer_id, row.event_id), False)
            for row, _marks in items]


def ingest_one(request):
    body = request.json()
    app = request.app
    ingest = _ingest(request)
    row = ingest.row(body)
    ingest.problems.raise_if_any()
    stored, inserted = app.db.submit_merged(_store_singles, (row, app.lateness.through))
    if inserted:
        app.stats.events_ingested(1)
        return created({"event": view(app, stored), "duplicate": False})
    app.stats.duplicates(1)
    return Response(200, {"event": view(app, stored), "duplicate": True})


def _range(request, zone):
    bounds = {}
    for name in ("from", "to"):
        raw = request.arg(name)
        if raw:
            try:
                bounds[name] = times.to_micros(times.parse_bound(raw, zone))
            except times.TimeError as exc:
                raise ValidationError([{"field": name, "message": str(exc)}]) from None
    return bounds.get("from"), bounds.get("to")


# the list reads events newest first along the time index (billing/store/event_time.py),
# bucket by bucket, sorting each bucket's events by time: a customer's or a meter's
# events lie within the first and last timestamps of their spans
_ORDER = f" ORDER BY {event_time.KEY} DESC, ts DESC, seq DESC LIMIT ?"
_SPAN_BOUNDS = (f"{event_time.KEY} BETWEEN (SELECT min(first_ts) FROM event_spans WHERE {{where}})"
                f" / {event_time.BUCKET_US} AND (SELECT max(last_ts) FROM event_spans WHERE {{where}})"
                f" / {event_time.BUCKET_US}")


def _filter_values(request):
    """The list's filters: (customer id (a customer-scoped caller's own),
    meter id, from µs, to µs), each None when not asked for."""
    app = request.app
    customer_id = request.customer_filter(int_arg(request, "customer_id", minimum=1))
    zone = times.UTC
    if customer_id is not None:
        customer = app.catalog.customer(customer_id)
        if customer is None:
            raise NotFound(f"Customer {customer_id} not found.")
        zone = times.zone_or_error(customer.timezone)
    meter_id = None
    meter_key = request.arg("meter")
    if meter_key:
        meter = app.catalog.meter(meter_key)
        if meter is None:
            raise ValidationError([{"field": "meter", "message": f"unknown meter {meter_key!r}"}])
        meter_id = meter.id
    return (customer_id, meter_id, *_range(request, zone))


def _filters(customer_id, meter_id, start, end):
    """The WHERE clauses and parameters of the list's filters."""
    where, params = [], []
    for clause, value in (("customer_id = ?", customer_id), ("meter_id = ?", meter_id)):
        if value is not None:
            where.append(clause)
            params.append(value)
    if where:
        where.append(_SPAN_BOUNDS.format(where=" AND ".join(where)))
        params += params * 2  # the filters again, once per subquery
    if start is not None:
        where.append(event_time.SINCE)
        params += event_time.since_params(start)
    if end is not None:
        where.append(event_time.BEFORE)
        params += event_time.before_params(end)
    return where, params


def list_sql(filters, cursor):
    """The node's statement of a page of the list (newest first) and its
    parameters but the last (the page's length): `filters` as
    _filter_values gives them, `cursor` the (ts, seq) the last page ended on."""
    where, params = _filters(*filters)
    if cursor:
        ts, seq = cursor
        where.append(f"{event_time.KEY} <= ? AND (ts < ? OR (ts = ? AND seq < ?))")
        params += [event_time.key(ts), ts, ts, seq]
    sql = f"SELECT {EVENT_COLUMNS} FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + _ORDER, params


def list_events(request):
    app = request.app
    limit = page_limit(request)
    cursor = decode_cursor(request, (int, int))
    filters = _filter_values(request)
    rows, source = clickhouse_reads.event_rows(app, *filters, cursor, limit + 1), "clickhouse"
    if rows is None:
        source = "node"
        sql, params = list_sql(filters, cursor)
        rows = app.db.rows(sql, (*params, limit + 1))
    return clickhouse_reads.served(app, page(rows, limit, lambda r: view(app, r), lambda r: [r["ts"], r["seq"]]),
                                   source)


def retract(request, customer_id, event_id):
    """Remove a wrong event while its period is uninvoiced (kept in
    retracted_events and the audit log; the id may then be sent again)."""
    customer_id = path_int(customer_id, "Customer")
    event_id = unquote(event_id)
    app = request.app
    with app.db.transaction() as conn:
        row = find_stored(conn, customer_id, event_id)
        if row is None:
            raise NotFound(f"Event {event_id!r} of customer {customer_id} not found.")
        if row["archived"]:
            raise Conflict(f"Event {event_id!r} of customer {customer_id} is archived; it cannot be retracted.")
        invoices.check_retractable(conn, customer_id, row["ts"])
        archive.check_retractable(conn, customer_id, row["meter_id"], row["ts"])
        before = view(app, row)
        conn.execute(
            "INSERT INTO retracted_events (seq, customer_id, event_id, meter_id, ts, quantity,"
            " properties, retracted_at, retracted_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row["seq"], row["customer_id"], row["event_id"], row["meter_id"], row["ts"], row["quantity"],
             row["properties"], now_micros(), request.actor.label))
        conn.execute("DELETE FROM events WHERE seq = ?", (row["seq"],))
        rollups.forget_event(conn, row["customer_id"], row["meter_id"], row["ts"])
        event_ids.forget(conn, id_hash(customer_id, event_id), row["seq"])
        audit(conn, request, "event.retract", "event", f"{customer_id}/{event_id}", before, None)
    return {"id": event_id, "customer_id": customer_id, "retracted": True}
