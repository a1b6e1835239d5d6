"""Shared helpers for the HTTP tests: fixtures data, raw requests, DB peeks."""

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
from decimal import Decimal
from urllib.parse import quote, urlencode

from billing import clock
from billing.domain import times
from tests import tools
from tests.harness import RunningServer, make_key, temp_db  # noqa: F401  (re-exported)

JSON = {"Content-Type": "application/json"}

_counter = [0]


def unique(prefix="x"):
    _counter[0] += 1
    return f"{prefix}{_counter[0]}"


def pin(text):
    """Freeze the clock at an RFC 3339 instant."""
    clock.pin(times.parse_instant(text))


def create_customer(client, **fields):
    body = {"name": "Acme", "email": f"{unique('c')}@example.com", **fields}
    reply = client.post("/v1/customers", body)
    assert reply.status == 201, reply
    return reply.json


def make_customer(client, **fields):
    """A new customer (create_customer); its id."""
    return create_customer(client, **fields)["id"]


def create_meter(client, key="api_calls", aggregation="sum", **fields):
    body = {"key": key, "name": key.replace("_", " ").title(), "aggregation": aggregation, **fields}
    reply = client.post("/v1/meters", body)
    assert reply.status == 201, reply
    return reply.json


def post_event(client, **event):
    return client.post("/v1/events", event)


def post_raw(client, path, text, headers=None):
    """POST a body given as JSON text (for numbers json.dumps cannot write)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return client.request("POST", path, raw=data, headers={**JSON, **(headers or {})})


def event_count(server, customer_id=None):
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        if customer_id is None:
            return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        return conn.execute("SELECT COUNT(*) FROM events WHERE customer_id = ?", (customer_id,)).fetchone()[0]
    finally:
        conn.close()


def table_count(server, table):
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def list_all(client, path):
    """Every item of a paged list, following next_cursor."""
    items, cursor = [], None
    sep = "&" if "?" in path else "?"
    while True:
        url = path if cursor is None else f"{path}{sep}cursor={cursor}"
        reply = client.get(url)
        assert reply.status == 200, reply
        items += reply.json["data"]
        cursor = reply.json["next_cursor"]
        if cursor is None:
            return items


def assert_validation(reply, *fields):
    """A 400 validation_error whose details name each of `fields`."""
    assert reply.status == 400, reply
    assert reply.error_code == "validation_error", reply
    named = [d.get("field") for d in reply.json["error"]["details"]]
    for field in fields:
        assert any(n == field or (isinstance(n, str) and n.startswith(field + ".")) for n in named), \
            (field, reply.json)
    assert isinstance(reply.json["error"]["message"], str) and reply.json["error"]["message"]


def assert_error(reply, status, code):
    assert reply.status == status, reply
    assert reply.error_code == code, reply
    error = reply.json["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)


def raw_exchange(port, data, timeout=10, read_body=True):
    """Send raw bytes; return (status, headers{lower: value}, body) of the one response."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while read_body and len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest[:length]
    finally:
        sock.close()


def decode(body):
    return json.loads(body, parse_float=Decimal)


class RawReply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # {lower-case name: last value}
        self.body = body

    def __repr__(self):
        return f"<RawReply {self.status} {self.body[:300]!r}>"

    @property
    def json(self):
        return decode(self.body) if self.body else None

    @property
    def error_code(self):
        return ((self.json or {}).get("error") or {}).get("code")


