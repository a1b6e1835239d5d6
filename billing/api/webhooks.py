"""Webhooks (§10): endpoints (admin), the delivery queue in SQLite and its history.

`enqueue()` runs inside the transaction that makes the change, so a delivery
exists exactly when the change was committed. The dispatcher
(`billing.ops.dispatcher`) sends due deliveries, signed with
`Meterline-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
and retries failures with exponential backoff from one minute, at most ten
attempts. The signing secret is shown to the admin only once. The server
must be able to sign with it, so it cannot be kept as a digest: it is stored
wrapped under the master key (`billing.store.secretbox`), and the database
alone does not reveal it.
"""

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from .. import jsonutil
from ..domain import times
from ..errors import FieldErrors
from ..store.db import named
from ..store.secretbox import is_wrapped
from .responses import created
from .common import (audit, check_unknown_fields, decode_cursor, now_micros, one_or_404, page, page_limit, path_int,
                     text_field)

EVENT_TYPES = ("invoice.created", "invoice.issued", "invoice.paid", "invoice.voided", "alert.triggered")
MAX_ATTEMPTS = 10
FIRST_RETRY_SECONDS = 60
COLUMNS = "id, url, events, description, created_at, deleted_at"
DELIVERY_COLUMNS = ("id, webhook_id, event_id, event_type, status, attempts, next_attempt_at, last_status_code,"
                    " last_error, created_at, delivered_at, payload")
ATTEMPT_COLUMNS = "attempted_at, status_code, response, error, duration_ms"


