"""A JSON body that stops arriving (§12 hostile clients): when the body read
times out, the request is answered 400 in the one error shape and the
connection is closed — never a 500 and a logged traceback — and nothing is
written. The socket timeout is shortened so the test waits one real second."""

import json
import socket
import time

import pytest

from billing.web import http as web_http
from tests.harness import ADMIN_KEY, RunningServer, temp_db
from tests.http.helpers import WriteCounter

TIMEOUT = 1


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setattr(web_http.Handler, "timeout", TIMEOUT)
    running = RunningServer(temp_db(tmp_path))
    try:
        yield running
    finally:
        running.stop()


def read_until_closed(sock, limit):
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return data, True
        data += chunk
    return data, False


@pytest.mark.parametrize("token, status, code", [(ADMIN_KEY, b"400", "bad_request"),
                                                 (None, b"401", "unauthenticated")])
def test_a_body_that_stops_arriving_is_a_400_and_the_connection_closes(server, token, status, code):
    """With a valid token the body read times out: 400. Without one the body
    is never read: 401 at once (credentials are checked before any body)."""
    logged = []
    server.app.log_exception = lambda request_id, exc: logged.append(exc)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = ("POST /v1/customers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: 100\r\n\r\n").encode()
    with WriteCounter(server) as writes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT + 10) as sock:
            sock.sendall(head + b'{"name": "')  # 10 of the 100 bytes, then nothing
            data, closed = read_until_closed(sock, TIMEOUT + 10)
    status_line, _, rest = data.partition(b"\r\n")
    assert status_line.split()[1] == status, data
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == code and body["error"]["message"], body
    assert b"connection: close" in rest.lower()
    assert closed
    assert logged == [] and writes == []
    assert server.admin.get("/v1/customers").json["data"] == []
