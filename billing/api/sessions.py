"""Sessions (§6): a customer using a resource from start to stop, billed by
the minute; each stopped session is a billing record.

Starting checks the capacity and inserts in one writer transaction, so no
number of concurrent starts can exceed it. A stopped session bills in the
period of its `ended_at`: as one `resource` line per resource on the
subscription invoice of that period, or, for a customer without a
subscription then, on a monthly invoice of the calendar month (local time).
"""

from decimal import Decimal

from ..domain import money, times
from ..errors import ApiError, Conflict, FieldErrors, NotFound, ValidationError
from ..store.db import named, scalar
from .responses import created
from . import resources as resources_api
from .common import (audit, bool_arg, check_unknown_fields, decode_cursor, int_arg, now_micros, one_or_404, page,
                     page_limit, path_int, text_field)

COLUMNS = ("s.id, s.resource_id, r.name AS resource, s.customer_id, s.user, s.started_at, s.ended_at,"
           " s.duration_seconds, s.price_per_minute, s.currency, s.cost, s.stopped_by, s.auto_stopped, s.started_by")
FROM = "sessions s JOIN resources r ON r.id = s.resource_id"
MINUTE = Decimal(60)
MINUTES_PLACES = Decimal("0.01")


class CapacityFull(ApiError):
    status = 409
    code = "capacity_full"


def cost_minor(duration_seconds, price_per_minute, currency):
    """duration / 60 × price per minute, rounded half-up once to the minor unit."""
    return money.to_minor(Decimal(duration_seconds) * Decimal(price_per_minute) / MINUTE, currency)


def minutes(seconds):
    return (Decimal(seconds) / MINUTE).quantize(MINUTES_PLACES, rounding=money.ROUNDING)


def view(row, now_us=None):
    """A session (sqlite3.Row of COLUMNS) as JSON; a running one with what it costs so far."""
    currency = row["currency"]
    active = row["ended_at"] is None
    item = {"id": row["id"], "resource_id": row["resource_id"], "resource": row["resource"],
            "customer_id": row["customer_id"], "user": row["user"], "status": "active" if active else "stopped",
            "started_at": times.format_micros(row["started_at"]), "ended_at": times.format_micros(row["ended_at"]),
            "duration_seconds": row["duration_seconds"], "price_per_minute": row["price_per_minute"],
            "currency": currency, "cost": None if active else money.format_minor(row["cost"], currency),
            "stopped_by": row["stopped_by"], "auto_stopped": bool(row["auto_stopped"])}
    if active:  # what it would cost if stopped now
        elapsed = max(0, ((now_us or now_micros()) - row["started_at"]) // 1_000_000)
        item["elapsed_seconds"] = elapsed
        item["cost_so_far"] = money.format_minor(cost_minor(elapsed, row["price_per_minute"], currency), currency)
    return item


def _load(conn, session_id):
    return one_or_404(conn, f"SELECT {COLUMNS} FROM {FROM} WHERE s.id = ?", (session_id,),
                      f"Session {session_id} not found.")


def _start_fields(request):
    """(resource id, customer id, user) of a start request (400 when bad)."""
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, ("resource_id", "customer_id", "user"), problems)
    resource_id = resources_api.check_id(body.get("resource_id"), "resource_id", problems)
    customer_id = resources_api.check_id(body.get("customer_id"), "customer_id", problems)
    user = text_field(body, "user", problems, max_length=200)
    problems.raise_if_any()
    request.check_customer(customer_id)  # staff only today; a customer's key could start its own sessions only
    customer = request.app.catalog.customer(customer_id)
    if customer is None or customer.archived:
        raise ValidationError([{"field": "customer_id", "message": f"unknown customer {customer_id}"}])
    return resource_id, customer, user


