"""Objects (§8): each tenant's files, streamed to disk, within its quota.

A tenant (customer-scoped key or `customer` user) acts on its own objects;
staff name the customer with `?customer_id=`. Another customer's key answers
404 on every route: every lookup is by (customer, key), and the customer is
the caller's own unless staff named one.
"""

import threading

from ..domain import objects as rules
from ..domain import times
from ..errors import (ApiError, Conflict, NotFound, PayloadTooLarge, QuotaExceeded, RangeNotSatisfiable,
                      ValidationError)
from ..store.db import named, scalar
from ..store.files import CHUNK
from .responses import FileResponse, Response, created
from .common import audit, decode_cursor, int_arg, now_micros, one_or_404, page, page_limit
from .storage import stored_bytes

COLUMNS = "id, customer_id, key, size, content_type, etag, file, created_at, updated_at"


def _load(conn, customer_id, key):
    return one_or_404(conn, f"SELECT {COLUMNS} FROM objects WHERE customer_id = ? AND key = ?", (customer_id, key),
                      "Object not found.")


def view(row):
    return {"key": row["key"], "size": row["size"], "content_type": row["content_type"], "etag": row["etag"],
            "created_at": times.format_micros(row["created_at"]),
            "updated_at": times.format_micros(row["updated_at"])}


# -- quota reservations --------------------------------------------------------

class Reservations:
    """Bytes promised to uploads in flight, per customer. A reservation is
    taken before any byte is written (all of Content-Length at once, or chunk
    by chunk for a chunked body) and checked against stored + reserved bytes
    under one lock, so racing uploads never exceed the quota together. It is
    released when the upload is committed, fails or is cut off; it lives in
    memory only, so a crash leaves none behind."""

    def __init__(self, db):
        self.db = db
        self._lock = threading.Lock()
        self._held = {}

    def open(self, customer_id, quota, credit):
        return Reservation(self, customer_id, quota, credit)

    def _take(self, reservation, n):
        customer_id = reservation.customer_id
        with self._lock:
            held = self._held.get(customer_id, 0)
            if reservation.quota is not None:
                with self.db.reader() as conn:
                    used = stored_bytes(conn, customer_id) + held - reservation.bytes  # others' uploads in flight
                if used + reservation.bytes - reservation.credit + n > reservation.quota:
                    raise QuotaExceeded(reservation.quota, used)
            self._held[customer_id] = held + n
            reservation.bytes += n

    def _release(self, reservation):
        with self._lock:
            left = self._held.get(reservation.customer_id, 0) - reservation.bytes
            if left > 0:
                self._held[reservation.customer_id] = left
            else:
                self._held.pop(reservation.customer_id, None)
            reservation.bytes = 0

    def held(self, customer_id):
        with self._lock:
            return self._held.get(customer_id, 0)


