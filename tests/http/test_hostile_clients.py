"""§12 hostile clients, on real sockets: a request head must arrive within
HEAD_TIMEOUT (the whole head, not per read), an idle keep-alive connection is
closed after IDLE_TIMEOUT, one client address holds at most MAX_PER_CLIENT
connections (one more: 503 with the usual headers), and stalled clients never
keep others from being served. Bodies come after credentials: the token is
checked before a byte of the body is read, and a request without valid
credentials may send at most 64 KiB."""

import contextlib
import json
import os
import socket
import struct
import threading
import time

import pytest

from billing.web import bodies, connections, socket_io
from tests.harness import ADMIN_KEY, RunningServer, temp_db
from tests.helpers import wait_for
from tests.http.helpers import (RawConnection, create_customer, create_meter, make_key, put_object, request_head, storage_server,
                                object_url, table_count)

HALF_LINE = b"GET /health HT"
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def connect(port, source="127.0.0.1", timeout=10):
    """A connection to the server (which listens on 127.0.0.1) from the loopback address `source`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_answer(sock):
    """(status, headers{lower: value}, body) of the one answer on `sock`."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock, wait=0.0):
    """True when the server closes `sock` (what it sent is read and dropped,
    then EOF or a reset) within `wait` seconds; False when it is still open."""
    deadline = time.monotonic() + wait
    try:
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (socket.timeout, BlockingIOError):
        return False


def served_from(port, source):
    """Seconds a GET /health from `source` took, on a new connection; it must be a 200."""
    started = time.monotonic()
    with connect(port, source) as sock:
        sock.sendall(HEALTH)
        status, _, _ = read_answer(sock)
    assert status == 200
    return time.monotonic() - started


def assert_busy_answer(status, headers, body):
    assert status == 503
    for name in ("server", "date", "x-content-type-options", "x-frame-options", "referrer-policy",
                 "content-type", "content-length", "retry-after", "x-request-id"):
        assert headers.get(name), (name, headers)
    assert headers["connection"] == "close" and headers["x-frame-options"] == "DENY"
    assert len(body) == int(headers["content-length"])
    error = json.loads(body)["error"]
    assert error["code"] == "service_unavailable" and error["message"] and error["details"] == []


@pytest.fixture
def quick(tmp_path):
    """A server with the head deadline and idle time lowered, so a test does not wait 10 s."""
    running = RunningServer(temp_db(tmp_path), env={"BILLING_MAX_EVENT_AGE_DAYS": "0"})
    running.httpd.head_timeout = 1.0
    running.httpd.idle_timeout = 2.0
    yield running
    running.stop()


def test_the_limits_are_the_documented_ones():
    assert connections.HEAD_TIMEOUT == 10
    assert connections.IDLE_TIMEOUT == 15
    assert connections.MAX_PER_CLIENT == 64
    assert connections.MAX_CONNECTIONS == 512
    assert bodies.UNAUTHENTICATED_BODY == 64 * 1024


# -- the request head and idle connections ------------------------------------------------

def test_600_stalled_heads_do_not_starve_other_clients_and_are_cut_at_10_s(server):
    """600 connections from one address each send half a request line and stop;
    one more trickles its head a byte a second. Another address is served at
    once; after HEAD_TIMEOUT (+1 s) the server has closed all of them."""
    head_timeout = server.httpd.head_timeout
    assert head_timeout == connections.HEAD_TIMEOUT
    trickler = connect(server.port, "127.0.0.3")
    first = time.monotonic()
    stop = threading.Event()

    def trickle():
        for byte in HEALTH:
            if stop.wait(1.0):
                return
            try:
                trickler.send(bytes([byte]))
            except OSError:
                return
    threading.Thread(target=trickle, daemon=True).start()
    stalled = []
    try:
        for _ in range(600):
            sock = connect(server.port)
            sock.sendall(HALF_LINE)
            stalled.append(sock)
        took = served_from(server.port, "127.0.0.2")
        assert took < 1.0, f"another client waited {took:.2f} s"
        # the 65th connection from 127.0.0.1 on was answered 503 at once
        refused = [read_answer(sock) for sock in stalled[connections.MAX_PER_CLIENT:]]
        for answer in refused[:3]:
            assert_busy_answer(*answer)
        assert {status for status, _, _ in refused} == {503}
        assert served_from(server.port, "127.0.0.2") < 1.0
        # before the deadline the admitted ones still wait for their heads
        time.sleep(max(0.0, first + head_timeout - 1 - time.monotonic()))
        assert not any(closed_by_server(sock) for sock in stalled[:connections.MAX_PER_CLIENT])
        assert not closed_by_server(trickler)
        time.sleep(max(0.0, first + head_timeout + 1 - time.monotonic()))
        assert all(closed_by_server(sock, 0.1) for sock in stalled), "a stalled connection outlived its deadline"
        assert closed_by_server(trickler, 0.1), "a client trickling its head a byte a second was not cut"
        assert served_from(server.port, "127.0.0.1") < 1.0
    finally:
        stop.set()
        trickler.close()
        for sock in stalled:
            sock.close()


