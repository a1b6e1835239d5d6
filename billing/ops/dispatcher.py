"""The outbound queue: webhook deliveries and invoice e-mails, both stored in
SQLite by the transaction that caused them, so they survive a restart.

A round claims the due rows (pushing their next attempt a lease ahead, so a
second round running at the same time skips them and a crash mid-send retries
them later), sends them without holding the writer, then records the outcome:
done, or the next attempt after an exponential backoff from one minute, or
given up after ten attempts.
"""

import http.client
import os
import threading
import time
import urllib.error
import urllib.request

from .. import clock
from ..api import alert_eval, lifecycle, notifications, webhooks
from ..api import invoices as invoices_api
from ..api.common import now_micros
from ..exports.pdf import invoice_pdf
from ..store.db import named
from ..store.secretbox import SecretError
from . import mailer

LEASE_SECONDS = 300
BATCH = 50
TIMEOUT_SECONDS = 10
RESPONSE_EXCERPT = 500
IDLE_SECONDS = 1.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A delivery succeeds only by a 2xx answer to the POST itself: urllib would
    follow a 301/302/303 with a GET that drops the payload, so a 3xx is a failed attempt."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _anything_due(db, table, now):
    """A read first: an idle round (the common case, once a second) never takes the writer."""
    return db.row(f"SELECT 1 FROM {table} WHERE status = 'pending' AND next_attempt_at <= ? LIMIT 1",
                  (now,)) is not None


def _claim(conn, table, now, columns):
    """The due rows of `table` (id and `columns`, by name), leased for LEASE_SECONDS."""
    rows = named(conn, f"SELECT id, {columns} FROM {table} WHERE status = 'pending' AND next_attempt_at <= ?"
                       " ORDER BY next_attempt_at, id LIMIT ?", (now, BATCH)).fetchall()
    if rows:
        conn.executemany(f"UPDATE {table} SET next_attempt_at = ? WHERE id = ?",
                         [(now + LEASE_SECONDS * 1_000_000, r["id"]) for r in rows])
    return rows


def _failed_state(attempts, now):
    """(status, next_attempt_at) after `attempts` failed attempts."""
    if attempts >= webhooks.MAX_ATTEMPTS:
        return "failed", None
    return "pending", now + webhooks.retry_delay(attempts) * 1_000_000


def _delivered(conn, delivery, code, now):
    conn.execute("UPDATE webhook_deliveries SET status = 'delivered', attempts = ?, delivered_at = ?,"
                 " next_attempt_at = NULL, last_status_code = ?, last_error = NULL WHERE id = ?",
                 (delivery["attempts"] + 1, now, code, delivery["id"]))


def _delivery_failed(conn, delivery, url, code, error, now):
    """Record a failed attempt: retried later, or given up (a staff
    notification); True when it gave up."""
    attempts, delivery_id = delivery["attempts"] + 1, delivery["id"]
    status, next_at = _failed_state(attempts, now)
    if status == "failed":
        notifications.create(conn, None, None, "webhook_failed", "Webhook delivery failed",
                             f"Delivery {delivery_id} to {url} gave up after {attempts}"
                             f" attempts (last: {error or f'HTTP {code}'}).")
    # a delivery canceled meanwhile (its endpoint deleted) stays canceled
    conn.execute("UPDATE webhook_deliveries SET"
                 " status = CASE WHEN status = 'pending' THEN ? ELSE status END, attempts = ?,"
                 " next_attempt_at = CASE WHEN status = 'pending' THEN ? ELSE NULL END,"
                 " last_status_code = ?, last_error = ? WHERE id = ?",
                 (status, attempts, next_at, code, error or f"HTTP {code}", delivery_id))
    return status == "failed"


