"""Events (§4): validated, deduplicated by (customer, id), stored atomically.

This is the ingest hot path: validation runs against the in-memory catalog,
a whole batch is one `executemany` in one transaction, and duplicates are
found through the dedup index (billing/store/event_ids.py): the first write
wins. Single events that reach the writer together are stored by one call
(`_store_singles`, through `Database.submit_merged`).

One row layout: `EventRow` names the columns an insert writes; a stored
event is read back by column name (EVENT_COLUMNS), and a row just inserted
is shown through the names `view` reads (`_as_stored`).
"""

import functools
import hashlib
import json
import uuid
from typing import NamedTuple
from urllib.parse import unquote

from .. import jsonutil
from ..domain import quantities, times
from ..errors import Conflict, FieldErrors, NotFound, ValidationError
from ..store import archive, event_ids, rollups
from .responses import Response, created
from . import clickhouse_reads, invoices
from .common import audit, decode_cursor, int_arg, now_micros, page, page_limit, path_int

MAX_BATCH = 10_000
MAX_PROPERTIES_BYTES = 4096
MAX_ID_LENGTH = 255
FUTURE_TOLERANCE_US = 5 * 60 * 1_000_000
DAY_US = 86_400 * 1_000_000
EVENT_FIELDS = frozenset({"id", "customer_id", "customer", "meter", "feature", "quantity",
                          "timestamp", "ts", "properties"})


class EventRow(NamedTuple):
    """An event as inserted: the columns of INSERT_SQL, in their order."""
    customer_id: int
    event_id: str
    meter_id: int
    ts: int
    quantity: int
    value: object          # what the meter aggregates: µs of a number, or the JSON of a counted value
    matched: int           # 1 when the meter's filter accepts the properties
    properties: str | None
    received_at: int
    id_hash: int


# EventRow(...) runs a Python-level __new__: on the batch path that cost 1.5 µs
# an event (12.5 µs instead of 11 µs per Ingest.row, micro-measured over
# 1,000-event batches); building the tuple directly costs what a plain tuple does.
_new_event_row = functools.partial(tuple.__new__, EventRow)

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


