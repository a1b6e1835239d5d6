"""Webhooks (§10): endpoints (admin only), signed deliveries to a real receiver,
retries with exponential backoff on the pinned clock, subscriptions by event
type, persistence across a restart, and the background dispatcher."""

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from billing import clock
from billing.domain import times
from tests.harness import RunningServer, make_key, temp_db
from tests.http.helpers import assert_error, assert_validation, finalize, pin, table_count, unique

ENV = {"BILLING_MAX_EVENT_AGE_DAYS": "0"}
PLAN = {"code": "basic", "name": "Basic", "currency": "USD", "base_fee": "20.00",
        "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": "0.01"}]}
T0 = "2025-10-02T12:00:00Z"


def at(text, seconds=0):
    return times.format_instant(times.parse_instant(text) + timedelta(seconds=seconds))


# -- a webhook receiver on 127.0.0.1 ------------------------------------------------

class Receiver:
    """Records every POST (path, lower-cased headers, body bytes) before it
    answers; the status comes from `statuses` in turn, then `default`."""

    def __init__(self, statuses=(), default=200, port=0, before_reply=None):
        self.requests = []
        self.statuses = list(statuses)
        self.default = default
        self.before_reply = before_reply
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.cond:
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.default
                    receiver.requests.append({"path": self.path, "method": "POST", "body": body,
                                              "headers": {k.lower(): v for k, v in self.headers.items()}})
                    receiver.cond.notify_all()
                if receiver.before_reply is not None:
                    receiver.before_reply(self.path)
                reply = f"receiver says {status}".encode()
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/landing")
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_GET(self):
                with receiver.cond:
                    receiver.requests.append({"path": self.path, "method": "GET", "body": b"",
                                              "headers": {k.lower(): v for k, v in self.headers.items()}})
                    receiver.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.running = True

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, count, timeout=15):
        with self.cond:
            return self.cond.wait_for(lambda: len(self.requests) >= count, timeout)

    def bodies(self, path=None):
        return [r["body"] for r in self.requests if path is None or r["path"] == path]

    def stop(self):
        if self.running:
            self.running = False
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def receivers():
    started = []

    def start(**kw):
        receiver = Receiver(**kw)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


# -- billing fixtures ---------------------------------------------------------------

def world(admin, start="2025-09-01", **customer):
    """A customer on Basic since `start` with 1,000 calls in September:
    September is 20.00 + 10.00 = 30.00."""
    if admin.get("/v1/meters/api_calls").status == 404:
        assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "aggregation": "sum"}).status == 201
        assert admin.post("/v1/plans", PLAN).status == 201
    pin("2025-09-20T00:00:00Z")
    body = {"name": "Hooked Inc", "email": f"{unique('c')}@example.com", **customer}
    cid = admin.post("/v1/customers", body).json["id"]
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "basic", "start": start}).status == 201
    assert admin.post("/v1/events/batch", {"customer_id": cid, "events": [
        {"meter": "api_calls", "quantity": 1000, "timestamp": "2025-09-10T00:00:00Z"}]}).status == 200
    pin(T0)
    return cid


def run_invoices(admin, as_of="2025-10-01T00:00:00Z"):
    reply = admin.post("/v1/invoices/run", {"as_of": as_of})
    assert reply.status == 200, reply
    return reply.json["invoice_ids"]


def create_hook(admin, url, events=("*",)):
    reply = admin.post("/v1/webhooks", {"url": url, "events": list(events)})
    assert reply.status == 201, reply
    assert reply.json["secret"]
    return reply.json


def deliveries(admin, hook_id):
    """Oldest first."""
    reply = admin.get(f"/v1/webhooks/{hook_id}/deliveries")
    assert reply.status == 200, reply
    return list(reversed(reply.json["data"]))


def verify_signature(request, secret):
    """Check Meterline-Signature independently; returns its timestamp."""
    header = request["headers"]["meterline-signature"]
    parts = dict(p.split("=", 1) for p in header.split(","))
    assert set(parts) == {"t", "v1"}, header
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected), header
    wrong = hmac.new(b"not-the-secret", parts["t"].encode() + b"." + request["body"], hashlib.sha256).hexdigest()
    assert parts["v1"] != wrong
    return int(parts["t"])


def unix(text):
    return int(times.parse_instant(text).timestamp())


# -- endpoints ----------------------------------------------------------------------

