"""Invoice e-mail (§7, §10): issuing queues one message; the dispatcher writes it
to <data dir>/outbox/ without SMTP_HOST, or sends it by SMTP, retrying with the
backoff while the SMTP server is down."""

import glob
import os
import sqlite3

import pytest

from billing import clock
from billing.domain import times
from tests.harness import RunningServer, temp_db
from tests.helpers import parse_email
from tests.smtp_receiver import start_receiver, stop_receiver
from tests.http.helpers import pdf_text, pin, unique

ENV = {"BILLING_MAX_EVENT_AGE_DAYS": "0"}
PLAN = {"code": "basic", "name": "Basic", "currency": "USD", "base_fee": "20.00",
        "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": "0.01"}]}
T0 = "2025-10-02T12:00:00Z"


def setup_catalog(admin):
    assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "aggregation": "sum"}).status == 201
    assert admin.post("/v1/plans", PLAN).status == 201


def issued_invoice(admin, **customer):
    """A customer on Basic for September (30.00), its invoice issued at T0."""
    pin("2025-09-20T00:00:00Z")
    body = {"name": "Mailed Ltd", "email": f"{unique('c')}@example.com", **customer}
    reply = admin.post("/v1/customers", body)
    assert reply.status == 201, reply
    cid = reply.json["id"]
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "basic", "start": "2025-09-01"}).status == 201
    assert admin.post("/v1/events/batch", {"customer_id": cid, "events": [
        {"meter": "api_calls", "quantity": 1000, "timestamp": "2025-09-10T00:00:00Z"}]}).status == 200
    pin(T0)
    created = admin.post("/v1/invoices/run", {"as_of": "2025-10-01T00:00:00Z"}).json["invoice_ids"]
    invoice_ids = [i for i in created if admin.get(f"/v1/invoices/{i}").json["customer_id"] == cid]
    assert len(invoice_ids) == 1
    reply = admin.post(f"/v1/invoices/{invoice_ids[0]}/finalize")
    assert reply.status == 200 and reply.json["number"], reply
    return reply.json, body


def email_rows(server):
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        return conn.execute("SELECT invoice_id, recipient, status, attempts, next_attempt_at, last_error,"
                            " delivered_to FROM emails ORDER BY id").fetchall()
    finally:
        conn.close()


def outbox_files(server):
    return sorted(glob.glob(os.path.join(server.app.config.data_dir, "outbox", "*.eml")))


def check_message(message, invoice, recipient, tmp_path):
    assert message["To"] == recipient
    assert invoice["number"] in message["Subject"] and invoice["amount_due"] in message["Subject"]
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert invoice["number"] in text and "30.00" in text
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == f"{invoice['number']}.pdf"
    pdf = attachment.get_content()
    assert pdf.startswith(b"%PDF")
    extracted = pdf_text(pdf, tmp_path)
    assert invoice["number"] in extracted and "30.00" in extracted


@pytest.fixture
def smtp():
    """start(port=0) → a receiver (start.stop(receiver) stops one early)."""
    started = []

    def start(port=0):
        started.append(start_receiver(port))
        return started[-1]

    def stop(server):
        stop_receiver(server)
        started.remove(server)

    start.stop = stop
    yield start
    for server in list(started):
        stop(server)


@pytest.fixture
def smtp_server(tmp_path):
    """A RunningServer factory with SMTP_HOST/SMTP_PORT set to `port` (plain
    SMTP: the test receiver has no TLS)."""
    running = []

    def start(port):
        server = RunningServer(temp_db(tmp_path), env={**ENV, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port),
                                                       "SMTP_FROM": "invoices@meterline.test", "SMTP_TLS": "off"})
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


# -- tests ---------------------------------------------------------------------------

