"""Plans (§5): pricing models, validated; frozen once subscribed."""

import sqlite3

from .. import jsonutil
from ..domain import money, plans, times
from ..errors import Conflict, FieldErrors, NotFound
from ..store.db import named, scalar
from .responses import created
from .common import audit, decode_cursor, now_micros, one_or_404, page, page_limit
from .rows import by_name, names

COLUMNS = ("id, code, name, description, currency, interval, base_fee, minimum_commitment,"
           " trial_days, charges, created_at, updated_at")
NAMES = names(COLUMNS)


def view(row):
    currency = row["currency"]
    return {"code": row["code"], "name": row["name"], "description": row["description"], "currency": currency,
            "interval": row["interval"], "base_fee": money.format_minor(row["base_fee"], currency),
            "minimum_commitment": money.format_minor(row["minimum_commitment"], currency),
            "trial_days": row["trial_days"], "charges": _charges_view(jsonutil.decode(row["charges"])),
            "created_at": times.format_micros(row["created_at"]), "updated_at": times.format_micros(row["updated_at"])}


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
    """The plan row (sqlite3.Row) by code, or None (also for a code that is not a string)."""
    if not isinstance(code, str):
        return None
    return db.row(f"SELECT {COLUMNS} FROM plans WHERE code = ?", (code,))


def by_id(conn, plan_id):
    """The plan row (sqlite3.Row) by id, read on `conn`."""
    return named(conn, f"SELECT {COLUMNS} FROM plans WHERE id = ?", (plan_id,)).fetchone()


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
            row = by_id(conn, cur.lastrowid)
            audit(conn, request, "plan.create", "plan", row["code"], after=view(row))
    except sqlite3.IntegrityError:
        raise Conflict(f"A plan with code {values['code']!r} already exists.",
                       [{"field": "code", "message": "already exists"}]) from None
    return created(view(row))


def list_plans(request):
    limit = page_limit(request)
    cursor = decode_cursor(request, (str,))
    rows = request.app.db.rows(f"SELECT {COLUMNS} FROM plans WHERE code > ? ORDER BY code LIMIT ?",
                               (cursor[0] if cursor else "", limit + 1))
    return page(rows, limit, view, lambda row: [row["code"]])


def get(request, code):
    return view(load(request.app.db, code))


def _load_in(conn, code):
    """The plan row by code, read on `conn` (inside a transaction); raises NotFound."""
    return by_name(one_or_404(conn, f"SELECT {COLUMNS} FROM plans WHERE code = ?", (code,),
                              f"Plan {code!r} not found."), NAMES)


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
        before_row = _load_in(conn, code)
        before = view(before_row)
        pricing = [name for name in plans.PRICING_FIELDS if name in body and
                   _differs(name, values, before)]
        if pricing and scalar(conn, "SELECT 1 FROM subscriptions WHERE plan_id = ? LIMIT 1",
                              (before_row["id"],)) is not None:
            raise Conflict(f"Plan {code!r} has subscriptions; its pricing ({', '.join(pricing)}) cannot "
                           "change. Create a new plan instead.")
        stored = _stored(values)
        if stored:
            sets = ", ".join(f"{column} = ?" for column in stored)
            conn.execute(f"UPDATE plans SET {sets}, updated_at = ? WHERE code = ?",
                         (*stored.values(), now_micros(), code))
        after = view(_load_in(conn, code))
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