def test_crud_validation_and_roles(server, admin, receivers):
    bad = [
        ({"url": "ftp://example.com/hook", "events": ["*"]}, "url"),
        ({"url": "not a url", "events": ["*"]}, "url"),
        ({"url": "http://", "events": ["*"]}, "url"),
        ({"events": ["*"]}, "url"),
        ({"url": "https://example.com/hook", "events": ["invoice.exploded"]}, "events"),
        ({"url": "https://example.com/hook", "events": ["invoice.issued", "invoice.nope"]}, "events"),
        ({"url": "https://example.com/hook", "events": "invoice.issued"}, "events"),
        ({"url": "https://example.com/hook", "events": {"invoice.issued": True}}, "events"),
        ({"url": "https://example.com/hook", "events": []}, "events"),
        ({"url": "https://example.com/hook", "events": [1]}, "events"),
        ({"url": "https://example.com/hook", "events": ["*"], "colour": "red"}, "colour"),
    ]
    for body, field in bad:
        assert_validation(admin.post("/v1/webhooks", body), field)
    assert admin.get("/v1/webhooks").json["data"] == []
    assert table_count(server, "webhooks") == 0

    for role in ("finance", "viewer", "customer_success"):
        client = server.client(make_key(server, role=role))
        assert_error(client.post("/v1/webhooks", {"url": "https://example.com/h", "events": ["*"]}), 403, "forbidden")
        assert_error(client.get("/v1/webhooks"), 403, "forbidden")
        client.close()
    assert table_count(server, "webhooks") == 0

    receiver = receivers()
    hook = create_hook(admin, receiver.url(), ["invoice.issued", "invoice.created"])
    assert hook["url"] == receiver.url() and hook["events"] == ["invoice.created", "invoice.issued"]
    secret = hook["secret"]
    assert len(secret) >= 32
    other = create_hook(admin, receiver.url("/other"))
    assert other["events"] == ["*"] and other["secret"] != secret
    viewer = server.client(make_key(server, role="viewer"))
    assert_error(viewer.get(f"/v1/webhooks/{hook['id']}"), 403, "forbidden")
    assert_error(viewer.delete(f"/v1/webhooks/{hook['id']}"), 403, "forbidden")
    assert_error(viewer.get(f"/v1/webhooks/{hook['id']}/deliveries"), 403, "forbidden")

    got = admin.get(f"/v1/webhooks/{hook['id']}")
    assert got.status == 200 and "secret" not in got.json
    assert {k: v for k, v in hook.items() if k != "secret"} == got.json
    listed = admin.get("/v1/webhooks")
    assert [h["id"] for h in listed.json["data"]] == [hook["id"], other["id"]]
    assert all("secret" not in h for h in listed.json["data"])
    for reply in (got, listed, admin.get("/v1/audit-log")):
        assert secret.encode() not in reply.raw and other["secret"].encode() not in reply.raw

    # a queued delivery is canceled by the delete, and nothing more is queued
    cid = world(admin)
    invoice_id = run_invoices(admin)[0]
    assert [d["status"] for d in deliveries(admin, hook["id"])] == ["pending"]
    reply = admin.delete(f"/v1/webhooks/{hook['id']}")
    assert reply.status == 200, reply
    assert_error(admin.get(f"/v1/webhooks/{hook['id']}"), 404, "not_found")
    assert_error(admin.delete(f"/v1/webhooks/{hook['id']}"), 404, "not_found")
    assert [h["id"] for h in admin.get("/v1/webhooks").json["data"]] == [other["id"]]
    finalize(admin, invoice_id)
    history = deliveries(admin, hook["id"])
    assert [(d["event_type"], d["status"], d["next_attempt_at"]) for d in history] == \
        [("invoice.created", "canceled", None)]
    server.app.dispatcher.run_once()
    assert receiver.bodies("/hook") == []
    assert [json.loads(b)["type"] for b in receiver.bodies("/other")] == ["invoice.created", "invoice.issued"]
    assert deliveries(admin, hook["id"])[0]["status"] == "canceled"
    assert cid
    assert_error(admin.get("/v1/webhooks/999999"), 404, "not_found")
    assert_error(admin.get("/v1/webhooks/999999/deliveries"), 404, "not_found")


# -- delivery, signature, retry -----------------------------------------------------

