"""The live stream (§4, §11): GET /v1/stream, Server-Sent Events — stats,
session and invoice events, customer scoping, and streams that never hold
the server: a client that leaves, a client that never reads, a server that stops."""

import json
import socket
import threading
import time
from decimal import Decimal

import pytest

from tests.harness import ADMIN_PASSWORD, RunningServer, make_key, temp_db
from tests.helpers import wait_for as wait_until
from tests.http.helpers import assert_error, make_customer, make_resource, pin


class Stream:
    """GET /v1/stream on a raw socket; a thread parses the frames into `events`."""

    def __init__(self, port, token, rcvbuf=None, read=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.sock.sendall(f"GET /v1/stream HTTP/1.1\r\nHost: x\r\n{auth}Accept: text/event-stream\r\n\r\n".encode())
        self.events = []
        self.eof = threading.Event()
        self._lock = threading.Lock()
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, self._rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.thread = None
        if read:
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self):
        buf = self._rest
        try:
            while True:
                while b"\n\n" in buf:
                    block, _, buf = buf.partition(b"\n\n")
                    self._parse(block.decode("utf-8"))
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
        finally:
            self.eof.set()

    def _parse(self, block):
        fields = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields:
            data = json.loads(fields.get("data", "null"), parse_float=Decimal)
            with self._lock:
                self.events.append((fields["event"], data, fields.get("id")))

    def of(self, event_type):
        with self._lock:
            return [data for kind, data, _ in self.events if kind == event_type]

    def kinds(self):
        with self._lock:
            return [kind for kind, _, _ in self.events]

    def wait_for(self, event_type, predicate=lambda data: True, timeout=10.0):
        return wait_until(lambda: [d for d in self.of(event_type) if predicate(d)], timeout,
                          message=f"a {event_type} event")[0]

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def streams():
    opened = []
    yield opened
    for stream in opened:
        stream.close()


def open_stream(server, streams, token, **kw):
    stream = Stream(server.port, token, **kw)
    streams.append(stream)
    return stream


def test_no_or_bad_token_is_401(server):
    assert_error(server.client().get("/v1/stream"), 401, "unauthenticated")
    assert_error(server.client("mk_not_a_real_key").get("/v1/stream"), 401, "unauthenticated")
    assert_error(server.client(make_key(server, role="ingest")).get("/v1/stream"), 403, "forbidden")
    assert server.app.bus.count() == 0


def test_stream_sends_stats_about_once_a_second(server, admin, streams):
    assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "aggregation": "sum"}).status == 201
    cid = make_customer(admin)
    stream = open_stream(server, streams, admin.token)
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-store"
    assert "content-length" not in stream.headers
    wait_until(lambda: server.app.bus.count() == 1, message="the subscriber")
    first = stream.wait_for("stats")
    assert set(first) >= {"events_per_second", "events_total", "active_sessions"}
    began = time.monotonic()
    wait_until(lambda: len(stream.of("stats")) >= 3, timeout=6, message="three stats")
    assert time.monotonic() - began >= 1.0  # paced, not a flood
    batch = [{"meter": "api_calls", "quantity": 1, "timestamp": "2025-09-01T00:00:00Z"} for _ in range(7)]
    assert admin.post("/v1/events/batch", {"customer_id": cid, "events": batch}).status == 200
    ticked = stream.wait_for("stats", lambda d: d["events_per_second"] == 7, timeout=5)
    assert ticked["events_total"] >= 7
    seen = len(stream.of("stats"))
    wait_until(lambda: len(stream.of("stats")) > seen + 1, timeout=5, message="two more stats")
    assert stream.of("stats")[-1]["events_per_second"] == 0  # nothing ingested since
    assert [d["events_per_second"] for d in stream.of("stats")].count(7) == 1  # counted in one second only


