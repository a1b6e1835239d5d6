"""The audit log (§9): every change, who made it, before and after.

`GET /v1/audit-log` lists entries newest first, filtered by any of: `actor`
(an actor label: `user:<id>`, `key:<id>`, `system`, or `anonymous` for failed
sign-ins, which have no user), `entity` (the object
type, e.g. `user`) and `entity_id`, `action` (e.g. `user.update`), a time
range `from`/`to` (RFC 3339 instants, or dates meaning 00:00 UTC; half-open
`[from, to)`), and `since_id` (entries after that id). A malformed filter is
a 400 naming it, never an empty list.

Besides the changes handlers record with `common.audit`, the sign-in path
records here (`record`): `auth.login` (actor the user), `auth.login_failed`
(actor `anonymous`, the e-mail tried and the client address in `after`) and
`api_key.revoked_use` (actor the revoked key, at most once per key per
minute). No entry ever holds a secret: no token, key, password or hash."""

import re

from .. import jsonutil
from ..domain import times
from ..errors import FieldErrors
from .common import decode_cursor, int_arg, page, page_limit

COLUMNS = "id, at, actor, role, action, entity, entity_id, before, after, request_id"
ANONYMOUS = "anonymous"  # the actor of a failed sign-in
ACTOR = re.compile(r"(user|key):[1-9][0-9]{0,18}|system|" + ANONYMOUS)
ENTITY = re.compile(r"[a-z][a-z0-9_]{0,63}")
ACTION = re.compile(r"[a-z][a-z0-9_]{0,63}\.[a-z][a-z0-9_]{0,63}")
ENTITY_ID_MAX = 200


def view(row):
    """An audit_log row (sqlite3.Row of COLUMNS) as JSON."""
    return {"id": row["id"], "at": times.format_micros(row["at"]), "actor": row["actor"], "role": row["role"],
            "action": row["action"], "entity": row["entity"], "entity_id": row["entity_id"],
            "before": jsonutil.decode(row["before"]) if row["before"] else None,
            "after": jsonutil.decode(row["after"]) if row["after"] else None, "request_id": row["request_id"]}


def record(conn, *, at, actor, role, action, entity, entity_id, after, request_id):
    """Write one entry with its own actor and instant (for the sign-in path,
    where the request has no actor yet or the entry is written later)."""
    conn.execute(
        "INSERT INTO audit_log (at, actor, role, action, entity, entity_id, before, after, request_id)"
        " VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)",
        (at, actor, role, action, entity, None if entity_id is None else str(entity_id),
         None if after is None else jsonutil.encode(after), request_id))


def _text_filters(request, problems):
    """The equality filters that were given: {column: value}."""
    found = {}
    checks = (("actor", ACTOR, "must be an actor like user:1, key:2, system or anonymous"),
              ("entity", ENTITY, "must be an object type like user or api_key"),
              ("action", ACTION, "must be an action like user.update"))
    for name, pattern, message in checks:
        value = request.arg(name)
        if value in (None, ""):
            continue
        if pattern.fullmatch(value):
            found[name] = value
        else:
            problems.add(name, message)
    entity_id = request.arg("entity_id")
    if entity_id not in (None, ""):
        if len(entity_id) > ENTITY_ID_MAX or not entity_id.isprintable():
            problems.add("entity_id", f"must be printable text of at most {ENTITY_ID_MAX} characters")
        else:
            found["entity_id"] = entity_id
    return found


def _time_range(request, problems):
    """The `from` and `to` bounds in microseconds (None where not given)."""
    bounds = {}
    for name in ("from", "to"):
        raw = request.arg(name)
        if raw in (None, ""):
            continue
        try:
            bounds[name] = times.to_micros(times.parse_bound(raw, times.UTC))
        except times.TimeError as exc:
            problems.add(name, str(exc))
    start, end = bounds.get("from"), bounds.get("to")
    if start is not None and end is not None and start >= end:
        problems.add("to", "must be after from")
    return start, end


def _where(request):
    """The WHERE clauses and parameters of the request's filters (400 on a bad one)."""
    problems = FieldErrors()
    equal = _text_filters(request, problems)
    start, end = _time_range(request, problems)
    cursor = decode_cursor(request)
    since = int_arg(request, "since_id", minimum=0)
    problems.raise_if_any()
    where = [f"{column} = ?" for column in equal]
    params = list(equal.values())
    for clause, value in (("id < ?", cursor[0] if cursor else None), ("id > ?", since),
                          ("at >= ?", start), ("at < ?", end)):
        if value is not None:
            where.append(clause)
            params.append(value)
    return where, params


def list_entries(request):
    """Newest first (ties on id), paged with next_cursor."""
    limit = page_limit(request)
    where, params = _where(request)
    sql = f"SELECT {COLUMNS} FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = request.app.db.rows(sql + " ORDER BY id DESC LIMIT ?", (*params, limit + 1))
    return page(rows, limit, view, lambda r: [r["id"]])