def test_a_head_cut_short_is_answered_408(quick):
    """A client that sends part of its head and waits gets 408 in the error shape, then the close."""
    with connect(quick.port) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/customers HTTP/1.1\r\nHost: x\r\nContent-Type: app")
        status, headers, body = read_answer(sock)
        waited = time.monotonic() - started
        assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
        assert headers["connection"] == "close" and headers.get("x-request-id")
        assert closed_by_server(sock, 2)
    assert quick.httpd.head_timeout - 0.1 <= waited <= quick.httpd.head_timeout + 1
    assert table_count(quick, "customers") == 0


def test_the_head_deadline_is_for_the_whole_head_not_each_read(quick):
    with connect(quick.port) as sock:
        started = time.monotonic()
        for byte in HEALTH[:-4]:  # a byte every 0.2 s: every read is quick, the head is not
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            if closed_by_server(sock, 0.2):
                break
        cut_after = time.monotonic() - started
        assert closed_by_server(sock, 1)
    assert cut_after <= quick.httpd.head_timeout + 0.7


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_time(quick):
    """Between requests a connection may wait `idle_timeout` (longer than the
    head deadline) for its next request; then the server closes it."""
    with connect(quick.port) as sock:
        sock.sendall(HEALTH)
        assert read_answer(sock)[0] == 200
        answered = time.monotonic()
        assert not closed_by_server(sock, quick.httpd.head_timeout + 0.3)  # idle, not a late head
        assert closed_by_server(sock, quick.httpd.idle_timeout + 1)
        idle_for = time.monotonic() - answered
    assert quick.httpd.idle_timeout - 0.1 <= idle_for <= quick.httpd.idle_timeout + 0.7
    # a keep-alive client that comes back in time is served on the same connection
    with connect(quick.port) as sock:
        for _ in range(3):
            sock.sendall(HEALTH)
            assert read_answer(sock)[0] == 200
            time.sleep(quick.httpd.head_timeout + 0.2)


def test_a_slow_body_and_a_long_stream_are_not_head_time(quick):
    """Only the head has the deadline: a body that takes longer than it, and a
    live stream open for longer than the idle time, are left alone."""
    body = json.dumps({"name": "Slow", "email": "slow@example.com"}).encode()
    with connect(quick.port) as sock:
        sock.sendall(request_head("POST", "/v1/customers", {
            "Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json",
            "Content-Length": len(body)}) + body[:10])
        time.sleep(quick.httpd.head_timeout + 0.5)
        sock.sendall(body[10:])
        assert read_answer(sock)[0] == 201
    with connect(quick.port) as sock:
        sock.sendall(f"GET /v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n".encode())
        status, headers, _ = read_answer(sock)
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        assert not closed_by_server(sock, quick.httpd.idle_timeout + 0.5)


# -- each read and write of a body: io_timeout ---------------------------------------------

@contextlib.contextmanager
def connection_setups(server, what):
    """A list that gets `what(handler)` for each connection the server sets up meanwhile."""
    seen = []
    handler_class = server.httpd.RequestHandlerClass
    original = handler_class.setup

    def spy(handler):
        original(handler)
        seen.append(what(handler))

    handler_class.setup = spy
    try:
        yield seen
    finally:
        del handler_class.setup


def _kernel_timeouts(handler):
    sock = handler.connection
    return sock.gettimeout(), [struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, option, 16))
                               for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO)]


def test_the_io_timeout_is_kept_by_the_kernel_not_by_a_python_timeout(quick):
    """Connections stay in blocking mode (no poll() before every read and
    write) with SO_RCVTIMEO and SO_SNDTIMEO set to io_timeout."""
    assert connections.IO_TIMEOUT == 60 and quick.httpd.io_timeout == 60
    with connection_setups(quick, _kernel_timeouts) as seen:
        assert served_from(quick.port, "127.0.0.1") >= 0
    assert seen == [(None, [(60, 0), (60, 0)])]


