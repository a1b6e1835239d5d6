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
from ..errors import ApiError, Conflict, FieldErrors, ValidationError
from .responses import created
from . import resources as resources_api
from .common import (audit, bool_arg, check_unknown_fields, decode_cursor, encode_cursor, int_arg, now_micros,
                     one_or_404, page, page_limit, path_int, text_field)

COLUMNS = ("s.id, s.resource_id, r.name, s.customer_id, s.user, s.started_at, s.ended_at, s.duration_seconds,"
           " s.price_per_minute, s.currency, s.cost, s.stopped_by, s.auto_stopped, s.started_by")
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
    currency = row[9]
    active = row[6] is None
    item = {"id": row[0], "resource_id": row[1], "resource": row[2], "customer_id": row[3], "user": row[4],
            "status": "active" if active else "stopped", "started_at": times.format_micros(row[5]),
            "ended_at": times.format_micros(row[6]), "duration_seconds": row[7],
            "price_per_minute": row[8], "currency": currency,
            "cost": None if active else money.format_minor(row[10], currency),
            "stopped_by": row[11], "auto_stopped": bool(row[12])}
    if active:  # what it would cost if stopped now
        elapsed = max(0, ((now_us or now_micros()) - row[5]) // 1_000_000)
        item["elapsed_seconds"] = elapsed
        item["cost_so_far"] = money.format_minor(cost_minor(elapsed, row[8], currency), currency)
    return item


def _load(conn, session_id):
    return one_or_404(conn, f"SELECT {COLUMNS} FROM {FROM} WHERE s.id = ?", (session_id,),
                      f"Session {session_id} not found.")


def start(request):
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, ("resource_id", "customer_id", "user"), problems)
    resource_id = resources_api.check_id(body.get("resource_id"), "resource_id", problems)
    customer_id = resources_api.check_id(body.get("customer_id"), "customer_id", problems)
    user = text_field(body, "user", problems, max_length=200)
    problems.raise_if_any()
    app = request.app
    customer = app.catalog.customer(customer_id)
    if customer is None or customer.archived or request.customer_scope not in (None, customer_id):
        raise ValidationError([{"field": "customer_id", "message": f"unknown customer {customer_id}"}])
    with app.db.transaction() as conn:  # the count and the insert are one step under the single writer
        resource = conn.execute(f"SELECT {resources_api.COLUMNS} FROM resources WHERE id = ? AND deleted_at IS NULL",
                                (resource_id,)).fetchone()
        if resource is None:
            raise ValidationError([{"field": "resource_id", "message": f"unknown resource {resource_id}"}])
        if resource[5] != customer.currency:
            raise Conflict(f"Resource {resource_id} is priced in {resource[5]} but customer {customer_id} pays in "
                           f"{customer.currency}.")
        active = resources_api.active_count(conn, resource_id)
        if active >= resource[3]:
            raise CapacityFull(f"{resource[1]} is full: {active} of {resource[3]} in use.", active=active,
                               capacity=resource[3])
        cur = conn.execute("INSERT INTO sessions (resource_id, customer_id, user, started_at, price_per_minute,"
                           " currency, started_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (resource_id, customer_id, user, now_micros(), resource[4], resource[5],
                            request.actor.label))
        row = _load(conn, cur.lastrowid)
        audit(conn, request, "session.start", "session", row[0], after=view(row))
    session = view(row)
    app.publish("session.started", {"session": session, "active": active + 1, "capacity": resource[3]})
    return created(session)


def stop_row(app, conn, session_id, actor_label, at_us=None, automatic=False):
    """Stop a running session at `at_us` (default now) inside the caller's transaction."""
    row = _load(conn, session_id)
    if row[6] is not None:
        raise Conflict(f"Session {session_id} was already stopped at {times.format_micros(row[6])}.")
    ended = max(row[5], at_us if at_us is not None else now_micros())
    seconds = (ended - row[5]) // 1_000_000
    conn.execute("UPDATE sessions SET ended_at = ?, duration_seconds = ?, cost = ?, stopped_by = ?, auto_stopped = ?"
                 " WHERE id = ?", (ended, seconds, cost_minor(seconds, row[8], row[9]), actor_label,
                                   1 if automatic else 0, session_id))
    return _load(conn, session_id)


def stop(request, session_id):
    problems = FieldErrors()
    check_unknown_fields(request.json(), (), problems)
    problems.raise_if_any()
    session_id = path_int(session_id, "Session")
    app = request.app
    with app.db.transaction() as conn:
        request.check_customer(_load(conn, session_id)[3])
        row = stop_row(app, conn, session_id, request.actor.label)
        audit(conn, request, "session.stop", "session", session_id, after=view(row))
        active = resources_api.active_count(conn, row[1])
    session = view(row)
    app.publish("session.stopped", {"session": session, "active": active})
    return session