def _free_resource(conn, resource_id, customer):
    """The resource to start a session on, with the sessions running on it;
    refused when unknown, priced in another currency, or full."""
    resource = named(conn, f"SELECT {resources_api.COLUMNS} FROM resources WHERE id = ? AND deleted_at IS NULL",
                     (resource_id,)).fetchone()
    if resource is None:
        raise ValidationError([{"field": "resource_id", "message": f"unknown resource {resource_id}"}])
    if resource["currency"] != customer.currency:
        raise Conflict(f"Resource {resource_id} is priced in {resource['currency']} but customer {customer.id} pays"
                       f" in {customer.currency}.")
    active = resources_api.active_count(conn, resource_id)
    capacity = resource["capacity"]
    if active >= capacity:
        raise CapacityFull(f"{resource['name']} is full: {active} of {capacity} in use.", active=active,
                           capacity=capacity)
    return resource, active


def start(request):
    resource_id, customer, user = _start_fields(request)
    app = request.app
    with app.db.transaction() as conn:  # the count and the insert are one step under the single writer
        resource, active = _free_resource(conn, resource_id, customer)
        cur = conn.execute("INSERT INTO sessions (resource_id, customer_id, user, started_at, price_per_minute,"
                           " currency, started_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (resource_id, customer.id, user, now_micros(), resource["price_per_minute"],
                            resource["currency"], request.actor.label))
        row = _load(conn, cur.lastrowid)
        audit(conn, request, "session.start", "session", row["id"], after=view(row))
    session = view(row)
    app.publish("session.started", {"session": session, "active": active + 1, "capacity": resource["capacity"]})
    return created(session)


def stop_row(app, conn, session_id, actor_label, at_us=None, automatic=False):
    """Stop a running session at `at_us` (default now) inside the caller's transaction."""
    row = _load(conn, session_id)
    if row["ended_at"] is not None:
        raise Conflict(f"Session {session_id} was already stopped at {times.format_micros(row['ended_at'])}.")
    ended = max(row["started_at"], at_us if at_us is not None else now_micros())
    seconds = (ended - row["started_at"]) // 1_000_000
    conn.execute("UPDATE sessions SET ended_at = ?, duration_seconds = ?, cost = ?, stopped_by = ?, auto_stopped = ?"
                 " WHERE id = ?", (ended, seconds, cost_minor(seconds, row["price_per_minute"], row["currency"]),
                                   actor_label, 1 if automatic else 0, session_id))
    return _load(conn, session_id)


def stop(request, session_id):
    problems = FieldErrors()
    check_unknown_fields(request.json(), (), problems)
    problems.raise_if_any()
    session_id = path_int(session_id, "Session")
    app = request.app
    with app.db.transaction() as conn:
        request.check_customer(_load(conn, session_id)["customer_id"])
        row = stop_row(app, conn, session_id, request.actor.label)
        audit(conn, request, "session.stop", "session", session_id, after=view(row))
        active = resources_api.active_count(conn, row["resource_id"])
    session = view(row)
    app.publish("session.stopped", {"session": session, "active": active})
    return session


def stop_overdue(app):
    """Stop every session that ran past its resource's max_duration_minutes, at
    that limit (the scheduler's job); returns how many."""
    now = now_micros()
    stopped = []
    with app.db.transaction() as conn:
        for running in named(conn, "SELECT s.id, s.started_at, r.max_duration_minutes AS limit_minutes,"
                                   " coalesce(r.limit_set_at, 0) AS limit_set_at FROM sessions s"
                                   " JOIN resources r ON r.id = s.resource_id"
                                   " WHERE s.ended_at IS NULL AND r.max_duration_minutes IS NOT NULL").fetchall():
            # at the limit, but never before the limit was set (a limit added later is not retroactive)
            end = max(running["started_at"] + running["limit_minutes"] * 60 * 1_000_000,
                      min(running["limit_set_at"], now))
            if end <= now:
                row = stop_row(app, conn, running["id"], "scheduler", at_us=end, automatic=True)
                stopped.append((row, resources_api.active_count(conn, row["resource_id"])))
    for row, active in stopped:
        app.publish("session.stopped", {"session": view(row), "active": active})
    return len(stopped)


