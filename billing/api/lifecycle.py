"""The invoice lifecycle (§7): finalize, approve, reject, issue, payments, void
and reissue, each recorded in the invoice's history.

    draft ──finalize──▶ issued ──payments──▶ paid
      │  └─(requires_approval)─▶ pending_approval ──approve──▶ issued
      │                              └──reject──▶ draft (on hold)
      └──void◀── draft, pending_approval, issued with nothing paid ──reissue──▶ new draft

Whether a draft needs approval is fixed on the invoice when it is drafted
(from its customer's setting then; turning the setting on later also marks
the open drafts), so no later change of the customer lets it skip approval.
Who approves is checked as they are at that moment: a user's current role
(read in the approving transaction), never a cached one.

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
from ..store.db import named, scalar
from .responses import created
from . import auth
from . import coupons as coupons_api
from . import drafts
from . import invoice_rows
from . import sessions as sessions_api
from . import webhooks
from .common import check_unknown_fields, now_micros, path_int, text_field
from .history import System, audit_invoice, audit_payment, record, summary

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
    """The invoice row read inside the writer transaction (404 for other customers' keys, as for a missing one)."""
    return invoice_rows.load_for(conn, request, invoice_id)


def customer_view(conn, customer_id):
    """Who an invoice is addressed to, as shown on its PDF and e-mail."""
    return dict(named(conn, "SELECT id, name, email, billing_email, billing_address, timezone FROM customers"
                            " WHERE id = ?", (customer_id,)).fetchone())


def bill_to(conn, invoice_id, customer_id):
    """The addressee kept at issue, or the customer as it is now (drafts)."""
    kept = scalar(conn, "SELECT bill_to FROM invoices WHERE id = ?", (invoice_id,))
    return jsonutil.decode(kept) if kept else customer_view(conn, customer_id)


def _customer(conn, customer_id):
    return named(conn, "SELECT net_terms_days, billing_email, email FROM customers WHERE id = ?",
                 (customer_id,)).fetchone()


def actor_label(actor):
    return (actor or System).label


# -- issuing --------------------------------------------------------------------

def issue(app, conn, invoice_id, actor, action="issue", comment=None, request_id=None):
    """Issue a draft or an approved invoice (inside the caller's transaction):
    number, dates, credits in issue order, webhooks and the e-mail."""
    row = invoice_rows.load_row(conn, invoice_id)
    before = summary(invoice_rows.view(row))
    customer = _customer(conn, row["customer_id"])
    number = NUMBER_FORMAT.format(scalar(
        conn, "UPDATE counters SET value = value + 1 WHERE name = 'invoice_number' RETURNING value"))
    issued_at = now_micros()
    due_at = times.to_micros(times.from_micros(issued_at) + timedelta(days=customer["net_terms_days"]))
    credits = _take_credits(conn, row, number, actor, issued_at)
    amount_due = max(0, row["total"] - credits)
    status, payment_status = ("paid", "paid") if amount_due == 0 else ("issued", "unpaid")
    bill_to = jsonutil.encode(customer_view(conn, row["customer_id"]))
    conn.execute("UPDATE invoices SET number = ?, status = ?, payment_status = ?, credits_applied = ?,"
                 " amount_due = ?, issued_at = ?, due_at = ?, hold = 0, bill_to = ?, updated_at = ? WHERE id = ?",
                 (number, status, payment_status, credits, amount_due, issued_at, due_at, bill_to, issued_at,
                  invoice_id))
    record(conn, invoice_id, action, row["status"], "issued", actor, comment)
    sessions_api.mark_billed(conn, invoice_id)
    app.lateness.invoiced(row["customer_id"], row["period_end"])
    view = invoice_rows.load_view(conn, invoice_id)
    webhooks.enqueue(conn, "invoice.issued", {"invoice": view})
    if status == "paid":
        record(conn, invoice_id, "paid", "issued", "paid", actor, "nothing due")
        webhooks.enqueue(conn, "invoice.paid", {"invoice": view})
    recipient = customer["billing_email"] or customer["email"]
    conn.execute("INSERT INTO emails (invoice_id, recipient, status, next_attempt_at, created_at)"
                 " VALUES (?, ?, 'pending', ?, ?)", (invoice_id, recipient, issued_at, issued_at))
    audit_invoice(conn, actor, action, invoice_id, before, summary(view), request_id)
    return view


def _take_credits(conn, row, number, actor, at):
    """The customer's credits an invoice being issued uses (in minor units,
    taken from the balance); a negative total leaves its difference as credit."""
    customer_id, currency, total = row["customer_id"], row["currency"], row["total"]
    credits = max(0, min(coupons_api.balance(conn, customer_id), total))
    if credits:
        coupons_api.add_entry(conn, customer_id, -credits, currency, f"Applied to {number}", actor_label(actor),
                              row["id"], at)
    if total < 0:  # a negative invoice owes nothing and leaves the difference as credit
        coupons_api.add_entry(conn, customer_id, -total, currency, f"Negative total of {number}", actor_label(actor),
                              row["id"], at)
    return credits


def finalize_row(app, conn, invoice_id, actor, comment=None, automatic=False, request_id=None):
    """draft → issued (or → pending_approval when the invoice requires approval),
    re-rated first: it issues the figures a read of the draft shows."""
    row = invoice_rows.load_row(conn, invoice_id)
    if row["status"] != "draft":
        raise _conflict(invoice_id, row["status"], "finalized")
    if automatic and row["hold"]:
        raise Conflict(f"Invoice {invoice_id} is on hold; only a person finalizes it.")
    drafts.refresh_draft(app, conn, invoice_id)
    action = "submit_for_approval" if automatic else "finalize"
    if row["requires_approval"]:  # fixed on the invoice when drafted, whatever the customer says now
        before = summary(invoice_rows.view(invoice_rows.load_row(conn, invoice_id)))
        conn.execute("UPDATE invoices SET status = 'pending_approval', hold = 0, updated_at = ? WHERE id = ?",
                     (now_micros(), invoice_id))
        record(conn, invoice_id, action, "draft", "pending_approval", actor, comment)
        # its lines are frozen for the approver: later events are late
        app.lateness.invoiced(row["customer_id"], row["period_end"])
        sessions_api.mark_billed(conn, invoice_id)  # and its sessions are taken
        view = invoice_rows.load_view(conn, invoice_id)
        audit_invoice(conn, actor, action, invoice_id, before, summary(view), request_id)
        return view
    return issue(app, conn, invoice_id, actor, "issue" if automatic else "finalize", comment, request_id)


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
                finalize_row(app, conn, row["id"], request.actor, values["comment"], request_id=request.request_id))


