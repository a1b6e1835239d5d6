"""Invoices (§7): the invoice run that drafts every ended period once, the
rating of drafts (re-rated lazily, so they reflect every stored event of their
period, and carrying the customer's late-event adjustments), and reading."""

from datetime import timedelta

from .. import clock, jsonutil
from ..domain import invoicing, money, times
from ..errors import Conflict, NotFound, ValidationError
from . import adjustments, history
from . import coupons as coupons_api
from . import customers as customers_api
from . import plans as plans_api
from . import sessions as sessions_api
from . import subscriptions as subscriptions_api
from . import webhooks
from ..store.db import named
from .common import bool_arg, decode_cursor, int_arg, now_micros, one_or_404, page, page_limit, path_int

FUTURE_TOLERANCE = timedelta(minutes=5)
COLUMNS = ("id, number, customer_id, subscription_id, status, payment_status, currency, period_start,"
           " period_end, subtotal, discount, tax, total, credits_applied, amount_due, amount_paid,"
           " issued_at, due_at, created_at, period_start_date, period_end_date, hold, void_reason, voided_at,"
           " revision, kind")
LINE_COLUMNS = "type, description, meter, quantity, unit_price, amount, tiers"
STATUSES = ("draft", "pending_approval", "issued", "paid", "void")
MAX_REFRESH = 200  # drafts re-rated by one list request


# -- rating drafts -------------------------------------------------------------

def _store_lines(conn, invoice_id, draft, replace=False):
    if replace:
        conn.execute("DELETE FROM invoice_lines WHERE invoice_id = ?", (invoice_id,))
    conn.executemany(
        "INSERT INTO invoice_lines (invoice_id, position, type, description, meter, quantity, unit_price,"
        " amount, tiers, adjusts_subscription_id, adjusts_period, resource_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(invoice_id, i, line["type"], line["description"], line["meter"],
          None if line["quantity"] is None else _number_text(line["quantity"]), line["unit_price"],
          line["amount"], jsonutil.encode(line["tiers"]), line.get("adjusts_subscription_id"),
          line.get("adjusts_period"), line.get("resource_id")) for i, line in enumerate(draft.lines)])


def _number_text(value):
    return str(value) if isinstance(value, int) else jsonutil.decimal_text(value)


def _totals(draft):
    return (draft.subtotal, draft.discount, draft.tax, draft.total, draft.credits_applied, draft.amount_due)


def carrier(conn, customer_id):
    """The draft that carries the customer's pending adjustments: its oldest draft not on hold."""
    row = conn.execute("SELECT min(id) FROM invoices WHERE customer_id = ? AND status = 'draft' AND hold = 0",
                       (customer_id,)).fetchone()
    return row[0]


def _customer_row(conn, customer_id):
    return conn.execute(f"SELECT {customers_api.COLUMNS} FROM customers WHERE id = ?", (customer_id,)).fetchone()


def build_plain(conn, customer_row, lines):
    """An invoice without a plan: the given lines, then tax and credits."""
    return invoicing.build(customer_row[5], [], {}, extra_lines=lines, tax_rate=money.parse_percent(customer_row[8]),
                           credit_balance=coupons_api.balance(conn, customer_row[0]))


def rate(app, conn, customer_row, subscription_row, period_start_date, invoice_id=None, carries=False,
         kind="subscription", bounds=None, taken=None):
    """The priced draft of one invoice: a subscription period (with corrections
    when the period was invoiced before); a monthly invoice's resource lines;
    or adjustments alone; plus, when it `carries`, the customer's pending
    adjustments and the sessions of periods already invoiced. `taken` collects
    the ids of the sessions its resource lines hold."""
    extra = adjustments.pending(app, conn, customer_row[0], invoice_id) if carries else []
    if subscription_row is None:
        if kind == "monthly":
            zone = times.zone_or_error(customer_row[4])
            extra = sessions_api.uncovered_lines(conn, customer_row[0], zone, *bounds, late=carries,
                                                 taken=taken) + extra
        elif carries:
            extra = sessions_api.late_lines(conn, customer_row[0], taken) + extra
        return build_plain(conn, customer_row, extra)
    extra = adjustments.corrections(conn, subscription_row[0], period_start_date.isoformat(), invoice_id) + extra
    plan = conn.execute(f"SELECT {plans_api.COLUMNS} FROM plans WHERE id = ?", (subscription_row[12],)).fetchone()
    draft, _, _ = subscriptions_api.rate_period(app, conn, subscription_row, plan, customer_row, period_start_date,
                                                extra_lines=extra, late_sessions=carries, taken=taken)
    return draft