class Reservation:
    def __init__(self, book, customer_id, quota, credit):
        self.book = book
        self.customer_id = customer_id
        self.quota = quota
        self.credit = credit  # the size of the object this upload replaces
        self.bytes = 0

    def extend(self, n):
        self.book._take(self, n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.book._release(self)
        return False


# -- who and which key -------------------------------------------------------

def _tenant(request):
    """The customer whose objects the request acts on."""
    scope = request.customer_scope
    raw = request.arg("customer_id")
    if scope is not None:
        if raw not in (None, "") and raw != str(scope):
            raise NotFound("Customer not found.")
        return scope
    if raw in (None, ""):
        raise ValidationError([{"field": "customer_id", "message": "is required for staff: whose objects"}])
    customer_id = int_arg(request, "customer_id", minimum=1)
    if request.app.catalog.customer(customer_id) is None:
        raise NotFound(f"Customer {customer_id} not found.")
    return customer_id


def _key(raw):
    try:
        return rules.parse_key(raw)
    except rules.KeyError_ as exc:
        raise ValidationError([{"field": "key", "message": str(exc)}]) from None


class _Call:
    """One object request of a tenant, to be metered as storage_api_calls."""

    def __init__(self, request, operation):
        self.app = request.app
        self.customer_id = request.customer_scope  # staff requests are not the tenant's calls
        self.operation = operation
        self.recorded = False

    def record_in(self, conn):
        """In the transaction of the change it made."""
        if self.customer_id is not None:
            self.app.storage.record_in(conn, self.customer_id, self.operation)
            self.recorded = True

    def count(self):
        if self.customer_id is not None and not self.recorded:
            self.app.storage.count(self.customer_id, self.operation)
            self.recorded = True


def _metered(request, operation, work):
    call = _Call(request, operation)
    try:
        result = work(call)
    except ApiError as exc:
        if exc.status < 500:
            call.count()
        raise
    call.count()
    return result


# -- handlers -------------------------------------------------------------------

def put_object(request, key):
    return _metered(request, "put", lambda call: _put(request, key, call))


def _put(request, raw_key, call):
    app = request.app
    customer_id = _tenant(request)
    key = _key(raw_key)
    try:
        content_type = rules.check_content_type(request.headers.get("Content-Type"))
    except ValueError as exc:
        raise ValidationError([{"field": "Content-Type", "message": str(exc)}]) from None
    customer = app.db.row("SELECT archived, storage_quota_bytes FROM customers WHERE id = ?", (customer_id,))
    if customer["archived"]:
        raise Conflict(f"Customer {customer_id} is archived; it cannot store objects.")
    existing = app.db.row("SELECT size FROM objects WHERE customer_id = ? AND key = ?", (customer_id, key))
    body = request.body_stream
    limit = app.config.max_object_bytes
    with app.reservations.open(customer_id, customer["storage_quota_bytes"],
                               existing["size"] if existing else 0) as reservation:
        if body.length is not None:
            reservation.extend(body.length)  # decided before reading a byte
        upload = app.files.new_upload()
        committed = False
        try:
            while True:
                data = body.read(CHUNK)
                if not data:
                    break
                if body.length is None:
                    if upload.size + len(data) > limit:
                        raise PayloadTooLarge(f"The object exceeds the {limit} byte limit (BILLING_MAX_OBJECT_BYTES).")
                    reservation.extend(len(data))
                upload.write(data)
            upload.place()
            row, replaced = _commit(app, request, customer_id, key, upload, content_type, call)
            committed = True
        finally:
            if not committed:
                upload.discard()
    if replaced is not None:
        app.files.retire(replaced)
    return created(view(row)) if replaced is None else view(row)


def store_bytes(app, customer_id, key, data, content_type=rules.DEFAULT_CONTENT_TYPE):
    """Store an object from bytes in memory, as an upload would (the demo)."""
    upload = app.files.new_upload()
    try:
        upload.write(data)
        upload.place()
        row, replaced = _commit(app, None, customer_id, rules.check_key(key), upload, content_type, None)
    except BaseException:
        upload.discard()
        raise
    if replaced is not None:
        app.files.retire(replaced)
    return view(row)


def _commit(app, request, customer_id, key, upload, content_type, call):
    """Point (customer, key) at the placed file; returns (row, replaced file or None).
    `request` and `call` are None when the server stores an object itself."""
    now = now_micros()
    now_s = now // 1_000_000
    with app.db.transaction() as conn:
        customer = named(conn, "SELECT archived, storage_quota_bytes FROM customers WHERE id = ?",
                         (customer_id,)).fetchone()
        if customer["archived"]:
            raise Conflict(f"Customer {customer_id} is archived; it cannot store objects.")
        old = named(conn, f"SELECT {COLUMNS} FROM objects WHERE customer_id = ? AND key = ?",
                    (customer_id, key)).fetchone()
        total = stored_bytes(conn, customer_id) - (old["size"] if old else 0) + upload.size
        quota = customer["storage_quota_bytes"]
        if quota is not None and total > quota:  # the quota was lowered meanwhile
            raise QuotaExceeded(quota, total - upload.size)
        if old is None:
            object_id = conn.execute(
                "INSERT INTO objects (customer_id, key, size, content_type, etag, file, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (customer_id, key, upload.size, content_type, upload.etag, upload.name, now, now)).lastrowid
        else:
            object_id = old["id"]
            conn.execute("UPDATE objects SET size = ?, content_type = ?, etag = ?, file = ?, updated_at = ?"
                         " WHERE id = ?", (upload.size, content_type, upload.etag, upload.name, now, object_id))
            conn.execute("UPDATE storage_spans SET end_s = ? WHERE object_id = ? AND end_s IS NULL",
                         (now_s, object_id))
        conn.execute("INSERT INTO storage_spans (customer_id, object_id, size, start_s) VALUES (?, ?, ?, ?)",
                     (customer_id, object_id, upload.size, now_s))
        if call is not None:
            call.record_in(conn)
        row = named(conn, f"SELECT {COLUMNS} FROM objects WHERE id = ?", (object_id,)).fetchone()
        if request is not None:
            audit(conn, request, "object.put", "object", f"{customer_id}/{key}",
                  view(old) if old else None, view(row))
    return row, (old["file"] if old else None)


def get_object(request, key):
    return _metered(request, "head" if request.method == "HEAD" else "get", lambda call: _get(request, key))


def _get(request, raw_key):
    app = request.app
    customer_id = _tenant(request)
    key = _key(raw_key)
    for _ in range(3):  # a replace between the lookup and the open: look again
        with app.db.reader() as conn:
            row = _load(conn, customer_id, key)
        try:
            file = app.files.open(row["file"])
            break
        except FileNotFoundError:
            continue
    else:
        raise NotFound("Object not found.")
    etag = rules.quoted_etag(row["etag"])
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Disposition": rules.content_disposition(key),
               "Content-Security-Policy": "sandbox", "Cache-Control": "private, no-cache"}
    size = row["size"]
    try:
        match = request.headers.get("If-None-Match")
        if match and rules.etag_matches(match, row["etag"]):
            file.close()
            return Response(304, None, headers={"ETag": etag, "Cache-Control": "private, no-cache"})
        try:
            wanted = rules.parse_range(request.headers.get("Range"), size)
        except rules.RangeNotSatisfiable:
            raise RangeNotSatisfiable(size) from None
        if wanted is None:
            return FileResponse(200, file, 0, size, row["content_type"], headers)
        start, end = wanted
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return FileResponse(206, file, start, end - start + 1, row["content_type"], headers)
    except BaseException:
        file.close()
        raise


def delete_object(request, key):
    return _metered(request, "delete", lambda call: _delete(request, key, call))


def _delete(request, raw_key, call):
    app = request.app
    customer_id = _tenant(request)
    key = _key(raw_key)
    with app.db.transaction() as conn:
        row = _load(conn, customer_id, key)
        conn.execute("DELETE FROM objects WHERE id = ?", (row["id"],))
        conn.execute("UPDATE storage_spans SET end_s = ? WHERE object_id = ? AND end_s IS NULL",
                     (now_micros() // 1_000_000, row["id"]))
        call.record_in(conn)
        audit(conn, request, "object.delete", "object", f"{customer_id}/{key}", view(row), None)
    app.files.retire(row["file"])
    return view(row)


def list_objects(request):
    return _metered(request, "list", lambda call: _list(request))


def _list(request):
    app = request.app
    customer_id = _tenant(request)
    limit = page_limit(request)
    cursor = decode_cursor(request, (str,))
    prefix = request.arg("prefix") or ""
    if prefix:
        try:
            rules.check_key(prefix)
        except rules.KeyError_ as exc:
            raise ValidationError([{"field": "prefix", "message": str(exc).replace("the key", "the prefix")}]) \
                from None
    where, params = ["customer_id = ?"], [customer_id]
    if cursor:
        where.append("key > ?")
        params.append(cursor[0])
    if prefix:
        where.append("key >= ? AND substr(key, 1, length(?)) = ?")
        params += [prefix, prefix, prefix]
    with app.db.reader() as conn:
        rows = named(conn, f"SELECT {COLUMNS} FROM objects WHERE {' AND '.join(where)} ORDER BY key LIMIT ?",
                     (*params, limit + 1)).fetchall()
        totals = named(conn, "SELECT count(*) AS objects, coalesce(sum(size), 0) AS total FROM objects"
                       " WHERE customer_id = ?", (customer_id,)).fetchone()
        quota = scalar(conn, "SELECT storage_quota_bytes FROM customers WHERE id = ?", (customer_id,))
    return {"customer_id": customer_id, **page(rows, limit, view, lambda r: [r["key"]]),
            "object_count": totals["objects"], "total_bytes": totals["total"], "quota_bytes": quota}


def storage_summary(request):
    """Staff: stored bytes and quota per customer that stores objects or has a quota."""
    limit = page_limit(request)
    cursor = decode_cursor(request)
    rows = request.app.db.rows(
        "SELECT c.id, c.name, c.email, c.storage_quota_bytes, count(o.id) AS objects,"
        " coalesce(sum(o.size), 0) AS total_bytes FROM customers c LEFT JOIN objects o ON o.customer_id = c.id"
        " WHERE c.id > ? AND (o.id IS NOT NULL OR c.storage_quota_bytes IS NOT NULL)"
        " GROUP BY c.id ORDER BY c.id LIMIT ?", (cursor[0] if cursor else 0, limit + 1))
    return page(rows, limit, _usage_view, lambda r: [r["id"]])


def _usage_view(row):
    return {"customer_id": row["id"], "name": row["name"], "email": row["email"], "objects": row["objects"],
            "total_bytes": row["total_bytes"], "quota_bytes": row["storage_quota_bytes"]}