def test_failed_delivery_is_retried_after_a_minute_and_signed(server, admin, receivers):
    receiver = receivers(statuses=[500])  # the first request fails, then 200
    hook = create_hook(admin, receiver.url())
    world(admin)
    invoice_id = run_invoices(admin)[0]
    issued = finalize(admin, invoice_id)
    assert issued["status"] == "issued" and issued["total"] == "30.00"

    queued = deliveries(admin, hook["id"])
    assert [(d["event_type"], d["status"], d["attempts"]) for d in queued] == \
        [("invoice.created", "pending", 0), ("invoice.issued", "pending", 0)]
    assert queued[0]["payload"]["data"]["invoice"]["status"] == "draft"
    assert queued[1]["payload"]["data"]["invoice"]["number"] == issued["number"]

    server.app.dispatcher.run_once()
    assert len(receiver.requests) == 2
    created, issued_delivery = deliveries(admin, hook["id"])
    assert (created["status"], created["attempts"], created["last_status_code"]) == ("pending", 1, 500)
    assert created["next_attempt_at"] == at(T0, 60)
    assert created["delivered_at"] is None
    [attempt] = created["attempt_log"]
    assert attempt["status_code"] == 500 and attempt["at"] == T0
    assert "receiver says 500" in attempt["response"]
    assert (issued_delivery["status"], issued_delivery["attempts"], issued_delivery["last_status_code"]) == \
        ("delivered", 1, 200)
    assert issued_delivery["delivered_at"] == T0 and issued_delivery["next_attempt_at"] is None

    # what the receiver got: the exact payload, JSON, signed with the secret at the send time
    for request, delivery in zip(receiver.requests, (created, issued_delivery)):
        assert request["path"] == "/hook"
        assert request["headers"]["content-type"].startswith("application/json")
        assert json.loads(request["body"], parse_float=Decimal) == delivery["payload"]
        assert verify_signature(request, hook["secret"]) == unix(T0)
    body = json.loads(receiver.requests[1]["body"], parse_float=Decimal)
    assert body["type"] == "invoice.issued" and body["id"] == issued_delivery["event_id"]
    assert body["data"]["invoice"]["id"] == invoice_id and body["data"]["invoice"]["total"] == "30.00"

    # nothing is due before the minute is over
    server.app.dispatcher.run_once()
    clock.advance(seconds=59)
    server.app.dispatcher.run_once()
    assert len(receiver.requests) == 2
    clock.advance(seconds=1)
    server.app.dispatcher.run_once()
    assert len(receiver.requests) == 3
    retry = receiver.requests[2]
    assert retry["body"] == receiver.requests[0]["body"]  # the same event, byte for byte
    assert verify_signature(retry, hook["secret"]) == unix(T0) + 60
    created = deliveries(admin, hook["id"])[0]
    assert (created["status"], created["attempts"], created["last_status_code"]) == ("delivered", 2, 200)
    assert [a["status_code"] for a in created["attempt_log"]] == [500, 200]
    assert created["delivered_at"] == at(T0, 60)
    clock.advance(hours=1)
    server.app.dispatcher.run_once()
    assert len(receiver.requests) == 3


def test_backoff_doubles_and_gives_up_after_ten_attempts(server, admin, receivers):
    receiver = receivers(default=503)
    hook = create_hook(admin, receiver.url(), ["invoice.issued"])
    world(admin)
    invoice_id = run_invoices(admin)[0]
    assert deliveries(admin, hook["id"]) == []  # not subscribed to invoice.created
    finalize(admin, invoice_id)
    sent_at = []
    for attempt in range(1, 11):
        server.app.dispatcher.run_once()
        assert len(receiver.requests) == attempt
        sent_at.append(clock.now())
        [delivery] = deliveries(admin, hook["id"])
        assert delivery["attempts"] == attempt and delivery["last_status_code"] == 503
        if attempt == 10:
            break
        gap = 60 * 2 ** (attempt - 1)
        assert delivery["status"] == "pending"
        assert delivery["next_attempt_at"] == times.format_instant(clock.now() + timedelta(seconds=gap))
        clock.advance(seconds=gap - 1)
        server.app.dispatcher.run_once()
        assert len(receiver.requests) == attempt  # one second early: nothing
        clock.advance(seconds=1)
    gaps = [int((b - a).total_seconds()) for a, b in zip(sent_at, sent_at[1:])]
    assert gaps == [60, 120, 240, 480, 960, 1920, 3840, 7680, 15360]
    [delivery] = deliveries(admin, hook["id"])
    assert (delivery["status"], delivery["attempts"], delivery["next_attempt_at"]) == ("failed", 10, None)
    assert [a["status_code"] for a in delivery["attempt_log"]] == [503] * 10
    logged = [times.parse_instant(a["at"]) for a in delivery["attempt_log"]]
    assert logged == sent_at
    for request in receiver.requests:
        assert request["body"] == receiver.requests[0]["body"]
        verify_signature(request, hook["secret"])
    clock.advance(days=30)
    server.app.dispatcher.run_once()
    assert len(receiver.requests) == 10


