"""Users and API keys. Admin manages everyone; finance may create, read,
change and remove `customer` users only (§9)."""

import sqlite3

from ..domain import times
from ..errors import Conflict, FieldErrors, Forbidden, NotFound
from ..store.db import named, scalar
from .responses import created
from . import auth
from .common import (MAX_ID, audit, check_unknown_fields, decode_cursor, now_micros, one_or_404, page, page_limit,
                     path_int, text_field, valid_email)

EMAIL_MAX = 254
ROLES = auth.USER_ROLES + (auth.CUSTOMER,)


def _may_manage(actor, role):
    """Admin manages every user; finance only customer users."""
    return actor.role == auth.ADMIN or role == auth.CUSTOMER


def _get_user(conn, actor, user_id):
    row = named(conn, f"SELECT {auth.USER_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None or not _may_manage(actor, row["role"]):
        raise NotFound(f"User {user_id} not found.")
    return row


def _customer_field(body, role, problems, db):
    """The customer a `customer` user belongs to (required for that role only)."""
    customer_id = body.get("customer_id")
    if role != auth.CUSTOMER:
        if customer_id is not None:
            problems.add("customer_id", "only a customer user belongs to a customer")
        return None
    if isinstance(customer_id, bool) or not isinstance(customer_id, int) or not 1 <= customer_id <= MAX_ID:
        problems.add("customer_id", "is required for a customer user: a customer id")
        return None
    if not db.row("SELECT 1 FROM customers WHERE id = ?", (customer_id,)):
        problems.add("customer_id", f"customer {customer_id} does not exist")
        return None
    return customer_id


def create_user(request):
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, {"email", "name", "role", "password", "customer_id"}, problems)
    email = text_field(body, "email", problems, required=True, max_length=EMAIL_MAX)
    if email and not valid_email(email):
        problems.add("email", "is not a valid e-mail address")
    name = text_field(body, "name", problems, required=True, max_length=200)
    role = body.get("role")
    if role not in ROLES:
        problems.add("role", f"must be one of {', '.join(ROLES)}")
    elif not _may_manage(request.actor, role):
        raise Forbidden("Finance may create customer users only.")
    db = request.app.db
    customer_id = _customer_field(body, role, problems, db)
    auth.check_password_strength(body.get("password"), problems)
    problems.raise_if_any()
    now = now_micros()
    try:
        with db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO users (email, name, role, password_hash, created_at, updated_at, customer_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (email, name, role, auth.hash_password(body["password"]), now, now, customer_id))
            row = _get_user(conn, request.actor, cur.lastrowid)
            audit(conn, request, "user.create", "user", row["id"], after=auth.user_view(row))
    except sqlite3.IntegrityError:
        raise Conflict(f"A user with e-mail {email} already exists.") from None
    return created(auth.user_view(row))


def list_users(request):
    limit = page_limit(request)
    cursor = decode_cursor(request)
    where, params = ["id > ?"], [cursor[0] if cursor else 0]
    role = request.arg("role")
    if request.actor.role != auth.ADMIN:
        role = auth.CUSTOMER
    if role:
        where.append("role = ?")
        params.append(role)
    customer_id = request.arg("customer_id")
    if customer_id:
        where.append("customer_id = ?")
        params.append(path_int(customer_id, "Customer") if customer_id.isdigit() else -1)
    rows = request.app.db.rows(
        f"SELECT {auth.USER_COLUMNS} FROM users WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
        (*params, limit + 1))
    return page(rows, limit, auth.user_view, lambda r: [r["id"]])


def get_user(request, user_id):
    with request.app.db.reader() as conn:
        return auth.user_view(_get_user(conn, request.actor, path_int(user_id, "User")))


def update_user(request, user_id):
    user_id = path_int(user_id, "User")
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, {"name", "role", "password", "disabled"}, problems)
    db = request.app.db
    with db.reader() as conn:
        current = _get_user(conn, request.actor, user_id)
    changes = {}
    if "name" in body:
        changes["name"] = text_field(body, "name", problems, required=True, max_length=200)
    if "role" in body:
        if body["role"] not in auth.USER_ROLES:
            problems.add("role", f"must be one of {', '.join(auth.USER_ROLES)}")
        elif current["role"] == auth.CUSTOMER and body["role"] != auth.CUSTOMER:
            problems.add("role", "a customer user stays a customer user; create a staff user instead")
        changes["role"] = body["role"]
    if current["role"] == auth.CUSTOMER and body.get("role") == auth.CUSTOMER:
        changes.pop("role")
    if "password" in body:
        auth.check_password_strength(body["password"], problems)
    if "disabled" in body:
        if not isinstance(body["disabled"], bool):
            problems.add("disabled", "must be true or false")
        changes["disabled"] = int(bool(body["disabled"]))
    problems.raise_if_any()
    if "password" in body:
        changes["password_hash"] = auth.hash_password(body["password"])
    with db.transaction() as conn:
        before = auth.user_view(_get_user(conn, request.actor, user_id))
        if changes:
            sets = ", ".join(f"{column} = ?" for column in changes)
            conn.execute(f"UPDATE users SET {sets}, updated_at = ? WHERE id = ?",
                         (*changes.values(), now_micros(), user_id))
        after = auth.user_view(_get_user(conn, request.actor, user_id))
        logged = after
        if "password" in body:
            logged = {**after, "password_changed": True, "sessions_ended": _end_sessions(conn, request, user_id)}
        audit(conn, request, "user.update", "user", user_id, before, logged)
    request.app.auth.invalidate()
    return after


