"""Invoices (§7): the invoice run that drafts every ended period once, and
reading invoices. Drafts are re-rated when read, so they reflect every stored
event of their period; the lifecycle beyond draft comes with approvals."""

from datetime import timedelta

from .. import clock, jsonutil
from ..domain import money, times
from ..errors import NotFound, ValidationError
from . import customers as customers_api
from . import plans as plans_api
from . import subscriptions as subscriptions_api
from .common import bool_arg, decode_cursor, int_arg, now_micros, page, page_limit, path_int

FUTURE_TOLERANCE = timedelta(minutes=5)
COLUMNS = ("id, number, customer_id, subscription_id, status, payment_status, currency, period_start,"
           " period_end, subtotal, discount, tax, total, credits_applied, amount_due, amount_paid,"
           " issued_at, due_at, created_at, period_start_date, period_end_date")
LINE_COLUMNS = "type, description, meter, quantity, unit_price, amount, tiers"


# -- writing -------------------------------------------------------------------

def _store_lines(conn, invoice_id, draft, replace=False):
    if replace:
        conn.execute("DELETE FROM invoice_lines WHERE invoice_id = ?", (invoice_id,))
    conn.executemany(
        "INSERT INTO invoice_lines (invoice_id, position, type, description, meter, quantity, unit_price,"
        " amount, tiers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(invoice_id, i, line["type"], line["description"], line["meter"],
          None if line["quantity"] is None else _number_text(line["quantity"]), line["unit_price"],
          line["amount"], jsonutil.encode(line["tiers"])) for i, line in enumerate(draft.lines)])


def _number_text(value):
    return str(value) if isinstance(value, int) else jsonutil.decimal_text(value)


def _totals(draft):
    return (draft.subtotal, draft.discount, draft.tax, draft.total, draft.credits_applied, draft.amount_due)


def run(request):
    """Draft every subscription period that ended at or before `as_of` and has no invoice yet."""
    app = request.app
    body = request.json()
    now = clock.now()
    as_of = now
    for name in body:
        if name != "as_of":
            raise ValidationError([{"field": name, "message": "is not a known field"}])
    if body.get("as_of") is not None:
        try:
            as_of = times.parse_instant(body["as_of"])
        except times.TimeError as exc:
            raise ValidationError([{"field": "as_of", "message": str(exc)}]) from None
        if as_of > now + FUTURE_TOLERANCE:
            raise ValidationError([{"field": "as_of", "message": "must not be more than 5 minutes in the future"}])
    created = []
    with app.db.transaction() as conn:  # one writer: concurrent runs queue here and find the drafts made
        created = run_as_of(app, conn, as_of)
    return {"created": len(created), "invoice_ids": created}


def run_as_of(app, conn, as_of):
    existing = {(r[0], r[1]) for r in conn.execute(
        "SELECT subscription_id, period_start_date FROM invoices WHERE subscription_id IS NOT NULL")}
    plans = {r[0]: r for r in conn.execute(f"SELECT {plans_api.COLUMNS} FROM plans")}
    customers = {}
    created = []
    stamp = now_micros()
    for sub in conn.execute(f"SELECT {subscriptions_api.COLUMNS} FROM {subscriptions_api.FROM}"
                            " ORDER BY s.id").fetchall():
        customer = customers.get(sub[1])
        if customer is None:
            customer = customers[sub[1]] = conn.execute(f"SELECT {customers_api.COLUMNS} FROM customers"
                                                        " WHERE id = ?", (sub[1],)).fetchone()
        zone = times.zone_or_error(customer[4])
        until = times.local_date(as_of, zone) + timedelta(days=1)
        for _, _, billed_start, billed_end in subscriptions_api.billed_periods(sub, until):
            if (sub[0], billed_start.isoformat()) in existing:
                continue
            if times.local_midnight(billed_end, zone) > as_of:
                break  # this period (and every later one) has not ended yet
            draft, start_at, end_at = subscriptions_api.rate_period(app, conn, sub, plans[sub[12]], customer,
                                                                    billed_start)
            cur = conn.execute(
                "INSERT INTO invoices (customer_id, subscription_id, status, currency, period_start, period_end,"
                " period_start_date, period_end_date, subtotal, discount, tax, total, credits_applied,"
                " amount_due, created_at, updated_at) VALUES (?, ?, 'draft', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sub[1], sub[0], draft.currency, times.to_micros(start_at), times.to_micros(end_at),
                 billed_start.isoformat(), billed_end.isoformat(), *_totals(draft), stamp, stamp))
            _store_lines(conn, cur.lastrowid, draft)
            created.append(cur.lastrowid)
    return created