class Dispatcher:
    def __init__(self, app):
        self.app = app
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._round = threading.Lock()
        self._thread = None

    # -- the background thread ----------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=TIMEOUT_SECONDS + 5)

    def wake(self):
        self._wake.set()

    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def _loop(self):
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.run_once()
            except Exception as exc:  # the queue stays; the next round tries again
                self.app.log_exception("dispatcher", exc)
            self._wake.wait(IDLE_SECONDS)

    # -- one round ----------------------------------------------------------
    def run_once(self):
        """Send every due webhook delivery and e-mail; returns counts."""
        with self._round:
            return {"webhooks": self._webhooks(), "emails": self._emails()}

    def _webhooks(self):
        counts = {"delivered": 0, "failed": 0}
        gave_up = 0
        if not _anything_due(self.app.db, "webhook_deliveries", now_micros()):
            return counts
        with self.app.db.transaction() as conn:
            due = _claim(conn, "webhook_deliveries", now_micros(), "webhook_id, payload, attempts")
            endpoints = {r["id"]: r for r in named(conn, "SELECT id, url, secret FROM webhooks")}
        for delivery in due:
            endpoint = endpoints[delivery["webhook_id"]]
            try:
                secret = self.app.secrets.unwrap(endpoint["secret"])
            except SecretError as exc:  # never sign with garbage: a failed attempt, visible in the log
                code, response, error, duration = None, None, f"SecretError: {exc}", 0
            else:
                code, response, error, duration = self._post(endpoint["url"], secret,
                                                             delivery["payload"].encode("utf-8"))
            ok = code is not None and 200 <= code < 300
            counts["delivered" if ok else "failed"] += 1
            now = now_micros()
            with self.app.db.transaction() as conn:
                conn.execute("INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, response, error,"
                             " duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
                             (delivery["id"], now, code, response, error, duration))
                if ok:
                    _delivered(conn, delivery, code, now)
                elif _delivery_failed(conn, delivery, endpoint["url"], code, error, now):
                    gave_up += 1
        if gave_up:
            self.app.publish("notification.created", {"customer_id": None})  # staff only
        return counts

    @staticmethod
    def _post(url, secret, body):
        """(status code or None, response excerpt, error, duration in ms) of one POST."""
        stamp = int(clock.now().timestamp())
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "Meterline-Webhooks/1",
            "Meterline-Signature": webhooks.signature(secret, stamp, body)})
        started = time.monotonic()
        code, text, error = None, None, None
        try:
            with _OPENER.open(request, timeout=TIMEOUT_SECONDS) as response:
                code, text = response.status, response.read(RESPONSE_EXCERPT)
        except urllib.error.HTTPError as exc:
            code, text = exc.code, exc.read(RESPONSE_EXCERPT)
            exc.close()
        except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timed out, bad URL, not HTTP
            error = f"{type(exc).__name__}: {exc}"[:RESPONSE_EXCERPT]
        duration = int((time.monotonic() - started) * 1000)
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return code, text, error, duration

    def _message(self, invoice_id, firing_id, recipient):
        """The e-mail of an issued invoice (with its PDF) or of an alert firing."""
        sender = mailer.sender_address(self.app.config.smtp)
        with self.app.db.reader() as conn:
            if firing_id is not None:
                firing = alert_eval.firing_view(named(conn, f"SELECT {alert_eval.FIRING_COLUMNS} FROM alert_firings"
                                                            " WHERE id = ?", (firing_id,)).fetchone())
                customer = named(conn, "SELECT name FROM customers WHERE id = ?",
                                 (firing["customer_id"],)).fetchone()
                return mailer.alert_message(firing, customer, recipient, sender)
            invoice = invoices_api.load_view(conn, invoice_id)
            customer = lifecycle.bill_to(conn, invoice_id, invoice["customer_id"])
        return mailer.invoice_message(invoice, customer, invoice_pdf(invoice, customer), sender)

    def _emails(self):
        counts = {"sent": 0, "failed": 0}
        if not _anything_due(self.app.db, "emails", now_micros()):
            return counts
        with self.app.db.transaction() as conn:
            due = _claim(conn, "emails", now_micros(), "invoice_id, firing_id, recipient, attempts")
        config = self.app.config
        outbox = os.path.join(config.data_dir, "outbox")
        for email in due:
            try:
                message = self._message(email["invoice_id"], email["firing_id"], email["recipient"])
                where = mailer.deliver(message, config.smtp, outbox, tls=config.smtp_tls)
                error = None
            except Exception as exc:  # SMTP down or not secure, disk full: try again later
                where, error = None, f"{type(exc).__name__}: {exc}"[:RESPONSE_EXCERPT]
            counts["sent" if error is None else "failed"] += 1
            now = now_micros()
            with self.app.db.transaction() as conn:
                _record_email(conn, email, where, error, now)
        return counts


def _record_email(conn, email, where, error, now):
    """The outcome of one attempt: sent (to `where`), or retried later, or given up."""
    attempts = email["attempts"] + 1
    if error is None:
        conn.execute("UPDATE emails SET status = 'sent', attempts = ?, sent_at = ?, delivered_to = ?,"
                     " next_attempt_at = NULL, last_error = NULL WHERE id = ?", (attempts, now, where, email["id"]))
        return
    status, next_at = _failed_state(attempts, now)
    # an e-mail canceled meanwhile (its invoice voided) stays canceled
    conn.execute("UPDATE emails SET status = CASE WHEN status = 'pending' THEN ? ELSE status END,"
                 " attempts = ?, next_attempt_at = CASE WHEN status = 'pending' THEN ? ELSE NULL END,"
                 " last_error = ? WHERE id = ?", (status, attempts, next_at, error, email["id"]))