def get(request, session_id):
    session_id = path_int(session_id, "Session")
    with request.app.db.reader() as conn:
        row = _load(conn, session_id)
    if request.customer_scope not in (None, row["customer_id"]):  # as for a missing one
        raise NotFound(f"Session {session_id} not found.")
    return view(row)


def _filters(request):
    """The WHERE clauses and parameters of the customer (a customer-scoped
    caller's own) and resource filters, and the customer id (or None)."""
    where, params = [], []
    customer_id = request.customer_filter(int_arg(request, "customer_id", minimum=1))
    for clause, value in (("s.customer_id = ?", customer_id),
                          ("s.resource_id = ?", int_arg(request, "resource_id", minimum=1))):
        if value is not None:
            where.append(clause)
            params.append(value)
    return where, params, customer_id


def list_sessions(request):
    """Newest first; filters active=true|false, resource_id, customer_id."""
    limit = page_limit(request)
    cursor = decode_cursor(request)
    where, params, _ = _filters(request)
    active = bool_arg(request, "active")
    if active is not None:
        where.append("s.ended_at IS NULL" if active else "s.ended_at IS NOT NULL")
    if cursor:
        where.append("s.id < ?")
        params.append(cursor[0])
    sql = f"SELECT {COLUMNS} FROM {FROM}" + (" WHERE " + " AND ".join(where) if where else "")
    rows = request.app.db.rows(sql + " ORDER BY s.id DESC LIMIT ?", (*params, limit + 1))
    now = now_micros()
    return page(rows, limit, lambda r: view(r, now), lambda r: [r["id"]])


# -- billing records --------------------------------------------------------------

def _instant_arg(request, name, zone):
    raw = request.arg(name)
    if not raw:
        return None
    try:
        return times.to_micros(times.parse_bound(raw, zone))
    except times.TimeError as exc:
        raise ValidationError([{"field": name, "message": str(exc)}]) from None


def _ended_between(request, where, params, customer_id):
    """Add the from/to bounds on `ended_at` (§2: a date is local midnight in the
    customer's timezone, UTC without a customer)."""
    customer = request.app.catalog.customer(customer_id) if customer_id is not None else None
    zone = times.zone_or_error(customer.timezone) if customer is not None else times.UTC
    start, end = _instant_arg(request, "from", zone), _instant_arg(request, "to", zone)
    if start is not None and end is not None and start >= end:
        raise ValidationError([{"field": "to", "message": "must be after from"}])
    for clause, value in (("s.ended_at >= ?", start), ("s.ended_at < ?", end)):
        if value is not None:
            where.append(clause)
            params.append(value)


def _record_totals(conn, sql_where, params):
    """{currency: {sessions, minutes, amount}} of the stopped sessions the filters select."""
    totals = named(conn, f"SELECT s.currency, count(*) AS sessions, sum(s.duration_seconds) AS seconds,"
                         f" sum(s.cost) AS amount FROM {FROM} WHERE {sql_where} GROUP BY s.currency"
                         " ORDER BY s.currency", params).fetchall()
    return {t["currency"]: {"sessions": t["sessions"], "minutes": minutes(t["seconds"]),
                            "amount": money.format_minor(t["amount"], t["currency"])} for t in totals}


def billing_records(request):
    """Stopped sessions by `ended_at` (newest first) with totals per currency."""
    limit = page_limit(request)
    cursor = decode_cursor(request, (int, int))
    where, params, customer_id = _filters(request)
    where.insert(0, "s.ended_at IS NOT NULL")
    _ended_between(request, where, params, customer_id)
    sql_where = " AND ".join(where)
    with request.app.db.reader() as conn:
        totals = _record_totals(conn, sql_where, params)
        if cursor:
            sql_where += " AND (s.ended_at < ? OR (s.ended_at = ? AND s.id < ?))"
            params = [*params, cursor[0], cursor[0], cursor[1]]
        rows = named(conn, f"SELECT {COLUMNS} FROM {FROM} WHERE {sql_where} ORDER BY s.ended_at DESC, s.id DESC"
                           " LIMIT ?", (*params, limit + 1)).fetchall()
    listing = page(rows, limit, lambda r: {**view(r), "minutes": minutes(r["duration_seconds"])},
                   lambda r: [r["ended_at"], r["id"]])
    return {**listing, "totals": totals}


