"""Alert rules, budgets and firings (§10).

`POST /v1/alerts` creates a rule: `spend` (the upcoming invoice's subtotal,
a money threshold) or `usage` (a meter's value in the open period), for one
customer or, with no `customer_id`, for every customer (of `currency`, for
spend). Budgets live on the customer (§3); their steps fire like rules. What
fired is in `GET /v1/alerts/events`; the evaluation itself is in alert_eval.
"""

from decimal import Decimal

from .. import errors, jsonutil
from ..domain import money, quantities, times
from ..errors import FieldErrors
from ..store.db import named
from .responses import created
from . import alert_eval
from .common import (audit, check_unknown_fields, decode_cursor, int_arg, int_field, now_micros, one_or_404, page,
                     page_limit, path_int, text_field)
from .rows import by_name, names

TYPES = ("spend", "usage")
COLUMNS = "id, name, customer_id, type, meter, currency, threshold, created_at"
NAMES = names(COLUMNS)


def view(row):
    threshold = row["threshold"]
    if row["type"] == "spend":
        shown = money.format_minor(threshold, row["currency"])
    else:
        shown = str(quantities.from_micros(threshold))
    return {"id": row["id"], "name": row["name"], "customer_id": row["customer_id"], "type": row["type"],
            "meter": row["meter"], "currency": row["currency"], "threshold": shown,
            "created_at": times.format_micros(row["created_at"])}


def _customer_currency(conn, customer_id, problems):
    row = named(conn, "SELECT currency FROM customers WHERE id = ?", (customer_id,)).fetchone()
    if row is None:
        problems.add("customer_id", f"customer {customer_id} does not exist")
        return None
    return row["currency"]


def _spend_threshold(body, currency, problems):
    raw = body.get("threshold")
    if currency is None:
        return None
    if not isinstance(raw, str):
        problems.add("threshold", f"must be a money string in {currency}, like \"500.00\"")
        return None
    try:
        minor = money.parse_amount(raw, currency)
    except money.MoneyError as exc:
        problems.add("threshold", str(exc))
        return None
    if minor <= 0:
        problems.add("threshold", "must be greater than zero")
        return None
    return minor


def _usage_threshold(body, problems):
    raw = body.get("threshold")
    try:
        value = Decimal(raw) if isinstance(raw, str) else raw
        micros = quantities.to_micros(value)
    except (ArithmeticError, quantities.QuantityError) as exc:
        problems.add("threshold", f"must be a number greater than zero ({exc})" if str(exc) else
                     "must be a number greater than zero")
        return None
    if micros <= 0:
        problems.add("threshold", "must be greater than zero")
        return None
    return micros


def check_rule(app, conn, body):
    """The column values of a valid rule body; raises ValidationError."""
    problems = FieldErrors()
    check_unknown_fields(body, ("name", "customer_id", "type", "meter", "currency", "threshold"), problems)
    name = text_field(body, "name", problems, max_length=200)
    customer_id = int_field(body, "customer_id", problems, minimum=1)
    kind = body.get("type")
    if kind not in TYPES:
        problems.add("type", f"must be one of {', '.join(TYPES)}")
    own_currency = _customer_currency(conn, customer_id, problems) if customer_id is not None else None
    meter = currency = threshold = None
    if kind == "usage":
        meter = body.get("meter")
        if not isinstance(meter, str) or app.catalog.meter(meter) is None:
            problems.add("meter", "must be the key of an existing meter")
        if body.get("currency") is not None:
            problems.add("currency", "applies to spend alerts only")
        threshold = _usage_threshold(body, problems)
    elif kind == "spend":
        if body.get("meter") is not None:
            problems.add("meter", "applies to usage alerts only")
        currency = _spend_currency(body, customer_id, own_currency, problems)
        threshold = _spend_threshold(body, currency, problems)
    problems.raise_if_any()
    return {"name": name, "customer_id": customer_id, "type": kind, "meter": meter, "currency": currency,
            "threshold": threshold}


def _spend_currency(body, customer_id, own_currency, problems):
    """A customer's rule is in its currency; a rule for everyone names one."""
    given = body.get("currency")
    if given is not None and (not isinstance(given, str) or not money.is_currency(given)):
        problems.add("currency", "must be a known ISO 4217 code")
        return None
    if customer_id is None:
        if given is None:
            problems.add("currency", "is required for a spend alert on every customer")
        return given
    if given is not None and own_currency is not None and given != own_currency:
        problems.add("currency", f"must be the customer's currency, {own_currency}")
        return None
    return own_currency


