"""The invoice lifecycle (§7): finalize, approve, reject, issue, payments, void
and reissue, each recorded in the invoice's history.

    draft ──finalize──▶ issued ──payments──▶ paid
      │  └─(requires_approval)─▶ pending_approval ──approve──▶ issued
      │                              └──reject──▶ draft (on hold)
      └──void◀── draft, pending_approval, issued with nothing paid ──reissue──▶ new draft

Every transition runs in one writer transaction that first reads the current
status, so two racing requests can never both move the same invoice; any other
transition answers 409 naming the status. Issuing takes the next number from a
counter in the same transaction: a rolled-back issue gives its number back, so
numbers have no gaps.
"""

from datetime import timedelta

from .. import jsonutil
from ..domain import money, times
from ..errors import Conflict, FieldErrors, Forbidden
from .responses import created
from . import auth
from . import coupons as coupons_api
from . import invoices as invoices_api
from . import sessions as sessions_api
from . import webhooks
from .common import check_unknown_fields, now_micros, path_int, text_field
from .history import System, record

NUMBER_FORMAT = "INV-{:06d}"
MAX_COMMENT = 2000


def _conflict(invoice_id, status, action):
    return Conflict(f"Invoice {invoice_id} is {status.replace('_', ' ')}; it cannot be {action}.")


def _body(request, fields, required=(), other=()):
    """The body, and its text `fields` checked; `other`: further fields the caller checks."""
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, fields + other, problems)
    values = {}
    for name in fields:
        values[name] = text_field(body, name, problems, required=name in required, max_length=MAX_COMMENT)
    problems.raise_if_any()
    return body, values


def _locked(conn, request, invoice_id):
    """The invoice row read inside the writer transaction (404 for other customers' keys)."""
    row = invoices_api.load_row(conn, invoice_id)
    request.check_customer(row[2])
    return row


def customer_view(conn, customer_id):
    """Who an invoice is addressed to, as shown on its PDF and e-mail."""
    row = conn.execute("SELECT id, name, email, billing_email, billing_address, timezone FROM customers"
                       " WHERE id = ?", (customer_id,)).fetchone()
    return {"id": row[0], "name": row[1], "email": row[2], "billing_email": row[3], "billing_address": row[4],
            "timezone": row[5]}


