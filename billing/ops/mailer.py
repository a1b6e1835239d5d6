"""E-mail for issued invoices (text body + PDF attachment) and for alerts
(text: a budget step or a customer's own rule reached): build the message
and deliver it by SMTP, or, with no SMTP_HOST configured, drop it as an .eml
file in an outbox folder (written atomically, so readers never see half a file).

SMTP is encrypted: the server must offer STARTTLS and show a certificate the
system trusts for SMTP_HOST (ssl.create_default_context()); otherwise nothing
is sent, the password least of all, and the error says why (the message is
retried like any SMTP failure). SMTP_TLS=off allows a server without TLS
(STARTTLS is still used, unverified, when offered)."""

import os
import re
import secrets
import smtplib
import ssl
import tempfile
from datetime import date, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from .. import clock

DEFAULT_SENDER = "billing@meterline.local"


def sender_address(smtp):
    return smtp.get("SMTP_FROM") or DEFAULT_SENDER


def _period(local_period):
    start, end = (local_period or {}).get("start"), (local_period or {}).get("end")
    if not start or not end:
        return None
    last = date.fromisoformat(end) - timedelta(days=1)  # the period end is exclusive
    return f"{start} to {last.isoformat()}"


def _body(invoice, customer, due):
    currency = invoice["currency"]
    lines = invoice.get("lines") or []
    width = max([len(line["description"]) for line in lines] + [len("Amount due")])
    rows = [f"Hello {customer['name']},", "",
            f"Your invoice {invoice['number']} is ready; the PDF is attached.", ""]
    period = _period(invoice.get("local_period"))
    if period:
        rows += [f"Period: {period}", ""]
    rows += [f"  {line['description']:<{width}}  {line['amount']:>12} {currency}" for line in lines]
    rows += ["", f"  {'Total':<{width}}  {invoice['total']:>12} {currency}",
             f"  {'Amount due':<{width}}  {invoice['amount_due']:>12} {currency}"]
    if due:
        rows += ["", f"Due date: {due}"]
    rows += ["", "Thank you,", "Meterline billing", ""]
    return "\n".join(rows)


def invoice_message(invoice, customer, pdf, sender):
    """An EmailMessage carrying the invoice summary as text and the PDF attached."""
    due = invoice["due_at"][:10] if invoice.get("due_at") else None  # date part of the UTC instant
    subject = f"Invoice {invoice['number']} from Meterline — {invoice['amount_due']} {invoice['currency']}"
    message = EmailMessage()
    message["From"] = sender
    message["To"] = customer.get("billing_email") or customer["email"]
    message["Subject"] = subject + (f" due {due}" if due else "")
    message["Date"] = format_datetime(clock.now())
    message["Message-ID"] = make_msgid(domain="meterline.local")
    message["X-Meterline-Invoice"] = invoice["number"]  # names the outbox file
    # quoted-printable keeps the wire 7-bit even for non-ASCII names (no 8BITMIME needed)
    message.set_content(_body(invoice, customer, due), cte="quoted-printable")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"{invoice['number']}.pdf")
    return message


def alert_message(firing, customer, recipient, sender):
    """An EmailMessage telling the customer an alert fired."""
    titles = {"budget": f"{firing['percent']}% of your budget reached", "spend": "Spend alert",
              "usage": "Usage alert"}
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = f"{titles.get(firing['type'], 'Alert')} — {customer['name']}"
    message["Date"] = format_datetime(clock.now())
    message["Message-ID"] = make_msgid(domain="meterline.local")
    message["X-Meterline-Alert"] = str(firing["id"])  # names the outbox file
    rows = [f"Hello {customer['name']},", "", firing["message"], ""]
    if firing.get("period_start") and firing.get("period_end"):
        rows += [f"Billing period: {firing['period_start']} to {firing['period_end']}", ""]
    rows += [f"Threshold: {firing['threshold']}{' ' + firing['currency'] if firing.get('currency') else ''}",
             f"Now: {firing['value']}{' ' + firing['currency'] if firing.get('currency') else ''}", "",
             "This alert fires once per billing period.", "", "Meterline billing", ""]
    message.set_content("\n".join(rows), cte="quoted-printable")
    return message


TIMEOUT_SECONDS = 10


class TLSRequired(smtplib.SMTPException):
    """The SMTP server does not offer STARTTLS, and SMTP_TLS is on."""


def _secure(server, host, tls):
    """STARTTLS on the open session: required and verified when `tls`, else
    used (unverified) only when offered."""
    offered = server.has_extn("starttls")
    if tls and not offered:
        raise TLSRequired(f"the SMTP server {host} does not offer STARTTLS: nothing was sent (no password"
                          " either); use a server with TLS, or set SMTP_TLS=off to allow plain SMTP")
    if offered:
        if tls:
            server.starttls(context=ssl.create_default_context())
        else:
            server.starttls()  # smtplib's default: encrypted, the certificate not checked
        server.ehlo()


def _send_smtp(message, smtp, tls=True):
    host, port = smtp["SMTP_HOST"], int(smtp.get("SMTP_PORT") or 25)
    server = smtplib.SMTP(host, port, timeout=TIMEOUT_SECONDS)
    try:
        server.ehlo()
        _secure(server, host, tls)
        if smtp.get("SMTP_USER"):
            server.login(smtp["SMTP_USER"], smtp.get("SMTP_PASSWORD") or "")
        server.send_message(message)
    except BaseException:
        server.close()  # no QUIT on a session that failed (it may be half-way into TLS)
        raise
    try:
        server.quit()
    except (smtplib.SMTPException, OSError):
        server.close()  # the message was accepted; a lost goodbye changes nothing


def _write_outbox(message, outbox_dir):
    os.makedirs(outbox_dir, exist_ok=True)
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
    name = message.get("X-Meterline-Invoice") or (f"alert-{message['X-Meterline-Alert']}"
                                                   if message.get("X-Meterline-Alert") else "message")
    number = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    path = os.path.join(outbox_dir, f"{stamp}-{number}-{secrets.token_hex(4)}.eml")
    fd, temp = tempfile.mkstemp(prefix=".outgoing-", suffix=".tmp", dir=outbox_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(message.as_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return path


def deliver(message, smtp, outbox_dir, tls=True):
    """Send by SMTP when SMTP_HOST is set (returns "smtp"; errors propagate so
    the caller can retry; `tls`: STARTTLS required and verified), else write
    an .eml into outbox_dir (returns its path)."""
    if smtp.get("SMTP_HOST"):
        _send_smtp(message, smtp, tls)
        return "smtp"
    return _write_outbox(message, outbox_dir)