def test_garbage_answer_is_a_failed_attempt_not_a_stuck_queue(server, admin, receivers):
    """A receiver that does not speak HTTP is one failed attempt with an error;
    the other deliveries of the round still go out."""
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(b"SMTP-ish nonsense\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        good = receivers()
        bad_hook = create_hook(admin, f"http://127.0.0.1:{listener.getsockname()[1]}/x", ["invoice.issued"])
        good_hook = create_hook(admin, good.url(), ["invoice.issued"])
        world(admin)
        finalize(admin, run_invoices(admin)[0])
        server.app.dispatcher.run_once()
        [bad] = deliveries(admin, bad_hook["id"])
        assert (bad["status"], bad["attempts"], bad["last_status_code"]) == ("pending", 1, None)
        assert bad["last_error"] and bad["attempt_log"][0]["error"]
        assert bad["next_attempt_at"] == at(T0, 60)
        [ok] = deliveries(admin, good_hook["id"])
        assert ok["status"] == "delivered" and len(good.requests) == 1
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_redirect_is_a_failed_attempt(server, admin, receivers):
    """Only a 2xx answer to the POST itself delivers: following a 302 would
    turn it into a GET without the payload and call that a success."""
    receiver = receivers(statuses=[302])
    hook = create_hook(admin, receiver.url(), ["invoice.issued"])
    world(admin)
    finalize(admin, run_invoices(admin)[0])
    server.app.dispatcher.run_once()
    assert [r["method"] for r in receiver.requests] == ["POST"]
    [delivery] = deliveries(admin, hook["id"])
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("pending", 1, 302)
    clock.advance(seconds=60)
    server.app.dispatcher.run_once()
    assert [r["method"] for r in receiver.requests] == ["POST", "POST"]
    assert deliveries(admin, hook["id"])[0]["status"] == "delivered"


def test_subscriptions_by_event_type(server, admin, receivers):
    receiver = receivers()
    paid_hook = create_hook(admin, receiver.url("/paid"), ["invoice.paid"])
    void_hook = create_hook(admin, receiver.url("/voided"), ["invoice.voided"])
    all_hook = create_hook(admin, receiver.url("/all"), ["*"])
    world(admin, start="2025-08-01")
    august, september = sorted(run_invoices(admin))
    finalize(admin, august)
    finalize(admin, september)
    server.app.dispatcher.run_once()
    assert receiver.bodies("/paid") == [] and receiver.bodies("/voided") == []
    assert deliveries(admin, paid_hook["id"]) == [] and deliveries(admin, void_hook["id"]) == []
    assert [d["event_type"] for d in deliveries(admin, all_hook["id"])] == \
        ["invoice.created", "invoice.created", "invoice.issued", "invoice.issued"]

    # a partial payment is not invoice.paid; the one completing the invoice is
    total = admin.get(f"/v1/invoices/{august}").json["amount_due"]
    assert admin.post(f"/v1/invoices/{august}/payments", {"amount": "1.00"}).status == 201
    server.app.dispatcher.run_once()
    assert receiver.bodies("/paid") == []
    rest = str(Decimal(total) - Decimal("1.00"))
    reply = admin.post(f"/v1/invoices/{august}/payments", {"amount": rest})
    assert reply.status == 201 and reply.json["invoice"]["status"] == "paid"
    server.app.dispatcher.run_once()
    [paid] = [json.loads(b) for b in receiver.bodies("/paid")]
    assert paid["type"] == "invoice.paid" and paid["data"]["invoice"]["id"] == august
    assert paid["data"]["invoice"]["status"] == "paid"
    verify_signature([r for r in receiver.requests if r["path"] == "/paid"][0], paid_hook["secret"])
    assert receiver.bodies("/voided") == []

    assert admin.post(f"/v1/invoices/{september}/void", {"reason": "duplicate"}).status == 200
    server.app.dispatcher.run_once()
    [voided] = [json.loads(b) for b in receiver.bodies("/voided")]
    assert voided["type"] == "invoice.voided" and voided["data"]["invoice"]["id"] == september
    assert voided["data"]["invoice"]["status"] == "void"
    assert len(receiver.bodies("/paid")) == 1
    assert [json.loads(b)["type"] for b in receiver.bodies("/all")] == \
        ["invoice.created", "invoice.created", "invoice.issued", "invoice.issued", "invoice.paid", "invoice.voided"]
    assert [d["status"] for d in deliveries(admin, paid_hook["id"]) + deliveries(admin, void_hook["id"])] == \
        ["delivered", "delivered"]


def test_delete_during_a_send_is_not_undone(server, admin, receivers):
    """An endpoint deleted while its delivery is in flight stays canceled: the
    failed attempt does not put the delivery back in the queue."""
    hook_ids = []

    def delete_hook(path):
        client = server.client(admin.token)
        assert client.delete(f"/v1/webhooks/{hook_ids[0]}").status == 200
        client.close()

    receiver = receivers(default=500, before_reply=delete_hook)
    hook = create_hook(admin, receiver.url(), ["invoice.issued"])
    hook_ids.append(hook["id"])
    world(admin)
    finalize(admin, run_invoices(admin)[0])
    server.app.dispatcher.run_once()
    assert len(receiver.requests) == 1
    [delivery] = deliveries(admin, hook["id"])
    assert delivery["status"] == "canceled" and delivery["next_attempt_at"] is None
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500]
    clock.advance(hours=2)
    server.app.dispatcher.run_once()
    assert len(receiver.requests) == 1


