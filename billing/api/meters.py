"""Meters (§4): what to aggregate, how, and over which events."""

import re
import sqlite3
from decimal import Decimal

from .. import jsonutil
from ..domain import times
from ..domain.aggregation import AGGREGATIONS
from ..errors import Conflict, FieldErrors
from ..store import archive
from ..store.regroup import start_regroup
from ..store.db import named, scalar
from .responses import created
from .common import audit, check_unknown_fields, decode_cursor, now_micros, one_or_404, page, page_limit, text_field

KEY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
PROPERTY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
COLUMNS = "id, key, name, unit, aggregation, value_property, filter, group_by, created_at, updated_at"
FIELDS = {"key", "name", "unit", "aggregation", "value_property", "filter", "group_by"}


def view(row):
    """A meters row (sqlite3.Row of COLUMNS) as JSON."""
    return {"key": row["key"], "name": row["name"], "unit": row["unit"], "aggregation": row["aggregation"],
            "value_property": row["value_property"],
            "filter": jsonutil.decode(row["filter"]) if row["filter"] else None,
            "group_by": jsonutil.decode(row["group_by"]), "created_at": times.format_micros(row["created_at"]),
            "updated_at": times.format_micros(row["updated_at"])}


def _is_scalar(value):
    return value is None or isinstance(value, (str, int, bool, Decimal))


def _check_filter(value, problems):
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.add("filter", "must be an object of property: value (or a list of allowed values)")
        return None
    for name, expected in value.items():
        if not PROPERTY_PATTERN.match(name):
            problems.add("filter", f"{name!r} is not a valid property name")
        elif isinstance(expected, list):
            if not expected or not all(_is_scalar(v) for v in expected):
                problems.add("filter", f"{name}: a list must hold one or more scalar values")
        elif not _is_scalar(expected):
            problems.add("filter", f"{name}: must be a scalar or a list of scalars")
    return jsonutil.encode(value) if value else None


def _check_group_by(value, problems):
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and PROPERTY_PATTERN.match(v) for v in value):
        problems.add("group_by", "must be a list of property names")
        return []
    if len(set(value)) != len(value):
        problems.add("group_by", "must not repeat a property")
    return value


def _check(body, problems, creating):
    values = {}
    check_unknown_fields(body, FIELDS, problems)
    if creating:
        key = body.get("key")
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            problems.add("key", "is required: letters, digits, '_', '.', '-' (max 64), starting with a letter")
        values["key"] = key
    if creating or "name" in body:
        values["name"] = text_field(body, "name", problems, required=True, max_length=200)
    if creating or "unit" in body:
        unit = body.get("unit", "unit")
        if not isinstance(unit, str) or not unit.strip() or len(unit) > 50:
            problems.add("unit", "must be a non-empty string (max 50)")
        values["unit"] = unit
    if creating or "aggregation" in body:
        aggregation = body.get("aggregation")
        if aggregation not in AGGREGATIONS:
            problems.add("aggregation", f"is required, one of {', '.join(AGGREGATIONS)}")
        values["aggregation"] = aggregation
    if creating or "value_property" in body:
        prop = body.get("value_property")
        if prop is not None and (not isinstance(prop, str) or not PROPERTY_PATTERN.match(prop)):
            problems.add("value_property", "must be null or a property name")
        values["value_property"] = prop
    if creating or "filter" in body:
        values["filter"] = _check_filter(body.get("filter"), problems)
    if creating or "group_by" in body:
        values["group_by"] = _check_group_by(body.get("group_by"), problems)
    return values


def _check_combination(values, problems):
    if values.get("aggregation") == "unique_count" and not values.get("value_property"):
        problems.add("value_property", "is required for unique_count (the property whose distinct values are counted)")