def test_without_smtp_the_message_lands_in_the_outbox(server, admin, tmp_path):
    setup_catalog(admin)
    assert server.app.config.data_dir == str(tmp_path)
    invoice, customer = issued_invoice(admin, name="Billing Address Co", billing_email="ap@billing.example")
    assert outbox_files(server) == []  # queued, not sent by the request
    [row] = email_rows(server)
    assert row[:4] == (invoice["id"], "ap@billing.example", "pending", 0)

    counts = server.app.dispatcher.run_once()
    assert counts["emails"] == {"sent": 1, "failed": 0}
    [path] = outbox_files(server)
    assert os.listdir(os.path.join(str(tmp_path), "outbox")) == [os.path.basename(path)]  # no temp file left
    with open(path, "rb") as handle:
        message = parse_email(handle.read())
    check_message(message, invoice, "ap@billing.example", tmp_path)
    assert "Billing Address Co" in message.get_body(preferencelist=("plain",)).get_content()
    [row] = email_rows(server)
    assert (row[2], row[3], row[5], row[6]) == ("sent", 1, None, path)

    # sent once: another round writes nothing
    clock.advance(hours=2)
    server.app.dispatcher.run_once()
    assert outbox_files(server) == [path]

    # no billing_email: the customer's email
    second, body = issued_invoice(admin, name="Plain Email Co")
    server.app.dispatcher.run_once()
    [new] = [p for p in outbox_files(server) if p != path]
    with open(new, "rb") as handle:
        message = parse_email(handle.read())
    check_message(message, second, body["email"], tmp_path)
    assert second["number"] != invoice["number"]


def test_with_smtp_the_message_goes_to_the_smtp_server(smtp, smtp_server, tmp_path):
    receiver = smtp()
    server = smtp_server(receiver.server_address[1])
    setup_catalog(server.admin)
    invoice, _ = issued_invoice(server.admin, billing_email="ap@billing.example")
    counts = server.app.dispatcher.run_once()
    assert counts["emails"] == {"sent": 1, "failed": 0}
    [got] = receiver.messages
    assert got["from"] == "invoices@meterline.test" and got["rcpt"] == ["ap@billing.example"]
    message = parse_email(got["data"])
    assert message["From"] == "invoices@meterline.test"
    check_message(message, invoice, "ap@billing.example", tmp_path)
    assert outbox_files(server) == []
    assert not os.path.exists(os.path.join(server.app.config.data_dir, "outbox"))
    [row] = email_rows(server)
    assert (row[2], row[3], row[5], row[6]) == ("sent", 1, None, "smtp")
    clock.advance(hours=2)
    server.app.dispatcher.run_once()
    assert len(receiver.messages) == 1


def test_smtp_down_stays_pending_and_is_retried_after_the_backoff(smtp, smtp_server, tmp_path):
    probe = smtp()
    port = probe.server_address[1]
    smtp.stop(probe)  # nothing listens there now
    server = smtp_server(port)
    setup_catalog(server.admin)
    invoice, _ = issued_invoice(server.admin, billing_email="ap@billing.example")

    counts = server.app.dispatcher.run_once()
    assert counts["emails"] == {"sent": 0, "failed": 1}
    [row] = email_rows(server)
    assert (row[0], row[2], row[3]) == (invoice["id"], "pending", 1)
    assert row[5]  # last_error says why
    t0 = times.parse_instant(T0)
    assert row[4] == times.to_micros(t0) + 60 * 1_000_000
    assert outbox_files(server) == []  # no fallback to the outbox

    receiver = smtp(port)  # the SMTP server comes up
    clock.advance(seconds=59)
    server.app.dispatcher.run_once()
    assert receiver.messages == [] and email_rows(server)[0][3] == 1
    clock.advance(seconds=1)
    counts = server.app.dispatcher.run_once()
    assert counts["emails"] == {"sent": 1, "failed": 0}
    [got] = receiver.messages
    assert got["rcpt"] == ["ap@billing.example"]
    check_message(parse_email(got["data"]), invoice, "ap@billing.example", tmp_path)
    [row] = email_rows(server)
    assert (row[2], row[3], row[4], row[5]) == ("sent", 2, None, None)
    assert outbox_files(server) == []


def test_second_failure_waits_two_minutes(smtp, smtp_server):
    probe = smtp()
    port = probe.server_address[1]
    smtp.stop(probe)
    server = smtp_server(port)
    setup_catalog(server.admin)
    issued_invoice(server.admin)
    server.app.dispatcher.run_once()
    clock.advance(seconds=60)
    server.app.dispatcher.run_once()
    [row] = email_rows(server)
    assert (row[2], row[3]) == ("pending", 2)
    assert row[4] == times.to_micros(clock.now()) + 120 * 1_000_000
