"""Draft invoices (§7): rating them, storing them and their lines, and the
draft that carries a customer's late-event adjustments.

A draft always shows every stored event of its period: a read re-rates it in
memory (`as_shown`, on a reader: reads never write), and an action — finalize,
reject, reissue, the scheduler issuing it — re-rates and stores it
(`refresh_draft`) in the action's transaction, with the same rating, so what
is issued is what a read just showed."""

import json
from decimal import Decimal
from typing import NamedTuple

from .. import jsonutil
from ..domain import invoicing, money, times
from ..store.db import named, scalar
from . import adjustments
from . import coupons as coupons_api
from . import rating_rows
from . import sessions as sessions_api
from . import subscriptions as subscriptions_api
from .common import now_micros


class Period(NamedTuple):
    """An invoice's period: UTC instants and local dates (end exclusive)."""
    start_at: object
    end_at: object
    start_date: str
    end_date: str


# -- the draft that carries adjustments ---------------------------------------------

def carrier(conn, customer_id):
    """The draft that carries the customer's pending adjustments: its oldest draft not on hold."""
    return scalar(conn, "SELECT min(id) FROM invoices WHERE customer_id = ? AND status = 'draft' AND hold = 0",
                  (customer_id,))


# -- rating ------------------------------------------------------------------------

def build_plain(conn, customer, lines):
    """An invoice without a plan: the given lines, then tax and credits."""
    return invoicing.build(customer["currency"], [], {}, extra_lines=lines,
                           tax_rate=money.parse_percent(customer["tax_rate"]),
                           credit_balance=coupons_api.balance(conn, customer["id"]))


def rate(app, conn, customer, subscription, period_start_date, invoice_id=None, carries=False,
         kind="subscription", bounds=None, taken=None):
    """The priced draft of one invoice: a subscription period (with corrections
    when the period was invoiced before); a monthly invoice's resource lines;
    or adjustments alone; plus, when it `carries`, the customer's pending
    adjustments and the sessions of periods already invoiced. `taken` collects
    the ids of the sessions its resource lines hold."""
    customer_id = customer["id"]
    extra = adjustments.pending(app, conn, customer_id, invoice_id) if carries else []
    if subscription is None:
        if kind == "monthly":
            zone = times.zone_or_error(customer["timezone"])
            extra = sessions_api.uncovered_lines(conn, customer_id, zone, *bounds, late=carries, taken=taken) + extra
        elif carries:
            extra = sessions_api.late_lines(conn, customer_id, taken) + extra
        return build_plain(conn, customer, extra)
    extra = adjustments.corrections(conn, subscription["id"], period_start_date.isoformat(), invoice_id) + extra
    plan = rating_rows.plan(conn, subscription["plan_id"])
    draft, _, _ = subscriptions_api.rate_period(app, conn, subscription, plan, customer, period_start_date,
                                                extra_lines=extra, late_sessions=carries, taken=taken)
    return draft


def rerate(app, conn, row):
    """A stored draft (a row with its id, customer_id, subscription_id, kind and
    period) rated from the events stored now: (draft, ids of the sessions it takes)."""
    invoice_id, customer_id = row["id"], row["customer_id"]
    subscription = None if row["subscription_id"] is None else rating_rows.subscription(conn, row["subscription_id"])
    taken = []
    draft = rate(app, conn, rating_rows.customer(conn, customer_id), subscription,
                 times.parse_date(row["period_start_date"]), invoice_id,
                 carries=carrier(conn, customer_id) == invoice_id, kind=row["kind"],
                 bounds=(row["period_start"], row["period_end"]), taken=taken)
    return draft, taken


