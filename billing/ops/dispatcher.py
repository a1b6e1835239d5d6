"""The outbound queue: webhook deliveries and invoice e-mails, both stored in
SQLite by the transaction that caused them, so they survive a restart.

A round claims the due rows (pushing their next attempt a lease ahead, so a
crash mid-send retries them later), hands them to worker threads and records
each outcome when it is known: done, or the next attempt after an exponential
backoff from one minute, or given up after ten attempts.

One slow endpoint holds up nothing else: each endpoint with due deliveries
gets its own worker (at most MAX_SENDERS at once), which sends that
endpoint's deliveries in order, one at a time, so endpoints never queue
behind each other and no endpoint gets two deliveries at once; e-mail has a
worker of its own. Each delivery has one total deadline (DEADLINE_SECONDS for
connecting, sending and the answer together): at that instant its socket is
shut down, so an endpoint that never answers, or trickles its answer a byte
at a time, fails then and is retried with the backoff.
"""

import functools
import http.client
import os
import socket
import ssl
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

LEASE_SECONDS = 300       # longer than PER_ENDPOINT deliveries at their deadline
BATCH = 50                # e-mails claimed at once
PER_ENDPOINT = 10         # deliveries claimed at once for one endpoint
MAX_SENDERS = 8           # endpoints sent to at the same time
DEADLINE_SECONDS = 10     # one delivery: connect, send and the answer, in all
RESPONSE_EXCERPT = 500
IDLE_SECONDS = 1.0
MAX_ROUNDS = 100          # run_once: rounds until nothing is due


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A delivery succeeds only by a 2xx answer to the POST itself: urllib would
    follow a 301/302/303 with a GET that drops the payload, so a 3xx is a failed attempt."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class _Deadline:
    """The end of one delivery's time. At that instant the sockets it opened
    are shut down, which ends any read or write blocked on them: a socket
    timeout alone starts again at every byte a trickling endpoint sends."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.expired = False
        self._sockets = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()

    def connect(self, address, timeout=None, source_address=None, **kwargs):
        """socket.create_connection, with the socket put under this deadline."""
        sock = socket.create_connection(address, timeout, source_address, **kwargs)
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            sock.close()
            raise TimeoutError("the deadline passed while connecting")
        return sock

    def _expire(self):
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed


_sending = threading.local()  # .deadline: that of the delivery this thread is sending


def _connect(address, timeout=None, source_address=None, **kwargs):
    return _sending.deadline.connect(address, timeout, source_address, **kwargs)


def _under_deadline(connection_class):
    """A connection factory for urllib whose sockets are opened under the
    sending thread's deadline."""
    def make(host, **kwargs):
        connection = connection_class(host, **kwargs)
        connection._create_connection = _connect  # what connect() opens its socket with
        return connection
    return make


class _HTTP(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_under_deadline(http.client.HTTPConnection), req)


class _HTTPS(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_under_deadline(http.client.HTTPSConnection), req, context=self._context)


@functools.lru_cache(maxsize=1)
def _opener():
    """One opener for every delivery, made at the first (loading the system's
    certificates takes tens of milliseconds)."""
    return urllib.request.build_opener(_NoRedirect, _HTTP(), _HTTPS(context=ssl.create_default_context()))


def post(url, secret, body, deadline_seconds=DEADLINE_SECONDS):
    """(status code or None, response excerpt, error, duration in ms) of one
    signed POST of `body` (bytes), all of it within `deadline_seconds`."""
    stamp = int(clock.now().timestamp())
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "Meterline-Webhooks/1",
        "Meterline-Signature": webhooks.signature(secret, stamp, body)})
    started = time.monotonic()
    code, text, error = None, None, None
    with _Deadline(deadline_seconds) as deadline:
        _sending.deadline = deadline
        try:
            with _opener().open(request, timeout=deadline_seconds) as response:
                code, text = response.status, response.read(RESPONSE_EXCERPT)
        except urllib.error.HTTPError as exc:
            code, text = exc.code, exc.read(RESPONSE_EXCERPT)
            exc.close()
        except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timed out, bad URL, not HTTP
            error = f"{type(exc).__name__}: {exc}"[:RESPONSE_EXCERPT]
        if deadline.expired:  # what was read may be cut short (a status line without its headers)
            code, text = None, None
            error = (f"TimeoutError: no complete answer within {deadline_seconds} s"
                     " (connecting, sending and the answer together)")
    duration = int((time.monotonic() - started) * 1000)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return code, text, error, duration


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