def test_without_kernel_timeouts_a_python_timeout_keeps_the_limit(tmp_path, monkeypatch):
    """Where the socket refuses SO_RCVTIMEO/SO_SNDTIMEO, the connection gets a
    Python timeout of io_timeout instead, and keeps it after a file is sent
    (which sets its own for the file): never no limit at all."""
    def refused(sock, seconds):
        raise OSError("no kernel timeouts here")

    monkeypatch.setattr(socket_io, "io_timeouts", refused)
    running = storage_server(tmp_path)
    try:
        customer = create_customer(running.admin, name="Files")
        assert put_object(running.admin, "a.bin", b"x" * 100_000, customer_id=customer["id"]).status == 201
        running.admin.close()
        handlers = []
        with connection_setups(running, handlers.append):
            client = running.client(ADMIN_KEY)
            reply = client.get(object_url("a.bin", customer["id"]))
            assert reply.status == 200 and len(reply.raw) == 100_000
            assert client.get("/health").status == 200  # the same keep-alive connection
            assert len(handlers) == 1 and handlers[0].connection.gettimeout() == 60
            client.close()
    finally:
        running.stop()


def test_a_body_that_stops_arriving_is_refused_after_the_io_timeout(quick):
    """A body read waits at most io_timeout: one that stops arriving is
    answered 400, the connection closed, nothing stored."""
    quick.httpd.io_timeout = 1.0
    body = json.dumps({"name": "Stalled", "email": "stalled@example.com"}).encode()
    before = table_count(quick, "customers")
    with connect(quick.port) as sock:
        started = time.monotonic()
        sock.sendall(request_head("POST", "/v1/customers", {
            "Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json",
            "Content-Length": len(body)}) + body[:10])
        status, headers, answer = read_answer(sock)
        waited = time.monotonic() - started
        assert status == 400 and headers["connection"] == "close"
        assert json.loads(answer)["error"]["message"] == \
            "The body ended, or stopped arriving, before Content-Length bytes."
        assert closed_by_server(sock, 2)
    assert 0.9 <= waited <= 3
    assert table_count(quick, "customers") == before


def _connections_from(server, address="127.0.0.1"):
    with server.httpd._per_client_lock:
        return server.httpd._per_client.get(address, 0)


def _reader_server(tmp_path, download):
    """A server with a response the tests below read slowly or not at all:
    an object's file (sent with sendfile) or a page of JSON of about 4 MB;
    (server, its target). No connection is open."""
    running = storage_server(tmp_path)
    customer = create_customer(running.admin, name="Reader")
    if download == "file":
        reply = put_object(running.admin, "big.bin", os.urandom(8 * 1024 * 1024), customer_id=customer["id"])
        assert reply.status == 201, reply
        target = object_url("big.bin", customer["id"])
    else:  # 1,000 events of 4 KB properties each
        create_meter(running.admin)
        events = [{"customer_id": customer["id"], "meter": "api_calls",
                   "properties": {"note": f"{i:04d}" + "v" * 4000}} for i in range(1000)]
        reply = running.admin.post("/v1/events/batch", {"events": events})
        assert reply.status == 200 and reply.json["accepted"] == 1000, reply
        target = "/v1/events?limit=1000"
    running.httpd.io_timeout = 1.0
    running.admin.close()  # its keep-alive connection: then only the tests' own is open
    wait_for(lambda: _connections_from(running) == 0, 5, "the admin connection to close")
    return running, target