def current_role(conn, actor):
    """The actor's role as it is now, read in the caller's transaction (None
    for a disabled user or a revoked key): a role changed a moment ago counts."""
    if actor.kind == "user":
        found = named(conn, "SELECT role FROM users WHERE id = ? AND disabled = 0", (actor.id,)).fetchone()
    else:
        found = named(conn, "SELECT role FROM api_keys WHERE id = ? AND revoked_at IS NULL AND customer_id IS NULL",
                      (actor.id,)).fetchone()
    return None if found is None else found["role"]


def _check_approver(conn, actor):
    """Customer success, sales and admins approve, as they are at this moment
    (a customer's CSM is one of them: a CSM demoted or disabled no longer
    approves); finance issues, so it never approves."""
    if current_role(conn, actor) not in auth.APPROVERS:
        raise Forbidden("Only customer success, sales or an admin may approve or reject invoices.")


def _pending_approval(conn, request, row, action):
    """Check that the caller may approve and the invoice awaits approval."""
    _check_approver(conn, request.actor)
    if row["status"] != "pending_approval":
        raise _conflict(row["id"], row["status"], action)


def approve(request, invoice_id):
    def work(app, conn, row, values):
        _pending_approval(conn, request, row, "approved")
        return issue(app, conn, row["id"], request.actor, "approve", values["comment"], request.request_id)
    return _act(request, invoice_id, work)


def reject(request, invoice_id):
    def work(app, conn, row, values):
        _pending_approval(conn, request, row, "rejected")
        invoice_id = row["id"]
        conn.execute("UPDATE invoices SET status = 'draft', hold = 1, updated_at = ? WHERE id = ?",
                     (now_micros(), invoice_id))
        sessions_api.unmark_billed(conn, invoice_id)
        record(conn, invoice_id, "reject", "pending_approval", "draft", request.actor, values["comment"])
        drafts.refresh_draft(app, conn, invoice_id)
        view = invoice_rows.load_view(conn, invoice_id)
        audit_invoice(conn, request.actor, "reject", invoice_id, summary(invoice_rows.view(row)), summary(view),
                      request.request_id)
        return view
    return _act(request, invoice_id, work, required=("comment",), event="invoice.rejected")


# -- payments -------------------------------------------------------------------

PAYMENT_COLUMNS = "id, invoice_id, amount, currency, method, reference, created_by, created_at"


def payment_view(row):
    return {"id": row["id"], "invoice_id": row["invoice_id"], "amount": money.format_minor(row["amount"], row["currency"]),
            "currency": row["currency"], "method": row["method"], "reference": row["reference"],
            "created_by": row["created_by"], "created_at": times.format_micros(row["created_at"])}