def signature(secret, timestamp, body):
    """The value of the Meterline-Signature header for `body` (bytes) sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def retry_delay(attempts):
    """Seconds to wait after the given number of failed attempts: 60, 120, 240, …"""
    return FIRST_RETRY_SECONDS * 2 ** (attempts - 1)


def subscribers(conn, event_type):
    """Ids of the endpoints that want this event type."""
    return [r["id"] for r in named(conn, "SELECT id, events FROM webhooks WHERE deleted_at IS NULL")
            if "*" in jsonutil.decode(r["events"]) or event_type in jsonutil.decode(r["events"])]


def enqueue(conn, event_type, data, hooks=None):
    """Queue one delivery of this event to every endpoint subscribed to it.
    `data` may be a function, called only when some endpoint wants the event."""
    hooks = subscribers(conn, event_type) if hooks is None else hooks
    if not hooks:
        return None
    if callable(data):
        data = data()
    stamp = now_micros()
    event_id = "evt_" + secrets.token_hex(12)
    payload = jsonutil.encode({"id": event_id, "type": event_type, "created_at": times.format_micros(stamp),
                               "data": data})
    conn.executemany("INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, payload, status,"
                     " next_attempt_at, created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                     [(hook, event_id, event_type, payload, stamp, stamp) for hook in hooks])
    return event_id


def view(row, secret=None):
    """A webhooks row (sqlite3.Row of COLUMNS) as JSON; the secret only when just made."""
    item = {"id": row["id"], "url": row["url"], "events": jsonutil.decode(row["events"]),
            "description": row["description"], "created_at": times.format_micros(row["created_at"])}
    if secret is not None:
        item["secret"] = secret
    return item


def _check_url(url, problems):
    if not isinstance(url, str) or not url.strip():
        problems.add("url", "is required: an http(s) URL")
        return None
    if len(url) > 2000:
        problems.add("url", "must be at most 2000 characters")
        return None
    if any(c <= " " or c == "\x7f" for c in url.strip()):
        problems.add("url", "must not contain spaces or control characters")
        return None
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number from 0 to 65535)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        problems.add("url", "must be an absolute http:// or https:// URL")
        return None
    return url.strip()


def _check_events(events, problems):
    """The event types an endpoint subscribes to, sorted and once each."""
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        problems.add("events", f"must be a non-empty list of event types ({', '.join(EVENT_TYPES)}) or [\"*\"]")
        return events
    for event in events:
        if event != "*" and event not in EVENT_TYPES:
            problems.add("events", f"unknown event type {event!r}; known: {', '.join(EVENT_TYPES)}")
    return sorted(set(events))


def create(request):
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, ("url", "events", "description"), problems)
    url = _check_url(body.get("url"), problems)
    events = _check_events(body.get("events", ["*"]), problems)
    description = text_field(body, "description", problems, max_length=500)
    problems.raise_if_any()
    secret = "whsec_" + secrets.token_hex(24)
    with request.app.db.transaction() as conn:
        cur = conn.execute("INSERT INTO webhooks (url, events, secret, description, created_at) VALUES (?, ?, ?, ?, ?)",
                           (url, jsonutil.encode(events), request.app.secrets.wrap(secret), description,
                            now_micros()))
        row = _load(conn, cur.lastrowid)
        audit(conn, request, "webhook.create", "webhook", row["id"], after=view(row))
    return created(view(row, secret))


def wrap_stored_secrets(db, box):
    """Wrap the signing secrets stored in plain text by older versions (deleted
    endpoints' too); the plain bytes are zeroed. Idempotent: wrapped ones are
    left alone. Returns how many were wrapped."""
    plain = [r for r in db.rows("SELECT id, secret FROM webhooks") if not is_wrapped(r["secret"])]
    if not plain:
        return 0

    def wrap(conn):
        conn.executemany("UPDATE webhooks SET secret = ? WHERE id = ? AND secret = ?",
                         [(box.wrap(r["secret"]), r["id"], r["secret"]) for r in plain])

    db.overwrite(wrap)
    return len(plain)


def list_webhooks(request):
    limit = page_limit(request)
    cursor = decode_cursor(request)
    rows = request.app.db.rows(f"SELECT {COLUMNS} FROM webhooks WHERE deleted_at IS NULL AND id > ?"
                               " ORDER BY id LIMIT ?", (cursor[0] if cursor else 0, limit + 1))
    return page(rows, limit, view, lambda r: [r["id"]])


def _load(conn, webhook_id):
    return one_or_404(conn, f"SELECT {COLUMNS} FROM webhooks WHERE id = ? AND deleted_at IS NULL", (webhook_id,),
                      f"Webhook {webhook_id} not found.")


def get(request, webhook_id):
    with request.app.db.reader() as conn:
        return view(_load(conn, path_int(webhook_id, "Webhook")))


def delete(request, webhook_id):
    """Remove an endpoint: nothing more is queued for it, and queued deliveries are dropped."""
    problems = FieldErrors()
    check_unknown_fields(request.json(), (), problems)
    problems.raise_if_any()
    webhook_id = path_int(webhook_id, "Webhook")
    with request.app.db.transaction() as conn:
        row = _load(conn, webhook_id)
        stamp = now_micros()
        conn.execute("UPDATE webhooks SET deleted_at = ? WHERE id = ?", (stamp, webhook_id))
        conn.execute("UPDATE webhook_deliveries SET status = 'canceled', next_attempt_at = NULL"
                     " WHERE webhook_id = ? AND status = 'pending'", (webhook_id,))
        audit(conn, request, "webhook.delete", "webhook", webhook_id, before=view(row))
    return {"id": webhook_id, "deleted": True}


def delivery_view(row, attempts):
    """A delivery (sqlite3.Row of DELIVERY_COLUMNS) with its attempts (of ATTEMPT_COLUMNS) as JSON."""
    return {"id": row["id"], "webhook_id": row["webhook_id"], "event_id": row["event_id"],
            "event_type": row["event_type"], "status": row["status"], "attempts": row["attempts"],
            "next_attempt_at": times.format_micros(row["next_attempt_at"]) if row["status"] == "pending" else None,
            "last_status_code": row["last_status_code"], "last_error": row["last_error"],
            "created_at": times.format_micros(row["created_at"]),
            "delivered_at": times.format_micros(row["delivered_at"]), "payload": jsonutil.decode(row["payload"]),
            "attempt_log": [{"at": times.format_micros(a["attempted_at"]), "status_code": a["status_code"],
                             "response": a["response"], "error": a["error"], "duration_ms": a["duration_ms"]}
                            for a in attempts]}


def deliveries(request, webhook_id):
    webhook_id = path_int(webhook_id, "Webhook")
    limit = page_limit(request)
    cursor = decode_cursor(request)
    with request.app.db.reader() as conn:
        # a deleted endpoint's history stays readable
        one_or_404(conn, "SELECT 1 FROM webhooks WHERE id = ?", (webhook_id,), f"Webhook {webhook_id} not found.")
        rows = named(conn, f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = ? AND id < ?"
                           " ORDER BY id DESC LIMIT ?", (webhook_id, cursor[0] if cursor else 2 ** 62,
                                                         limit + 1)).fetchall()
        attempts = {row["id"]: named(conn, f"SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = ?"
                                           " ORDER BY id", (row["id"],)).fetchall()
                    for row in rows[:limit]}
    return page(rows, limit, lambda r: delivery_view(r, attempts.get(r["id"], [])), lambda r: [r["id"]])
