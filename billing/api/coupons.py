"""Coupons (§5) and the prepaid credit ledger."""

import re
import sqlite3

from ..domain import money, times
from ..errors import Conflict, FieldErrors
from ..store.db import named, scalar
from .responses import created
from . import customers as customers_api
from .common import (audit, check_unknown_fields, decode_cursor, now_micros, one_or_404, page, page_limit, path_int,
                     text_field)
from .rows import by_name, names

CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DURATIONS = ("once", "repeating", "forever")
COLUMNS = "id, code, name, percent_off, amount_off, currency, duration, periods, created_at"
NAMES = names(COLUMNS)


def view(row):
    amount_off = row["amount_off"]
    return {"code": row["code"], "name": row["name"], "percent_off": row["percent_off"],
            "amount_off": None if amount_off is None else money.format_minor(amount_off, row["currency"]),
            "currency": row["currency"], "duration": row["duration"], "periods": row["periods"],
            "created_at": times.format_micros(row["created_at"])}


def load(conn, code):
    """The coupon row, read by column name; raises NotFound."""
    return by_name(one_or_404(conn, f"SELECT {COLUMNS} FROM coupons WHERE code = ?", (code,),
                              f"Coupon {code!r} not found."), NAMES)


def applies(coupon_row, period_index):
    """Does the coupon still apply to the subscription's period number
    `period_index` (0 = the first period after attachment)?"""
    duration = coupon_row["duration"]
    if duration == "forever":
        return True
    if duration == "once":
        return period_index == 0
    return period_index < coupon_row["periods"]


def create(request):
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, ("code", "name", "percent_off", "amount_off", "currency", "duration", "periods"),
                         problems)
    code = body.get("code")
    if not isinstance(code, str) or not CODE_PATTERN.match(code):
        problems.add("code", "is required: letters, digits, '_', '.', '-' (max 64)")
    name = text_field(body, "name", problems, max_length=200)
    percent, amount_minor, currency = _check_discount(body, problems)
    duration, periods = _check_duration(body, problems)
    problems.raise_if_any()
    db = request.app.db
    try:
        with db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO coupons (code, name, percent_off, amount_off, currency, duration, periods, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (code, name, percent, amount_minor, currency, duration, periods, now_micros()))
            row = named(conn, f"SELECT {COLUMNS} FROM coupons WHERE id = ?", (cur.lastrowid,)).fetchone()
            audit(conn, request, "coupon.create", "coupon", code, after=view(row))
    except sqlite3.IntegrityError:
        raise Conflict(f"A coupon with code {code!r} already exists.") from None
    return created(view(row))


def _check_discount(body, problems):
    """(percent_off as a string, amount_off in minor units, currency): either
    a percent (no currency) or an amount in a currency."""
    percent, amount, currency = body.get("percent_off"), body.get("amount_off"), body.get("currency")
    amount_minor = None
    if (percent is None) == (amount is None):
        problems.add("percent_off", "give either percent_off or amount_off")
    elif percent is not None:
        try:
            value = money.parse_percent(percent)
            if value <= 0:
                problems.add("percent_off", "must be above 0")
            percent = str(value)
        except money.MoneyError as exc:
            problems.add("percent_off", str(exc))
        if currency is not None:
            problems.add("currency", "only an amount_off coupon has a currency")
    else:
        if not money.is_currency(currency):
            problems.add("currency", "is required with amount_off: an ISO 4217 code")
        else:
            try:
                amount_minor = money.parse_amount(amount, currency)
                if amount_minor <= 0:
                    problems.add("amount_off", "must be above 0")
            except money.MoneyError as exc:
                problems.add("amount_off", str(exc))
    return percent, amount_minor, currency if amount is not None else None


def _check_duration(body, problems):
    """(duration, periods): periods only for a repeating coupon."""
    duration = body.get("duration", "once")
    periods = body.get("periods")
    if duration not in DURATIONS:
        problems.add("duration", "must be once, repeating or forever")
    elif duration == "repeating":
        if isinstance(periods, bool) or not isinstance(periods, int) or not 1 <= periods <= 1200:
            problems.add("periods", "is required for repeating: an integer from 1 to 1200")
    elif periods is not None:
        problems.add("periods", "only a repeating coupon has periods")
    return duration, periods if duration == "repeating" else None


def list_coupons(request):
    limit = page_limit(request)
    cursor = decode_cursor(request, (str,))
    rows = request.app.db.rows(f"SELECT {COLUMNS} FROM coupons WHERE code > ? ORDER BY code LIMIT ?",
                               (cursor[0] if cursor else "", limit + 1))
    return page(rows, limit, view, lambda row: [row["code"]])


# -- credits -------------------------------------------------------------------

def balance(conn, customer_id):
    """The customer's credit balance in minor units."""
    return scalar(conn, "SELECT coalesce(sum(amount), 0) FROM credit_entries WHERE customer_id = ?",
                  (customer_id,))


def add_entry(conn, customer_id, amount, currency, reason, created_by, invoice_id=None, at=None):
    """Write one ledger entry (positive grants, negative spends); returns its id."""
    return conn.execute("INSERT INTO credit_entries (customer_id, amount, currency, reason, invoice_id, created_by,"
                        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (customer_id, amount, currency, reason, invoice_id, created_by,
                         now_micros() if at is None else at)).lastrowid


def entry_view(row):
    return {"id": row["id"], "customer_id": row["customer_id"],
            "amount": money.format_minor(row["amount"], row["currency"]), "currency": row["currency"],
            "reason": row["reason"], "invoice_id": row["invoice_id"], "created_by": row["created_by"],
            "created_at": times.format_micros(row["created_at"])}


ENTRY_COLUMNS = "id, customer_id, amount, currency, reason, invoice_id, created_by, created_at"


def grant_credit(request, customer_id):
    customer_id = path_int(customer_id, "Customer")
    db = request.app.db
    currency = customers_api.load(db, customer_id)["currency"]
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, ("amount", "reason"), problems)
    try:
        amount = money.parse_amount(body.get("amount"), currency)
        if amount <= 0:
            problems.add("amount", "must be above 0")
    except money.MoneyError as exc:
        problems.add("amount", f"{exc} (in {currency})")
    reason = text_field(body, "reason", problems, max_length=500)
    problems.raise_if_any()
    with db.transaction() as conn:
        entry_id = add_entry(conn, customer_id, amount, currency, reason, request.actor.label)
        entry = named(conn, f"SELECT {ENTRY_COLUMNS} FROM credit_entries WHERE id = ?", (entry_id,)).fetchone()
        total = balance(conn, customer_id)
        audit(conn, request, "credit.grant", "customer", customer_id, after=entry_view(entry))
    return created({"entry": entry_view(entry), "balance": money.format_minor(total, currency)})


def list_credits(request, customer_id):
    customer_id = path_int(customer_id, "Customer")
    request.check_customer(customer_id)
    db = request.app.db
    currency = customers_api.load(db, customer_id)["currency"]
    with db.reader() as conn:
        rows = named(conn, f"SELECT {ENTRY_COLUMNS} FROM credit_entries WHERE customer_id = ? ORDER BY id",
                     (customer_id,)).fetchall()
        total = balance(conn, customer_id)
    return {"customer_id": customer_id, "currency": currency, "balance": money.format_minor(total, currency),
            "data": [entry_view(r) for r in rows]}