def pay(request, invoice_id):
    body, values = _body(request, ("method", "reference"), other=("amount",))
    invoice_id = path_int(invoice_id, "Invoice")
    app = request.app
    with app.db.transaction() as conn:
        row = _locked(conn, request, invoice_id)
        amount = _payment_amount(body, row["currency"])
        payment, view = record_payment(conn, invoice_id, amount, values["method"], values["reference"],
                                       request.actor, request.request_id)
    app.notify()
    app.publish("invoice.paid" if view["status"] == "paid" else "invoice.payment", {"invoice": view})
    return created({"payment": payment, "invoice": view})


def _payment_amount(body, currency):
    """The body's `amount` in minor units of `currency` (more than zero)."""
    problems = FieldErrors()
    try:
        amount = money.parse_amount(body.get("amount"), currency)
    except money.MoneyError as exc:
        problems.add("amount", str(exc))
        amount = None
    if amount is not None and amount <= 0:
        problems.add("amount", "must be more than zero")
    problems.raise_if_any()
    return amount


def record_payment(conn, invoice_id, amount, method, reference, actor, request_id=None):
    """Take a payment (minor units) on an issued invoice; returns (payment, invoice) as JSON."""
    row = invoice_rows.load_row(conn, invoice_id)
    if row["status"] != "issued":
        raise _conflict(invoice_id, row["status"], "paid (only an issued invoice takes payments)")
    currency = row["currency"]
    open_amount = row["amount_due"] - row["amount_paid"]
    if amount > open_amount:
        raise Conflict(f"The payment of {money.format_minor(amount, currency)} {currency} is more than the "
                       f"{money.format_minor(open_amount, currency)} {currency} still due on invoice {invoice_id}.")
    stamp = now_micros()
    cur = conn.execute("INSERT INTO payments (invoice_id, amount, currency, method, reference, created_by,"
                       " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (invoice_id, amount, currency, method, reference, actor_label(actor), stamp))
    paid = row["amount_paid"] + amount
    payment_status = "paid" if paid == row["amount_due"] else "partially_paid"
    status = "paid" if payment_status == "paid" else "issued"
    conn.execute("UPDATE invoices SET amount_paid = ?, payment_status = ?, status = ?, updated_at = ?"
                 " WHERE id = ?", (paid, payment_status, status, stamp, invoice_id))
    note = f"{money.format_minor(amount, currency)} {currency}" + (f" by {method}" if method else "")
    record(conn, invoice_id, "payment", row["status"], status, actor, note)
    view = invoice_rows.load_view(conn, invoice_id)
    if status == "paid":
        webhooks.enqueue(conn, "invoice.paid", {"invoice": view})
    payment = payment_view(named(conn, f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?",
                                 (cur.lastrowid,)).fetchone())
    audit_payment(conn, actor, payment, summary(invoice_rows.view(row)), summary(view), request_id)
    return payment, view


def list_payments(request, invoice_id):
    invoice_id = path_int(invoice_id, "Invoice")
    with request.app.db.reader() as conn:
        _locked(conn, request, invoice_id)
        rows = named(conn, f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE invoice_id = ? ORDER BY id",
                     (invoice_id,)).fetchall()
    payments = [payment_view(r) for r in rows]
    if request.customer_scope is not None:  # who on the staff recorded it is not the customer's business
        for payment in payments:
            del payment["created_by"]
    return {"data": payments}


# -- void and reissue -----------------------------------------------------------

def void(request, invoice_id):
    return _act(request, invoice_id, lambda app, conn, row, values:
                void_row(conn, row["id"], values["reason"], request.actor, request.request_id),
                fields=("reason",), required=("reason",), event="invoice.voided")


def void_row(conn, invoice_id, reason, actor, request_id=None):
    row = invoice_rows.load_row(conn, invoice_id)
    # a payment was taken: correct it with a credit instead; `paid` with nothing paid
    # (settled by credits, or nothing due) can still be voided
    if row["status"] == "void" or row["amount_paid"] > 0:
        what = "voided once paid (correct it with a credit)" if row["amount_paid"] > 0 else "voided"
        raise _conflict(invoice_id, row["status"], what)
    stamp = now_micros()
    _give_back_credits(conn, row, actor, stamp)
    conn.execute("UPDATE invoices SET status = 'void', void_reason = ?, voided_at = ?, hold = 0, updated_at = ?"
                 " WHERE id = ?", (reason, stamp, stamp, invoice_id))
    sessions_api.unmark_billed(conn, invoice_id)
    # an e-mail not yet sent would announce an invoice that no longer stands
    conn.execute("UPDATE emails SET status = 'canceled', next_attempt_at = NULL WHERE invoice_id = ?"
                 " AND status = 'pending'", (invoice_id,))
    record(conn, invoice_id, "void", row["status"], "void", actor, reason)
    view = invoice_rows.load_view(conn, invoice_id)
    webhooks.enqueue(conn, "invoice.voided", {"invoice": view})
    audit_invoice(conn, actor, "void", invoice_id, summary(invoice_rows.view(row)),
                  summary(view, void_reason=reason), request_id)
    return view


def _give_back_credits(conn, row, actor, at):
    """Credits the invoice used come back; credit it left (negative total) is
    taken back — Conflict when that credit has been spent since."""
    invoice_id, customer_id, currency = row["id"], row["customer_id"], row["currency"]
    given = scalar(conn, "SELECT coalesce(sum(amount), 0) FROM credit_entries WHERE invoice_id = ?", (invoice_id,))
    if given > 0 and given > coupons_api.balance(conn, customer_id):
        raise Conflict(f"Invoice {invoice_id} left {money.format_minor(given, currency)} {currency} of credit that "
                       "has been spent since; it cannot be voided.")
    if given:
        coupons_api.add_entry(conn, customer_id, -given, currency, f"Invoice {row['number'] or invoice_id} voided",
                              actor_label(actor), invoice_id, at)


def reissue(request, invoice_id):
    """A new draft (next revision) for the period of a void invoice."""
    return created(_act(request, invoice_id, lambda app, conn, row, values:
                        reissue_row(app, conn, row["id"], request.actor, values["comment"], request.request_id),
                        event="invoice.created"))


SAME_PERIOD = ("customer_id = ? AND period_start_date = ? AND coalesce(subscription_id, 0) = coalesce(?, 0)"
               " AND kind = ?")


def reissue_row(app, conn, invoice_id, actor, comment=None, request_id=None):
    """A new draft for a void invoice's period; it needs approval when the
    void one did or its customer does now."""
    row = invoice_rows.load_row(conn, invoice_id)
    if row["status"] != "void":
        raise _conflict(invoice_id, row["status"], "reissued (only a void invoice can be)")
    same_period = (row["customer_id"], row["period_start_date"], row["subscription_id"], row["kind"])
    newer = named(conn, f"SELECT id, status FROM invoices WHERE {SAME_PERIOD} AND revision > ? AND status != 'void'",
                  (*same_period, row["revision"])).fetchone()
    if newer is not None:
        raise Conflict(f"Invoice {newer['id']} ({newer['status'].replace('_', ' ')}) already replaces invoice"
                       f" {invoice_id}.")
    revision = scalar(conn, f"SELECT max(revision) FROM invoices WHERE {SAME_PERIOD}", same_period) + 1
    stamp = now_micros()
    cur = conn.execute(
        "INSERT INTO invoices (customer_id, subscription_id, status, currency, period_start, period_end,"
        " period_start_date, period_end_date, subtotal, discount, tax, total, credits_applied, amount_due,"
        " created_at, updated_at, revision, kind, hold, requires_approval) SELECT i.customer_id, i.subscription_id,"
        " 'draft', i.currency, i.period_start, i.period_end, i.period_start_date, i.period_end_date, 0, 0, 0, 0, 0,"
        " 0, ?, ?, ?, i.kind, i.kind != 'adjustments', max(i.requires_approval, c.requires_approval)"
        " FROM invoices i JOIN customers c ON c.id = i.customer_id WHERE i.id = ?", (stamp, stamp, revision, invoice_id))
    new_id = cur.lastrowid
    drafts.refresh_draft(app, conn, new_id)
    record(conn, new_id, "reissue", None, "draft", actor, comment or f"replaces invoice {row['number'] or invoice_id}")
    record(conn, invoice_id, "reissued", "void", "void", actor, f"replaced by invoice {new_id}")
    view = invoice_rows.load_view(conn, new_id)
    webhooks.enqueue(conn, "invoice.created", {"invoice": view})
    old = summary(invoice_rows.view(row))
    audit_invoice(conn, actor, "reissue", invoice_id, old, old | {"reissued_as": new_id}, request_id)
    audit_invoice(conn, actor, "create", new_id, None, summary(view, replaces=invoice_id), request_id)
    return view


# -- history --------------------------------------------------------------------

ACTION_COLUMNS = "id, action, from_status, to_status, actor, actor_name, role, comment, created_at"


def actions(request, invoice_id):
    invoice_id = path_int(invoice_id, "Invoice")
    with request.app.db.reader() as conn:
        _locked(conn, request, invoice_id)
        rows = named(conn, f"SELECT {ACTION_COLUMNS} FROM invoice_actions WHERE invoice_id = ? ORDER BY id",
                     (invoice_id,)).fetchall()
    return {"data": [_action_view(row) for row in rows]}


def _action_view(row):
    return {"id": row["id"], "action": row["action"], "from_status": row["from_status"],
            "to_status": row["to_status"], "actor": row["actor"], "actor_name": row["actor_name"],
            "role": row["role"], "comment": row["comment"], "at": times.format_micros(row["created_at"])}