def _claim_deliveries(conn, now, busy, slots):
    """The due deliveries of at most `slots` endpoints not in `busy`, at most
    PER_ENDPOINT each, oldest first, leased for LEASE_SECONDS: {webhook id: rows}."""
    skip = ",".join(str(int(hook)) for hook in busy) or "0"  # ids start at 1
    rows = named(conn, "SELECT id, webhook_id, payload, attempts, next_attempt_at FROM ("
                       " SELECT id, webhook_id, payload, attempts, next_attempt_at, row_number() OVER"
                       " (PARTITION BY webhook_id ORDER BY next_attempt_at, id) AS place FROM webhook_deliveries"
                       f" WHERE status = 'pending' AND next_attempt_at <= ? AND webhook_id NOT IN ({skip}))"
                       " WHERE place <= ? ORDER BY next_attempt_at, id", (now, PER_ENDPOINT)).fetchall()
    batches = {}
    for row in rows:
        if row["webhook_id"] in batches or len(batches) < slots:
            batches.setdefault(row["webhook_id"], []).append(row)
    conn.executemany("UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?",
                     [(now + LEASE_SECONDS * 1_000_000, r["id"]) for rows in batches.values() for r in rows])
    return batches


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
        self.deadline_seconds = DEADLINE_SECONDS
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # claims, the in-flight markers, the counts
        self._busy = set()  # endpoints with a worker sending to them
        self._mailing = False  # the e-mail worker is running
        self._workers = []
        self._thread = None

    # -- the background thread ----------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self):
        """Stop claiming; workers finish the delivery in hand (at most its
        deadline) and give back the rest of their batch."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.deadline_seconds + 5)
        for worker in list(self._workers):
            worker.join(timeout=self.deadline_seconds + 5)

    def wake(self):
        self._wake.set()

    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def _loop(self):
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._start_round()
            except Exception as exc:  # the queue stays; the next round tries again
                self.app.log_exception("dispatcher", exc)
            self._wake.wait(IDLE_SECONDS)

    # -- rounds -------------------------------------------------------------
    def run_once(self):
        """Send every due webhook delivery and e-mail and return once they are
        done: counts of the outcomes."""
        counts = {"webhooks": {"delivered": 0, "failed": 0}, "emails": {"sent": 0, "failed": 0}}
        for _ in range(MAX_ROUNDS):
            workers = self._start_round(counts)
            if not workers:
                break
            for worker in workers:
                worker.join()
        return counts

    def _start_round(self, counts=None):
        """Claim what is due for the idle workers and start them; the threads started."""
        db, now, started = self.app.db, now_micros(), []
        with self._lock:
            if self._stop.is_set():
                return started
            if not self._mailing and _anything_due(db, "emails", now):
                with db.transaction() as conn:
                    due = _claim(conn, "emails", now, "invoice_id, firing_id, recipient, attempts, next_attempt_at")
                if due:
                    self._mailing = True
                    started.append(self._spawn("dispatch-email", self._send_emails, due, counts))
            slots = MAX_SENDERS - len(self._busy)
            if slots > 0 and _anything_due(db, "webhook_deliveries", now):
                with db.transaction() as conn:
                    batches = _claim_deliveries(conn, now, self._busy, slots)
                    endpoints = {r["id"]: r for r in named(conn, "SELECT id, url, secret FROM webhooks")}
                for hook, rows in batches.items():
                    self._busy.add(hook)
                    started.append(self._spawn(f"dispatch-webhook-{hook}", self._send_deliveries,
                                               endpoints[hook], rows, counts))
        return started

    def _spawn(self, name, target, *args):
        def run():
            try:
                target(*args)
            except Exception as exc:  # what was not recorded is retried after its lease
                self.app.log_exception("dispatcher", exc)
            finally:
                self._wake.set()  # the loop may start this endpoint's next batch
        worker = threading.Thread(target=run, name=name, daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()
        return worker

    def _count(self, counts, kind, outcome):
        if counts is not None:
            with self._lock:
                counts[kind][outcome] += 1

    def _release(self, table, rows):
        """Give back claimed rows not attempted (stopping): due again at once."""
        if rows:
            with self.app.db.transaction() as conn:
                conn.executemany(f"UPDATE {table} SET next_attempt_at = ? WHERE id = ? AND status = 'pending'",
                                 [(r["next_attempt_at"], r["id"]) for r in rows])

    # -- webhooks -----------------------------------------------------------
    def _send_deliveries(self, endpoint, rows, counts):
        """One endpoint's batch, in order, one delivery at a time."""
        gave_up = 0
        try:
            for index, delivery in enumerate(rows):
                if self._stop.is_set():
                    self._release("webhook_deliveries", rows[index:])
                    break
                gave_up += self._deliver(endpoint, delivery, counts)
        finally:
            with self._lock:
                self._busy.discard(endpoint["id"])
        if gave_up:
            self.app.publish("notification.created", {"customer_id": None})  # staff only

    def _deliver(self, endpoint, delivery, counts):
        """Send one delivery and record the attempt; 1 when it gave up, else 0."""
        try:
            secret = self.app.secrets.unwrap(endpoint["secret"])
        except SecretError as exc:  # never sign with garbage: a failed attempt, visible in the log
            code, response, error, duration = None, None, f"SecretError: {exc}", 0
        else:
            code, response, error, duration = post(endpoint["url"], secret, delivery["payload"].encode("utf-8"),
                                                   self.deadline_seconds)
        ok = code is not None and 200 <= code < 300
        self._count(counts, "webhooks", "delivered" if ok else "failed")
        now = now_micros()
        with self.app.db.transaction() as conn:
            conn.execute("INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, response, error,"
                         " duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
                         (delivery["id"], now, code, response, error, duration))
            if ok:
                _delivered(conn, delivery, code, now)
                return 0
            return 1 if _delivery_failed(conn, delivery, endpoint["url"], code, error, now) else 0

    # -- e-mail -------------------------------------------------------------
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

    def _send_emails(self, due, counts):
        config = self.app.config
        outbox = os.path.join(config.data_dir, "outbox")
        try:
            for index, email in enumerate(due):
                if self._stop.is_set():
                    self._release("emails", due[index:])
                    break
                try:
                    message = self._message(email["invoice_id"], email["firing_id"], email["recipient"])
                    where = mailer.deliver(message, config.smtp, outbox, tls=config.smtp_tls)
                    error = None
                except Exception as exc:  # SMTP down or not secure, disk full: try again later
                    where, error = None, f"{type(exc).__name__}: {exc}"[:RESPONSE_EXCERPT]
                self._count(counts, "emails", "sent" if error is None else "failed")
                with self.app.db.transaction() as conn:
                    _record_email(conn, email, where, error, now_micros())
        finally:
            with self._lock:
                self._mailing = False


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
