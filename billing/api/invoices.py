"""Invoices (§7): the invoice run over HTTP, and reading invoices. A draft is
re-rated whenever it is read, in memory on a reader (§12: reads never
write), so it shows every stored event of its period; it is stored again only
by an action or the scheduler.

The run itself is in invoice_run, rating and storing drafts in drafts, the
row and its JSON in invoice_rows; `invoices.run_as_of`, `invoices.carrier`
and `invoices.load_view` stay importable from here for the scheduler, the
demo, estimates and the dispatcher."""

from datetime import timedelta

from .. import clock
from ..domain import times
from ..errors import Conflict, ValidationError
from ..store.db import named
from .common import bool_arg, decode_cursor, int_arg, now_micros, page, page_limit, path_int
from .drafts import as_shown, carrier  # noqa: F401  (carrier: for estimates)
from .invoice_rows import COLUMNS, OVERDUE_SQL, load_for, load_lines, load_view, view  # noqa: F401  (load_view)
from .invoice_run import run_as_of

FUTURE_TOLERANCE = timedelta(minutes=5)
STATUSES = ("draft", "pending_approval", "issued", "paid", "void")
MAX_REFRESH = 200  # drafts re-rated by one list request
# §9: a customer sees neither holds, void reasons nor how its invoices are approved
STAFF_ONLY = ("on_hold", "void_reason", "requires_approval")


# -- the invoice run -----------------------------------------------------------

def run(request):
    """Draft every subscription period that ended at or before `as_of` and has no invoice yet."""
    app = request.app
    as_of = _as_of(request.json(), clock.now())
    created = run_as_of(app, as_of, request.actor, request.request_id)  # in short chunks; runs take turns
    app.notify()
    if created:
        app.publish("invoice.created", {"invoice_ids": created})
    return {"created": len(created), "invoice_ids": created}


def _as_of(body, now):
    """The run's `as_of` (default now; at most a few minutes ahead)."""
    for name in body:
        if name != "as_of":
            raise ValidationError([{"field": name, "message": "is not a known field"}])
    if body.get("as_of") is None:
        return now
    try:
        as_of = times.parse_instant(body["as_of"])
    except times.TimeError as exc:
        raise ValidationError([{"field": "as_of", "message": str(exc)}]) from None
    if as_of > now + FUTURE_TOLERANCE:
        raise ValidationError([{"field": "as_of", "message": "must not be more than 5 minutes in the future"}])
    return as_of


# -- reading -------------------------------------------------------------------

def fresh_view(request, invoice_id):
    """The invoice as JSON, a draft re-rated for display (nothing written); 404
    for another customer's key, as for a missing invoice."""
    app = request.app
    invoice_id = path_int(invoice_id, "Invoice")
    with app.db.snapshot() as conn:
        row, lines = as_shown(app, conn, load_for(conn, request, invoice_id))
        return view(row, load_lines(conn, invoice_id) if lines is None else lines)


def for_caller(request, invoice):
    """The invoice as the caller may see it."""
    if request.customer_scope is not None:
        for name in STAFF_ONLY:
            invoice.pop(name, None)
    return invoice


def get(request, invoice_id):
    return for_caller(request, fresh_view(request, invoice_id))


def list_filters(request):
    """WHERE clauses and parameters of the invoice list filters."""
    where, params = [], []
    customer_id = request.customer_filter(int_arg(request, "customer_id", minimum=1))
    if customer_id is not None:
        where.append("customer_id = ?")
        params.append(customer_id)
    status = request.arg("status")
    if status:
        if status not in STATUSES:
            raise ValidationError([{"field": "status", "message": "must be draft, pending_approval, issued, paid or void"}])
        where.append("status = ?")
        params.append(status)
    period = request.arg("period")
    if period:
        if not _is_month(period):
            raise ValidationError([{"field": "period", "message": "must be a month like 2025-09"}])
        where.append("substr(period_start_date, 1, 7) = ?")
        params.append(period)
    overdue = bool_arg(request, "overdue")
    if overdue is not None:
        where.append(OVERDUE_SQL if overdue else f"NOT {OVERDUE_SQL}")
        params.append(now_micros())
    return where, params


def _is_month(text):
    """Whether `text` reads YYYY-MM."""
    return (len(text) == 7 and text.isascii() and text[4] == "-" and text[:4].isdigit()
            and text[5:].isdigit() and 1 <= int(text[5:]) <= 12)


def listed_rows(request, limit, after=None):
    """Invoice rows (of COLUMNS, by name) matching the list filters, newest
    first: at most `limit`, with ids below `after` when given."""
    where, params = list_filters(request)
    if after is not None:
        where.append("id < ?")
        params.append(after)
    sql = f"SELECT {COLUMNS} FROM invoices"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return request.app.db.rows(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))


def list_invoices(request):
    """Newest first; filters customer_id, status, period (YYYY-MM of the local period start), overdue."""
    limit = page_limit(request)
    cursor = decode_cursor(request)
    rows = listed_rows(request, limit + 1, cursor[0] if cursor else None)
    rows = refresh_listed(request.app, rows[:limit]) + rows[limit:]
    return page(rows, limit, lambda row: for_caller(request, view(row)), lambda row: [row["id"]])


def refresh_listed(app, rows):
    """The listed rows with their drafts re-rated for display (drafts reflect
    every stored event whenever they are read); nothing is written."""
    drafts = sum(1 for row in rows if row["status"] == "draft")
    if not drafts or drafts > MAX_REFRESH:
        return rows
    with app.db.snapshot() as conn:
        return [as_shown(app, conn, row)[0] for row in rows]


def check_retractable(conn, customer_id, ts):
    """An event may be retracted only while its period's invoice is a draft
    (or there is none): Conflict once the invoice has left draft."""
    row = named(conn, "SELECT id, number, status FROM invoices WHERE customer_id = ? AND period_start <= ?"
                      " AND ? < period_end AND status IN ('pending_approval', 'issued', 'paid') LIMIT 1",
                (customer_id, ts, ts)).fetchone()
    if row is not None:
        raise Conflict(f"The event's period is on invoice {row['number'] or row['id']}"
                       f" ({row['status'].replace('_', ' ')}); it can no longer be retracted.")
