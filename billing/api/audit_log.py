"""The audit log (§9): every change, who made it, before and after."""

from .. import jsonutil
from ..domain import times
from .common import decode_cursor, int_arg, page, page_limit


def view(row):
    return {"id": row[0], "at": times.format_micros(row[1]), "actor": row[2], "role": row[3],
            "action": row[4], "entity": row[5], "entity_id": row[6],
            "before": jsonutil.decode(row[7]) if row[7] else None,
            "after": jsonutil.decode(row[8]) if row[8] else None, "request_id": row[9]}


def list_entries(request):
    """Newest first; filters: entity, entity_id, actor, action."""
    limit = page_limit(request)
    cursor = decode_cursor(request)
    where, params = [], []
    if cursor:
        where.append("id < ?")
        params.append(cursor[0])
    for name in ("entity", "entity_id", "actor", "action"):
        value = request.arg(name)
        if value:
            where.append(f"{name} = ?")
            params.append(value)
    since = int_arg(request, "since_id", minimum=0)
    if since is not None:
        where.append("id > ?")
        params.append(since)
    sql = "SELECT id, at, actor, role, action, entity, entity_id, before, after, request_id FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = request.app.db.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit + 1))
    return page(rows, limit, view, lambda r: [r[0]])