def id_hash(customer_id, event_id):
    """The 64-bit dedup key of an event id (signed, to fit an SQLite integer)."""
    digest = hashlib.blake2b(f"{customer_id}\x00{event_id}".encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def store_new(conn, rows, invoiced_through=None):
    """Insert the rows (EventRow) whose (customer_id, id) is not stored yet, the
    first of a batch winning over later ones; returns the rows stored. Runs
    inside the writer's transaction, so no concurrent ingest can slip in between.
    `invoiced_through` (customer id → µs): events before it are stored as late."""
    fresh = {}
    for row in rows:
        fresh.setdefault((row[_CUSTOMER], row[_EVENT_ID]), row)
    if not fresh:
        return []
    before = _check_customers_live(conn, {row[_CUSTOMER] for row in fresh.values()})  # _drop_stored only reads
    _drop_stored(conn, fresh)
    new_rows = list(fresh.values())
    if not new_rows:  # every one a duplicate: nothing to write
        return []
    late = [r for r in new_rows if r[_TS] < invoiced_through.get(r[_CUSTOMER], -1)] if invoiced_through else []
    inserted = new_rows
    if late:
        conn.executemany(INSERT_LATE_SQL, late)
        late_ids = {id(r) for r in late}
        rest = [r for r in new_rows if id(r) not in late_ids]
        conn.executemany(INSERT_SQL, rest)
        inserted = late + rest
    else:
        conn.executemany(INSERT_SQL, new_rows)
    # in the same transaction as the events, in the order they were inserted
    highest = rollups.add_inserted(conn, before, [(r[_CUSTOMER], r[_METER], r[_TS], r[_VALUE], r[_MATCHED])
                                                  for r in inserted])
    event_ids.add_since(conn, before, [r[_HASH] for r in inserted], highest)
    return new_rows


def _check_customers_live(conn, wanted):
    """Validation read the catalog before this transaction: a customer deleted or archived
    since must not receive events. Returns rollups.last_seq, read by the same statement."""
    live, highest = conn.execute(
        f"SELECT (SELECT count(*) FROM customers WHERE archived = 0 AND id IN ({','.join('?' * len(wanted))})),"
        f" ({rollups.LAST_SEQ})", tuple(wanted)).fetchone()
    if live != len(wanted):
        raise Conflict("A customer of this batch was deleted or archived meanwhile; nothing was stored.")
    return highest


def _drop_stored(conn, fresh):
    """Remove from `fresh` ((customer_id, event_id) → row) the ids already stored."""
    hashes = event_ids.maybe_stored(conn, list({row[_HASH] for row in fresh.values()}))
    for found in event_ids.stored(conn, "customer_id, event_id", hashes):
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


_PROPERTIES_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _properties_text(properties):
    try:
        return _PROPERTIES_ENCODER.encode(properties)
    except (TypeError, ValueError):
        return jsonutil.encode(properties)  # Decimals inside


def _matches(filter_, properties):
    for name, expected in filter_.items():
        actual = properties.get(name)
        if isinstance(expected, list):
            if actual not in expected or isinstance(actual, (dict, list)):
                return False
        elif actual != expected or (type(actual) is bool) != (type(expected) is bool):
            return False
    return True


class Ingest:
    """Validates raw events into EventRows, collecting problems by index."""

    def __init__(self, app, scope_customer=None):
        self.catalog = app.catalog
        self.now_us = now_micros()
        age_days = app.config.max_event_age_days
        self.oldest_us = self.now_us - age_days * DAY_US if age_days else None
        self.newest_us = self.now_us + FUTURE_TOLERANCE_US
        self.scope = scope_customer
        self.problems = FieldErrors()

    def row(self, raw, index=None, default_customer=None):
        """The EventRow for one raw event, or None (problems recorded)."""
        if not isinstance(raw, dict):
            self.problems.add(None, "each event must be an object", index)
            return None
        before = len(self.problems.details)
        self._unknown_fields(raw, index)
        event_id = self._event_id(raw, index)
        customer = self._customer(raw, default_customer, index)
        meter = self._meter(raw, index)
        quantity_us = self._quantity(raw, index)
        ts_us = self._timestamp(raw, index)
        properties, properties_text = self._properties(raw, index)
        value = self._value(meter, properties, quantity_us, index)
        if len(self.problems.details) != before:
            return None
        matched = 1 if not meter.filter or _matches(meter.filter, properties) else 0
        return _new_event_row((customer.id, event_id, meter.id, ts_us, quantity_us, value, matched,
                               properties_text, self.now_us, id_hash(customer.id, event_id)))

    def _unknown_fields(self, raw, index):
        for name in raw:
            if name not in EVENT_FIELDS:
                self.problems.add(name, "is not a known event field", index)

    def _event_id(self, raw, index):
        event_id = raw.get("id")
        if event_id is None:
            return "evt_" + uuid.uuid4().hex
        if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_ID_LENGTH:
            self.problems.add("id", f"must be a non-empty string of at most {MAX_ID_LENGTH} characters", index)
        return event_id

    def _customer(self, raw, default_customer, index):
        found = self._named_customer(raw, default_customer, index)
        if found is None:
            return None
        customer, label = found
        if customer is None or (self.scope is not None and customer.id != self.scope):
            # a customer-scoped caller naming another customer: as if it did not exist
            self.problems.add("customer_id", f"unknown customer {label}", index)
            return None
        if customer.archived:
            self.problems.add("customer_id", f"customer {customer.id} is archived", index)
            return None
        return customer

    def _named_customer(self, raw, default_customer, index):
        """(customer or None, how the event named it), or None (problem recorded)."""
        problems = self.problems
        if raw.get("customer_id") is not None:
            cid = raw["customer_id"]
            if isinstance(cid, bool) or not isinstance(cid, int):
                problems.add("customer_id", "must be an integer", index)
                return None
            return self.catalog.customer(cid), cid
        if raw.get("customer") is not None:
            ext = raw["customer"]
            if not isinstance(ext, str):
                problems.add("customer", "must be a string (the customer's external_id)", index)
                return None
            return self.catalog.customer_by_external(ext), repr(ext)
        for fallback in (default_customer, self.scope):
            if fallback is not None:
                return self.catalog.customer(fallback), fallback
        problems.add("customer_id", "is required (customer_id or customer)", index)
        return None

    def _meter(self, raw, index):
        meter_key = raw.get("meter", raw.get("feature"))
        if meter_key is None:
            self.problems.add("meter", "is required", index)
        elif not isinstance(meter_key, str):
            self.problems.add("meter", "must be a string (a meter key)", index)
        else:
            meter = self.catalog.meter(meter_key)
            if meter is None:
                self.problems.add("meter", f"unknown meter {meter_key!r}", index)
            return meter
        return None

    def _quantity(self, raw, index):
        try:
            return quantities.to_micros(raw.get("quantity", 1))
        except quantities.QuantityError as exc:
            self.problems.add("quantity", str(exc), index)
            return None

    def _timestamp(self, raw, index):
        ts_text = raw.get("timestamp", raw.get("ts"))
        if ts_text is None:
            return self.now_us
        try:
            ts_us = times.to_micros(times.parse_instant(ts_text))
        except times.TimeError as exc:
            self.problems.add("timestamp", str(exc), index)
            return None
        if ts_us > self.newest_us:
            self.problems.add("timestamp", "is more than 5 minutes in the future", index)
        elif self.oldest_us is not None and ts_us < self.oldest_us:
            self.problems.add("timestamp", "is older than the lateness limit (BILLING_MAX_EVENT_AGE_DAYS)", index)
        return ts_us

    def _properties(self, raw, index):
        """(properties, their JSON text or None); properties None when not an object."""
        properties = raw.get("properties")
        if properties is None:
            return {}, None
        if not isinstance(properties, dict):
            self.problems.add("properties", "must be an object", index)
            return None, None
        if not properties:
            return properties, None
        text = _properties_text(properties)
        if len(text.encode("utf-8")) > MAX_PROPERTIES_BYTES:
            self.problems.add("properties", f"must be at most {MAX_PROPERTIES_BYTES} bytes as JSON", index)
        return properties, text

    def _value(self, meter, properties, quantity_us, index):
        """What the meter aggregates: the quantity, or its value_property."""
        if meter is None or properties is None or meter.value_property is None or meter.aggregation == "count":
            return quantity_us
        prop = meter.value_property
        raw_value = properties.get(prop)
        if meter.aggregation == "unique_count":
            if raw_value is None or isinstance(raw_value, (dict, list)):
                self.problems.add(f"properties.{prop}", "is required: a scalar value to count", index)
                return None
            return jsonutil.encode(raw_value)
        try:
            return quantities.to_micros(raw_value)
        except quantities.QuantityError as exc:
            self.problems.add(f"properties.{prop}", "is required as a number" if raw_value is None else str(exc),
                              index)
            return None


def system_row(meter, customer_id, event_id, ts_us, quantity_us, properties, received_us):
    """The EventRow of an event the server writes itself (storage metering):
    no validation beyond the meter's filter, which decides `matched`."""
    properties = properties or {}
    matched = 1 if not meter.filter or _matches(meter.filter, properties) else 0
    return EventRow(customer_id, event_id, meter.id, ts_us, quantity_us, quantity_us, matched,
                    _properties_text(properties) if properties else None, received_us, id_hash(customer_id, event_id))


def _default_customer(body, problems):
    default = body.get("customer_id")
    if default is not None and (isinstance(default, bool) or not isinstance(default, int)):
        problems.add("customer_id", "must be an integer")
        return None
    return default


def ingest_batch(request):
    body = request.json()
    events = body.get("events")
    app = request.app
    ingest = Ingest(app, request.customer_scope)
    problems = ingest.problems
    unknown = set(body) - {"events", "customer_id"}
    if unknown:
        problems.add(sorted(unknown)[0], "is not a known field")
    default = _default_customer(body, problems)
    if not isinstance(events, list):
        problems.add("events", "is required: a list of events")
        problems.raise_if_any()
    if len(events) > MAX_BATCH:
        raise ValidationError([{"field": "events", "message": f"at most {MAX_BATCH} events per batch"}])
    rows = [ingest.row(raw, i, default) for i, raw in enumerate(events)]
    problems.raise_if_any()
    if not rows:
        return {"accepted": 0, "duplicates": 0}
    accepted = len(app.db.submit(lambda conn: store_new(conn, rows, app.lateness.through)))
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
    ingest = Ingest(app, request.customer_scope)
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


# the list reads events newest first through the `ts` index: a customer's or a
# meter's events lie within the first and last timestamps of their spans
_SPAN_BOUNDS = ("ts BETWEEN (SELECT min(first_ts) FROM event_spans WHERE {where})"
                " AND (SELECT max(last_ts) FROM event_spans WHERE {where})")


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
    for clause, value in (("ts >= ?", start), ("ts < ?", end)):
        if value is not None:
            where.append(clause)
            params.append(value)
    return where, params


def list_events(request):
    app = request.app
    limit = page_limit(request)
    cursor = decode_cursor(request, (int, int))
    filters = _filter_values(request)
    rows, source = clickhouse_reads.event_rows(app, *filters, cursor, limit + 1), "clickhouse"
    if rows is None:
        source = "node"
        where, params = _filters(*filters)
        if cursor:
            ts, seq = cursor
            where.append("(ts < ? OR (ts = ? AND seq < ?))")
            params += [ts, ts, seq]
        sql = f"SELECT {EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = app.db.rows(sql + " ORDER BY ts DESC, seq DESC LIMIT ?", (*params, limit + 1))
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
