"""Customers (§3)."""

import json
import sqlite3

from .. import jsonutil
from ..domain import addresses, money, times
from ..errors import Conflict, FieldErrors, Forbidden, NotFound
from ..store.db import scalar
from .responses import created
from . import auth
from .common import (audit, bool_arg, check_unknown_fields, decode_cursor, now_micros, one_or_404, page,
                     page_limit, path_int, text_field, int_field, bool_field)
from .rows import by_name, names

COLUMNS = ("id, external_id, name, email, timezone, currency, billing_email, billing_address,"
           " tax_rate, net_terms_days, requires_approval, csm_user_id, budget, storage_quota_bytes,"
           " contract_start, contract_end, metadata, archived, created_at, updated_at")
WRITABLE = ("external_id", "name", "email", "timezone", "currency", "billing_email",
            "billing_address", "tax_rate", "net_terms_days", "requires_approval", "csm_user_id",
            "budget", "storage_quota_bytes", "contract_start", "contract_end", "metadata")
NAMES = names(COLUMNS)
METADATA_MAX_BYTES = 4096
# how invoices to the customer are approved and the staff's own notes: not shown to the customer (§9)
STAFF_ONLY = ("requires_approval", "csm_user_id", "metadata")


def view(row):
    return {
        "id": row["id"], "external_id": row["external_id"], "name": row["name"], "email": row["email"],
        "timezone": row["timezone"], "currency": row["currency"], "billing_email": row["billing_email"],
        "billing_address": row["billing_address"], "tax_rate": row["tax_rate"],
        "net_terms_days": row["net_terms_days"], "requires_approval": bool(row["requires_approval"]),
        "csm_user_id": row["csm_user_id"],
        "budget": jsonutil.decode(row["budget"]) if row["budget"] else None,
        "storage_quota_bytes": row["storage_quota_bytes"], "contract_start": row["contract_start"],
        "contract_end": row["contract_end"],
        "metadata": jsonutil.decode(row["metadata"]) if row["metadata"] else {}, "archived": bool(row["archived"]),
        "created_at": times.format_micros(row["created_at"]), "updated_at": times.format_micros(row["updated_at"]),
    }


def view_for(request, row):
    """The customer as the caller may see it: without the staff-only fields for the customer itself."""
    shown = view(row)
    if request.customer_scope is not None:
        for name in STAFF_ONLY:
            del shown[name]
    return shown


def load(db, customer_id):
    """The customer row (sqlite3.Row); raises NotFound."""
    row = db.row(f"SELECT {COLUMNS} FROM customers WHERE id = ?", (customer_id,))
    if row is None:
        raise NotFound(f"Customer {customer_id} not found.")
    return row


def _load_in(conn, customer_id):
    """The customer row, read on `conn` (inside a transaction); raises NotFound."""
    return by_name(one_or_404(conn, f"SELECT {COLUMNS} FROM customers WHERE id = ?", (customer_id,),
                              f"Customer {customer_id} not found."), NAMES)


def _validate(body, problems, currency_hint, creating, db):
    """Checked, storable values for the fields present in `body` (problems
    are recorded in the order of the fields below)."""
    values = {}
    allowed = set(WRITABLE) if creating else set(WRITABLE) | {"archived"}
    check_unknown_fields(body, allowed, problems)
    _check_identity(body, values, problems, creating)
    _check_locale(body, values, problems, creating)
    _check_billing(body, values, problems, creating, db)
    _check_contract(body, values, problems, creating)
    if "budget" in body:
        values["budget"] = _validate_budget(body["budget"], values.get("currency", currency_hint), problems)
    if "archived" in body:
        value = bool_field(body, "archived", problems)
        values["archived"] = int(bool(value))
    return values


def _check_identity(body, values, problems, creating):
    """external_id, name and e-mail."""
    if "external_id" in body:
        values["external_id"] = text_field(body, "external_id", problems, max_length=200)
    if creating or "name" in body:
        values["name"] = text_field(body, "name", problems, required=True, max_length=500)
    if creating or "email" in body:
        values["email"] = _address(body, "email", problems, required=True)


def _address(body, name, problems, required=False):
    """One e-mail address (invoices are sent to it): no lists, no line breaks."""
    raw = body.get(name)
    if isinstance(raw, str) and not raw.isprintable():  # a line break, even at the end, could add a header
        problems.add(name, "must be one address, without spaces or line breaks")
        return None
    value = text_field(body, name, problems, required=required, max_length=addresses.MAX_ADDRESS)
    wrong = addresses.problem(value) if value else None
    if wrong:
        problems.add(name, wrong)
        return None
    return value


def _check_locale(body, values, problems, creating):
    """timezone and currency (defaults UTC and USD)."""
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


def _check_billing(body, values, problems, creating, db):
    """Where and how invoices go: billing e-mail and address, tax, terms,
    approval and the customer success manager."""
    if "billing_email" in body:
        values["billing_email"] = _address(body, "billing_email", problems)
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
        values["csm_user_id"] = _csm(body, problems, db)


def _csm(body, problems, db):
    """The customer success manager: an enabled user who may approve invoices."""
    user_id = int_field(body, "csm_user_id", problems, minimum=1)
    if user_id is None:
        return None
    user = db.row("SELECT role, disabled FROM users WHERE id = ?", (user_id,))
    if user is None or user["disabled"] or user["role"] not in auth.APPROVERS:
        problems.add("csm_user_id", f"user {user_id} is not an enabled customer success, sales or admin user")
        return None
    return user_id


