"""Shared helpers for the HTTP tests: fixtures data, raw requests, DB peeks."""

import json
import socket
import sqlite3
from decimal import Decimal

from tests.harness import RunningServer, make_key, temp_db  # noqa: F401  (re-exported)

JSON = {"Content-Type": "application/json"}

_counter = [0]


def unique(prefix="x"):
    _counter[0] += 1
    return f"{prefix}{_counter[0]}"


def create_customer(client, **fields):
    body = {"name": "Acme", "email": f"{unique('c')}@example.com", **fields}
    reply = client.post("/v1/customers", body)
    assert reply.status == 201, reply
    return reply.json


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
