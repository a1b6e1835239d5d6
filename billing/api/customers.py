"""Customers (§3)."""

import json
import sqlite3

from .. import jsonutil
from ..domain import money, times
from ..errors import Conflict, FieldErrors, NotFound
from .responses import created
from .common import (audit, bool_arg, check_unknown_fields, decode_cursor, now_micros, page,
                     page_limit, path_int, text_field, int_field, bool_field, valid_email)

COLUMNS = ("id, external_id, name, email, timezone, currency, billing_email, billing_address,"
           " tax_rate, net_terms_days, requires_approval, csm_user_id, budget, storage_quota_bytes,"
           " contract_start, contract_end, metadata, archived, created_at, updated_at")
WRITABLE = ("external_id", "name", "email", "timezone", "currency", "billing_email",
            "billing_address", "tax_rate", "net_terms_days", "requires_approval", "csm_user_id",
            "budget", "storage_quota_bytes", "contract_start", "contract_end", "metadata")
METADATA_MAX_BYTES = 4096


def view(row):
    return {
        "id": row[0], "external_id": row[1], "name": row[2], "email": row[3],
        "timezone": row[4], "currency": row[5], "billing_email": row[6],
        "billing_address": row[7], "tax_rate": row[8], "net_terms_days": row[9],
        "requires_approval": bool(row[10]), "csm_user_id": row[11],
        "budget": jsonutil.decode(row[12]) if row[12] else None,
        "storage_quota_bytes": row[13], "contract_start": row[14], "contract_end": row[15],
        "metadata": jsonutil.decode(row[16]) if row[16] else {}, "archived": bool(row[17]),
        "created_at": times.format_micros(row[18]), "updated_at": times.format_micros(row[19]),
    }


def load(db, customer_id):
    """The customer row; raises NotFound."""
    row = db.query_one(f"SELECT {COLUMNS} FROM customers WHERE id = ?", (customer_id,))
    if row is None:
        raise NotFound(f"Customer {customer_id} not found.")
    return row


def _validate(body, problems, currency_hint, creating, db):
    """Checked, storable values for the fields present in `body`."""
    values = {}
    allowed = set(WRITABLE) if creating else set(WRITABLE) | {"archived"}
    check_unknown_fields(body, allowed, problems)
    if "external_id" in body:
        values["external_id"] = text_field(body, "external_id", problems, max_length=200)
    if creating or "name" in body:
        values["name"] = text_field(body, "name", problems, required=True, max_length=500)
    if creating or "email" in body:
        email = text_field(body, "email", problems, required=True, max_length=254)
        if email and not valid_email(email):
            problems.add("email", "is not a valid e-mail address")
        values["email"] = email
    if "timezone" in body or creating:
        tz = body.get("timezone", "UTC")
        try:
            times.zone_or_error(tz)
            values["timezone"] = tz
        except times.TimeError as exc:
            problems.add("timezone", str(exc))
    if "currency" in body or creating:
        currency = body.get("currency", "USD")
        if not money.is_currency(currency):
            problems.add("currency", f"unknown currency code {currency!r} (ISO 4217 expected)")
        else:
            values["currency"] = currency
    if "billing_email" in body:
        value = text_field(body, "billing_email", problems, max_length=254)
        if value and not valid_email(value):
            problems.add("billing_email", "is not a valid e-mail address")
        values["billing_email"] = value
    if "billing_address" in body:
        values["billing_address"] = text_field(body, "billing_address", problems, max_length=2000)
    if "tax_rate" in body or creating:
        raw = body.get("tax_rate", "0")
        try:
            values["tax_rate"] = str(money.parse_percent(raw))
        except money.MoneyError as exc:
            problems.add("tax_rate", f"{exc} (a percent string like \"18\")")
    if "net_terms_days" in body or creating:
        if body.get("net_terms_days", 30) is None:
            problems.add("net_terms_days", "must not be null")
        values["net_terms_days"] = int_field(body, "net_terms_days", problems, 0, 365) \
            if "net_terms_days" in body else 30
    if "requires_approval" in body or creating:
        values["requires_approval"] = int(bool(bool_field(body, "requires_approval", problems)))
    if "csm_user_id" in body:
        user_id = int_field(body, "csm_user_id", problems, minimum=1)
        if user_id is not None and not db.row("SELECT 1 FROM users WHERE id = ? AND role != 'customer'", (user_id,)):
            problems.add("csm_user_id", f"user {user_id} does not exist or is not a staff user")
        values["csm_user_id"] = user_id
    if "storage_quota_bytes" in body:
        values["storage_quota_bytes"] = int_field(body, "storage_quota_bytes", problems, 0, 2 ** 62)
    for name in ("contract_start", "contract_end"):
        if name in body and body[name] is not None:
            try:
                values[name] = times.parse_date(body[name]).isoformat()
            except times.TimeError as exc:
                problems.add(name, str(exc))
        elif name in body:
            values[name] = None
    if "metadata" in body or creating:
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            problems.add("metadata", "must be an object")
        else:
            text = jsonutil.encode(metadata)
            if len(text.encode()) > METADATA_MAX_BYTES:
                problems.add("metadata", f"must be at most {METADATA_MAX_BYTES} bytes as JSON")
            values["metadata"] = text
    if "budget" in body:
        values["budget"] = _validate_budget(body["budget"], values.get("currency", currency_hint), problems)
    if "archived" in body:
        value = bool_field(body, "archived", problems)
        values["archived"] = int(bool(value))
    return values