# -- invoice lines ----------------------------------------------------------------

def _lines(rows):
    """One `resource` line per resource from rows of LINE_COLUMNS."""
    grouped = {}
    for row in rows:
        entry = grouped.setdefault(row["resource_id"], {"name": row["resource"], "prices": set(), "seconds": 0,
                                                        "cost": 0, "n": 0})
        entry["prices"].add(row["price_per_minute"])
        entry["seconds"] += row["duration_seconds"]
        entry["cost"] += row["cost"]
        entry["n"] += 1
    lines = []
    for resource_id, entry in sorted(grouped.items(), key=lambda kv: (kv[1]["name"].lower(), kv[0])):
        price = next(iter(entry["prices"])) if len(entry["prices"]) == 1 else None
        lines.append({"type": "resource", "meter": None, "resource_id": resource_id,
                      "quantity": minutes(entry["seconds"]),
                      "description": f"{entry['name']} ({entry['n']} session{'s' if entry['n'] != 1 else ''},"
                                     " minutes)",
                      "unit_price": price, "amount": entry["cost"], "tiers": []})
    return lines


UNBILLED = "s.customer_id = ? AND s.invoice_id IS NULL AND s.ended_at IS NOT NULL"
# a session is late when the invoice of the period it ended in has left draft
LATE = ("EXISTS (SELECT 1 FROM invoices i WHERE i.customer_id = s.customer_id AND i.status IN"
        " ('pending_approval', 'issued', 'paid') AND s.ended_at >= i.period_start AND s.ended_at < i.period_end)")
LINE_COLUMNS = "s.resource_id, r.name AS resource, s.price_per_minute, s.duration_seconds, s.cost, s.id, s.ended_at"


def resource_lines(conn, customer_id, start_us, end_us, late=False, taken=None, billed_too=False):
    """The resource lines of the unbilled sessions that ended in [start_us,
    end_us) — and, with `late`, of unbilled sessions of periods already
    invoiced. The ids of the sessions go into `taken` (a list) when given.
    `billed_too`: every session of the range, billed or not (re-rating an
    issued period for its minimum-commitment true-up)."""
    which = "s.customer_id = ? AND s.ended_at IS NOT NULL" if billed_too else UNBILLED
    rows = named(conn, f"SELECT {LINE_COLUMNS} FROM {FROM} WHERE {which} AND s.ended_at >= ? AND s.ended_at < ?"
                       " ORDER BY s.id", (customer_id, start_us, end_us)).fetchall()
    if late:
        rows += _late_rows(conn, customer_id)
    return _take(rows, taken)


def late_lines(conn, customer_id, taken=None):
    """The resource lines of the unbilled sessions of periods already invoiced."""
    return _take(_late_rows(conn, customer_id), taken)


def _late_rows(conn, customer_id):
    return named(conn, f"SELECT {LINE_COLUMNS} FROM {FROM} WHERE {UNBILLED} AND {LATE} ORDER BY s.id",
                 (customer_id,)).fetchall()


def late_customers(conn):
    """Customers with sessions that ended in a period already invoiced and are on no invoice."""
    return {r["customer_id"] for r in named(conn, "SELECT DISTINCT s.customer_id FROM sessions s"
                                                  f" WHERE s.invoice_id IS NULL AND s.ended_at IS NOT NULL AND {LATE}")}


def _take(rows, taken):
    """The lines of `rows`, each session once (a late one may also be in the period)."""
    seen, unique = set(), []
    for row in rows:
        if row["id"] not in seen:
            seen.add(row["id"])
            unique.append(row)
    if taken is not None:
        taken.extend(r["id"] for r in unique)
    return _lines(unique)