def stop_overdue(app):
    """Stop every session that ran past its resource's max_duration_minutes, at
    that limit (the scheduler's job); returns how many."""
    now = now_micros()
    stopped = []
    with app.db.transaction() as conn:
        for session_id, started, limit, limit_set in conn.execute(
                "SELECT s.id, s.started_at, r.max_duration_minutes, coalesce(r.limit_set_at, 0) FROM sessions s"
                " JOIN resources r"
                " ON r.id = s.resource_id WHERE s.ended_at IS NULL AND r.max_duration_minutes IS NOT NULL").fetchall():
            # at the limit, but never before the limit was set (a limit added later is not retroactive)
            end = max(started + limit * 60 * 1_000_000, min(limit_set, now))
            if end <= now:
                row = stop_row(app, conn, session_id, "scheduler", at_us=end, automatic=True)
                stopped.append((row, resources_api.active_count(conn, row[1])))
    for row, active in stopped:
        app.publish("session.stopped", {"session": view(row), "active": active})
    return len(stopped)


def get(request, session_id):
    with request.app.db.reader() as conn:
        row = _load(conn, path_int(session_id, "Session"))
    request.check_customer(row[3])
    return view(row)


def _scope(request, where, params):
    customer_id = request.customer_filter(int_arg(request, "customer_id", minimum=1))
    if customer_id is not None:
        where.append("s.customer_id = ?")
        params.append(customer_id)
    resource_id = int_arg(request, "resource_id", minimum=1)
    if resource_id is not None:
        where.append("s.resource_id = ?")
        params.append(resource_id)
    return customer_id


def list_sessions(request):
    """Newest first; filters active=true|false, resource_id, customer_id."""
    limit = page_limit(request)
    cursor = decode_cursor(request)
    where, params = [], []
    _scope(request, where, params)
    active = bool_arg(request, "active")
    if active is not None:
        where.append("s.ended_at IS NULL" if active else "s.ended_at IS NOT NULL")
    if cursor:
        where.append("s.id < ?")
        params.append(cursor[0])
    sql = f"SELECT {COLUMNS} FROM {FROM}" + (" WHERE " + " AND ".join(where) if where else "")
    rows = request.app.db.query(sql + " ORDER BY s.id DESC LIMIT ?", (*params, limit + 1))
    now = now_micros()
    return page(rows, limit, lambda r: view(r, now), lambda r: [r[0]])


# -- billing records --------------------------------------------------------------

def _instant_arg(request, name, zone):
    raw = request.arg(name)
    if not raw:
        return None
    try:
        return times.to_micros(times.parse_bound(raw, zone))
    except times.TimeError as exc:
        raise ValidationError([{"field": name, "message": str(exc)}]) from None