def refresh_draft(app, conn, invoice_id):
    """Re-rate a draft from the events stored now (inside the caller's transaction)."""
    row = conn.execute("SELECT status, subscription_id, customer_id, period_start_date, kind, period_start,"
                       " period_end FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
    if row is None or row[0] != "draft":
        return
    sub = None
    if row[1] is not None:
        sub = conn.execute(f"SELECT {subscriptions_api.COLUMNS} FROM {subscriptions_api.FROM} WHERE s.id = ?",
                           (row[1],)).fetchone()
    taken = []
    draft = rate(app, conn, _customer_row(conn, row[2]), sub, times.parse_date(row[3]), invoice_id,
                 carries=carrier(conn, row[2]) == invoice_id, kind=row[4], bounds=(row[5], row[6]), taken=taken)
    sessions_api.store_taken(conn, invoice_id, taken)
    conn.execute("UPDATE invoices SET subtotal = ?, discount = ?, tax = ?, total = ?, credits_applied = ?,"
                 " amount_due = ?, updated_at = ? WHERE id = ?", (*_totals(draft), now_micros(), invoice_id))
    _store_lines(conn, invoice_id, draft, replace=True)


# -- the invoice run -----------------------------------------------------------

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
    with app.db.transaction() as conn:  # one writer: concurrent runs queue here and find the drafts made
        created = run_as_of(app, conn, as_of, request.actor)
    app.notify()
    if created:
        app.publish("invoice.created", {"invoice_ids": created})
    return {"created": len(created), "invoice_ids": created}


def _insert(conn, customer_id, subscription_id, draft, start_at, end_at, start_date, end_date, stamp,
            kind="subscription"):
    cur = conn.execute(
        "INSERT INTO invoices (customer_id, subscription_id, status, currency, period_start, period_end,"
        " period_start_date, period_end_date, subtotal, discount, tax, total, credits_applied,"
        " amount_due, created_at, updated_at, kind)"
        " VALUES (?, ?, 'draft', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (customer_id, subscription_id, draft.currency, times.to_micros(start_at), times.to_micros(end_at),
         start_date, end_date, *_totals(draft), stamp, stamp, kind))
    _store_lines(conn, cur.lastrowid, draft)
    return cur.lastrowid