def test_session_and_invoice_events(server, admin, streams):
    stream = open_stream(server, streams, admin.token)
    room = make_resource(admin, capacity=3)
    cid = make_customer(admin)
    pin("2025-09-15T10:00:00Z")
    session = admin.post("/v1/sessions", {"resource_id": room["id"], "customer_id": cid}).json
    started = stream.wait_for("session.started", lambda d: d["session"]["id"] == session["id"])
    assert (started["active"], started["capacity"], started["session"]["customer_id"]) == (1, 3, cid)
    wait_until(lambda: any(d["active_sessions"] == 1 for d in stream.of("stats")), message="stats with 1 active")
    pin("2025-09-15T10:02:00Z")
    assert admin.post(f"/v1/sessions/{session['id']}/stop", {}).status == 200
    stopped = stream.wait_for("session.stopped", lambda d: d["session"]["id"] == session["id"])
    assert (stopped["active"], stopped["session"]["cost"], stopped["session"]["status"]) == (0, "1.00", "stopped")
    # invoices: created by the run, issued by finalize
    assert admin.post("/v1/plans", {"code": "p", "name": "P", "currency": "USD", "base_fee": "5.00",
                                    "charges": []}).status == 201
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "p", "start": "2025-09-01"}).status == 201
    pin("2025-10-01T06:00:00Z")
    invoice_id = admin.post("/v1/invoices/run", {}).json["invoice_ids"][0]
    created = stream.wait_for("invoice.created")
    assert created["invoice_ids"] == [invoice_id]
    assert admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).status == 200
    issued = stream.wait_for("invoice.issued")
    assert (issued["invoice"]["id"], issued["invoice"]["number"], issued["invoice"]["total"]) == \
        (invoice_id, "INV-000001", "6.00")
    kinds = [k for k in stream.kinds() if k not in ("stats", "hello")]
    assert kinds == ["resource.created", "session.started", "session.stopped", "invoice.created", "invoice.issued"]
    ids = [int(i) for k, _, i in stream.events if k not in ("stats", "hello")]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # SSE ids go up


def test_customer_key_sees_only_its_own_sessions(server, admin, streams):
    room = make_resource(admin)
    mine, theirs = make_customer(admin), make_customer(admin)
    own = open_stream(server, streams, make_key(server, customer_id=mine))
    staff = open_stream(server, streams, admin.token)
    assert own.status == 200
    wait_until(lambda: server.app.bus.count() == 2, message="two subscribers")
    other = admin.post("/v1/sessions", {"resource_id": room["id"], "customer_id": theirs}).json
    admin.post(f"/v1/sessions/{other['id']}/stop", {})
    session = admin.post("/v1/sessions", {"resource_id": room["id"], "customer_id": mine}).json
    staff.wait_for("session.started", lambda d: d["session"]["id"] == session["id"])
    own.wait_for("session.started", lambda d: d["session"]["id"] == session["id"])
    server.app.publish("session.started", {"session": {"id": -1, "customer_id": theirs}})
    server.app.publish("session.stopped", {"session": {"id": -2, "customer_id": mine}})
    own.wait_for("session.stopped", lambda d: d["session"]["id"] == -2)
    staff.wait_for("session.stopped", lambda d: d["session"]["id"] == -2)
    seen = {d["session"]["customer_id"] for k in ("session.started", "session.stopped") for d in own.of(k)}
    assert seen == {mine}
    assert [d["session"]["id"] for d in own.of("session.started")] == [session["id"]]
    assert "resource.created" not in own.kinds() and "invoice.created" not in own.kinds()
    # its stats count only its own running sessions
    admin.post("/v1/sessions", {"resource_id": room["id"], "customer_id": theirs})
    wait_until(lambda: staff.of("stats") and staff.of("stats")[-1]["active_sessions"] == 2, message="staff stats")
    wait_until(lambda: own.of("stats") and own.of("stats")[-1]["active_sessions"] == 1, message="own stats")
    later = len(own.of("stats"))
    wait_until(lambda: len(own.of("stats")) > later + 1, message="more stats")
    assert all(d["active_sessions"] == 1 for d in own.of("stats")[later:])


def test_closing_the_client_frees_the_server(server, admin, streams):
    first = open_stream(server, streams, admin.token)
    second = open_stream(server, streams, admin.token)
    first.wait_for("stats")
    second.wait_for("stats")
    assert server.app.bus.count() == 2
    first.close()
    wait_until(lambda: server.app.bus.count() == 1, timeout=10, message="the closed stream to be dropped")
    second.close()
    wait_until(lambda: server.app.bus.count() == 0, timeout=10, message="every stream to be dropped")
    assert admin.get("/health").status == 200