def refresh_draft(app, conn, invoice_id):
    """Re-rate a draft from the events stored now and store it (inside the caller's transaction)."""
    row = named(conn, "SELECT id, status, subscription_id, customer_id, period_start_date, kind, period_start,"
                      " period_end FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
    if row is None or row["status"] != "draft":
        return
    draft, taken = rerate(app, conn, row)
    sessions_api.store_taken(conn, invoice_id, taken)
    conn.execute("UPDATE invoices SET subtotal = ?, discount = ?, tax = ?, total = ?, credits_applied = ?,"
                 " amount_due = ?, updated_at = ? WHERE id = ?", (*_totals(draft), now_micros(), invoice_id))
    _store_lines(conn, invoice_id, draft, replace=True)


def as_shown(app, conn, row):
    """A draft's row re-rated for display, nothing written: (the row as a dict
    with the current totals, its lines in their stored shape); any other
    invoice's row as it is, and None for its lines (read them when needed)."""
    if row["status"] != "draft":
        return row, None
    draft, _ = rerate(app, conn, row)
    current = {name: row[name] for name in row.keys()}
    current.update(zip(TOTALS, _totals(draft)))
    return current, [_line_record(line) for line in draft.lines]


# -- storing -----------------------------------------------------------------------

def insert(conn, customer_id, subscription_id, draft, period, stamp, kind="subscription", lines=None):
    """Store a new draft for `period` (a Period) with its lines; returns its id.
    Whether it needs approval is the customer's setting now, kept on the draft.
    `lines`, when given (a list), receives the rows of its lines to be
    written later with `write_lines` (one statement for many drafts)."""
    cur = conn.execute(
        "INSERT INTO invoices (customer_id, subscription_id, status, currency, period_start, period_end,"
        " period_start_date, period_end_date, subtotal, discount, tax, total, credits_applied,"
        " amount_due, created_at, updated_at, kind, requires_approval)"
        " VALUES (?, ?, 'draft', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
        " (SELECT requires_approval FROM customers WHERE id = ?))",
        (customer_id, subscription_id, draft.currency, times.to_micros(period.start_at),
         times.to_micros(period.end_at), period.start_date, period.end_date, *_totals(draft), stamp, stamp, kind,
         customer_id))
    rows = line_rows(cur.lastrowid, draft)
    if lines is None:
        write_lines(conn, rows)
    else:
        lines.extend(rows)
    return cur.lastrowid


TOTALS = ("subtotal", "discount", "tax", "total", "credits_applied", "amount_due")


def _totals(draft):
    return (draft.subtotal, draft.discount, draft.tax, draft.total, draft.credits_applied, draft.amount_due)


# the columns of a stored line after its invoice_id and position, in order
LINE_FIELDS = ("type", "description", "meter", "quantity", "unit_price", "amount", "tiers",
               "adjusts_subscription_id", "adjusts_period", "resource_id")


def _line_record(line):
    """A priced line as invoice_lines stores it (quantity and tiers as JSON text)."""
    return dict(zip(LINE_FIELDS, _line_values(line)))


def _line_values(line):
    """The values of LINE_FIELDS of a priced line."""
    return (line["type"], line["description"], line["meter"],
            None if line["quantity"] is None else _number_text(line["quantity"]), line["unit_price"],
            line["amount"], _tiers_text(line["tiers"]), line.get("adjusts_subscription_id"),
            line.get("adjusts_period"), line.get("resource_id"))


def line_rows(invoice_id, draft):
    """The invoice_lines rows of a draft: (invoice_id, position, *LINE_FIELDS)."""
    return [(invoice_id, i, *_line_values(line)) for i, line in enumerate(draft.lines)]


def write_lines(conn, rows):
    """Insert invoice_lines rows (of `line_rows`), of one or many invoices."""
    conn.executemany(
        "INSERT INTO invoice_lines (invoice_id, position, type, description, meter, quantity, unit_price,"
        " amount, tiers, adjusts_subscription_id, adjusts_period, resource_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _store_lines(conn, invoice_id, draft, replace=False):
    if replace:
        conn.execute("DELETE FROM invoice_lines WHERE invoice_id = ?", (invoice_id,))
    write_lines(conn, line_rows(invoice_id, draft))


_encode_string = json.encoder.encode_basestring_ascii


def _tiers_text(tiers):
    """jsonutil.encode(tiers), written directly for the usual shape (a list of
    flat objects of numbers, text and nulls); anything else goes to jsonutil."""
    if not tiers:
        return "[]" if isinstance(tiers, list) else jsonutil.encode(tiers)
    try:
        return "[" + ",".join("{" + ",".join(_encode_string(key) + ":" + _SCALAR[type(value)](value)
                                             for key, value in tier.items()) + "}"
                              for tier in tiers) + "]"
    except (KeyError, AttributeError, TypeError):
        return jsonutil.encode(tiers)


def _decimal_text(value):
    if not value.is_finite():
        raise TypeError("not a finite number")  # jsonutil says what is wrong with it
    return jsonutil.decimal_text(value)


# how jsonutil writes each plain value: text, null, integer, exact decimal
_SCALAR = {str: _encode_string, type(None): lambda _: "null", int: int.__repr__, Decimal: _decimal_text}


def _number_text(value):
    return str(value) if isinstance(value, int) else jsonutil.decimal_text(value)