class RawConnection:
    """One keep-alive socket for requests http.client would normalise or
    refuse to send (raw targets, partial bodies, chunk extensions, Expect)."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, target, headers=None, body=b""):
        """Send a whole request (Content-Length added when there is a body) and read its response."""
        headers = dict(headers or {})
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in headers):
            headers["Content-Length"] = str(len(body))
        self.send(request_head(method, target, headers) + body)
        return self.read_response(head_only=method == "HEAD")

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def read_response(self, head_only=False):
        """The next response (a 1xx interim one too); the body by Content-Length."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only or status < 200 or status == 304 else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return RawReply(status, headers, body)

    def closed_by_server(self, timeout=10):
        """True when the server closes the connection (nothing more arrives) within `timeout`."""
        if self.buffer:
            return False
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buffer += data
                return False
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request_head(method, target, headers):
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(parts, trailers=None):
    """`parts` as a chunked body (bytes), with optional trailer fields."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts if part)
    out += b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in (trailers or {}).items())
    return out + b"\r\n"


# -- resources and sessions (§6) ---------------------------------------------

RESOURCE = {"capacity": 5, "price_per_minute": "0.50", "currency": "USD"}


def make_resource(client, template=RESOURCE, **fields):
    """A new resource named "Room <n>": the fields of `template`, then `fields`."""
    reply = client.post("/v1/resources", {**template, "name": unique("Room "), **fields})
    assert reply.status == 201, reply
    return reply.json


def start(client, resource_id, customer_id, **extra):
    """Start a session (the reply, whatever its status)."""
    return client.post("/v1/sessions", {"resource_id": resource_id, "customer_id": customer_id, **extra})


# -- invoices (§7) -----------------------------------------------------------

def pdf_text(data, tmp_path):
    """The text of a PDF as pdftotext -layout reads it (poppler-utils; tests/tools.py)."""
    path = tmp_path / f"{unique('pdf')}.pdf"
    path.write_bytes(data)
    result = subprocess.run([tools.need("pdftotext", "poppler-utils"), "-layout", str(path), "-"], capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode("utf-8")


def finalize(client, invoice_id):
    """Issue a draft invoice (it must succeed); the invoice."""
    reply = client.post(f"/v1/invoices/{invoice_id}/finalize")
    assert reply.status == 200, reply
    return reply.json


BASIC_PLAN = {"code": "basic", "name": "Basic", "currency": "USD", "base_fee": "100.00",
              "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": "0.01"}]}


def basic_plan(admin):
    """The api_calls meter and the Basic plan (100.00 a month + 0.01 a call); the clock in September 2025."""
    assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "aggregation": "sum"}).status == 201
    assert admin.post("/v1/plans", BASIC_PLAN).status == 201
    pin("2025-09-20T00:00:00Z")


def september_drafts(admin, count=1, **customer_fields):
    """`count` customers on Basic since September with 1,000 calls each; their
    September drafts (100.00 + 10.00 = 110.00), the clock on 1 October."""
    ids = []
    for _ in range(count):
        body = {"name": f"Cust {unique()}", "email": f"{unique('c')}@example.com", **customer_fields}
        reply = admin.post("/v1/customers", body)
        assert reply.status == 201, reply
        cid = reply.json["id"]
        assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "basic", "start": "2025-09-01"}).status == 201
        reply = admin.post("/v1/events/batch", {"customer_id": cid, "events": [
            {"meter": "api_calls", "quantity": 1000, "timestamp": "2025-09-10T00:00:00Z"}]})
        assert reply.status == 200
    pin("2025-10-01T06:00:00Z")
    created = admin.post("/v1/invoices/run", {"as_of": "2025-10-01T00:00:00Z"}).json["invoice_ids"]
    assert len(created) == count
    return created


def new_user(server, role, **fields):
    """A user of the role, created by the admin (password "correct horse"); its JSON."""
    body = {"email": f"{role}-{unique()}@example.com", "name": f"{role} person", "role": role,
            "password": "correct horse", **fields}
    reply = server.admin.post("/v1/users", body)
    assert reply.status == 201, reply
    return reply.json


def sign_in(server, user):
    """A client signed in as the user (a users JSON)."""
    login = server.client().post("/v1/auth/login", {"email": user["email"], "password": "correct horse"})
    assert login.status == 200, login
    return server.client(login.json["token"])


def user_token(server, role):
    """A signed-in user of the role (sign in again after moving the clock far:
    sessions expire) and the user's id."""
    user = new_user(server, role)
    return sign_in(server, user), user["id"]


def key_client(server, role=None, customer_id=None):
    """A client with a new API key of the role (or of the customer)."""
    return server.client(make_key(server, role=role, customer_id=customer_id))


# -- objects (§8) ------------------------------------------------------------

def storage_server(tmp_path, **env):
    """A server for the object tests (the per-credential rate limit out of the way)."""
    return RunningServer(temp_db(tmp_path), env={"BILLING_RATE_LIMIT": "1000000", **env})


def object_url(key, customer_id=None, **query):
    """The URL of an object, its key percent-encoded (UTF-8) except '/'."""
    if customer_id is not None:
        query["customer_id"] = customer_id
    return f"/v1/objects/{quote(key, safe='/')}" + (f"?{urlencode(query)}" if query else "")


def put_object(client, key, data, content_type=None, customer_id=None, headers=None):
    headers = dict(headers or {})
    if content_type:
        headers["Content-Type"] = content_type
    return client.request("PUT", object_url(key, customer_id), raw=data, headers=headers)


def stored_files(server):
    """{relative path: size} of the object files (not the temporary ones, nor
    the deleted ones waiting in the trash)."""
    root = server.app.config.objects_dir if hasattr(server, "app") else server
    found = {}
    for folder, dirs, names in os.walk(root):
        if os.path.relpath(folder, root).split(os.sep)[0] in ("tmp", "trash"):
            continue
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = os.path.getsize(path)
    return found


def temp_files(server):
    root = server.app.config.objects_dir if hasattr(server, "app") else server
    return sorted(os.listdir(os.path.join(root, "tmp")))


class WriteCounter:
    """`with WriteCounter(server) as writes:` records every write the server
    starts (transactions and grouped jobs) inside the block."""

    def __init__(self, server):
        self.db = server.app.db
        self.writes = []

    def __enter__(self):
        db = self.db
        self._saved = db.transaction, db.submit
        transaction, submit = self._saved
        db.transaction = lambda *a, **k: (self.writes.append("transaction"), transaction(*a, **k))[1]
        db.submit = lambda *a, **k: (self.writes.append("submit"), submit(*a, **k))[1]
        return self.writes

    def __exit__(self, *exc):
        self.db.transaction, self.db.submit = self._saved
        return False


class RowsPerTransaction:
    """`with RowsPerTransaction(server) as counts:` records how many rows
    (inserted, updated, deleted) each writer transaction the server commits
    inside the block changes — grouped ingest jobs included."""

    def __init__(self, server):
        self.db = server.app.db
        self.counts = []

    def __enter__(self):
        plain = self._plain = self.db.transaction

        @contextlib.contextmanager
        def counted():
            with plain() as conn:
                before = conn.total_changes
                yield conn
                self.counts.append(conn.total_changes - before)
        self.db.transaction = counted
        return self.counts

    def __exit__(self, *exc):
        self.db.transaction = self._plain
        return False