def create(request):
    """POST /v1/alerts"""
    body = request.json()
    with request.app.db.transaction() as conn:
        values = check_rule(request.app, conn, body)
        row = insert_rule(conn, values)
        audit(conn, request, "alert.create", "alert", row["id"], after=view(row))
    return created(view(row))


def insert_rule(conn, values):
    cur = conn.execute("INSERT INTO alert_rules (name, customer_id, type, meter, currency, threshold, created_at)"
                       " VALUES (:name, :customer_id, :type, :meter, :currency, :threshold, :at)",
                       {**values, "at": now_micros()})
    return named(conn, f"SELECT {COLUMNS} FROM alert_rules WHERE id = ?", (cur.lastrowid,)).fetchone()


def _page_by_id(request, select, where, customer_column, to_item):
    """One page of `select … WHERE where` in id order, narrowed to the
    caller's customer (a customer sees its own; staff may pass customer_id)."""
    limit = page_limit(request)
    cursor = decode_cursor(request)
    customer_id = request.customer_filter(int_arg(request, "customer_id", minimum=1))
    clauses, params = [where, "id > ?"], [cursor[0] if cursor else 0]
    if customer_id is not None:
        clauses.append(f"{customer_column} = ?")
        params.append(customer_id)
    with request.app.db.reader() as conn:
        rows = named(conn, f"{select} WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
                     params + [limit + 1]).fetchall()
    return page(rows, limit, to_item, lambda row: [row["id"]])


def list_rules(request):
    """GET /v1/alerts?customer_id: rules (a customer sees its own)."""
    return _page_by_id(request, f"SELECT {COLUMNS} FROM alert_rules", "deleted_at IS NULL", "customer_id", view)


def delete(request, alert_id):
    """DELETE /v1/alerts/{id}: the rule stops; what it fired stays."""
    problems = FieldErrors()
    check_unknown_fields(request.json(), (), problems)
    problems.raise_if_any()
    alert_id = path_int(alert_id, "Alert")
    with request.app.db.transaction() as conn:
        row = by_name(one_or_404(conn, f"SELECT {COLUMNS} FROM alert_rules WHERE id = ? AND deleted_at IS NULL",
                                 (alert_id,), f"Alert {alert_id} not found."), NAMES)
        conn.execute("UPDATE alert_rules SET deleted_at = ? WHERE id = ?", (now_micros(), alert_id))
        audit(conn, request, "alert.delete", "alert", alert_id, before=view(row))
    return {"id": alert_id, "deleted": True}


def _time_arg(request, name):
    raw = request.arg(name)
    if not raw:
        return None
    try:
        return times.to_micros(times.parse_bound(raw, times.zone_or_error("UTC")))
    except times.TimeError as exc:
        raise errors.ValidationError([{"field": name, "message": str(exc)}]) from None


def list_firings(request):
    """GET /v1/alerts/events?customer_id&type&from&to: what fired, newest first."""
    limit = page_limit(request)
    cursor = decode_cursor(request)
    customer_id = request.customer_filter(int_arg(request, "customer_id", minimum=1))
    where, params = ["1"], []
    for clause, value in (("customer_id = ?", customer_id), ("created_at >= ?", _time_arg(request, "from")),
                          ("created_at < ?", _time_arg(request, "to")), ("id < ?", cursor[0] if cursor else None)):
        if value is not None:
            where.append(clause)
            params.append(value)
    kind = request.arg("type")
    if kind:
        where.append("type = ?")
        params.append(kind)
    with request.app.db.reader() as conn:
        rows = named(conn, f"SELECT {alert_eval.FIRING_COLUMNS} FROM alert_firings WHERE {' AND '.join(where)}"
                           " ORDER BY id DESC LIMIT ?", params + [limit + 1]).fetchall()
    return page(rows, limit, alert_eval.firing_view, lambda row: [row["id"]])


def list_budgets(request):
    """GET /v1/alerts/budgets?customer_id: the customers with a budget."""
    return _page_by_id(request, "SELECT id, name, currency, budget FROM customers",
                       "budget IS NOT NULL AND archived = 0", "id", _budget_view)


def _budget_view(row):
    budget = jsonutil.decode(row["budget"])
    return {"customer_id": row["id"], "customer_name": row["name"], "currency": row["currency"],
            "monthly": budget["monthly"], "alert_at_percent": budget["alert_at_percent"]}


def evaluate(request):
    """POST /v1/alerts/evaluate: evaluate now (the scheduler does it every run)."""
    problems = FieldErrors()
    check_unknown_fields(request.json(), (), problems)
    problems.raise_if_any()
    return alert_eval.evaluate(request.app)