def run_as_of(app, conn, as_of, actor=None):
    """Create the drafts due as of `as_of` inside the caller's transaction; returns their ids."""
    existing = {(r[0], r[1]) for r in conn.execute(
        "SELECT subscription_id, period_start_date FROM invoices WHERE subscription_id IS NOT NULL")}
    carriers = {r[0] for r in conn.execute("SELECT DISTINCT customer_id FROM invoices"
                                           " WHERE status = 'draft' AND hold = 0")}
    late = adjustments.late_customers(conn) | sessions_api.late_customers(conn)
    with_sessions = {r[0] for r in conn.execute("SELECT DISTINCT customer_id FROM sessions WHERE invoice_id IS NULL"
                                                " AND ended_at IS NOT NULL")}
    plans = {r[0]: r for r in conn.execute(f"SELECT {plans_api.COLUMNS} FROM plans")}
    customers = {}
    created = []
    stamp = now_micros()
    for sub in conn.execute(f"SELECT {subscriptions_api.COLUMNS} FROM {subscriptions_api.FROM}"
                            " ORDER BY s.id").fetchall():
        customer = customers.get(sub[1])
        if customer is None:
            customer = customers[sub[1]] = _customer_row(conn, sub[1])
        zone = times.zone_or_error(customer[4])
        until = times.local_date(as_of, zone) + timedelta(days=1)
        for _, _, billed_start, billed_end in subscriptions_api.billed_periods(sub, until):
            if (sub[0], billed_start.isoformat()) in existing:
                continue
            if times.local_midnight(billed_end, zone) > as_of:
                break  # this period (and every later one) has not ended yet
            carries = sub[1] in late and sub[1] not in carriers
            extra = adjustments.pending(app, conn, sub[1]) if carries else ()
            taken = []
            draft, start_at, end_at = subscriptions_api.rate_period(app, conn, sub, plans[sub[12]], customer,
                                                                    billed_start, extra_lines=extra,
                                                                    resources=sub[1] in with_sessions,
                                                                    late_sessions=carries, taken=taken)
            invoice_id = _insert(conn, sub[1], sub[0], draft, start_at, end_at, billed_start.isoformat(),
                                 billed_end.isoformat(), stamp)
            sessions_api.store_taken(conn, invoice_id, taken)
            carriers.add(sub[1])
            created.append(invoice_id)
    # §6: a monthly invoice for the resource sessions of customers without a subscription then
    months, zones = sessions_api.months_to_invoice(conn, as_of)
    for customer_id, starts in sorted(months.items()):
        customer = customers.get(customer_id) or _customer_row(conn, customer_id)
        for month in starts:
            start_at, end_at = sessions_api.month_bounds(month, zones[customer_id])
            bounds = (times.to_micros(start_at), times.to_micros(end_at))
            carries = customer_id in late and customer_id not in carriers
            taken = []
            lines = sessions_api.uncovered_lines(conn, customer_id, zones[customer_id], *bounds,
                                                 late=carries, taken=taken)
            if not lines:
                continue
            if carries:
                lines += adjustments.pending(app, conn, customer_id)
            draft = build_plain(conn, customer, lines)
            invoice_id = _insert(conn, customer_id, None, draft, start_at, end_at, month.isoformat(),
                                 times.add_months(month, 1).isoformat(), stamp, kind="monthly")
            sessions_api.store_taken(conn, invoice_id, taken)
            created.append(invoice_id)
            carriers.add(customer_id)
    # late adjustments of customers with no draft to carry them and no subscription in force
    voided = {r[0] for r in conn.execute(  # a voided adjustment invoice comes back only by reissue
        "SELECT customer_id FROM invoices i WHERE kind = 'adjustments' AND status = 'void' AND id = (SELECT max(id)"
        " FROM invoices j WHERE j.customer_id = i.customer_id AND j.kind = 'adjustments')")}
    for customer_id in sorted(late - carriers - voided):
        customer = customers.get(customer_id) or _customer_row(conn, customer_id)
        zone = times.zone_or_error(customer[4])
        if subscriptions_api.subscription_in_force(conn, customer_id, times.local_date(as_of, zone)):
            continue  # the next period's draft will carry them
        taken = []
        lines = sessions_api.late_lines(conn, customer_id, taken) \
            + adjustments.pending(app, conn, customer_id)
        if not lines:
            continue
        draft = build_plain(conn, customer, lines)
        # the period: from the first to the last invoiced period it corrects
        periods = [l["adjusts_period"] for l in lines if l.get("adjusts_period")]
        if periods:
            first_date, last_date = min(periods), max(periods)
            end_date = conn.execute("SELECT max(period_end_date) FROM invoices WHERE subscription_id IS NOT NULL"
                                    " AND customer_id = ? AND period_start_date = ?",
                                    (customer_id, last_date)).fetchone()[0]
            start_at, end_at = times.local_midnight(times.parse_date(first_date), zone), \
                times.local_midnight(times.parse_date(end_date), zone)
        else:  # late sessions only: the invoiced periods they ended in
            first, last = conn.execute(
                "SELECT min(i.period_start), max(i.period_end) FROM invoices i JOIN sessions s ON s.customer_id ="
                " i.customer_id AND s.ended_at >= i.period_start AND s.ended_at < i.period_end WHERE i.customer_id = ?"
                " AND i.status IN ('pending_approval', 'issued', 'paid') AND s.invoice_id IS NULL",
                (customer_id,)).fetchone()
            start_at, end_at = times.from_micros(first), times.from_micros(last)
            first_date, end_date = times.local_date(start_at, zone).isoformat(), times.local_date(end_at, zone).isoformat()
        invoice_id = _insert(conn, customer_id, None, draft, start_at, end_at, first_date, end_date, stamp,
                             kind="adjustments")
        sessions_api.store_taken(conn, invoice_id, taken)
        created.append(invoice_id)
    hooks = webhooks.subscribers(conn, "invoice.created")
    for invoice_id in created:
        history.record(conn, invoice_id, "create", None, "draft", actor)
        webhooks.enqueue(conn, "invoice.created", lambda: {"invoice": load_view(conn, invoice_id)}, hooks)
    return created


# -- reading -------------------------------------------------------------------

def _line_view(row, currency):
    return {"type": row[0], "description": row[1], "meter": row[2],
            "quantity": None if row[3] is None else jsonutil.decode(row[3]), "unit_price": row[4],
            "amount": money.format_minor(row[5], currency), "tiers": jsonutil.decode(row[6])}


def is_overdue(status, payment_status, due_at, now=None):
    return bool(due_at and status in ("issued", "paid") and payment_status != "paid"
                and due_at < (now if now is not None else now_micros()))


OVERDUE_SQL = "(due_at IS NOT NULL AND due_at < ? AND payment_status != 'paid' AND status = 'issued')"


