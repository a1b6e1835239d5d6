"""Notifications (§10): what an alert firing (or a webhook that gave up) tells
people.

A notification belongs to its customer (NULL: staff only). Every staff
caller sees all of them; a customer-scoped key or customer user sees only
its own customer's. Read state is kept per user, so a user created later
sees the older ones unread; an API key reads them but has no read state
(`read` is null), and cannot mark them.
"""

from .. import errors
from ..domain import times
from ..store.db import named, scalar
from .common import bool_arg, check_unknown_fields, decode_cursor, int_arg, now_micros, page, page_limit, path_int

COLUMNS = "n.id, n.customer_id, n.firing_id, n.kind, n.title, n.message, n.created_at"
KINDS = ("alert", "webhook_failed")


def create(conn, customer_id, firing_id, kind, title, message):
    """Add a notification in the caller's transaction; returns its id."""
    return conn.execute("INSERT INTO notifications (customer_id, firing_id, kind, title, message, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (customer_id, firing_id, kind, title, message, now_micros())).lastrowid


def view(row):
    return {"id": row["id"], "customer_id": row["customer_id"], "alert_id": row["firing_id"], "kind": row["kind"],
            "title": row["title"], "message": row["message"], "created_at": times.format_micros(row["created_at"]),
            "read": None if row["read_at"] is None and row["reader"] is None else row["read_at"] is not None}


def _visible(request, customer_id=None):
    """(SQL condition on `n`, params) of what the caller may see."""
    scope = request.customer_filter(customer_id)
    if scope is not None:
        return "n.customer_id = ?", [scope]
    return "1", []


def _reader(request):
    """The user whose read state applies, or None for an API key."""
    actor = request.actor
    return actor.user_id if actor.kind == "user" else None


def _select(request, where, params):
    reader = _reader(request)
    sql = (f"SELECT {COLUMNS}, r.read_at AS read_at, ? AS reader FROM notifications n"
           " LEFT JOIN notification_reads r ON r.notification_id = n.id AND r.user_id = ?"
           f" WHERE {where}")
    return sql, [reader, reader if reader is not None else -1, *params]


def list_notifications(request):
    """GET /v1/notifications?unread=true&customer_id&limit&cursor: newest first,
    with the caller's `unread_count`."""
    limit = page_limit(request)
    cursor = decode_cursor(request)
    unread = bool_arg(request, "unread")
    where, params = _visible(request, int_arg(request, "customer_id", minimum=1))
    reader = _reader(request)
    unread_sql = " AND r.read_at IS NULL" if reader is not None else ""
    sql, all_params = _select(request, where + (unread_sql if unread else "")
                              + (" AND n.id < ?" if cursor else ""), params + ([cursor[0]] if cursor else []))
    with request.app.db.reader() as conn:
        rows = named(conn, sql + " ORDER BY n.id DESC LIMIT ?", all_params + [limit + 1]).fetchall()
        count_sql, count_params = _select(request, where + unread_sql, params)
        unread_count = scalar(conn, f"SELECT count(*) FROM ({count_sql})", count_params)
    answer = page(rows, limit, view, lambda row: [row["id"]])
    answer["unread_count"] = unread_count
    return answer


def _own_user(request):
    user_id = _reader(request)
    if user_id is None:
        raise errors.Forbidden("API keys have no read state: sign in as a user to mark notifications read.")
    return user_id


def mark_read(request, notification_id):
    """POST /v1/notifications/{id}/read"""
    problems = errors.FieldErrors()
    check_unknown_fields(request.json(), (), problems)
    problems.raise_if_any()
    notification_id = path_int(notification_id, "Notification")
    user_id = _own_user(request)
    where, params = _visible(request)
    with request.app.db.transaction() as conn:
        found = scalar(conn, f"SELECT count(*) FROM notifications n WHERE n.id = ? AND {where}",
                       [notification_id, *params])
        if not found:
            raise errors.NotFound(f"Notification {notification_id} not found.")
        conn.execute("INSERT INTO notification_reads (notification_id, user_id, read_at) VALUES (?, ?, ?)"
                     " ON CONFLICT DO NOTHING", (notification_id, user_id, now_micros()))
        sql, all_params = _select(request, "n.id = ?", [notification_id])
        return view(named(conn, sql, all_params).fetchone())


def mark_all_read(request):
    """POST /v1/notifications/read-all: every notification the caller sees."""
    problems = errors.FieldErrors()
    check_unknown_fields(request.json(), (), problems)
    problems.raise_if_any()
    user_id = _own_user(request)
    where, params = _visible(request)
    with request.app.db.transaction() as conn:
        marked = conn.execute(
            "INSERT INTO notification_reads (notification_id, user_id, read_at)"
            f" SELECT n.id, ?, ? FROM notifications n WHERE {where} AND NOT EXISTS"
            " (SELECT 1 FROM notification_reads r WHERE r.notification_id = n.id AND r.user_id = ?)",
            [user_id, now_micros(), *params, user_id]).rowcount
    return {"marked": marked}