def _check_contract(body, values, problems, creating):
    """Storage quota, contract dates and metadata."""
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
            row = _load_in(conn, cur.lastrowid)
            audit(conn, request, "customer.create", "customer", row["id"], after=view(row))
    except sqlite3.IntegrityError as exc:
        raise _unique_conflict(exc, values) from None
    request.app.catalog.invalidate_customers()
    return created(view(row))


def _list_filters(request):
    """WHERE clauses and parameters of the customer list filters (a
    customer-scoped caller lists only its own customer)."""
    where, params = [], []
    own = request.customer_filter(None)
    archived = bool_arg(request, "archived")
    for clause, value in (("id = ?", own), ("archived = ?", None if archived is None else int(archived)),
                          ("email = ?", request.arg("email") or None),
                          ("external_id = ?", request.arg("external_id") or None)):
        if value is not None:
            where.append(clause)
            params.append(value)
    search = request.arg("q")
    if search:
        where.append("(name LIKE ? ESCAPE '\\' OR email LIKE ? ESCAPE '\\')")
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params += [pattern, pattern]
    return where, params


def list_customers(request):
    limit = page_limit(request)
    cursor = decode_cursor(request)
    where, params = _list_filters(request)
    rows = request.app.db.rows(
        f"SELECT {COLUMNS} FROM customers WHERE {' AND '.join(['id > ?'] + where)} ORDER BY id LIMIT ?",
        (cursor[0] if cursor else 0, *params, limit + 1))
    return page(rows, limit, lambda row: view_for(request, row), lambda row: [row["id"]])


def get(request, customer_id):
    customer_id = path_int(customer_id, "Customer")
    request.check_customer(customer_id)
    return view_for(request, load(request.app.db, customer_id))


def update(request, customer_id):
    customer_id = path_int(customer_id, "Customer")
    db = request.app.db
    body = request.json()
    current = load(db, customer_id)
    problems = FieldErrors()
    values = _validate(body, problems, current["currency"], False, db)
    if "budget" not in body and "currency" in values and current["budget"]:
        # re-check the stored budget against the new currency
        _validate_budget(json.loads(current["budget"]), values["currency"], problems)
    problems.raise_if_any()
    try:
        with db.transaction() as conn:
            before = _load_in(conn, customer_id)
            _check_approval_change(request, before, values)
            _check_update_allowed(conn, customer_id, before, values)
            if values:
                sets = ", ".join(f"{column} = ?" for column in values)
                conn.execute(f"UPDATE customers SET {sets}, updated_at = ? WHERE id = ?",
                             (*values.values(), now_micros(), customer_id))
            if values.get("requires_approval") and not before["requires_approval"]:
                # stricter at once: the open drafts need approval too (turning it off never loosens a draft)
                conn.execute("UPDATE invoices SET requires_approval = 1 WHERE customer_id = ? AND status = 'draft'",
                             (customer_id,))
            after = _load_in(conn, customer_id)
            audit(conn, request, "customer.update", "customer", customer_id, view(before), view(after))
    except sqlite3.IntegrityError as exc:
        raise _unique_conflict(exc, values) from None
    request.app.catalog.invalidate_customers()
    return view(after)


def _check_approval_change(request, before, values):
    """Only an admin turns approval off: finance may make it stricter, never looser."""
    turning_off = "requires_approval" in values and before["requires_approval"] and not values["requires_approval"]
    if turning_off and request.actor.role != auth.ADMIN:
        raise Forbidden("Only an admin may turn off a customer's invoice approval.")


def _check_update_allowed(conn, customer_id, before, values):
    """409 for a change the customer's billing history forbids."""
    changing = [k for k in ("timezone", "currency") if k in values and values[k] != before[k]]
    if changing and has_active_subscription(conn, customer_id):
        raise Conflict(f"Cannot change {' and '.join(changing)} while a subscription is active.")
    # a session is either unbilled or on an invoice that left draft: either way it is
    # billed by the local periods it ended in, and moving those could leave it between two
    if changing and _holds(conn, "sessions", customer_id):
        raise Conflict(f"Cannot change {' and '.join(changing)} of a customer billed for sessions; "
                       "create a new customer instead.")
    # stored bytes are metered per local day: moving the days would bill some twice or never
    if changing and _holds(conn, "storage_spans", customer_id):
        raise Conflict(f"Cannot change {' and '.join(changing)} of a customer billed for storage; "
                       "create a new customer instead.")
    if values.get("archived") and _holds(conn, "objects", customer_id):
        raise Conflict(f"Customer {customer_id} stores objects; delete them before archiving it.")


def _holds(conn, table, customer_id):
    """Whether `table` has a row of the customer."""
    return scalar(conn, f"SELECT 1 FROM {table} WHERE customer_id = ? LIMIT 1", (customer_id,)) is not None


def has_active_subscription(conn, customer_id):
    return scalar(conn, "SELECT 1 FROM subscriptions WHERE customer_id = ? AND status = 'active' LIMIT 1",
                  (customer_id,)) is not None


REFERENCES = (
    ("events", "SELECT 1 FROM event_spans WHERE customer_id = ? LIMIT 1"),
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
        row = _load_in(conn, customer_id)
        held = [name for name, sql in REFERENCES if scalar(conn, sql, (customer_id,)) is not None]
        if held:
            raise Conflict(f"Customer {customer_id} has {' and '.join(held)}; archive it instead "
                           "(PATCH {\"archived\": true}).")
        conn.execute("DELETE FROM customers WHERE id = ?", (customer_id,))
        audit(conn, request, "customer.delete", "customer", customer_id, view(row), None)
    request.app.catalog.invalidate_customers()
    return {"id": customer_id, "deleted": True}
