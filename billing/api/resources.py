"""Resources (§6): rooms, machines, desks — anything with a capacity that
customers use for a while and pay for by the minute."""

import sqlite3

from ..domain import money, times
from ..errors import Conflict, FieldErrors
from ..store.db import named, scalar
from .responses import created
from .common import (MAX_ID, audit, check_unknown_fields, decode_cursor, now_micros, one_or_404, page, page_limit,
                     path_int, text_field)

COLUMNS = ("id, name, description, capacity, price_per_minute, currency, max_duration_minutes, created_at,"
           " updated_at")
FIELDS = ("name", "description", "capacity", "price_per_minute", "currency", "max_duration_minutes")
MAX_CAPACITY = 1_000_000
MAX_MINUTES = 525_600  # a year
MAX_PRICE = 1_000_000


def view(row, active=None):
    """A resources row (sqlite3.Row of COLUMNS) as JSON, with its use when `active` is given."""
    item = {"id": row["id"], "name": row["name"], "description": row["description"], "capacity": row["capacity"],
            "price_per_minute": row["price_per_minute"], "currency": row["currency"],
            "max_duration_minutes": row["max_duration_minutes"],
            "created_at": times.format_micros(row["created_at"]), "updated_at": times.format_micros(row["updated_at"])}
    if active is not None:
        item["active"] = active
        item["available"] = max(0, row["capacity"] - active)
    return item


def _int_field(body, name, problems, minimum, maximum, required):
    value = body.get(name)
    if value is None:
        if required:
            problems.add(name, f"is required: an integer from {minimum}")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        problems.add(name, f"must be an integer from {minimum} to {maximum:,}")
        return None
    return value


def _check(body, problems, full):
    """The validated fields; `full`: every required field must be there (POST, PUT)."""
    check_unknown_fields(body, FIELDS, problems)
    values = {}
    if full or "name" in body:
        values["name"] = text_field(body, "name", problems, required=True, max_length=200)
    if full or "description" in body:
        values["description"] = text_field(body, "description", problems, max_length=2000)
    if full or "capacity" in body:
        values["capacity"] = _int_field(body, "capacity", problems, 1, MAX_CAPACITY, required=True)
    if full or "currency" in body:
        currency = body.get("currency", "USD") if full else body.get("currency")
        if not isinstance(currency, str) or not money.is_currency(currency):
            problems.add("currency", "must be a known ISO 4217 code, like USD")
            currency = None
        values["currency"] = currency
    if full or "price_per_minute" in body:
        if body.get("price_per_minute") is None:
            problems.add("price_per_minute", "is required: a decimal string like \"0.50\"")
        else:
            try:
                price = money.parse_decimal(body["price_per_minute"], max_fraction_digits=6)
                if price > MAX_PRICE:  # keeps a decade-long session's cost inside an SQLite integer
                    problems.add("price_per_minute", f"must be at most {MAX_PRICE:,}")
                values["price_per_minute"] = str(price)
            except money.MoneyError as exc:
                problems.add("price_per_minute", str(exc))
    if full or "max_duration_minutes" in body:
        values["max_duration_minutes"] = _int_field(body, "max_duration_minutes", problems, 1, MAX_MINUTES, False)
    return values


def load(conn, resource_id):
    """The resource (sqlite3.Row of COLUMNS), or 404 (also once deleted)."""
    return one_or_404(conn, f"SELECT {COLUMNS} FROM resources WHERE id = ? AND deleted_at IS NULL", (resource_id,),
                      f"Resource {resource_id} not found.")


def active_count(conn, resource_id):
    return scalar(conn, "SELECT count(*) FROM sessions WHERE resource_id = ? AND ended_at IS NULL", (resource_id,))


def _has_sessions(conn, resource_id):
    return scalar(conn, "SELECT 1 FROM sessions WHERE resource_id = ? LIMIT 1", (resource_id,)) is not None


def _name_taken(name):
    return Conflict(f"A resource named {name!r} already exists.", [{"field": "name", "message": "already exists"}])


