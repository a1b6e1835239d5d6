"""SMTP is encrypted (§1): STARTTLS is required and the certificate verified
unless SMTP_TLS=off. A server without STARTTLS gets no mail and never sees
the password; one whose certificate is not trusted neither; with a trusted
certificate everything, the login included, goes inside TLS."""

import ssl
import subprocess

import pytest

from billing.ops import mailer
from tests import tools
from tests.harness import RunningServer, temp_db
from tests.http.test_invoice_email import ENV, email_rows, issued_invoice, setup_catalog
from tests.smtp_receiver import start_receiver, stop_receiver

PDF = b"%PDF-1.4\n%%EOF\n"
INVOICE = {"number": "INV-000009", "currency": "USD", "total": "10.00", "amount_due": "10.00", "due_at": None,
           "local_period": None, "lines": [{"description": "Base fee", "amount": "10.00"}]}
CUSTOMER = {"name": "Secure Mail Co", "email": "ap@secure.example", "billing_email": None}
USER, PASSWORD = "meter", "smtp-password-never-in-clear"


@pytest.fixture
def receiver():
    servers = []

    def start(**kw):
        servers.append(start_receiver(**kw))
        return servers[-1]

    yield start
    for server in servers:
        stop_receiver(server)


@pytest.fixture
def certificate(tmp_path):
    """(cert path, key path) of a self-signed certificate for 127.0.0.1, made now."""
    openssl = tools.need("openssl", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def server_context(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def config(server, **extra):
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(server.server_address[1]),
            "SMTP_USER": USER, "SMTP_PASSWORD": PASSWORD, **extra}


def message():
    return mailer.invoice_message(INVOICE, CUSTOMER, PDF, "invoices@example.com")


def test_a_server_without_starttls_gets_no_mail_and_no_password(tmp_path, receiver):
    server = receiver(auth=True)  # offers AUTH PLAIN in the clear, no STARTTLS
    with pytest.raises(mailer.TLSRequired, match="STARTTLS") as raised:
        mailer.deliver(message(), config(server), str(tmp_path / "outbox"))
    assert "SMTP_TLS=off" in str(raised.value)
    assert server.credentials == [] and server.messages == []
    assert "AUTH" not in server.commands and "MAIL" not in server.commands
    assert not (tmp_path / "outbox").exists()  # no fallback to the outbox either

    # SMTP_TLS=off: plain SMTP, as before
    assert mailer.deliver(message(), config(server), str(tmp_path / "outbox"), tls=False) == "smtp"
    assert server.credentials == [(USER, PASSWORD)] and len(server.messages) == 1


def test_an_untrusted_certificate_is_refused_before_the_login(tmp_path, receiver, certificate):
    server = receiver(auth=True, tls=server_context(certificate))  # self-signed: not trusted by the system
    with pytest.raises(ssl.SSLCertVerificationError):
        mailer.deliver(message(), config(server), str(tmp_path / "outbox"))
    assert "STARTTLS" in server.commands  # it tried TLS …
    assert server.credentials == [] and server.messages == []  # … and stopped at the certificate
    assert "AUTH" not in server.commands and "MAIL" not in server.commands


def test_a_trusted_certificate_carries_the_login_and_the_mail(tmp_path, receiver, certificate, monkeypatch):
    server = receiver(auth=True, tls=server_context(certificate))
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])  # the system trusts it now
    assert mailer.deliver(message(), config(server), str(tmp_path / "outbox")) == "smtp"
    assert server.credentials == [(USER, PASSWORD)] and len(server.messages) == 1
    commands = server.commands
    assert commands.index("STARTTLS") < commands.index("AUTH") < commands.index("MAIL")


def test_the_dispatcher_retries_and_says_why(tmp_path, receiver):
    smtp = receiver(auth=True)
    app = RunningServer(temp_db(tmp_path), env={**ENV, "SMTP_HOST": "127.0.0.1",
                                                "SMTP_PORT": str(smtp.server_address[1]),
                                                "SMTP_USER": USER, "SMTP_PASSWORD": PASSWORD})
    try:
        assert app.app.config.smtp_tls is True  # the default
        setup_catalog(app.admin)
        invoice, _ = issued_invoice(app.admin, billing_email="ap@billing.example")
        counts = app.app.dispatcher.run_once()
        assert counts["emails"] == {"sent": 0, "failed": 1}
        [row] = email_rows(app)
        assert (row[0], row[2], row[3]) == (invoice["id"], "pending", 1)  # retried after the backoff
        assert row[5].startswith("TLSRequired:") and "STARTTLS" in row[5]
        assert smtp.credentials == [] and smtp.messages == [] and "AUTH" not in smtp.commands
    finally:
        app.stop()