def billing_records(request):
    """Stopped sessions by `ended_at` (newest first) with totals per currency."""
    limit = page_limit(request)
    cursor = decode_cursor(request, (int, int))
    where, params = ["s.ended_at IS NOT NULL"], []
    customer_id = _scope(request, where, params)
    # §2: a date bound is local midnight in the customer's timezone (UTC without a customer)
    customer = request.app.catalog.customer(customer_id) if customer_id is not None else None
    zone = times.zone_or_error(customer.timezone) if customer is not None else times.UTC
    start, end = _instant_arg(request, "from", zone), _instant_arg(request, "to", zone)
    if start is not None and end is not None and start >= end:
        raise ValidationError([{"field": "to", "message": "must be after from"}])
    if start is not None:
        where.append("s.ended_at >= ?")
        params.append(start)
    if end is not None:
        where.append("s.ended_at < ?")
        params.append(end)
    sql_where = " AND ".join(where)
    with request.app.db.reader() as conn:
        totals = conn.execute(f"SELECT s.currency, count(*), sum(s.duration_seconds), sum(s.cost) FROM {FROM}"
                              f" WHERE {sql_where} GROUP BY s.currency ORDER BY s.currency", params).fetchall()
        if cursor:
            sql_where += " AND (s.ended_at < ? OR (s.ended_at = ? AND s.id < ?))"
            params = [*params, cursor[0], cursor[0], cursor[1]]
        rows = conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE {sql_where} ORDER BY s.ended_at DESC, s.id DESC"
                            " LIMIT ?", (*params, limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return {"data": [{**view(r), "minutes": minutes(r[7])} for r in rows],
            "next_cursor": encode_cursor([rows[-1][6], rows[-1][0]]) if more and rows else None,
            "totals": {currency: {"sessions": count, "minutes": minutes(seconds),
                                  "amount": money.format_minor(amount, currency)}
                       for currency, count, seconds, amount in totals}}


# -- invoice lines ----------------------------------------------------------------

def _lines(rows):
    """One `resource` line per resource from (resource id, name, price, seconds, cost) rows."""
    grouped = {}
    for resource_id, name, price, seconds, cost in rows:
        entry = grouped.setdefault(resource_id, {"name": name, "prices": set(), "seconds": 0, "cost": 0, "n": 0})
        entry["prices"].add(price)
        entry["seconds"] += seconds
        entry["cost"] += cost
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
LINE_ROW = "s.resource_id, r.name, s.price_per_minute, s.duration_seconds, s.cost, s.id"


def resource_lines(conn, customer_id, start_us, end_us, late=False, taken=None, billed_too=False):
    """The resource lines of the unbilled sessions that ended in [start_us,
    end_us) — and, with `late`, of unbilled sessions of periods already
    invoiced. The ids of the sessions go into `taken` (a list) when given.
    `billed_too`: every session of the range, billed or not (re-rating an
    issued period for its minimum-commitment true-up)."""
    which = "s.customer_id = ? AND s.ended_at IS NOT NULL" if billed_too else UNBILLED
    rows = conn.execute(f"SELECT {LINE_ROW} FROM {FROM} WHERE {which} AND s.ended_at >= ? AND s.ended_at < ?"
                        " ORDER BY s.id", (customer_id, start_us, end_us)).fetchall()
    if late:
        rows += late_rows(conn, customer_id)
    return _take(rows, taken)


def late_lines(conn, customer_id, taken=None):
    """The resource lines of the unbilled sessions of periods already invoiced."""
    return _take(late_rows(conn, customer_id), taken)


def late_rows(conn, customer_id):
    return conn.execute(f"SELECT {LINE_ROW} FROM {FROM} WHERE {UNBILLED} AND {LATE} ORDER BY s.id",
                        (customer_id,)).fetchall()


def late_customers(conn):
    """Customers with sessions that ended in a period already invoiced and are on no invoice."""
    return {r[0] for r in conn.execute(f"SELECT DISTINCT s.customer_id FROM sessions s WHERE s.invoice_id IS NULL"
                                       f" AND s.ended_at IS NOT NULL AND {LATE}")}


def _take(rows, taken):
    seen, unique = set(), []
    for row in rows:  # (resource, name, price, seconds, cost, id); a late one may also be in the period
        if row[5] not in seen:
            seen.add(row[5])
            unique.append(row)
    rows = unique
    if taken is not None:
        taken.extend(r[5] for r in rows)
    return _lines([r[:5] for r in rows])


def _subscribed_days(conn, customer_id):
    return [(times.parse_date(a), times.parse_date(b) if b else None) for a, b in conn.execute(
        "SELECT start_date, end_date FROM subscriptions WHERE customer_id = ?", (customer_id,))]


def uncovered_lines(conn, customer_id, zone, start_us, end_us, late=False, taken=None):
    """Resource lines of the unbilled sessions that ended in [start_us, end_us)
    on a local day when the customer had no subscription (a monthly invoice's
    lines); with `late`, also the unbilled sessions of periods already invoiced."""
    spans = _subscribed_days(conn, customer_id)
    rows = []
    for row in conn.execute(f"SELECT {LINE_ROW}, s.ended_at FROM {FROM} WHERE {UNBILLED} AND s.ended_at >= ?"
                            " AND s.ended_at < ? ORDER BY s.id", (customer_id, start_us, end_us)):
        day = times.local_date(times.from_micros(row[6]), zone)
        if not any(a <= day and (b is None or day < b) for a, b in spans):
            rows.append(row[:6])
    if late:
        rows += late_rows(conn, customer_id)
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
    unbilled sessions outside any subscription, and no monthly invoice yet."""
    as_of_us = times.to_micros(as_of)
    found = {}
    zones = {}
    spans = {}
    for customer_id, ended in conn.execute(
            "SELECT s.customer_id, s.ended_at FROM sessions s WHERE s.invoice_id IS NULL AND s.ended_at IS NOT NULL"
            " AND s.ended_at < ?", (as_of_us,)):
        if customer_id not in zones:
            zones[customer_id] = times.zone_or_error(conn.execute("SELECT timezone FROM customers WHERE id = ?",
                                                                  (customer_id,)).fetchone()[0])
            spans[customer_id] = _subscribed_days(conn, customer_id)
            found[customer_id] = set()
        zone = zones[customer_id]
        day = times.local_date(times.from_micros(ended), zone)
        if any(a <= day and (b is None or day < b) for a, b in spans[customer_id]):
            continue  # a subscription period holds it
        month = times.month_start(day)
        if times.local_midnight(times.add_months(month, 1), zone) <= as_of:
            found[customer_id].add(month)
    existing = {(r[0], r[1]) for r in conn.execute("SELECT customer_id, period_start_date FROM invoices"
                                                    " WHERE kind = 'monthly'")}
    return {c: sorted(m for m in months if (c, m.isoformat()) not in existing) for c, months in found.items()
            if any((c, m.isoformat()) not in existing for m in months)}, zones


def month_bounds(month, zone):
    return times.local_midnight(month, zone), times.local_midnight(times.add_months(month, 1), zone)

