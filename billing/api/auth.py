"""Authentication: passwords (scrypt), API keys and session tokens (SHA-256
digests of 256-bit random secrets), and the roles routes are checked against.

Roles are sets of names on each route; a customer-scoped key is the pseudo-role
CUSTOMER and carries its customer id, which handlers narrow to with
`request.check_customer()`/`request.customer_scope`. New roles are new names in
the groups below, not changes to handlers.
"""

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from ..domain import times
from ..errors import Forbidden, Unauthenticated, ValidationError
from . import audit_log, ratelimit, throttle
from .common import now_micros

ADMIN, FINANCE, VIEWER, INGEST = "admin", "finance", "viewer", "ingest"
CUSTOMER_SUCCESS, SALES = "customer_success", "sales"
CUSTOMER = "customer"  # customer-scoped API keys and customer users: one customer's own data
SYSTEM = "system"      # the scheduler, in invoice histories
USER_ROLES = (ADMIN, FINANCE, CUSTOMER_SUCCESS, SALES, VIEWER, INGEST)
KEY_ROLES = USER_ROLES

# Route permission groups (the route table names these).
ADMIN_ONLY = (ADMIN,)
STAFF_WRITE = (ADMIN, FINANCE)
STAFF_READ = (ADMIN, FINANCE, CUSTOMER_SUCCESS, SALES, VIEWER)
# who may approve or reject an invoice, by the role the user has at that moment
# (a customer's csm_user_id must be one of them; checked by the handler)
APPROVERS = (ADMIN, CUSTOMER_SUCCESS, SALES)
CUSTOMER_READ = STAFF_READ + (CUSTOMER,)
EVENT_WRITE = (ADMIN, INGEST, CUSTOMER)
OBJECT_WRITE = STAFF_WRITE + (CUSTOMER,)
USER_ADMINS = (ADMIN, FINANCE)  # finance: customer users only
ANY_SIGNED_IN = USER_ROLES + (CUSTOMER,)

SESSION_HOURS = 12
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
KEY_PREFIX = "mk_"
TOKEN_PREFIX = "ms_"


@dataclass(frozen=True)
class Actor:
    kind: str            # "user" | "key"
    id: int
    role: str
    customer_id: int | None = None
    name: str = ""
    user_id: int | None = None

    @property
    def label(self):
        return f"{self.kind}:{self.id}"


# -- passwords -------------------------------------------------------------