def create(request):
    body = request.json()
    problems = FieldErrors()
    values = _check(body, problems, True)
    _check_combination(values, problems)
    problems.raise_if_any()
    values["group_by"] = jsonutil.encode(values["group_by"])
    now = now_micros()
    db = request.app.db
    try:
        with db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO meters (key, name, unit, aggregation, value_property, filter, group_by,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (values["key"], values["name"], values["unit"], values["aggregation"],
                 values["value_property"], values["filter"], values["group_by"], now, now))
            row = named(conn, f"SELECT {COLUMNS} FROM meters WHERE id = ?", (cur.lastrowid,)).fetchone()
            audit(conn, request, "meter.create", "meter", row["key"], after=view(row))
    except sqlite3.IntegrityError:
        raise Conflict(f"A meter with key {values['key']!r} already exists.",
                       [{"field": "key", "message": "already exists"}]) from None
    request.app.catalog.invalidate_meters()
    return created(view(row))


def list_meters(request):
    limit = page_limit(request)
    cursor = decode_cursor(request, (str,))
    rows = request.app.db.rows(f"SELECT {COLUMNS} FROM meters WHERE key > ? ORDER BY key LIMIT ?",
                               (cursor[0] if cursor else "", limit + 1))
    return page(rows, limit, view, lambda r: [r["key"]])


def _load(conn, key):
    return one_or_404(conn, f"SELECT {COLUMNS} FROM meters WHERE key = ?", (key,), f"Meter {key!r} not found.")


def get(request, key):
    with request.app.db.reader() as conn:
        return view(_load(conn, key))


def _frozen(values, before):
    """What `values` would change of a meter that has events (only group_by keys may be added)."""
    frozen = []
    if "aggregation" in values and values["aggregation"] != before["aggregation"]:
        frozen.append("aggregation")
    if "value_property" in values and values["value_property"] != before["value_property"]:
        frozen.append("value_property")
    if "filter" in values and (jsonutil.decode(values["filter"]) if values["filter"] else None) \
            != before["filter"]:
        frozen.append("filter")
    if "group_by" in values and not set(before["group_by"]) <= set(values["group_by"]):
        frozen.append("group_by (keys can be added, not removed)")
    return frozen


def update(request, key):
    body = request.json()
    problems = FieldErrors()
    if "key" in body:
        problems.add("key", "cannot be changed")
    values = _check(body, problems, False)
    db = request.app.db
    with db.reader() as conn:
        current = view(_load(conn, key))
    merged = {**current, **values}
    _check_combination(merged, problems)
    problems.raise_if_any()
    with db.transaction() as conn:
        before_row = _load(conn, key)
        before = view(before_row)
        has_events = scalar(conn, "SELECT 1 FROM event_spans WHERE meter_id = ? LIMIT 1", (before_row["id"],)) is not None
        frozen = _frozen(values, before) if has_events else []
        if frozen:
            raise Conflict(f"Meter {key!r} has events; cannot change {', '.join(frozen)}. "
                           "Create a new meter instead.")
        regroup = has_events and "group_by" in values and values["group_by"] != before["group_by"]
        if regroup and archive.has_archived(conn, before_row["id"]):  # a regroup reads the raw events
            raise Conflict(f"Meter {key!r} has archived raw events; a group_by key can be added only while all its "
                           "events are stored (restore the archive files first: python3 -m billing.archive restore).")
        if "group_by" in values:
            values["group_by"] = jsonutil.encode(values["group_by"])
        if values:
            sets = ", ".join(f"{column} = ?" for column in values)
            conn.execute(f"UPDATE meters SET {sets}, updated_at = ? WHERE key = ?",
                         (*values.values(), now_micros(), key))
        if regroup:  # regrouped by the scheduler in short transactions (§12); readers stay exact meanwhile
            start_regroup(conn, before_row["id"], before["group_by"])
        after = view(_load(conn, key))
        audit(conn, request, "meter.update", "meter", key, before, after)
    request.app.catalog.invalidate_meters()
    return after


def ensure_system_meters(db, definitions):
    """Create the meters the server feeds itself ((key, name, unit, aggregation,
    group_by JSON) each) where their keys are free; a key already taken is left
    as it is."""
    now = now_micros()
    with db.transaction() as conn:
        for key, name, unit, aggregation, group_by in definitions:
            conn.execute("INSERT OR IGNORE INTO meters (key, name, unit, aggregation, group_by, created_at,"
                         " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (key, name, unit, aggregation, group_by, now, now))