def _end_sessions(conn, request, user_id):
    """A new password ends the user's sign-in sessions, all but the one
    making the request when users change their own password (so the
    dashboard that did it stays signed in). How many ended."""
    keep = auth.session_digest(request) if request.actor.user_id == user_id else None
    return conn.execute("UPDATE auth_sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL"
                        " AND digest IS NOT ?", (now_micros(), user_id, keep)).rowcount


def delete_user(request, user_id):
    user_id = path_int(user_id, "User")
    db = request.app.db
    if request.actor.user_id == user_id:
        raise Conflict("You cannot delete your own user.")
    with db.transaction() as conn:
        before = auth.user_view(_get_user(conn, request.actor, user_id))
        in_use = scalar(conn, "SELECT 1 FROM customers WHERE csm_user_id = ? LIMIT 1", (user_id,))
        conn.execute("UPDATE auth_sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                     (now_micros(), user_id))
        if in_use:
            # referenced as a customer's CSM: keep the row, disable the login
            conn.execute("UPDATE users SET disabled = 1, updated_at = ? WHERE id = ?", (now_micros(), user_id))
        else:
            conn.execute("DELETE FROM auth_sessions WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
        audit(conn, request, "user.delete", "user", user_id, before, None)
    request.app.auth.invalidate()
    return {"id": user_id, "deleted": True}


# -- API keys --------------------------------------------------------------

KEY_COLUMNS = "id, name, role, customer_id, prefix, created_at, created_by, revoked_at"


def key_view(row):
    """An api_keys row (sqlite3.Row of KEY_COLUMNS) as JSON; a customer-scoped key has the role customer."""
    return {"id": row["id"], "name": row["name"], "role": row["role"] if row["customer_id"] is None else auth.CUSTOMER,
            "customer_id": row["customer_id"], "prefix": row["prefix"][:8],
            "created_at": times.format_micros(row["created_at"]), "created_by": row["created_by"],
            "revoked": row["revoked_at"] is not None, "revoked_at": times.format_micros(row["revoked_at"])}


def _load_key(conn, key_id):
    return one_or_404(conn, f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,),
                      f"API key {key_id} not found.")


def create_key(request):
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, {"name", "role", "customer_id"}, problems)
    name = text_field(body, "name", problems, required=True, max_length=200)
    role, customer_id = body.get("role"), body.get("customer_id")
    if (role is None) == (customer_id is None):
        problems.add("role", "give either a role or a customer_id")
    elif role is not None and role not in auth.KEY_ROLES:
        problems.add("role", f"must be one of {', '.join(auth.KEY_ROLES)}")
    elif customer_id is not None and (isinstance(customer_id, bool) or not isinstance(customer_id, int)
                                      or not 1 <= customer_id <= MAX_ID):
        problems.add("customer_id", "must be a customer id (a positive integer)")
    problems.raise_if_any()
    db = request.app.db
    if customer_id is not None and not db.row("SELECT 1 FROM customers WHERE id = ?", (customer_id,)):
        raise FieldErrors.single("customer_id", f"customer {customer_id} does not exist")
    secret = auth.new_secret(auth.KEY_PREFIX)
    with db.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO api_keys (name, role, customer_id, prefix, digest, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, role, customer_id, secret[:8], auth.digest(secret), now_micros(), request.actor.label))
        row = _load_key(conn, cur.lastrowid)
        audit(conn, request, "api_key.create", "api_key", row["id"], after=key_view(row))
    view = key_view(row)
    view["key"] = secret  # shown this once
    return created(view)


def list_keys(request):
    limit = page_limit(request)
    cursor = decode_cursor(request)
    rows = request.app.db.rows(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id > ? ORDER BY id LIMIT ?",
        (cursor[0] if cursor else 0, limit + 1))
    return page(rows, limit, key_view, lambda r: [r["id"]])


def revoke_key(request, key_id):
    key_id = path_int(key_id, "API key")
    db = request.app.db
    with db.transaction() as conn:
        row = _load_key(conn, key_id)
        if row["revoked_at"] is not None:
            raise Conflict(f"API key {key_id} is already revoked.")
        conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now_micros(), key_id))
        after = _load_key(conn, key_id)
        audit(conn, request, "api_key.revoke", "api_key", key_id, key_view(row), key_view(after))
    request.app.auth.invalidate()
    return key_view(after)