def bill_to(conn, invoice_id, customer_id):
    """The addressee kept at issue, or the customer as it is now (drafts)."""
    row = conn.execute("SELECT bill_to FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
    return jsonutil.decode(row[0]) if row and row[0] else customer_view(conn, customer_id)


def _customer(conn, customer_id):
    return conn.execute("SELECT requires_approval, net_terms_days, csm_user_id, billing_email, email"
                        " FROM customers WHERE id = ?", (customer_id,)).fetchone()


# -- issuing --------------------------------------------------------------------

def issue(app, conn, invoice_id, actor, action="issue", comment=None):
    """Issue a draft or an approved invoice (inside the caller's transaction):
    number, dates, credits in issue order, webhooks and the e-mail."""
    row = invoices_api.load_row(conn, invoice_id)
    from_status = row[4]
    customer = _customer(conn, row[2])
    number = NUMBER_FORMAT.format(conn.execute(
        "UPDATE counters SET value = value + 1 WHERE name = 'invoice_number' RETURNING value").fetchone()[0])
    issued_at = now_micros()
    due_at = times.to_micros(times.from_micros(issued_at) + timedelta(days=customer[1]))
    total = row[12]
    credits = max(0, min(coupons_api.balance(conn, row[2]), total))
    if credits:
        coupons_api.add_entry(conn, row[2], -credits, row[6], f"Applied to {number}", actor_label(actor),
                              invoice_id, issued_at)
    if total < 0:  # a negative invoice owes nothing and leaves the difference as credit
        coupons_api.add_entry(conn, row[2], -total, row[6], f"Negative total of {number}", actor_label(actor),
                              invoice_id, issued_at)
    amount_due = max(0, total - credits)
    status, payment_status = ("paid", "paid") if amount_due == 0 else ("issued", "unpaid")
    bill_to = jsonutil.encode(customer_view(conn, row[2]))
    conn.execute("UPDATE invoices SET number = ?, status = ?, payment_status = ?, credits_applied = ?,"
                 " amount_due = ?, issued_at = ?, due_at = ?, hold = 0, bill_to = ?, updated_at = ? WHERE id = ?",
                 (number, status, payment_status, credits, amount_due, issued_at, due_at, bill_to, issued_at,
                  invoice_id))
    record(conn, invoice_id, action, from_status, "issued", actor, comment)
    sessions_api.mark_billed(conn, invoice_id)
    app.lateness.invoiced(row[2], row[8])
    view = invoices_api.load_view(conn, invoice_id)
    webhooks.enqueue(conn, "invoice.issued", {"invoice": view})
    if status == "paid":
        record(conn, invoice_id, "paid", "issued", "paid", actor, "nothing due")
        webhooks.enqueue(conn, "invoice.paid", {"invoice": view})
    recipient = customer[3] or customer[4]
    conn.execute("INSERT INTO emails (invoice_id, recipient, status, next_attempt_at, created_at)"
                 " VALUES (?, ?, 'pending', ?, ?)", (invoice_id, recipient, issued_at, issued_at))
    return view


def actor_label(actor):
    return (actor or System).label


def finalize_row(app, conn, invoice_id, actor, comment=None, automatic=False):
    """draft → issued (or → pending_approval when the customer requires approval)."""
    row = invoices_api.load_row(conn, invoice_id)
    if row[4] != "draft":
        raise _conflict(invoice_id, row[4], "finalized")
    if automatic and row[21]:
        raise Conflict(f"Invoice {invoice_id} is on hold; only a person finalizes it.")
    invoices_api.refresh_draft(app, conn, invoice_id)
    if _customer(conn, row[2])[0]:
        conn.execute("UPDATE invoices SET status = 'pending_approval', hold = 0, updated_at = ? WHERE id = ?",
                     (now_micros(), invoice_id))
        record(conn, invoice_id, "submit_for_approval" if automatic else "finalize", "draft", "pending_approval",
               actor, comment)
        app.lateness.invoiced(row[2], row[8])  # its lines are frozen for the approver: later events are late
        sessions_api.mark_billed(conn, invoice_id)  # and its sessions are taken
        return invoices_api.load_view(conn, invoice_id)
    return issue(app, conn, invoice_id, actor, "issue" if automatic else "finalize", comment)


def _act(request, invoice_id, work, fields=("comment",), required=(), event=None):
    """One lifecycle request: read the body, lock the invoice in the writer's
    transaction, `work(app, conn, row, values)` → the invoice as JSON, then
    wake the dispatcher and tell the live streams."""
    _, values = _body(request, fields, required)
    invoice_id = path_int(invoice_id, "Invoice")
    app = request.app
    with app.db.transaction() as conn:
        view = work(app, conn, _locked(conn, request, invoice_id), values)
    app.notify()
    app.publish(event or f"invoice.{view['status']}", {"invoice": view})
    return view


def finalize(request, invoice_id):
    return _act(request, invoice_id, lambda app, conn, row, values:
                finalize_row(app, conn, row[0], request.actor, values["comment"]))


def _check_approver(conn, request, customer_id):
    actor = request.actor
    if actor.role in auth.APPROVERS:
        return
    csm = _customer(conn, customer_id)[2]
    if csm is not None and actor.user_id == csm and actor.role != auth.FINANCE:  # who issues does not approve
        return
    raise Forbidden("Only customer success, sales, an admin or the customer's CSM (not finance) may approve or "
                    "reject invoices.")


def approve(request, invoice_id):
    def work(app, conn, row, values):
        _check_approver(conn, request, row[2])
        if row[4] != "pending_approval":
            raise _conflict(row[0], row[4], "approved")
        return issue(app, conn, row[0], request.actor, "approve", values["comment"])
    return _act(request, invoice_id, work)


def reject(request, invoice_id):
    def work(app, conn, row, values):
        _check_approver(conn, request, row[2])
        if row[4] != "pending_approval":
            raise _conflict(row[0], row[4], "rejected")
        conn.execute("UPDATE invoices SET status = 'draft', hold = 1, updated_at = ? WHERE id = ?",
                     (now_micros(), row[0]))
        sessions_api.unmark_billed(conn, row[0])
        record(conn, row[0], "reject", "pending_approval", "draft", request.actor, values["comment"])
        invoices_api.refresh_draft(app, conn, row[0])
        return invoices_api.load_view(conn, row[0])
    return _act(request, invoice_id, work, required=("comment",), event="invoice.rejected")


# -- payments -------------------------------------------------------------------

PAYMENT_COLUMNS = "id, invoice_id, amount, currency, method, reference, created_by, created_at"


def payment_view(row):
    return {"id": row[0], "invoice_id": row[1], "amount": money.format_minor(row[2], row[3]), "currency": row[3],
            "method": row[4], "reference": row[5], "created_by": row[6], "created_at": times.format_micros(row[7])}


def pay(request, invoice_id):
    body, values = _body(request, ("method", "reference"), other=("amount",))
    invoice_id = path_int(invoice_id, "Invoice")
    app = request.app
    with app.db.transaction() as conn:
        row = _locked(conn, request, invoice_id)
        problems = FieldErrors()
        try:
            amount = money.parse_amount(body.get("amount"), row[6])
        except money.MoneyError as exc:
            problems.add("amount", str(exc))
            amount = None
        if amount is not None and amount <= 0:
            problems.add("amount", "must be more than zero")
        problems.raise_if_any()
        payment, view = record_payment(conn, invoice_id, amount, values["method"], values["reference"],
                                       request.actor)
    app.notify()
    app.publish("invoice.paid" if view["status"] == "paid" else "invoice.payment", {"invoice": view})
    return created({"payment": payment, "invoice": view})


def record_payment(conn, invoice_id, amount, method, reference, actor):
    """Take a payment (minor units) on an issued invoice; returns (payment, invoice) as JSON."""
    row = invoices_api.load_row(conn, invoice_id)
    if row[4] != "issued":
        raise _conflict(invoice_id, row[4], "paid (only an issued invoice takes payments)")
    open_amount = row[14] - row[15]
    if amount > open_amount:
        raise Conflict(f"The payment of {money.format_minor(amount, row[6])} {row[6]} is more than the "
                       f"{money.format_minor(open_amount, row[6])} {row[6]} still due on invoice {invoice_id}.")
    stamp = now_micros()
    cur = conn.execute("INSERT INTO payments (invoice_id, amount, currency, method, reference, created_by,"
                       " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (invoice_id, amount, row[6], method, reference, actor_label(actor), stamp))
    paid = row[15] + amount
    payment_status = "paid" if paid == row[14] else "partially_paid"
    status = "paid" if payment_status == "paid" else "issued"
    conn.execute("UPDATE invoices SET amount_paid = ?, payment_status = ?, status = ?, updated_at = ?"
                 " WHERE id = ?", (paid, payment_status, status, stamp, invoice_id))
    note = f"{money.format_minor(amount, row[6])} {row[6]}" + (f" by {method}" if method else "")
    record(conn, invoice_id, "payment", row[4], status, actor, note)
    view = invoices_api.load_view(conn, invoice_id)
    if status == "paid":
        webhooks.enqueue(conn, "invoice.paid", {"invoice": view})
    payment = payment_view(conn.execute(f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?",
                                        (cur.lastrowid,)).fetchone())
    return payment, view


def list_payments(request, invoice_id):
    invoice_id = path_int(invoice_id, "Invoice")
    with request.app.db.reader() as conn:
        _locked(conn, request, invoice_id)
        rows = conn.execute(f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE invoice_id = ? ORDER BY id",
                            (invoice_id,)).fetchall()
    return {"data": [payment_view(r) for r in rows]}


# -- void and reissue -----------------------------------------------------------

def void(request, invoice_id):
    return _act(request, invoice_id, lambda app, conn, row, values:
                void_row(conn, row[0], values["reason"], request.actor),
                fields=("reason",), required=("reason",), event="invoice.voided")


def void_row(conn, invoice_id, reason, actor):
    row = invoices_api.load_row(conn, invoice_id)
    # a payment was taken: correct it with a credit instead; `paid` with nothing paid
    # (settled by credits, or nothing due) can still be voided
    if row[4] == "void" or row[15] > 0:
        what = "voided once paid (correct it with a credit)" if row[15] > 0 else "voided"
        raise _conflict(invoice_id, row[4], what)
    stamp = now_micros()
    given = conn.execute("SELECT coalesce(sum(amount), 0) FROM credit_entries WHERE invoice_id = ?",
                         (invoice_id,)).fetchone()[0]
    if given > 0 and given > coupons_api.balance(conn, row[2]):
        raise Conflict(f"Invoice {invoice_id} left {money.format_minor(given, row[6])} {row[6]} of credit that has "
                       "been spent since; it cannot be voided.")
    if given:  # credits it used come back; credit it left (negative total) is taken back
        coupons_api.add_entry(conn, row[2], -given, row[6], f"Invoice {row[1] or invoice_id} voided",
                              actor_label(actor), invoice_id, stamp)
    conn.execute("UPDATE invoices SET status = 'void', void_reason = ?, voided_at = ?, hold = 0, updated_at = ?"
                 " WHERE id = ?", (reason, stamp, stamp, invoice_id))
    sessions_api.unmark_billed(conn, invoice_id)
    # an e-mail not yet sent would announce an invoice that no longer stands
    conn.execute("UPDATE emails SET status = 'canceled', next_attempt_at = NULL WHERE invoice_id = ?"
                 " AND status = 'pending'", (invoice_id,))
    record(conn, invoice_id, "void", row[4], "void", actor, reason)
    view = invoices_api.load_view(conn, invoice_id)
    webhooks.enqueue(conn, "invoice.voided", {"invoice": view})
    return view


def reissue(request, invoice_id):
    """A new draft (next revision) for the period of a void invoice."""
    return created(_act(request, invoice_id, lambda app, conn, row, values:
                        reissue_row(app, conn, row[0], request.actor, values["comment"]), event="invoice.created"))


def reissue_row(app, conn, invoice_id, actor, comment=None):
    row = invoices_api.load_row(conn, invoice_id)
    if row[4] != "void":
        raise _conflict(invoice_id, row[4], "reissued (only a void invoice can be)")
    same_period = ("customer_id = ? AND period_start_date = ? AND coalesce(subscription_id, 0) = coalesce(?, 0)"
                   " AND kind = ?")
    newer = conn.execute(f"SELECT id, status FROM invoices WHERE {same_period} AND revision > ? AND status != 'void'",
                         (row[2], row[19], row[3], row[25], row[24])).fetchone()
    if newer is not None:
        raise Conflict(f"Invoice {newer[0]} ({newer[1].replace('_', ' ')}) already replaces invoice {invoice_id}.")
    revision = conn.execute(f"SELECT max(revision) FROM invoices WHERE {same_period}",
                            (row[2], row[19], row[3], row[25])).fetchone()[0] + 1
    stamp = now_micros()
    cur = conn.execute(
        "INSERT INTO invoices (customer_id, subscription_id, status, currency, period_start, period_end,"
        " period_start_date, period_end_date, subtotal, discount, tax, total, credits_applied, amount_due,"
        " created_at, updated_at, revision, kind, hold) SELECT customer_id, subscription_id, 'draft', currency,"
        " period_start, period_end, period_start_date, period_end_date, 0, 0, 0, 0, 0, 0, ?, ?, ?, kind,"
        " kind != 'adjustments' FROM invoices WHERE id = ?", (stamp, stamp, revision, invoice_id))
    new_id = cur.lastrowid
    invoices_api.refresh_draft(app, conn, new_id)
    record(conn, new_id, "reissue", None, "draft", actor, comment or f"replaces invoice {row[1] or invoice_id}")
    record(conn, invoice_id, "reissued", "void", "void", actor, f"replaced by invoice {new_id}")
    view = invoices_api.load_view(conn, new_id)
    webhooks.enqueue(conn, "invoice.created", {"invoice": view})
    return view


# -- history --------------------------------------------------------------------

def actions(request, invoice_id):
    invoice_id = path_int(invoice_id, "Invoice")
    with request.app.db.reader() as conn:
        _locked(conn, request, invoice_id)
        rows = conn.execute("SELECT id, action, from_status, to_status, actor, actor_name, role, comment, created_at"
                            " FROM invoice_actions WHERE invoice_id = ? ORDER BY id", (invoice_id,)).fetchall()
    return {"data": [{"id": r[0], "action": r[1], "from_status": r[2], "to_status": r[3], "actor": r[4],
                      "actor_name": r[5], "role": r[6], "comment": r[7], "at": times.format_micros(r[8])}
                     for r in rows]}