def _validate_budget(budget, currency, problems):
    if budget is None:
        return None
    if not isinstance(budget, dict):
        problems.add("budget", "must be an object like {\"monthly\": \"500.00\", \"alert_at_percent\": [50, 80, 100]}")
        return None
    unknown = set(budget) - {"monthly", "alert_at_percent"}
    if unknown:
        problems.add("budget", f"unknown keys: {', '.join(sorted(unknown))}")
    monthly = budget.get("monthly")
    try:
        minor = money.parse_amount(monthly, currency or "USD")
        if minor <= 0:
            problems.add("budget.monthly", "must be greater than zero")
    except money.MoneyError as exc:
        problems.add("budget.monthly", str(exc))
    percents = budget.get("alert_at_percent", [50, 80, 100])
    if not isinstance(percents, list) or not percents or not all(
            isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 1000 for p in percents):
        problems.add("budget.alert_at_percent", "must be a non-empty list of integers between 1 and 1000")
    else:
        percents = sorted(set(percents))
    return jsonutil.encode({"monthly": monthly, "alert_at_percent": percents})


def _unique_conflict(exc, values):
    text = str(exc)
    if "external_id" in text:
        return Conflict(f"A customer with external_id {values.get('external_id')!r} already exists.",
                        [{"field": "external_id", "message": "already exists"}])
    if "email" in text:
        return Conflict(f"A customer with e-mail {values.get('email')!r} already exists.",
                        [{"field": "email", "message": "already exists"}])
    return Conflict("The customer conflicts with an existing one.")