def test_a_client_that_never_reads_does_not_block_publishing(server, admin, streams):
    slow = open_stream(server, streams, admin.token, rcvbuf=4096, read=False)
    assert slow.status == 200
    wait_until(lambda: server.app.bus.count() == 1, message="the subscriber")
    payload = {"filler": "x" * 8000}
    timings = []

    def publish_until_dropped():  # in a thread: a blocking publish must fail the test, not hang it
        began = time.monotonic()
        while server.app.bus.count() and len(timings) < 50_000 and time.monotonic() - began < 20:
            t0 = time.monotonic()
            server.app.publish("test.filler", payload)
            timings.append(time.monotonic() - t0)

    began = time.monotonic()
    publisher = threading.Thread(target=publish_until_dropped, daemon=True)
    publisher.start()
    publisher.join(30)
    assert not publisher.is_alive(), f"publishing blocked after {len(timings)} events"
    assert server.app.bus.count() == 0, f"the slow stream was not dropped after {len(timings)} events"
    assert max(timings) < 0.5, max(timings)
    assert time.monotonic() - began < 10
    # publishing goes on freely, and the server still answers, also through the API
    t0 = time.monotonic()
    for _ in range(2000):
        server.app.publish("test.filler", payload)
    assert time.monotonic() - t0 < 2
    room = make_resource(admin)
    cid = make_customer(admin)
    assert admin.post("/v1/sessions", {"resource_id": room["id"], "customer_id": cid}).status == 201
    # a new stream works
    fresh = open_stream(server, streams, admin.token)
    fresh.wait_for("stats")
    server.app.publish("session.started", {"session": {"id": 1, "customer_id": cid}})
    fresh.wait_for("session.started")


def test_session_traffic_with_a_stalled_stream_stays_prompt(server, admin, streams):
    """1,400 real session events while a stream never reads: every request stays prompt
    (the stream thread blocks on its socket, the publishers never do)."""
    slow = open_stream(server, streams, admin.token, rcvbuf=4096, read=False)
    assert slow.status == 200
    room = make_resource(admin, capacity=1)
    cid = make_customer(admin)
    slowest = 0.0
    for _ in range(700):
        t0 = time.monotonic()
        session = admin.post("/v1/sessions", {"resource_id": room["id"], "customer_id": cid})
        assert session.status == 201, session
        assert admin.post(f"/v1/sessions/{session.json['id']}/stop", {}).status == 200
        slowest = max(slowest, time.monotonic() - t0)
    assert slowest < 2.0, slowest
    assert server.app.bus.count() <= 1
    assert admin.get(f"/v1/resources/{room['id']}").json["active"] == 0


def test_server_stop_ends_open_streams_promptly(tmp_path):
    running = RunningServer(temp_db(tmp_path), env={"BILLING_MAX_EVENT_AGE_DAYS": "0"})
    stream = None
    try:
        stream = Stream(running.port, running.admin.token)
        stream.wait_for("stats")
        assert not stream.eof.is_set()
        began = time.monotonic()
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        assert stream.eof.wait(5), "the stream did not end when the server stopped"
        stopper.join(10)
        assert not stopper.is_alive() and time.monotonic() - began < 10
        assert running.app.bus.count() == 0
    finally:
        if stream is not None:
            stream.close()


def test_head_answers_headers_only(server, admin):
    """HEAD must not start the endless body of a stream."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(f"HEAD /v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin.token}\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + 3
        sock.settimeout(0.2)
        while time.monotonic() < deadline:  # read for a while: nothing may follow the headers
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    assert body == b""
    wait_until(lambda: server.app.bus.count() == 0, message="no subscriber left")


def test_signing_out_or_revoking_ends_an_open_stream(server, admin):
    """An open stream checks its token again every few seconds."""
    token = server.client().post("/v1/auth/login", {"email": "admin@localhost",
                                                    "password": ADMIN_PASSWORD}).json["token"]
    key = admin.post("/v1/api-keys", {"name": "watcher", "role": "viewer"}).json
    by_session, by_key = Stream(server.port, token), Stream(server.port, key["key"])
    try:
        by_session.wait_for("stats")
        by_key.wait_for("stats")
        assert server.client(token).post("/v1/auth/logout", {}).status == 200
        assert admin.delete(f"/v1/api-keys/{key['id']}").status == 200
        assert by_session.eof.wait(10), "the signed-out stream kept going"
        assert by_key.eof.wait(10), "the revoked key's stream kept going"
    finally:
        by_session.close()
        by_key.close()