def refresh_draft(app, invoice_id):
    """Re-rate a draft from the events stored now (drafts follow late events)."""
    with app.db.transaction() as conn:
        row = conn.execute("SELECT status, subscription_id, customer_id, period_start_date FROM invoices"
                           " WHERE id = ?", (invoice_id,)).fetchone()
        if row is None or row[0] != "draft" or row[1] is None:
            return
        sub = conn.execute(f"SELECT {subscriptions_api.COLUMNS} FROM {subscriptions_api.FROM} WHERE s.id = ?",
                           (row[1],)).fetchone()
        plan = conn.execute(f"SELECT {plans_api.COLUMNS} FROM plans WHERE id = ?", (sub[12],)).fetchone()
        customer = conn.execute(f"SELECT {customers_api.COLUMNS} FROM customers WHERE id = ?", (row[2],)).fetchone()
        draft, _, _ = subscriptions_api.rate_period(app, conn, sub, plan, customer, times.parse_date(row[3]))
        conn.execute("UPDATE invoices SET subtotal = ?, discount = ?, tax = ?, total = ?, credits_applied = ?,"
                     " amount_due = ?, updated_at = ? WHERE id = ?", (*_totals(draft), now_micros(), invoice_id))
        _store_lines(conn, invoice_id, draft, replace=True)


# -- reading -------------------------------------------------------------------

def _line_view(row, currency):
    return {"type": row[0], "description": row[1], "meter": row[2],
            "quantity": None if row[3] is None else jsonutil.decode(row[3]), "unit_price": row[4],
            "amount": money.format_minor(row[5], currency), "tiers": jsonutil.decode(row[6])}


def view(row, lines=None):
    currency = row[6]
    fmt = lambda minor: money.format_minor(minor, currency)  # noqa: E731
    invoice = {"id": row[0], "number": row[1], "customer_id": row[2], "subscription_id": row[3],
               "status": row[4], "payment_status": row[5],
               "overdue": bool(row[17] and row[5] != "paid" and row[17] < now_micros()),
               "currency": currency, "period_start": times.format_micros(row[7]),
               "period_end": times.format_micros(row[8]), "local_period": {"start": row[19], "end": row[20]},
               "subtotal": fmt(row[9]), "discount": fmt(row[10]), "tax": fmt(row[11]), "total": fmt(row[12]),
               "credits_applied": fmt(row[13]), "amount_due": fmt(row[14]), "amount_paid": fmt(row[15]),
               "issued_at": times.format_micros(row[16]), "due_at": times.format_micros(row[17]),
               "created_at": times.format_micros(row[18])}
    if lines is not None:
        invoice["lines"] = [_line_view(line, currency) for line in lines]
    return invoice


def get(request, invoice_id):
    app = request.app
    invoice_id = path_int(invoice_id, "Invoice")
    row = app.db.query_one(f"SELECT {COLUMNS} FROM invoices WHERE id = ?", (invoice_id,))
    if row is None:
        raise NotFound(f"Invoice {invoice_id} not found.")
    request.check_customer(row[2])
    if row[4] == "draft":
        refresh_draft(app, invoice_id)
    with app.db.reader() as conn:
        row = conn.execute(f"SELECT {COLUMNS} FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
        lines = conn.execute(f"SELECT {LINE_COLUMNS} FROM invoice_lines WHERE invoice_id = ? ORDER BY position",
                             (invoice_id,)).fetchall()
    return view(row, lines)


def list_invoices(request):
    """Newest first; filters customer_id, status, period (YYYY-MM of the local period start), overdue."""
    limit = page_limit(request)
    cursor = decode_cursor(request)
    where, params = [], []
    if cursor:
        where.append("id < ?")
        params.append(cursor[0])
    customer_id = int_arg(request, "customer_id", minimum=1)
    if request.customer_scope is not None:
        if customer_id not in (None, request.customer_scope):
            raise NotFound("Customer not found.")
        customer_id = request.customer_scope
    if customer_id is not None:
        where.append("customer_id = ?")
        params.append(customer_id)
    status = request.arg("status")
    if status:
        if status not in ("draft", "pending_approval", "issued", "paid", "void"):
            raise ValidationError([{"field": "status", "message": "must be draft, pending_approval, issued, paid or void"}])
        where.append("status = ?")
        params.append(status)
    period = request.arg("period")
    if period:
        if not (len(period) == 7 and period[4] == "-" and period[:4].isdigit() and period[5:].isdigit()):
            raise ValidationError([{"field": "period", "message": "must be a month like 2025-09"}])
        where.append("substr(period_start_date, 1, 7) = ?")
        params.append(period)
    overdue = bool_arg(request, "overdue")
    if overdue is not None:
        clause = "(due_at IS NOT NULL AND due_at < ? AND payment_status != 'paid')"
        where.append(clause if overdue else f"NOT {clause}")
        params.append(now_micros())
    sql = f"SELECT {COLUMNS} FROM invoices"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = request.app.db.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit + 1))
    return page(rows, limit, view, lambda r: [r[0]])