def hash_password(password):
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R,
                            p=SCRYPT_P, dklen=32)
    return "scrypt${}${}${}${}${}".format(
        SCRYPT_N, SCRYPT_R, SCRYPT_P, base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


def verify_password(password, stored):
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# What an unknown or disabled user's attempt is checked against, so it costs
# the same scrypt run as a known user's: a random digest under the current
# parameters, which no password produces (nothing to compute at start).
DUMMY_HASH = "scrypt${}${}${}${}${}".format(
    SCRYPT_N, SCRYPT_R, SCRYPT_P, base64.b64encode(secrets.token_bytes(16)).decode(),
    base64.b64encode(secrets.token_bytes(32)).decode())


def check_password_strength(password, problems, field="password"):
    if not isinstance(password, str):
        problems.add(field, "must be a string")
    elif len(password) < 8:
        problems.add(field, "must be at least 8 characters")
    elif len(password) > 1024:
        problems.add(field, "must be at most 1024 characters")


# -- secrets ---------------------------------------------------------------

def new_secret(prefix):
    return prefix + secrets.token_urlsafe(32)  # 256 bits


def digest(secret):
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class Authenticator:
    """Resolves bearer tokens to actors, with a small cache that every
    revocation clears (one process, so the cache is never stale). It also
    holds the sign-in throttle, the customer rate limit, and the record of
    revoked keys still in use (written by the background flusher, so a
    request with a revoked key never waits for a write)."""

    CACHE_SECONDS = 30
    REVOKED_USE_MICROS = 60 * 1_000_000  # a revoked key's use is recorded at most once a minute
    MAX_PENDING = 10_000

    def __init__(self, db, config=None):
        self.db = db
        self._cache = {}
        self._lock = threading.Lock()
        self._generation = 0  # a lookup started before a revocation is not cached
        self.trusted_proxies = getattr(config, "trusted_proxies", ())
        self.throttle = throttle.SignInThrottle()
        self.limiter = ratelimit.RateLimiter(getattr(config, "rate_limit", 100))
        self._revoked_seen = OrderedDict()  # key id -> when its use was last recorded, oldest first
        self._revoked_pending = []  # audit entries for flush()

    def invalidate(self):
        with self._lock:
            self._generation += 1
            self._cache.clear()

    def client_address(self, request):
        """The client a request counts against (§9; throttle.client_address)."""
        return throttle.client_address(request.client, request.headers.get("X-Forwarded-For"),
                                       self.trusted_proxies)

    def limit(self, actor):
        """The §9 rate limit of customer credentials (429 past it)."""
        self.limiter.check(actor)

    def resolve(self, header, request=None):
        if not header:
            raise Unauthenticated()
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Use 'Authorization: Bearer <token>'.")
        key = digest(token)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached:
            actor, fresh_until, expires_us = cached
            if fresh_until > now and (expires_us is None or expires_us > now_micros()):
                return actor
        generation = self._generation
        actor, expires = self._lookup(token, key, request)
        if actor is None:
            raise Unauthenticated("The token is not valid (unknown, revoked or expired).")
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            if generation == self._generation:
                self._cache[key] = (actor, now + self.CACHE_SECONDS, expires)
        return actor

    def _lookup(self, token, key, request):
        if token.startswith(TOKEN_PREFIX):
            row = self.db.row(
                "SELECT s.expires_at, u.id, u.role, u.name, u.customer_id FROM auth_sessions s"
                " JOIN users u ON u.id = s.user_id"
                " WHERE s.digest = ? AND s.revoked_at IS NULL AND u.disabled = 0", (key,))
            if row is None or row["expires_at"] <= now_micros():
                return None, None
            return Actor("user", row["id"], row["role"], row["customer_id"], row["name"], row["id"]), \
                row["expires_at"]
        row = self.db.row(
            "SELECT id, role, customer_id, name, prefix, revoked_at FROM api_keys WHERE digest = ?", (key,))
        if row is None:
            return None, None
        role = row["role"] if row["customer_id"] is None else CUSTOMER
        if row["revoked_at"] is not None:
            self._note_revoked_use(row, role, request)
            return None, None
        return Actor("key", row["id"], role, row["customer_id"], row["name"]), None

    # -- revoked keys still in use --------------------------------------------
    def _note_revoked_use(self, row, role, request):
        """Queue an `api_key.revoked_use` audit entry, at most one per key
        per minute (whatever the number of requests) and at most
        MAX_PENDING between two flushes."""
        now = now_micros()
        entry = {"at": now, "actor": f"key:{row['id']}", "role": role, "action": "api_key.revoked_use",
                 "entity": "api_key", "entity_id": row["id"],
                 "after": {"name": row["name"], "prefix": row["prefix"],
                           "revoked_at": times.format_micros(row["revoked_at"]),
                           "client": self.client_address(request) if request is not None else None},
                 "request_id": request.request_id if request is not None else None}
        with self._lock:
            seen = self._revoked_seen
            while seen and now - seen[next(iter(seen))] >= self.REVOKED_USE_MICROS:
                seen.popitem(last=False)
            if row["id"] in seen or len(self._revoked_pending) >= self.MAX_PENDING:
                return
            seen[row["id"]] = now
            self._revoked_pending.append(entry)

    def flush(self):
        """Write the queued revoked-key entries (the flusher calls this every
        few seconds and at stop); how many were written."""
        with self._lock:
            pending, self._revoked_pending = self._revoked_pending, []
        if pending:
            with self.db.transaction() as conn:
                for entry in pending:
                    audit_log.record(conn, **entry)
        return len(pending)


def authorize(actor, roles):
    if actor.role not in roles:
        raise Forbidden(f"The role '{actor.role}' may not do this.")


# -- handlers --------------------------------------------------------------

def user_view(row):
    """A users row (sqlite3.Row of USER_COLUMNS) as JSON."""
    return {"id": row["id"], "email": row["email"], "name": row["name"], "role": row["role"],
            "created_at": times.format_micros(row["created_at"]), "disabled": bool(row["disabled"]),
            "customer_id": row["customer_id"]}


USER_COLUMNS = "id, email, name, role, created_at, disabled, customer_id"


EMAIL_MAX = 254


def _credentials(request):
    body = request.json()
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        raise ValidationError([{"field": "email", "message": "email and password are required strings"}])
    email = email.strip().lower()  # one spelling for the throttle and the lookup
    if len(email) > EMAIL_MAX:
        raise ValidationError([{"field": "email", "message": f"must be at most {EMAIL_MAX} characters"}])
    return email, password


def login(request):
    """Sign in: 429 while the (e-mail, address) or the address is throttled;
    every attempt runs scrypt once (unknown and disabled users against
    DUMMY_HASH), so the answer's timing does not tell which e-mails exist.
    Successes and failures go to the audit log."""
    email, password = _credentials(request)
    app = request.app
    address = app.auth.client_address(request)
    ticket = app.auth.throttle.reserve(email, address)  # before scrypt runs, so parallel guesses count too
    row = app.db.row(f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = ?", (email,))
    right = verify_password(password, row["password_hash"] if row is not None else DUMMY_HASH)
    if row is None or row["disabled"] or not right:
        reason = "unknown_user" if row is None else "disabled" if row["disabled"] else "wrong_password"
        with app.db.transaction() as conn:
            audit_log.record(conn, at=now_micros(), actor=audit_log.ANONYMOUS, role=None,
                             action="auth.login_failed", entity="user", entity_id=row["id"] if row else None,
                             after={"email": email, "client": address, "reason": reason},
                             request_id=request.request_id)
        raise Unauthenticated("Wrong e-mail or password.")
    app.auth.throttle.succeeded(ticket)
    token = new_secret(TOKEN_PREFIX)
    now = now_micros()
    expires = now + SESSION_HOURS * 3600 * 1_000_000
    with app.db.transaction() as conn:
        cur = conn.execute("INSERT INTO auth_sessions (digest, user_id, created_at, expires_at)"
                           " VALUES (?, ?, ?, ?)", (digest(token), row["id"], now, expires))
        audit_log.record(conn, at=now, actor=f"user:{row['id']}", role=row["role"], action="auth.login",
                         entity="user", entity_id=row["id"],
                         after={"email": email, "client": address, "session_id": cur.lastrowid,
                                "expires_at": times.format_micros(expires)},
                         request_id=request.request_id)
    return {"token": token, "expires_at": times.format_micros(expires), "user": user_view(row)}


def session_digest(request):
    """The digest of the session token a signed-in user's request carries
    (None for an API key)."""
    if request.actor is None or request.actor.kind != "user":
        return None
    return digest(request.headers.get("Authorization", "").partition(" ")[2].strip())


def logout(request):
    if request.actor.kind != "user":
        raise ValidationError([{"field": "Authorization", "message": "logout needs a session token, not an API key"}])
    with request.app.db.transaction() as conn:
        conn.execute("UPDATE auth_sessions SET revoked_at = ? WHERE digest = ? AND revoked_at IS NULL",
                     (now_micros(), session_digest(request)))
    request.app.auth.invalidate()
    return {"logged_out": True}


def me(request):
    actor = request.actor
    if actor.kind == "user":
        row = request.app.db.row(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (actor.id,))
        return {"kind": "user", "user": user_view(row), "role": actor.role, "customer_id": actor.customer_id}
    return {"kind": "api_key", "api_key": {"id": actor.id, "name": actor.name},
            "role": actor.role, "customer_id": actor.customer_id}


def bootstrap(db, admin_key=None, admin_password=None):
    """On a new database: the admin user and an admin API key. Returns the
    secrets that were generated (to print once) or None if users exist."""
    if db.row("SELECT 1 FROM users LIMIT 1"):
        return None
    password = admin_password or secrets.token_urlsafe(12)
    key = admin_key or new_secret(KEY_PREFIX)
    now = now_micros()
    with db.transaction() as conn:
        conn.execute("INSERT INTO users (email, name, role, password_hash, created_at, updated_at)"
                     " VALUES ('admin@localhost', 'Administrator', 'admin', ?, ?, ?)",
                     (hash_password(password), now, now))
        conn.execute("INSERT INTO api_keys (name, role, prefix, digest, created_at, created_by)"
                     " VALUES ('bootstrap admin key', 'admin', ?, ?, ?, 'system')",
                     (key[:8], digest(key), now))  # prefix: at most 8 characters
    return {"email": "admin@localhost",
            "password": None if admin_password else password,
            "api_key": None if admin_key else key}


