"""Invoice e-mail: the outbox .eml path and real SMTP delivery against a tiny
in-test SMTP receiver (plain, with AUTH PLAIN, and unreachable). The receiver
speaks plain SMTP, so these send with TLS off (SMTP_TLS=off); TLS itself is
tested in test_smtp_tls.py."""

import os
import re
import smtplib
import socket

import pytest

from billing.ops import mailer
from tests.helpers import parse_email
from tests.smtp_receiver import start_receiver, stop_receiver

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n.\n..leading dots\r\n%%EOF\n"

INVOICE = {
    "number": "INV-000001", "currency": "USD", "total": "120.00", "amount_due": "95.50",
    "due_at": "2025-10-31T00:00:00Z", "local_period": {"start": "2025-09-01", "end": "2025-10-01"},
    "lines": [{"description": "Base fee", "amount": "49.00"},
              {"description": "API calls (71,000)", "amount": "71.00"}],
}
CUSTOMER = {"name": "Acme Analytics", "email": "ops@acme.example", "billing_email": "billing@acme.example"}


def the_pdf(message):
    attachments = list(message.iter_attachments())
    assert len(attachments) == 1
    return attachments[0]


@pytest.fixture
def receiver():
    servers = []

    def start(auth=False):
        servers.append(start_receiver(auth=auth))
        return servers[-1]

    yield start
    for server in servers:
        stop_receiver(server)


def smtp_config(server, **extra):
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(server.server_address[1]), **extra}


def test_outbox_writes_one_complete_eml(tmp_path):
    outbox = tmp_path / "outbox"
    message = mailer.invoice_message(INVOICE, CUSTOMER, PDF, mailer.sender_address({}))
    path = mailer.deliver(message, {}, str(outbox))

    assert os.listdir(outbox) == [os.path.basename(path)]  # no temp files left behind
    assert re.fullmatch(r"\d{8}T\d{6}Z-INV-000001-[0-9a-f]{8}\.eml", os.path.basename(path))
    with open(path, "rb") as handle:
        parsed = parse_email(handle.read())
    assert parsed["From"] == "billing@meterline.local"
    assert parsed["To"] == "billing@acme.example"
    assert "INV-000001" in parsed["Subject"] and "95.50 USD" in parsed["Subject"]
    assert "due 2025-10-31" in parsed["Subject"]
    assert parsed["Message-ID"].endswith("@meterline.local>") and parsed["Date"]
    text = parsed.get_body(preferencelist=("plain",)).get_content()
    assert "Acme Analytics" in text and "2025-09-01 to 2025-09-30" in text
    assert "Base fee" in text and "API calls (71,000)" in text and "95.50" in text
    attachment = the_pdf(parsed)
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == "INV-000001.pdf"
    assert attachment.get_content() == PDF


def test_smtp_delivery_reaches_the_billing_address(tmp_path, receiver):
    server = receiver()
    outbox = tmp_path / "outbox"
    message = mailer.invoice_message(INVOICE, CUSTOMER, PDF, "invoices@example.com")
    assert mailer.deliver(message, smtp_config(server), str(outbox), tls=False) == "smtp"

    assert len(server.messages) == 1
    got = server.messages[0]
    assert got["from"] == "invoices@example.com"
    assert got["rcpt"] == ["billing@acme.example"]
    parsed = parse_email(got["data"])
    assert parsed["Subject"] == message["Subject"]
    assert the_pdf(parsed).get_content() == PDF
    assert server.credentials == []
    assert not outbox.exists()


def test_smtp_login_sends_the_configured_credentials(tmp_path, receiver):
    server = receiver(auth=True)
    message = mailer.invoice_message(INVOICE, CUSTOMER, PDF, "invoices@example.com")
    config = smtp_config(server, SMTP_USER="meter", SMTP_PASSWORD="s3cret pass")
    assert mailer.deliver(message, config, str(tmp_path / "outbox"), tls=False) == "smtp"
    assert server.credentials == [("meter", "s3cret pass")]
    assert len(server.messages) == 1


def test_unreachable_smtp_raises_and_writes_nothing(tmp_path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    outbox = tmp_path / "outbox"
    message = mailer.invoice_message(INVOICE, CUSTOMER, PDF, "invoices@example.com")
    with pytest.raises((OSError, smtplib.SMTPException)):
        mailer.deliver(message, {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port)}, str(outbox), tls=False)
    assert not outbox.exists()


def test_non_ascii_name_and_no_billing_email(tmp_path):
    customer = {"name": "Zoë Ünal", "email": "zoe@example.com", "billing_email": None}
    invoice = dict(INVOICE, due_at=None)
    message = mailer.invoice_message(invoice, customer, PDF, "billing@meterline.local")
    assert message["To"] == "zoe@example.com"
    assert " due " not in message["Subject"]

    data = message.as_bytes()
    data.decode("ascii")  # headers and body are MIME-encoded, safe for any SMTP server
    parsed = parse_email(data)
    assert parsed["To"] == "zoe@example.com"
    assert "Zoë Ünal" in parsed.get_body(preferencelist=("plain",)).get_content()
    assert "Due date" not in parsed.get_body(preferencelist=("plain",)).get_content()
    assert the_pdf(parsed).get_content() == PDF