# -- persistence and the background thread ------------------------------------------

def test_queued_delivery_survives_a_restart(tmp_path, receivers):
    db = temp_db(tmp_path)
    down = receivers()
    port = down.port
    down.stop()  # nothing listens on the port now
    first = RunningServer(db, env=ENV)
    try:
        hook = create_hook(first.admin, f"http://127.0.0.1:{port}/hook", ["invoice.issued"])
        world(first.admin)
        invoice_id = run_invoices(first.admin)[0]
        finalize(first.admin, invoice_id)
        first.app.dispatcher.run_once()  # refused
        [delivery] = deliveries(first.admin, hook["id"])
        assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("pending", 1, None)
        assert delivery["last_error"] and delivery["attempt_log"][0]["error"]
        assert delivery["next_attempt_at"] == at(T0, 60)
    finally:
        first.stop()

    receiver = receivers(port=port)
    second = RunningServer(db, env=ENV)
    try:
        pin(T0)
        second.app.dispatcher.run_once()
        assert receiver.requests == []  # still backing off after the restart
        pin(at(T0, 60))
        second.app.dispatcher.run_once()
        assert len(receiver.requests) == 1
        [delivery] = deliveries(second.admin, hook["id"])
        assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("delivered", 2, 200)
        assert verify_signature(receiver.requests[0], hook["secret"]) == unix(T0) + 60
        body = json.loads(receiver.requests[0]["body"], parse_float=Decimal)
        assert body == delivery["payload"] and body["data"]["invoice"]["id"] == invoice_id
    finally:
        second.stop()


def test_background_dispatcher_delivers_without_being_called(server, admin, receivers):
    receiver = receivers()
    hook = create_hook(admin, receiver.url(), ["invoice.created", "invoice.issued"])
    world(admin)
    server.app.start_background(scheduler=False)
    invoice_id = run_invoices(admin)[0]
    assert receiver.wait_for(1), "invoice.created did not arrive"
    finalize(admin, invoice_id)
    assert receiver.wait_for(2), "invoice.issued did not arrive"
    deadline = time.monotonic() + 15
    while True:
        history = deliveries(admin, hook["id"])
        if all(d["status"] == "delivered" for d in history) or time.monotonic() > deadline:
            break
        with receiver.cond:
            receiver.cond.wait(0.05)
    assert [(d["event_type"], d["status"], d["attempts"]) for d in history] == \
        [("invoice.created", "delivered", 1), ("invoice.issued", "delivered", 1)]
    assert [json.loads(r["body"])["type"] for r in receiver.requests] == ["invoice.created", "invoice.issued"]
    for request in receiver.requests:
        verify_signature(request, hook["secret"])