def _subscribed_days(conn, customer_id):
    """(start date, end date or None) of each of the customer's subscriptions."""
    return [(times.parse_date(r["start_date"]), times.parse_date(r["end_date"]) if r["end_date"] else None)
            for r in named(conn, "SELECT start_date, end_date FROM subscriptions WHERE customer_id = ?",
                           (customer_id,))]


def _subscribed(spans, day):
    return any(a <= day and (b is None or day < b) for a, b in spans)


def uncovered_lines(conn, customer_id, zone, start_us, end_us, late=False, taken=None):
    """Resource lines of the unbilled sessions that ended in [start_us, end_us)
    on a local day when the customer had no subscription (a monthly invoice's
    lines); with `late`, also the unbilled sessions of periods already invoiced."""
    spans = _subscribed_days(conn, customer_id)
    rows = [row for row in named(conn, f"SELECT {LINE_COLUMNS} FROM {FROM} WHERE {UNBILLED} AND s.ended_at >= ?"
                                       " AND s.ended_at < ? ORDER BY s.id", (customer_id, start_us, end_us))
            if not _subscribed(spans, times.local_date(times.from_micros(row["ended_at"]), zone))]
    if late:
        rows += _late_rows(conn, customer_id)
    return _take(rows, taken)


def store_taken(conn, invoice_id, taken):
    """Remember which sessions a draft's resource lines hold (rewritten with its lines)."""
    conn.execute("DELETE FROM invoice_sessions WHERE invoice_id = ?", (invoice_id,))
    conn.executemany("INSERT OR IGNORE INTO invoice_sessions (invoice_id, session_id) VALUES (?, ?)",
                     [(invoice_id, session_id) for session_id in taken])


def mark_billed(conn, invoice_id):
    """The invoice left draft: its sessions are billed (no other invoice takes them)."""
    conn.execute("UPDATE sessions SET invoice_id = ? WHERE invoice_id IS NULL AND id IN"
                 " (SELECT session_id FROM invoice_sessions WHERE invoice_id = ?)", (invoice_id, invoice_id))


def unmark_billed(conn, invoice_id):
    """The invoice went back to draft or was voided: its sessions are unbilled again."""
    conn.execute("UPDATE sessions SET invoice_id = NULL WHERE invoice_id = ?", (invoice_id,))


def months_to_invoice(conn, as_of):
    """{customer_id: [local month start dates]} whose month ended by `as_of`, with
    unbilled sessions outside any subscription, and no monthly invoice yet;
    and {customer_id: timezone} of those customers."""
    as_of_us = times.to_micros(as_of)
    found, zones, spans = {}, {}, {}
    for row in named(conn, "SELECT s.customer_id, s.ended_at FROM sessions s WHERE s.invoice_id IS NULL"
                           " AND s.ended_at IS NOT NULL AND s.ended_at < ?", (as_of_us,)):
        customer_id = row["customer_id"]
        if customer_id not in zones:
            zones[customer_id] = times.zone_or_error(scalar(conn, "SELECT timezone FROM customers WHERE id = ?",
                                                            (customer_id,)))
            spans[customer_id] = _subscribed_days(conn, customer_id)
            found[customer_id] = set()
        zone = zones[customer_id]
        day = times.local_date(times.from_micros(row["ended_at"]), zone)
        if _subscribed(spans[customer_id], day):
            continue  # a subscription period holds it
        month = times.month_start(day)
        if times.local_midnight(times.add_months(month, 1), zone) <= as_of:
            found[customer_id].add(month)
    existing = {(r["customer_id"], r["period_start_date"]) for r in named(
        conn, "SELECT customer_id, period_start_date FROM invoices WHERE kind = 'monthly'")}
    return {c: sorted(m for m in months if (c, m.isoformat()) not in existing) for c, months in found.items()
            if any((c, m.isoformat()) not in existing for m in months)}, zones


def month_bounds(month, zone):
    return times.local_midnight(month, zone), times.local_midnight(times.add_months(month, 1), zone)