def view(row, lines=None):
    currency = row[6]
    fmt = lambda minor: money.format_minor(minor, currency)  # noqa: E731
    invoice = {"id": row[0], "number": row[1], "customer_id": row[2], "subscription_id": row[3],
               "status": row[4], "payment_status": row[5], "overdue": is_overdue(row[4], row[5], row[17]),
               "currency": currency, "period_start": times.format_micros(row[7]),
               "period_end": times.format_micros(row[8]), "local_period": {"start": row[19], "end": row[20]},
               "subtotal": fmt(row[9]), "discount": fmt(row[10]), "tax": fmt(row[11]), "total": fmt(row[12]),
               "credits_applied": fmt(row[13]), "amount_due": fmt(row[14]), "amount_paid": fmt(row[15]),
               "balance_due": fmt(max(0, row[14] - row[15])) if row[4] != "void" else fmt(0),
               "issued_at": times.format_micros(row[16]), "due_at": times.format_micros(row[17]),
               "created_at": times.format_micros(row[18]), "revision": row[24], "kind": row[25],
               "on_hold": bool(row[21]), "void_reason": row[22], "voided_at": times.format_micros(row[23])}
    if lines is not None:
        invoice["lines"] = [_line_view(line, currency) for line in lines]
    return invoice


def load_row(conn, invoice_id):
    return one_or_404(conn, f"SELECT {COLUMNS} FROM invoices WHERE id = ?", (invoice_id,),
                      f"Invoice {invoice_id} not found.")


def load_view(conn, invoice_id):
    lines = conn.execute(f"SELECT {LINE_COLUMNS} FROM invoice_lines WHERE invoice_id = ? ORDER BY position",
                         (invoice_id,)).fetchall()
    return view(load_row(conn, invoice_id), lines)


def fresh_view(request, invoice_id):
    """The invoice as JSON, a draft re-rated first; 404 for another customer's key."""
    app = request.app
    invoice_id = path_int(invoice_id, "Invoice")
    row = app.db.query_one("SELECT customer_id, status FROM invoices WHERE id = ?", (invoice_id,))
    if row is None:
        raise NotFound(f"Invoice {invoice_id} not found.")
    request.check_customer(row[0])
    if row[1] == "draft":
        with app.db.transaction() as conn:
            refresh_draft(app, conn, invoice_id)
            return load_view(conn, invoice_id)
    with app.db.reader() as conn:
        return load_view(conn, invoice_id)


STAFF_ONLY = ("on_hold", "void_reason")  # §9: a customer sees neither holds nor void reasons


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
        if not (len(period) == 7 and period.isascii() and period[4] == "-" and period[:4].isdigit()
                and period[5:].isdigit() and 1 <= int(period[5:]) <= 12):
            raise ValidationError([{"field": "period", "message": "must be a month like 2025-09"}])
        where.append("substr(period_start_date, 1, 7) = ?")
        params.append(period)
    overdue = bool_arg(request, "overdue")
    if overdue is not None:
        where.append(OVERDUE_SQL if overdue else f"NOT {OVERDUE_SQL}")
        params.append(now_micros())
    return where, params


def list_invoices(request):
    """Newest first; filters customer_id, status, period (YYYY-MM of the local period start), overdue."""
    limit = page_limit(request)
    cursor = decode_cursor(request)
    where, params = list_filters(request)
    if cursor:
        where.append("id < ?")
        params.append(cursor[0])
    sql = f"SELECT {COLUMNS} FROM invoices"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = request.app.db.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit + 1))
    rows = refresh_listed(request.app, rows[:limit]) + rows[limit:]
    return page(rows, limit, lambda row: for_caller(request, view(row)), lambda r: [r[0]])


def refresh_listed(app, rows):
    """Re-rate the drafts among listed rows (drafts reflect every stored event
    whenever they are read); the rows as they are now."""
    drafts = [r[0] for r in rows if r[4] == "draft"]
    if not drafts or len(drafts) > MAX_REFRESH:
        return rows
    with app.db.transaction() as conn:
        for invoice_id in drafts:
            refresh_draft(app, conn, invoice_id)
        fresh = {r[0]: r for r in conn.execute(
            f"SELECT {COLUMNS} FROM invoices WHERE id IN ({','.join('?' * len(drafts))})", drafts)}
    return [fresh.get(r[0], r) for r in rows]


def check_retractable(conn, customer_id, ts):
    """An event may be retracted only while its period's invoice is a draft
    (or there is none): Conflict once the invoice has left draft."""
    row = named(conn, "SELECT id, number, status FROM invoices WHERE customer_id = ? AND period_start <= ?"
                      " AND ? < period_end AND status IN ('pending_approval', 'issued', 'paid') LIMIT 1",
                (customer_id, ts, ts)).fetchone()
    if row is not None:
        raise Conflict(f"The event's period is on invoice {row['number'] or row['id']}"
                       f" ({row['status'].replace('_', ' ')}); it can no longer be retracted.")
