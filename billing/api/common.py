"""Helpers shared by the resource modules: paging, field checks, audit."""

import base64
import binascii

from .. import clock, jsonutil
from ..domain import times
from ..errors import NotFound, ValidationError
from ..store.db import named

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_ID = 2 ** 63 - 1  # SQLite's integer range
IDEMPOTENCY_HOURS = 24  # how long an Idempotency-Key is answered from its first response (§2)


def now_micros():
    return times.to_micros(clock.now())


def idempotency_horizon():
    """The oldest `created_at` of an Idempotency-Key still answered (older ones are purged)."""
    return now_micros() - IDEMPOTENCY_HOURS * 3600 * 1_000_000


def page_limit(request):
    raw = request.arg("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise ValidationError([{"field": "limit", "message": "must be an integer"}]) from None
    if limit < 1 or limit > MAX_LIMIT:
        raise ValidationError([{"field": "limit", "message": f"must be between 1 and {MAX_LIMIT}"}])
    return limit


def encode_cursor(values):
    text = jsonutil.encode(list(values))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _cursor_value_ok(value, kind):
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool) and -MAX_ID <= value <= MAX_ID
    return isinstance(value, kind)


def decode_cursor(request, kinds=(int,)):
    """The decoded `cursor` argument, a list of values of the given types
    (one per entry of `kinds`), or None when there is none."""
    raw = request.arg("cursor")
    if raw in (None, ""):
        return None
    try:
        padded = raw + "=" * (-len(raw) % 4)
        values = jsonutil.decode(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != len(kinds) or \
            not all(_cursor_value_ok(v, k) for v, k in zip(values, kinds)):
        raise ValidationError([{"field": "cursor", "message": "is not a valid cursor"}])
    return values


def page(rows, limit, to_item, cursor_of):
    """The §2 list shape from `limit + 1` fetched rows."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {"data": [to_item(r) for r in rows],
            "next_cursor": encode_cursor(cursor_of(rows[-1])) if more and rows else None}


def int_arg(request, name, minimum=None):
    raw = request.arg(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError([{"field": name, "message": "must be an integer"}]) from None
    if minimum is not None and value < minimum:
        raise ValidationError([{"field": name, "message": f"must be at least {minimum}"}])
    if abs(value) > MAX_ID:
        raise ValidationError([{"field": name, "message": "is out of range"}])
    return value


def bool_arg(request, name):
    raw = request.arg(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ValidationError([{"field": name, "message": "must be true or false"}])


def path_int(value, what):
    """A numeric path parameter; too large to be an id means not found."""
    if len(value) > 19:  # beyond any id (and int() refuses over 4,300 digits)
        raise NotFound(f"{what} not found.")
    number = int(value)
    if number > 2 ** 63 - 1:
        raise NotFound(f"{what} not found.")
    return number


def one_or_404(conn, sql, params, message):
    """The one row `sql` finds (an sqlite3.Row: read it by column name), or NotFound(message)."""
    row = named(conn, sql, params).fetchone()
    if row is None:
        raise NotFound(message)
    return row


def check_unknown_fields(body, allowed, problems):
    for name in body:
        if name not in allowed:
            problems.add(name, "is not a known field")


def text_field(body, name, problems, required=False, max_length=1000, allow_null=True):
    """A string field; records a problem and returns None when it is bad."""
    if name not in body or body[name] is None:
        if required:
            problems.add(name, "is required")
        elif name in body and not allow_null:
            problems.add(name, "must not be null")
        return None
    value = body[name]
    if not isinstance(value, str):
        problems.add(name, "must be a string")
        return None
    if "\x00" in value:
        problems.add(name, "must not contain NUL characters")
        return None
    value = value.strip()
    if not value:
        if required:
            problems.add(name, "must not be empty")
        return None  # an empty optional string means "none"
    if len(value) > max_length:
        problems.add(name, f"must be at most {max_length} characters")
        return None
    return value


def int_field(body, name, problems, minimum=None, maximum=MAX_ID):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(name, "must be an integer")
        return None
    if minimum is not None and value < minimum:
        problems.add(name, f"must be at least {minimum}")
        return None
    if maximum is not None and value > maximum:
        problems.add(name, f"must be at most {maximum}")
        return None
    return value


def bool_field(body, name, problems):
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        problems.add(name, "must be true or false")
        return None
    return value


def valid_email(value):
    """A plausible address: local@domain with a dot in the domain (or localhost)."""
    if not isinstance(value, str) or " " in value or len(value) > 254:
        return False
    local, at, domain = value.rpartition("@")
    return bool(at and local and domain and ("." in domain.strip(".") or domain == "localhost"))


def audit(conn, request, action, entity, entity_id, before=None, after=None):
    """Record a change in the audit log (inside the caller's transaction)."""
    actor = request.actor if request is not None else None  # None: the scheduler
    conn.execute(
        "INSERT INTO audit_log (at, actor, role, action, entity, entity_id, before, after, request_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (now_micros(), actor.label if actor else "system", actor.role if actor else None,
         action, entity, None if entity_id is None else str(entity_id),
         None if before is None else jsonutil.encode(before),
         None if after is None else jsonutil.encode(after),
         request.request_id if request else None))


