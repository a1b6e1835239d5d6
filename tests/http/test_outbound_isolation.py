"""Outbound work is isolated (§10): an endpoint that accepts the connection
and never answers, or trickles its answer, holds up neither the invoice
e-mail nor the other endpoints' deliveries; its own delivery fails at one
total deadline (connect, send and answer together) and is retried with the
usual backoff. Real sockets and real waiting: the deadline is the point (set
to 3 s here instead of 10 s to keep the test short)."""

import glob
import os
import socket
import threading
import time

import pytest

from billing import clock
from tests.http.helpers import finalize
from tests.http.test_webhooks import T0, Receiver, at, create_hook, deliveries, run_invoices, world

DEADLINE = 3
PAUSE = 0.15  # each answer of the receiver in test_one_delivery_at_a_time_per_endpoint_in_order


class Silent:
    """Accepts connections and reads what comes, but answers nothing (or, with
    `trickle`, a status line and then one header byte every 0.3 s)."""

    def __init__(self, trickle=False):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.trickle = trickle
        self.accepted = 0
        self.stop = threading.Event()
        self.connections = []
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/slow"

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.accepted += 1
            self.connections.append(conn)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn):
        conn.settimeout(0.3)
        sent_status = False
        ends = time.monotonic() + 20  # the old, per-read timeout never ends a trickle: bound the test
        while not self.stop.is_set() and time.monotonic() < ends:
            try:
                if not conn.recv(65536):
                    return  # the client gave up
            except socket.timeout:
                pass
            except OSError:
                return
            if self.trickle:
                try:
                    conn.sendall(b"X" if sent_status else b"HTTP/1.1 200 OK\r\nX-Slow: ")
                    sent_status = True
                except OSError:
                    return

    def close(self):
        self.stop.set()
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def silent():
    started = []

    def start(**kw):
        started.append(Silent(**kw))
        return started[-1]

    yield start
    for server in started:
        server.close()


def wait_until(check, timeout):
    """Seconds until check() held (polled every 20 ms), or None after `timeout`."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if check():
            return time.monotonic() - began
        time.sleep(0.02)
    return None


def outbox(server):
    return glob.glob(os.path.join(server.app.config.data_dir, "outbox", "*.eml"))


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "trickling"])
def test_a_hanging_endpoint_holds_up_nothing_else(server, admin, silent, trickle):
    slow = silent(trickle=trickle)
    good = Receiver()
    try:
        slow_hook = create_hook(admin, slow.url(), ["invoice.issued"])
        good_hook = create_hook(admin, good.url(), ["invoice.issued"])
        world(admin)  # pins the clock at T0
        server.app.dispatcher.deadline_seconds = DEADLINE
        server.app.start_background(scheduler=False)
        began = time.monotonic()
        finalize(admin, run_invoices(admin)[0])  # queues both deliveries and the e-mail
        assert wait_until(lambda: slow.accepted, 5) is not None  # the slow endpoint has its connection …
        # … and the e-mail and the other endpoint go out meanwhile
        assert wait_until(lambda: outbox(server) and good.requests, 2) is not None, "held up by the slow endpoint"
        assert wait_until(lambda: deliveries(admin, good_hook["id"])[0]["status"] == "delivered", 2) is not None
        assert time.monotonic() - began < DEADLINE - 0.5
        assert deliveries(admin, slow_hook["id"])[0]["attempts"] == 0  # still in flight

        # the slow one fails at its deadline, not later (a trickle does not stretch it)
        assert wait_until(lambda: deliveries(admin, slow_hook["id"])[0]["attempts"] == 1, DEADLINE + 3) is not None
        [delivery] = deliveries(admin, slow_hook["id"])
        [attempt] = delivery["attempt_log"]
        assert attempt["status_code"] is None and attempt["error"].startswith("TimeoutError")
        assert f"within {DEADLINE} s" in attempt["error"]
        assert DEADLINE * 1000 - 100 <= attempt["duration_ms"] < DEADLINE * 1000 + 1500
        # retried with the usual backoff: one minute after the attempt
        assert (delivery["status"], delivery["next_attempt_at"]) == ("pending", at(T0, 60))
        time.sleep(0.5)
        assert slow.accepted == 1  # not before that minute
        clock.advance(seconds=60)
        server.app.dispatcher.wake()
        assert wait_until(lambda: slow.accepted == 2, 3) is not None
    finally:
        good.stop()


def test_stopping_waits_for_a_hanging_delivery_at_most_its_deadline(server, admin, silent):
    slow = silent()
    create_hook(admin, slow.url(), ["invoice.issued"])
    world(admin)
    server.app.dispatcher.deadline_seconds = DEADLINE
    server.app.start_background(scheduler=False)
    finalize(admin, run_invoices(admin)[0])
    assert wait_until(lambda: slow.accepted, 5) is not None
    began = time.monotonic()
    server.app.dispatcher.stop()
    assert time.monotonic() - began < DEADLINE + 1
    assert not any(t.name.startswith("dispatch") and t.is_alive() for t in threading.enumerate())


def test_one_delivery_at_a_time_per_endpoint_in_order(server, admin):
    """Endpoints are sent to at the same time, but each gets its deliveries one
    after the other, oldest first, even past one claim's batch."""
    inflight, most, lock = {}, {}, threading.Lock()

    def slow_reply(path):
        with lock:
            inflight[path] = inflight.get(path, 0) + 1
            most[path] = max(most.get(path, 0), inflight[path])
        time.sleep(PAUSE)
        with lock:
            inflight[path] -= 1

    receiver = Receiver(before_reply=slow_reply)
    try:
        hooks = [create_hook(admin, receiver.url(path), ["invoice.created"])["id"] for path in ("/a", "/b")]
        count = 13  # more than one claim takes for an endpoint
        with server.app.db.transaction() as conn:
            conn.executemany("INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, payload, status,"
                             " next_attempt_at, created_at) VALUES (?, ?, 'invoice.created', ?, 'pending', 0, 0)",
                             [(hook, f"evt_{n}", f'{{"n": {n}}}') for n in range(count) for hook in hooks])
        began = time.monotonic()
        counts = server.app.dispatcher.run_once()
        took = time.monotonic() - began
        assert counts["webhooks"] == {"delivered": 2 * count, "failed": 0}
        assert most == {"/a": 1, "/b": 1}
        for path in ("/a", "/b"):
            assert receiver.bodies(path) == [f'{{"n": {n}}}'.encode() for n in range(count)]
        assert took < 2 * count * PAUSE * 0.75  # the two endpoints were served side by side, not one after the other
    finally:
        receiver.stop()
