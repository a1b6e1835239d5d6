"""Late events (§4, §7): adjustments for periods whose invoice was issued.

An event whose period's invoice has left `draft` is stored with `late = 1`.
Per (period, meter) the adjustment is

    rating of all the period's events (minimum true-up included)
    − (what the period's invoice billed + adjustments already billed for it)

so a second late batch only bills what the first did not, and a late event
that crosses a tier boundary is priced by the tiers, not by the unit. The
adjustments of a customer ride on one draft (its oldest draft not on hold),
where they are discounted and taxed; adjustments already billed count from
the moment their invoice leaves `draft`.
"""

import threading
from datetime import timedelta

from .. import jsonutil
from ..domain import times
from . import customers as customers_api
from . import plans as plans_api
from . import subscriptions as subscriptions_api

BILLED = ("pending_approval", "issued", "paid")   # invoices whose lines are final (or frozen for approval)
SOURCES = ("issued", "paid")                       # periods that can receive late events


class Lateness:
    """Per customer, the end of the latest period whose invoice left draft: an
    event stamped before it is late. Read and updated under the writer lock
    (ingest stores events there, issuing moves the mark there), so an event is
    never stored as on-time in a period that was just issued. It is a hint that
    finds candidate periods fast; the amounts are computed from the invoices."""

    def __init__(self, db):
        self._lock = threading.Lock()
        self.through = {}
        for customer_id, end in db.query(
                "SELECT customer_id, max(period_end) FROM invoices WHERE status IN ('pending_approval',"
                " 'issued', 'paid') GROUP BY customer_id"):
            self.through[customer_id] = end

    def invoiced(self, customer_id, period_end):
        with self._lock:
            if period_end > self.through.get(customer_id, 0):
                self.through[customer_id] = period_end


def late_customers(conn):
    return {r[0] for r in conn.execute("SELECT DISTINCT customer_id FROM events WHERE late = 1")}


def _quantity(text):
    return 0 if text is None else jsonutil.decode(text)


def _billed(conn, subscription_id, period, exclude_invoice_id):
    """{meter or None: [amount, quantity]} already billed as adjustments for the period."""
    billed = {}
    for meter, amount, quantity in conn.execute(
            "SELECT l.meter, l.amount, l.quantity FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id"
            " WHERE l.adjusts_subscription_id = ? AND l.adjusts_period = ? AND l.type = 'adjustment'"
            f" AND i.status IN {BILLED} AND i.id != ?", (subscription_id, period, exclude_invoice_id or 0)):
        entry = billed.setdefault(meter, [0, 0])
        entry[0] += amount
        entry[1] += _quantity(quantity)
    return billed


def _period_label(start_date, end_date):
    last = times.parse_date(end_date) - timedelta(days=1)
    return f"{start_date} – {last.isoformat()}"


def pending(app, conn, customer_id, exclude_invoice_id=None):
    """The adjustment lines the customer owes now (amounts in minor units)."""
    sources = conn.execute(
        "SELECT i.id, i.subscription_id, i.period_start_date, i.period_end_date FROM invoices i"
        f" WHERE i.customer_id = ? AND i.status IN {SOURCES} AND i.subscription_id IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM events e WHERE e.customer_id = i.customer_id AND e.late = 1"
        " AND e.ts >= i.period_start AND e.ts < i.period_end) ORDER BY i.period_start, i.id",
        (customer_id,)).fetchall()
    if not sources:
        return []
    customer = conn.execute(f"SELECT {customers_api.COLUMNS} FROM customers WHERE id = ?",
                            (customer_id,)).fetchone()
    names = {m.key: m.name for m in app.catalog.meters().values()}
    lines = []
    for invoice_id, subscription_id, start_date, end_date in sources:
        sub = conn.execute(f"SELECT {subscriptions_api.COLUMNS} FROM {subscriptions_api.FROM} WHERE s.id = ?",
                           (subscription_id,)).fetchone()
        plan = conn.execute(f"SELECT {plans_api.COLUMNS} FROM plans WHERE id = ?", (sub[12],)).fetchone()
        # every session of the period counts toward its minimum, wherever it was billed
        rated, _, _ = subscriptions_api.rate_period(app, conn, sub, plan, customer, times.parse_date(start_date),
                                                    billed_too=True)
        now = {}
        for line in rated.lines:
            if line["type"] == "usage":
                now[line["meter"]] = [line["amount"], line["quantity"]]
            elif line["type"] == "minimum":
                now[None] = [line["amount"], 0]
        billed = _billed(conn, subscription_id, start_date, exclude_invoice_id)
        for meter, amount, quantity, kind in conn.execute(
                "SELECT meter, amount, quantity, type FROM invoice_lines WHERE invoice_id = ?"
                " AND type IN ('usage', 'minimum')", (invoice_id,)):
            entry = billed.setdefault(meter if kind == "usage" else None, [0, 0])
            entry[0] += amount
            entry[1] += _quantity(quantity) if kind == "usage" else 0
        label = _period_label(start_date, end_date)
        for meter in sorted(set(now) | set(billed), key=lambda m: (m is None, m or "")):
            new_amount, new_quantity = now.get(meter, [0, 0])
            old_amount, old_quantity = billed.get(meter, [0, 0])
            if new_amount == old_amount and new_quantity == old_quantity:
                continue
            what = f"Late usage: {names.get(meter, meter)}" if meter else "Minimum commitment true-up"
            lines.append({"type": "adjustment", "description": f"{what}, {label}", "meter": meter,
                          "quantity": new_quantity - old_quantity if meter else None, "unit_price": None,
                          "amount": new_amount - old_amount, "tiers": [],
                          "adjusts_subscription_id": subscription_id, "adjusts_period": start_date})
    return lines


def corrections(conn, subscription_id, period, exclude_invoice_id):
    """For a reissued period: take back what earlier adjustments already billed
    for it, since the new draft rates all of its events again."""
    lines = []
    billed = _billed(conn, subscription_id, period, exclude_invoice_id)
    for meter in sorted(billed, key=lambda m: (m is None, m or "")):
        amount, quantity = billed[meter]
        if amount or quantity:
            lines.append({"type": "adjustment", "description": f"Already billed as adjustments: {meter or 'minimum'}",
                          "meter": meter, "quantity": -quantity if meter else None, "unit_price": None,
                          "amount": -amount, "tiers": [], "adjusts_subscription_id": subscription_id,
                          "adjusts_period": period})
    return lines
