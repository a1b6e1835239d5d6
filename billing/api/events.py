"""Events (§4): validated, deduplicated by (customer, id), stored atomically.

This is the ingest hot path: validation runs against the in-memory catalog,
a whole batch is one `executemany` in one transaction, and duplicates are
left to the unique index (`INSERT OR IGNORE`: the first write wins).
"""

import hashlib
import json
import uuid
from urllib.parse import unquote

from .. import jsonutil
from ..domain import quantities, times
from ..errors import Conflict, FieldErrors, NotFound, ValidationError
from .responses import Response, created
from . import invoices
from .common import audit, decode_cursor, encode_cursor, int_arg, now_micros, page_limit, path_int

MAX_BATCH = 10_000
MAX_PROPERTIES_BYTES = 4096
MAX_ID_LENGTH = 255
FUTURE_TOLERANCE_US = 5 * 60 * 1_000_000
DAY_US = 86_400 * 1_000_000
EVENT_FIELDS = frozenset({"id", "customer_id", "customer", "meter", "feature", "quantity",
                          "timestamp", "ts", "properties"})
INSERT_SQL = ("INSERT INTO events (customer_id, event_id, meter_id, ts, quantity, value,"
              " matched, properties, received_at, id_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
INSERT_LATE_SQL = ("INSERT INTO events (customer_id, event_id, meter_id, ts, quantity, value,"
                   " matched, properties, received_at, id_hash, late) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)")
HASH_CHUNK = 500  # ids looked up per query


def id_hash(customer_id, event_id):
    """The 64-bit dedup key of an event id (signed, to fit an SQLite integer)."""
    digest = hashlib.blake2b(f"{customer_id}\x00{event_id}".encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def store_new(conn, rows, invoiced_through=None):
    """Insert the rows whose (customer_id, id) is not stored yet, the first of a
    batch winning over later ones; returns the rows stored. Runs inside the
    writer's transaction, so no concurrent ingest can slip in between.
    `invoiced_through` (customer id → µs): events before it are stored as late."""
    fresh = {}
    for row in rows:
        fresh.setdefault((row[0], row[1]), row)
    if not fresh:
        return []
    # validation read the catalog before this transaction: a customer deleted or
    # archived since then must not receive events
    wanted = {row[0] for row in fresh.values()}
    live = conn.execute(f"SELECT count(*) FROM customers WHERE archived = 0 AND id IN ({','.join('?' * len(wanted))})",
                        tuple(wanted)).fetchone()[0]
    if live != len(wanted):
        raise Conflict("A customer of this batch was deleted or archived meanwhile; nothing was stored.")
    hashes = list({row[9] for row in fresh.values()})
    for start in range(0, len(hashes), HASH_CHUNK):
        part = hashes[start:start + HASH_CHUNK]
        for key in conn.execute("SELECT customer_id, event_id FROM events WHERE id_hash IN"
                                f" ({','.join('?' * len(part))})", part):
            fresh.pop(key, None)
    new_rows = list(fresh.values())
    if invoiced_through:
        late = [r for r in new_rows if r[3] < invoiced_through.get(r[0], -1)]
        if late:
            conn.executemany(INSERT_LATE_SQL, late)
            late_ids = {id(r) for r in late}
            conn.executemany(INSERT_SQL, [r for r in new_rows if id(r) not in late_ids])
            return new_rows
    conn.executemany(INSERT_SQL, new_rows)
    return new_rows


def find_stored(conn, customer_id, event_id):
    """The stored event row (EVENT_COLUMNS) with this id, or None."""
    # unary + keeps the planner on the dedup index (not the per-customer usage index)
    return conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id_hash = ? AND +customer_id = ?"
                        " AND +event_id = ?", (id_hash(customer_id, event_id), customer_id, event_id)).fetchone()


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
    """Validates raw events into insert rows, collecting problems by index."""

    def __init__(self, app, scope_customer=None):
        self.catalog = app.catalog
        self.now_us = now_micros()
        age_days = app.config.max_event_age_days
        self.oldest_us = self.now_us - age_days * DAY_US if age_days else None
        self.newest_us = self.now_us + FUTURE_TOLERANCE_US
        self.scope = scope_customer
        self.problems = FieldErrors()

    def _customer(self, raw, default_customer, index):
        problems = self.problems
        if "customer_id" in raw and raw["customer_id"] is not None:
            cid = raw["customer_id"]
            if isinstance(cid, bool) or not isinstance(cid, int):
                problems.add("customer_id", "must be an integer", index)
                return None
            customer = self.catalog.customer(cid)
            label = cid
        elif "customer" in raw and raw["customer"] is not None:
            ext = raw["customer"]
            if not isinstance(ext, str):
                problems.add("customer", "must be a string (the customer's external_id)", index)
                return None
            customer = self.catalog.customer_by_external(ext)
            label = repr(ext)
        elif default_customer is not None:
            customer = self.catalog.customer(default_customer)
            label = default_customer
        elif self.scope is not None:
            customer = self.catalog.customer(self.scope)
            label = self.scope
        else:
            problems.add("customer_id", "is required (customer_id or customer)", index)
            return None
        if customer is None or (self.scope is not None and customer.id != self.scope):
            problems.add("customer_id", f"unknown customer {label}", index)
            return None
        if customer.archived:
            problems.add("customer_id", f"customer {customer.id} is archived", index)
            return None
        return customer

    def row(self, raw, index=None, default_customer=None):
        """The insert tuple for one raw event, or None (problems recorded)."""
        problems = self.problems
        if not isinstance(raw, dict):
            problems.add(None, "each event must be an object", index)
            return None
        before = len(problems.details)
        for name in raw:
            if name not in EVENT_FIELDS:
                problems.add(name, "is not a known event field", index)
        event_id = raw.get("id")
        if event_id is None:
            event_id = "evt_" + uuid.uuid4().hex
        elif not isinstance(event_id, str) or not event_id or len(event_id) > MAX_ID_LENGTH:
            problems.add("id", f"must be a non-empty string of at most {MAX_ID_LENGTH} characters", index)
        customer = self._customer(raw, default_customer, index)
        meter_key = raw.get("meter", raw.get("feature"))
        meter = None
        if meter_key is None:
            problems.add("meter", "is required", index)
        elif not isinstance(meter_key, str):
            problems.add("meter", "must be a string (a meter key)", index)
        else:
            meter = self.catalog.meter(meter_key)
            if meter is None:
                problems.add("meter", f"unknown meter {meter_key!r}", index)
        quantity = raw.get("quantity", 1)
        try:
            quantity_us = quantities.to_micros(quantity)
        except quantities.QuantityError as exc:
            problems.add("quantity", str(exc), index)
            quantity_us = None
        ts_text = raw.get("timestamp", raw.get("ts"))
        if ts_text is None:
            ts_us = self.now_us
        else:
            try:
                instant = times.parse_instant(ts_text)
                ts_us = times.to_micros(instant)
                if ts_us > self.newest_us:
                    problems.add("timestamp", "is more than 5 minutes in the future", index)
                elif self.oldest_us is not None and ts_us < self.oldest_us:
                    problems.add("timestamp", "is older than the lateness limit "
                                 "(BILLING_MAX_EVENT_AGE_DAYS)", index)
            except times.TimeError as exc:
                problems.add("timestamp", str(exc), index)
        properties = raw.get("properties")
        properties_text = None
        if properties is None:
            properties = {}
        elif not isinstance(properties, dict):
            problems.add("properties", "must be an object", index)
            properties = None
        elif properties:
            properties_text = _properties_text(properties)
            if len(properties_text.encode("utf-8")) > MAX_PROPERTIES_BYTES:
                problems.add("properties", f"must be at most {MAX_PROPERTIES_BYTES} bytes as JSON", index)
        value = quantity_us
        if meter is not None and properties is not None:
            prop = meter.value_property
            if prop is not None and meter.aggregation != "count":
                raw_value = properties.get(prop)
                if meter.aggregation == "unique_count":
                    if raw_value is None or isinstance(raw_value, (dict, list)):
                        problems.add(f"properties.{prop}", "is required: a scalar value to count", index)
                    else:
                        value = jsonutil.encode(raw_value)
                else:
                    try:
                        value = quantities.to_micros(raw_value)
                    except quantities.QuantityError as exc:
                        problems.add(f"properties.{prop}",
                                     "is required as a number" if raw_value is None else str(exc), index)
        if len(problems.details) != before:
            return None
        matched = 1 if not meter.filter or _matches(meter.filter, properties) else 0
        return (customer.id, event_id, meter.id, ts_us, quantity_us, value, matched,
                properties_text, self.now_us, id_hash(customer.id, event_id))


def system_row(meter, customer_id, event_id, ts_us, quantity_us, properties, received_us):
    """The insert row of an event the server writes itself (storage metering):
    no validation beyond the meter's filter, which decides `matched`."""
    properties = properties or {}
    matched = 1 if not meter.filter or _matches(meter.filter, properties) else 0
    return (customer_id, event_id, meter.id, ts_us, quantity_us, quantity_us, matched,
            _properties_text(properties) if properties else None, received_us, id_hash(customer_id, event_id))


def _default_customer(body, request, problems):
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
    default = _default_customer(body, request, problems)
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


EVENT_COLUMNS = "seq, customer_id, event_id, meter_id, ts, quantity, properties, late, received_at"


def view(app, row):
    meter = app.catalog.meter_by_id(row[3])
    customer = app.catalog.customer(row[1])
    properties = jsonutil.decode(row[6]) if row[6] else {}
    return {"id": row[2], "customer_id": row[1],
            "customer": customer.external_id if customer else None,
            "meter": meter.key if meter else None,
            "quantity": quantities.from_micros(row[5]), "timestamp": times.format_micros(row[4]),
            "properties": properties, "late": bool(row[7]),
            "received_at": times.format_micros(row[8])}


def ingest_one(request):
    body = request.json()
    app = request.app
    ingest = Ingest(app, request.customer_scope)
    row = ingest.row(body)
    ingest.problems.raise_if_any()

    def store(conn):
        through = app.lateness.through
        if store_new(conn, [row], through):
            seq = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            late = 1 if row[3] < through.get(row[0], -1) else 0
            return (seq, row[0], row[1], row[2], row[3], row[4], row[7], late, row[8]), True
        return find_stored(conn, row[0], row[1]), False

    stored, inserted = app.db.submit(store)
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


def list_events(request):
    app = request.app
    limit = page_limit(request)
    cursor = decode_cursor(request, (int, int))
    where, params = [], []
    customer_id = request.customer_filter(int_arg(request, "customer_id", minimum=1))
    zone = times.UTC
    if customer_id is not None:
        customer = app.catalog.customer(customer_id)
        if customer is None:
            raise NotFound(f"Customer {customer_id} not found.")
        zone = times.zone_or_error(customer.timezone)
        where.append("customer_id = ?")
        params.append(customer_id)
    meter_key = request.arg("meter")
    if meter_key:
        meter = app.catalog.meter(meter_key)
        if meter is None:
            raise ValidationError([{"field": "meter", "message": f"unknown meter {meter_key!r}"}])
        where.append("meter_id = ?")
        params.append(meter.id)
    start, end = _range(request, zone)
    if start is not None:
        where.append("ts >= ?")
        params.append(start)
    if end is not None:
        where.append("ts < ?")
        params.append(end)
    if cursor:
        where.append("(ts < ? OR (ts = ? AND seq < ?))")
        params += [cursor[0], cursor[0], cursor[1]]
    sql = f"SELECT {EVENT_COLUMNS} FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY ts DESC, seq DESC LIMIT ?"
    rows = app.db.query(sql, (*params, limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return {"data": [view(app, r) for r in rows],
            "next_cursor": encode_cursor([rows[-1][4], rows[-1][0]]) if more and rows else None}


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
        invoices.check_retractable(conn, customer_id, row[4])
        before = view(app, row)
        conn.execute(
            "INSERT INTO retracted_events (seq, customer_id, event_id, meter_id, ts, quantity,"
            " properties, retracted_at, retracted_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row[0], row[1], row[2], row[3], row[4], row[5], row[6], now_micros(), request.actor.label))
        conn.execute("DELETE FROM events WHERE seq = ?", (row[0],))
        audit(conn, request, "event.retract", "event", f"{customer_id}/{event_id}", before, None)
    return {"id": event_id, "customer_id": customer_id, "retracted": True}


