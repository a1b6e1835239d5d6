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
from ..store.db import named
from . import rating_rows
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
        for row in db.rows("SELECT customer_id, max(period_end) AS period_end FROM invoices"
                           " WHERE status IN ('pending_approval', 'issued', 'paid') GROUP BY customer_id"):
            self.through[row["customer_id"]] = row["period_end"]

    def invoiced(self, customer_id, period_end):
        with self._lock:
            if period_end > self.through.get(customer_id, 0):
                self.through[customer_id] = period_end


def late_customers(conn):
    return {r["customer_id"] for r in named(conn, "SELECT DISTINCT customer_id FROM events WHERE late = 1")}


def _quantity(text):
    return 0 if text is None else jsonutil.decode(text)


def _add(amounts, key, amount, quantity):
    """Add to the (amount, quantity) kept under `key`."""
    old_amount, old_quantity = amounts.get(key, (0, 0))
    amounts[key] = (old_amount + amount, old_quantity + quantity)


def _billed(conn, subscription_id, period, exclude_invoice_id):
    """{meter or None: (amount, quantity)} already billed as adjustments for the period."""
    billed = {}
    for line in named(
            conn, "SELECT l.meter, l.amount, l.quantity FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id"
                  " WHERE l.adjusts_subscription_id = ? AND l.adjusts_period = ? AND l.type = 'adjustment'"
                  f" AND i.status IN {BILLED} AND i.id != ?", (subscription_id, period, exclude_invoice_id or 0)):
        _add(billed, line["meter"], line["amount"], _quantity(line["quantity"]))
    return billed


def _period_label(start_date, end_date):
    last = times.parse_date(end_date) - timedelta(days=1)
    return f"{start_date} – {last.isoformat()}"


def _meter_order(meter):
    """Meters by key, the minimum (None) last."""
    return (meter is None, meter or "")


def pending(app, conn, customer_id, exclude_invoice_id=None):
    """The adjustment lines the customer owes now (amounts in minor units)."""
    sources = named(
        conn, "SELECT i.id, i.subscription_id, i.period_start_date, i.period_end_date FROM invoices i"
              f" WHERE i.customer_id = ? AND i.status IN {SOURCES} AND i.subscription_id IS NOT NULL"
              " AND EXISTS (SELECT 1 FROM events e WHERE e.customer_id = i.customer_id AND e.late = 1"
              " AND e.ts >= i.period_start AND e.ts < i.period_end) ORDER BY i.period_start, i.id",
        (customer_id,)).fetchall()
    if not sources:
        return []
    customer = rating_rows.customer(conn, customer_id)
    names = {m.key: m.name for m in app.catalog.meters().values()}
    lines = []
    for source in sources:
        now = _rated_now(app, conn, customer, source)
        billed = _billed_before(conn, source, exclude_invoice_id)
        lines += _differences(now, billed, source, names)
    return lines


def _rated_now(app, conn, customer, source):
    """{meter or None (the minimum): (amount, quantity)} of a source period
    rated from all its events now."""
    sub = rating_rows.subscription(conn, source["subscription_id"])
    plan = rating_rows.plan(conn, sub["plan_id"])
    # every session of the period counts toward its minimum, wherever it was billed
    rated, _, _ = subscriptions_api.rate_period(app, conn, sub, plan, customer,
                                                times.parse_date(source["period_start_date"]), billed_too=True)
    now = {}
    for line in rated.lines:
        if line["type"] == "usage":
            now[line["meter"]] = (line["amount"], line["quantity"])
        elif line["type"] == "minimum":
            now[None] = (line["amount"], 0)
    return now


def _billed_before(conn, source, exclude_invoice_id):
    """{meter or None (the minimum): (amount, quantity)} billed for a source
    period so far: by its invoice and by adjustments."""
    billed = _billed(conn, source["subscription_id"], source["period_start_date"], exclude_invoice_id)
    for line in named(conn, "SELECT meter, amount, quantity, type FROM invoice_lines WHERE invoice_id = ?"
                            " AND type IN ('usage', 'minimum')", (source["id"],)):
        if line["type"] == "usage":
            _add(billed, line["meter"], line["amount"], _quantity(line["quantity"]))
        else:
            _add(billed, None, line["amount"], 0)
    return billed


def _differences(now, billed, source, names):
    """The adjustment lines of one source period: what it rates now less what was billed."""
    start_date = source["period_start_date"]
    label = _period_label(start_date, source["period_end_date"])
    lines = []
    for meter in sorted(set(now) | set(billed), key=_meter_order):
        new_amount, new_quantity = now.get(meter, (0, 0))
        old_amount, old_quantity = billed.get(meter, (0, 0))
        if new_amount == old_amount and new_quantity == old_quantity:
            continue
        what = f"Late usage: {names.get(meter, meter)}" if meter else "Minimum commitment true-up"
        lines.append({"type": "adjustment", "description": f"{what}, {label}", "meter": meter,
                      "quantity": new_quantity - old_quantity if meter else None, "unit_price": None,
                      "amount": new_amount - old_amount, "tiers": [],
                      "adjusts_subscription_id": source["subscription_id"], "adjusts_period": start_date})
    return lines


def corrections(conn, subscription_id, period, exclude_invoice_id):
    """For a reissued period: take back what earlier adjustments already billed
    for it, since the new draft rates all of its events again."""
    lines = []
    billed = _billed(conn, subscription_id, period, exclude_invoice_id)
    for meter in sorted(billed, key=_meter_order):
        amount, quantity = billed[meter]
        if amount or quantity:
            lines.append({"type": "adjustment", "description": f"Already billed as adjustments: {meter or 'minimum'}",
                          "meter": meter, "quantity": -quantity if meter else None, "unit_price": None,
                          "amount": -amount, "tiers": [], "adjusts_subscription_id": subscription_id,
                          "adjusts_period": period})
    return lines