def _small_window_socket(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


@pytest.mark.parametrize("download", ["file", "json"])
def test_a_client_that_stops_reading_is_let_go_after_the_io_timeout(tmp_path, download):
    """A response the client stops reading holds its thread about io_timeout
    at most: then the connection is closed."""
    running, target = _reader_server(tmp_path, download)
    try:
        with _small_window_socket(running.port) as sock:
            sock.sendall(request_head("GET", target, {"Authorization": f"Bearer {ADMIN_KEY}"}))
            started = time.monotonic()
            wait_for(lambda: _connections_from(running) == 1, 5, "the connection")
            wait_for(lambda: _connections_from(running) == 0, 10, "the server to let go")  # this socket still open
            assert 0.9 <= time.monotonic() - started <= 6
            assert closed_by_server(sock, 5)
        assert served_from(running.port, "127.0.0.1") >= 0
    finally:
        running.stop()


@pytest.mark.parametrize("download", ["file", "json"])
def test_a_client_that_reads_too_slowly_is_let_go_too(tmp_path, download):
    """A client that keeps reading, a little at a time, cannot stretch one
    response past about twice io_timeout: each send waits at most
    io_timeout, and the whole response must have gone out io_timeout after
    its first send (the 4 MB would take about a minute at this pace)."""
    running, target = _reader_server(tmp_path, download)
    received, stop = [0], threading.Event()
    try:
        with _small_window_socket(running.port) as sock:
            sock.sendall(request_head("GET", target, {"Authorization": f"Bearer {ADMIN_KEY}"}))
            started = time.monotonic()

            def trickle():
                try:
                    while not stop.is_set():
                        chunk = sock.recv(16 * 1024)
                        if not chunk:
                            return
                        received[0] += len(chunk)
                        time.sleep(0.2)
                except OSError:
                    return

            reader = threading.Thread(target=trickle, daemon=True)
            reader.start()
            wait_for(lambda: _connections_from(running) == 1, 5, "the connection")
            wait_for(lambda: _connections_from(running) == 0, 10, "the server to let go")
            assert time.monotonic() - started <= 6
            stop.set()
            reader.join(5)
        assert 0 < received[0] < 4_000_000
        assert served_from(running.port, "127.0.0.1") >= 0
    finally:
        running.stop()


# -- connections per client address ----------------------------------------------------

def test_the_65th_connection_from_one_address_gets_503_and_others_are_served(server):
    held = [connect(server.port) for _ in range(connections.MAX_PER_CLIENT)]  # each sends nothing yet
    try:
        with connect(server.port) as extra:
            extra.sendall(HEALTH)
            assert_busy_answer(*read_answer(extra))
            assert closed_by_server(extra, 2)
        assert served_from(server.port, "127.0.0.2") < 1.0
        held[0].sendall(HEALTH)  # the admitted ones are served as usual
        assert read_answer(held[0])[0] == 200
        held.pop().close()  # one leaves: one more from that address is admitted
        time.sleep(0.2)
        assert served_from(server.port, "127.0.0.1") < 1.0
    finally:
        for sock in held:
            sock.close()


def test_beyond_512_connections_the_503_carries_a_request_id(server):
    server.httpd.slots = threading.BoundedSemaphore(2)  # the overall limit, lowered on this server
    held = [connect(server.port, f"127.0.0.{10 + i}") for i in range(2)]
    try:
        with connect(server.port, "127.0.0.20") as extra:
            extra.sendall(HEALTH)
            status, headers, body = read_answer(extra)
        assert_busy_answer(status, headers, body)
        assert "too many open connections" in json.loads(body)["error"]["message"].lower()
    finally:
        for sock in held:
            sock.close()


# -- bodies after credentials -----------------------------------------------------------

@pytest.mark.parametrize("token, expected", [(None, 401), ("mk_not_a_real_key_0123456789abcdef", 401),
                                             ("viewer", 403)])
def test_the_token_is_checked_before_any_body_is_read(server, token, expected):
    """The head announces 5 MB and no byte of the body is sent: the refusal
    comes at once, and the connection closes (the body stays unread)."""
    if token == "viewer":
        token = make_key(server, role="viewer")
    headers = {"Content-Type": "application/json", "Content-Length": 5_000_000}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with RawConnection(server.port, timeout=5) as conn:
        started = time.monotonic()
        conn.send(request_head("POST", "/v1/customers", headers))
        reply = conn.read_response()
        assert reply.status == expected, reply
        assert time.monotonic() - started < 2
        assert reply.headers["connection"] == "close"
        assert conn.closed_by_server()
    assert table_count(server, "customers") == 0


def test_without_credentials_a_body_is_at_most_64_kib(server):
    limit = bodies.UNAUTHENTICATED_BODY
    with RawConnection(server.port, timeout=5) as conn:  # one byte over: 413 from the head alone
        conn.send(request_head("POST", "/v1/auth/login", {"Content-Type": "application/json",
                                                          "Content-Length": limit + 1}))
        reply = conn.read_response()
        assert reply.status == 413 and reply.error_code == "payload_too_large", reply
        assert reply.headers["connection"] == "close" and conn.closed_by_server()
    padded = json.dumps({"email": "admin@localhost", "password": "wrong-password"}).encode()
    padded += b" " * (limit - len(padded))
    with RawConnection(server.port, timeout=5) as conn:  # at the limit: read and judged on its merits
        reply = conn.request("POST", "/v1/auth/login", {"Content-Type": "application/json"}, padded)
        assert reply.status == 401 and reply.error_code == "unauthenticated", reply
    with RawConnection(server.port, timeout=5) as conn:  # with credentials the usual 10 MiB apply
        reply = conn.request("POST", "/v1/customers", {"Content-Type": "application/json",
                                                       "Authorization": f"Bearer {ADMIN_KEY}"},
                             json.dumps({"name": "Padded", "email": "p@example.com"}).encode() + b" " * limit)
        assert reply.status == 201, reply
