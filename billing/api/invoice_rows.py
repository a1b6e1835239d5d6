"""An invoice as stored (its row and its lines) and as JSON (§7)."""

from .. import jsonutil
from ..domain import money, times
from ..errors import NotFound
from ..store.db import named
from .common import now_micros, one_or_404

COLUMNS = ("id, number, customer_id, subscription_id, status, payment_status, currency, period_start,"
           " period_end, subtotal, discount, tax, total, credits_applied, amount_due, amount_paid,"
           " issued_at, due_at, created_at, period_start_date, period_end_date, hold, void_reason, voided_at,"
           " revision, kind, requires_approval")
LINE_COLUMNS = "type, description, meter, quantity, unit_price, amount, tiers"
AMOUNTS = ("subtotal", "discount", "tax", "total", "credits_applied", "amount_due", "amount_paid")
OVERDUE_SQL = "(due_at IS NOT NULL AND due_at < ? AND payment_status != 'paid' AND status = 'issued')"


def load_row(conn, invoice_id):
    """The invoice's row (sqlite3.Row of COLUMNS), or NotFound."""
    return one_or_404(conn, f"SELECT {COLUMNS} FROM invoices WHERE id = ?", (invoice_id,),
                      f"Invoice {invoice_id} not found.")


def load_for(conn, request, invoice_id):
    """The invoice's row as the caller may read it: NotFound, with the same
    message, when it is missing or another customer's."""
    row = named(conn, f"SELECT {COLUMNS} FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
    if row is None or request.customer_scope not in (None, row["customer_id"]):
        raise NotFound(f"Invoice {invoice_id} not found.")
    return row


def load_lines(conn, invoice_id):
    return named(conn, f"SELECT {LINE_COLUMNS} FROM invoice_lines WHERE invoice_id = ? ORDER BY position",
                 (invoice_id,)).fetchall()


def load_view(conn, invoice_id):
    return view(load_row(conn, invoice_id), load_lines(conn, invoice_id))


def is_overdue(status, payment_status, due_at, now=None):
    return bool(due_at and status in ("issued", "paid") and payment_status != "paid"
                and due_at < (now if now is not None else now_micros()))


def view(row, lines=None):
    """An invoice row (of COLUMNS) as JSON; with its lines (of LINE_COLUMNS) when given."""
    currency, status = row["currency"], row["status"]
    invoice = {"id": row["id"], "number": row["number"], "customer_id": row["customer_id"],
               "subscription_id": row["subscription_id"], "status": status, "payment_status": row["payment_status"],
               "overdue": is_overdue(status, row["payment_status"], row["due_at"]), "currency": currency,
               "period_start": times.format_micros(row["period_start"]),
               "period_end": times.format_micros(row["period_end"]),
               "local_period": {"start": row["period_start_date"], "end": row["period_end_date"]}}
    for name in AMOUNTS:
        invoice[name] = money.format_minor(row[name], currency)
    balance = max(0, row["amount_due"] - row["amount_paid"]) if status != "void" else 0
    invoice.update({"balance_due": money.format_minor(balance, currency),
                    "issued_at": times.format_micros(row["issued_at"]), "due_at": times.format_micros(row["due_at"]),
                    "created_at": times.format_micros(row["created_at"]), "revision": row["revision"],
                    "kind": row["kind"], "on_hold": bool(row["hold"]), "void_reason": row["void_reason"],
                    "voided_at": times.format_micros(row["voided_at"]),
                    "requires_approval": bool(row["requires_approval"])})
    if lines is not None:
        invoice["lines"] = [line_view(line, currency) for line in lines]
    return invoice


def line_view(row, currency):
    quantity = row["quantity"]
    return {"type": row["type"], "description": row["description"], "meter": row["meter"],
            "quantity": None if quantity is None else jsonutil.decode(quantity), "unit_price": row["unit_price"],
            "amount": money.format_minor(row["amount"], currency), "tiers": jsonutil.decode(row["tiers"])}