def create(request):
    body = request.json()
    db = request.app.db
    problems = FieldErrors()
    values = _validate(body, problems, body.get("currency", "USD"), True, db)
    problems.raise_if_any()
    now = now_micros()
    columns = list(values) + ["created_at", "updated_at"]
    try:
        with db.transaction() as conn:
            cur = conn.execute(
                f"INSERT INTO customers ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                (*values.values(), now, now))
            row = conn.execute(f"SELECT {COLUMNS} FROM customers WHERE id = ?", (cur.lastrowid,)).fetchone()
            audit(conn, request, "customer.create", "customer", row[0], after=view(row))
    except sqlite3.IntegrityError as exc:
        raise _unique_conflict(exc, values) from None
    request.app.catalog.invalidate_customers()
    return created(view(row))


def list_customers(request):
    limit = page_limit(request)
    cursor = decode_cursor(request)
    where, params = ["id > ?"], [cursor[0] if cursor else 0]
    if request.customer_scope is not None:
        where.append("id = ?")
        params.append(request.customer_scope)
    archived = bool_arg(request, "archived")
    if archived is not None:
        where.append("archived = ?")
        params.append(int(archived))
    email = request.arg("email")
    if email:
        where.append("email = ?")
        params.append(email)
    external_id = request.arg("external_id")
    if external_id:
        where.append("external_id = ?")
        params.append(external_id)
    search = request.arg("q")
    if search:
        where.append("(name LIKE ? ESCAPE '\\' OR email LIKE ? ESCAPE '\\')")
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params += [pattern, pattern]
    rows = request.app.db.query(
        f"SELECT {COLUMNS} FROM customers WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
        (*params, limit + 1))
    return page(rows, limit, view, lambda r: [r[0]])


def get(request, customer_id):
    customer_id = path_int(customer_id, "Customer")
    request.check_customer(customer_id)
    return view(load(request.app.db, customer_id))


def update(request, customer_id):
    customer_id = path_int(customer_id, "Customer")
    db = request.app.db
    body = request.json()
    current = load(db, customer_id)
    problems = FieldErrors()
    values = _validate(body, problems, current[5], False, db)
    if "budget" not in body and "currency" in values and current[12]:
        # re-check the stored budget against the new currency
        _validate_budget(json.loads(current[12]), values["currency"], problems)
    problems.raise_if_any()
    try:
        with db.transaction() as conn:
            before = conn.execute(f"SELECT {COLUMNS} FROM customers WHERE id = ?", (customer_id,)).fetchone()
            if before is None:
                raise NotFound(f"Customer {customer_id} not found.")
            changing = [k for k in ("timezone", "currency") if k in values and values[k] != before[4 if k == "timezone" else 5]]
            if changing and has_active_subscription(conn, customer_id):
                raise Conflict(f"Cannot change {' and '.join(changing)} while a subscription is active.")
            # a session is either unbilled or on an invoice that left draft: either way it is
            # billed by the local periods it ended in, and moving those could leave it between two
            if changing and conn.execute("SELECT 1 FROM sessions WHERE customer_id = ? LIMIT 1",
                                         (customer_id,)).fetchone():
                raise Conflict(f"Cannot change {' and '.join(changing)} of a customer billed for sessions; "
                               "create a new customer instead.")
            # stored bytes are metered per local day: moving the days would bill some twice or never
            if changing and conn.execute("SELECT 1 FROM storage_spans WHERE customer_id = ? LIMIT 1",
                                         (customer_id,)).fetchone():
                raise Conflict(f"Cannot change {' and '.join(changing)} of a customer billed for storage; "
                               "create a new customer instead.")
            if values.get("archived") and conn.execute("SELECT 1 FROM objects WHERE customer_id = ? LIMIT 1",
                                                       (customer_id,)).fetchone():
                raise Conflict(f"Customer {customer_id} stores objects; delete them before archiving it.")
            if values:
                sets = ", ".join(f"{column} = ?" for column in values)
                conn.execute(f"UPDATE customers SET {sets}, updated_at = ? WHERE id = ?",
                             (*values.values(), now_micros(), customer_id))
            after = conn.execute(f"SELECT {COLUMNS} FROM customers WHERE id = ?", (customer_id,)).fetchone()
            audit(conn, request, "customer.update", "customer", customer_id, view(before), view(after))
    except sqlite3.IntegrityError as exc:
        raise _unique_conflict(exc, values) from None
    request.app.catalog.invalidate_customers()
    return view(after)


def has_active_subscription(conn, customer_id):
    return conn.execute("SELECT 1 FROM subscriptions WHERE customer_id = ? AND status = 'active' LIMIT 1",
                        (customer_id,)).fetchone() is not None


REFERENCES = (
    ("events", "SELECT 1 FROM events WHERE customer_id = ? LIMIT 1"),
    ("API keys", "SELECT 1 FROM api_keys WHERE customer_id = ? LIMIT 1"),
    ("subscriptions", "SELECT 1 FROM subscriptions WHERE customer_id = ? LIMIT 1"),
    ("credits", "SELECT 1 FROM credit_entries WHERE customer_id = ? LIMIT 1"),
    ("invoices", "SELECT 1 FROM invoices WHERE customer_id = ? LIMIT 1"),
    ("sessions", "SELECT 1 FROM sessions WHERE customer_id = ? LIMIT 1"),
    ("stored objects", "SELECT 1 FROM objects WHERE customer_id = ? LIMIT 1"),
    ("storage history", "SELECT 1 FROM storage_spans WHERE customer_id = ? LIMIT 1"),
    ("users", "SELECT 1 FROM users WHERE customer_id = ? LIMIT 1"),
)


def delete(request, customer_id):
    customer_id = path_int(customer_id, "Customer")
    db = request.app.db
    with db.transaction() as conn:
        row = conn.execute(f"SELECT {COLUMNS} FROM customers WHERE id = ?", (customer_id,)).fetchone()
        if row is None:
            raise NotFound(f"Customer {customer_id} not found.")
        held = [name for name, sql in REFERENCES if conn.execute(sql, (customer_id,)).fetchone()]
        if held:
            raise Conflict(f"Customer {customer_id} has {' and '.join(held)}; archive it instead "
                           "(PATCH {\"archived\": true}).")
        conn.execute("DELETE FROM customers WHERE id = ?", (customer_id,))
        audit(conn, request, "customer.delete", "customer", customer_id, view(row), None)
    request.app.catalog.invalidate_customers()
    return {"id": customer_id, "deleted": True}