def create(request):
    body = request.json()
    problems = FieldErrors()
    values = _check(body, problems, True)
    problems.raise_if_any()
    stamp = now_micros()
    try:
        with request.app.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO resources (name, description, capacity, price_per_minute, currency, max_duration_minutes,"
                " limit_set_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (values["name"], values["description"], values["capacity"], values["price_per_minute"],
                 values["currency"], values["max_duration_minutes"], stamp, stamp, stamp))
            row = load(conn, cur.lastrowid)
            audit(conn, request, "resource.create", "resource", row["id"], after=view(row))
    except sqlite3.IntegrityError:
        raise _name_taken(values["name"]) from None
    request.app.publish("resource.created", {"resource": view(row, 0)})
    return created(view(row, 0))


def list_resources(request):
    limit = page_limit(request)
    cursor = decode_cursor(request)
    with request.app.db.reader() as conn:
        rows = named(conn, f"SELECT {COLUMNS} FROM resources WHERE deleted_at IS NULL AND id > ? ORDER BY id LIMIT ?",
                     (cursor[0] if cursor else 0, limit + 1)).fetchall()
        counts = {r["resource_id"]: r["active"] for r in named(
            conn, "SELECT resource_id, count(*) AS active FROM sessions WHERE ended_at IS NULL GROUP BY resource_id")}
    return page(rows, limit, lambda r: view(r, counts.get(r["id"], 0)), lambda r: [r["id"]])


def get(request, resource_id):
    with request.app.db.reader() as conn:
        row = load(conn, path_int(resource_id, "Resource"))
        return view(row, active_count(conn, row["id"]))


def update(request, resource_id):
    """PATCH changes the fields given; PUT replaces them all. Lowering the
    capacity below the sessions running is allowed: new starts wait until it drops."""
    body = request.json()
    problems = FieldErrors()
    values = _check(body, problems, request.method == "PUT")
    problems.raise_if_any()
    resource_id = path_int(resource_id, "Resource")
    try:
        with request.app.db.transaction() as conn:
            before = load(conn, resource_id)
            if values.get("currency") not in (None, before["currency"]) and _has_sessions(conn, resource_id):
                raise Conflict(f"Resource {resource_id} has sessions in {before['currency']};"
                               " its currency cannot change.")
            if values.get("max_duration_minutes", before["max_duration_minutes"]) != before["max_duration_minutes"]:
                values["limit_set_at"] = now_micros()  # when a limit starts to count for running sessions
            if values:
                sets = ", ".join(f"{name} = ?" for name in values)
                conn.execute(f"UPDATE resources SET {sets}, updated_at = ? WHERE id = ?",
                             (*values.values(), now_micros(), resource_id))
            row = load(conn, resource_id)
            active = active_count(conn, resource_id)
            audit(conn, request, "resource.update", "resource", resource_id, view(before), view(row))
    except sqlite3.IntegrityError:
        raise _name_taken(values.get("name")) from None
    request.app.publish("resource.updated", {"resource": view(row, active)})
    return view(row, active)


def delete(request, resource_id):
    """Remove a resource with no session running; its past sessions stay as billing records."""
    problems = FieldErrors()
    check_unknown_fields(request.json(), (), problems)
    problems.raise_if_any()
    resource_id = path_int(resource_id, "Resource")
    with request.app.db.transaction() as conn:
        row = load(conn, resource_id)
        active = active_count(conn, resource_id)
        if active:
            raise Conflict(f"Resource {resource_id} has {active} active session{'s' if active > 1 else ''};"
                           " stop them first.", active=active)
        if _has_sessions(conn, resource_id):
            conn.execute("UPDATE resources SET deleted_at = ?, updated_at = ? WHERE id = ?",
                         (now_micros(), now_micros(), resource_id))
        else:
            conn.execute("DELETE FROM resources WHERE id = ?", (resource_id,))
        audit(conn, request, "resource.delete", "resource", resource_id, before=view(row))
    request.app.publish("resource.deleted", {"resource": {"id": resource_id}})
    return {"id": resource_id, "deleted": True}


def check_id(value, field, problems):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        problems.add(field, "is required: an id")
        return None
    return value
