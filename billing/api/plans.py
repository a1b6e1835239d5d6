"""Plans (§5): pricing models, validated; frozen once subscribed."""

import sqlite3

from .. import jsonutil
from ..domain import money, plans, times
from ..errors import Conflict, FieldErrors, NotFound
from .responses import created
from .common import audit, decode_cursor, now_micros, page, page_limit

COLUMNS = ("id, code, name, description, currency, interval, base_fee, minimum_commitment,"
           " trial_days, charges, created_at, updated_at")


def view(row):
    currency = row[4]
    return {"code": row[1], "name": row[2], "description": row[3], "currency": currency,
            "interval": row[5], "base_fee": money.format_minor(row[6], currency),
            "minimum_commitment": money.format_minor(row[7], currency), "trial_days": row[8],
            "charges": _charges_view(jsonutil.decode(row[9])),
            "created_at": times.format_micros(row[10]), "updated_at": times.format_micros(row[11])}


def _charges_view(charges):
    """Stored charges as the API shows them: only the fields of each model."""
    shown = []
    for c in charges:
        item = {k: v for k, v in c.items() if v is not None}
        if not item.get("free_units"):
            item.pop("free_units", None)
        if item.get("tiers"):
            item["tiers"] = [{k: v for k, v in t.items() if v is not None or k == "up_to"} for t in item["tiers"]]
        shown.append(item)
    return shown


def find(db, code):
    """The plan row by code, or None (also for a code that is not a string)."""
    if not isinstance(code, str):
        return None
    return db.query_one(f"SELECT {COLUMNS} FROM plans WHERE code = ?", (code,))


def load(db, code):
    """The plan row by code; raises NotFound."""
    row = find(db, code)
    if row is None:
        raise NotFound(f"Plan {code!r} not found.")
    return row


def _stored(values):
    stored = dict(values)
    if "charges" in stored:
        stored["charges"] = jsonutil.encode(stored["charges"])
    return stored


def create(request):
    body = request.json()
    problems = FieldErrors()
    values = plans.check_plan(body, request.app.catalog.meters(), problems)
    problems.raise_if_any()
    stored = _stored(values)
    now = now_micros()
    columns = list(stored) + ["created_at", "updated_at"]
    db = request.app.db
    try:
        with db.transaction() as conn:
            cur = conn.execute(f"INSERT INTO plans ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                               (*stored.values(), now, now))
            row = conn.execute(f"SELECT {COLUMNS} FROM plans WHERE id = ?", (cur.lastrowid,)).fetchone()
            audit(conn, request, "plan.create", "plan", row[1], after=view(row))
    except sqlite3.IntegrityError:
        raise Conflict(f"A plan with code {values['code']!r} already exists.",
                       [{"field": "code", "message": "already exists"}]) from None
    return created(view(row))


def list_plans(request):
    limit = page_limit(request)
    cursor = decode_cursor(request, (str,))
    rows = request.app.db.query(f"SELECT {COLUMNS} FROM plans WHERE code > ? ORDER BY code LIMIT ?",
                                (cursor[0] if cursor else "", limit + 1))
    return page(rows, limit, view, lambda r: [r[1]])


def get(request, code):
    return view(load(request.app.db, code))


def update(request, code):
    body = request.json()
    db = request.app.db
    current = view(load(db, code))
    problems = FieldErrors()
    values = plans.check_plan(body, request.app.catalog.meters(), problems, creating=False, current=current)
    if "currency" in body and "base_fee" not in body and "minimum_commitment" not in body and values.get("currency"):
        # the stored amounts are minor units of the old currency: restate them in the new one
        for name in ("base_fee", "minimum_commitment"):
            try:
                values[name] = money.parse_amount(current[name], values["currency"])
            except money.MoneyError as exc:
                problems.add(name, f"{exc} in {values['currency']}")
    problems.raise_if_any()
    with db.transaction() as conn:
        before_row = conn.execute(f"SELECT {COLUMNS} FROM plans WHERE code = ?", (code,)).fetchone()
        if before_row is None:
            raise NotFound(f"Plan {code!r} not found.")
        before = view(before_row)
        pricing = [name for name in plans.PRICING_FIELDS if name in body and
                   _differs(name, values, before)]
        if pricing and conn.execute("SELECT 1 FROM subscriptions WHERE plan_id = ? LIMIT 1",
                                    (before_row[0],)).fetchone():
            raise Conflict(f"Plan {code!r} has subscriptions; its pricing ({', '.join(pricing)}) cannot "
                           "change. Create a new plan instead.")
        stored = _stored(values)
        if stored:
            sets = ", ".join(f"{column} = ?" for column in stored)
            conn.execute(f"UPDATE plans SET {sets}, updated_at = ? WHERE code = ?",
                         (*stored.values(), now_micros(), code))
        after = view(conn.execute(f"SELECT {COLUMNS} FROM plans WHERE code = ?", (code,)).fetchone())
        audit(conn, request, "plan.update", "plan", code, before, after)
    return after


def _differs(name, values, before):
    if name not in values:
        return False
    if name in ("base_fee", "minimum_commitment"):
        return money.format_minor(values[name], values.get("currency") or before["currency"]) != before[name]
    if name == "charges":
        return jsonutil.encode(_charges_view(values["charges"])) != jsonutil.encode(before["charges"])
    return values[name] != before[name]
