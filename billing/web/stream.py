"""The live stream (§4, §11): `GET /v1/stream`, Server-Sent Events.

The app publishes what happens (sessions started and stopped, invoices moving,
resources changing) to a bus; each stream is one subscriber with a bounded
queue. Once a second a stream also gets `stats` (events ingested in the last
second, active sessions). A slow client whose queue fills up is dropped (it
reconnects and reloads); a write that cannot go out within WRITE_TIMEOUT ends
the stream, so no server thread waits on a client forever. Closing the bus
(server shutdown) ends every stream.
"""

import queue
import socket
import threading
import time

from .. import jsonutil
from ..errors import ApiError, ServiceUnavailable
from ..api.invoices import STAFF_ONLY as INVOICE_STAFF_ONLY
from ..api.responses import Response

QUEUE_SIZE = 1000
WRITE_TIMEOUT = 10
TICK_SECONDS = 1.0
AUTH_RECHECK_SECONDS = 5.0
MAX_STREAMS = 64
_CLOSED = object()


class Bus:
    def __init__(self):
        self._lock = threading.Lock()
        self._subscribers = set()
        self.closed = False
        self.published = 0

    def subscribe(self):
        with self._lock:
            if self.closed:
                return None
            if len(self._subscribers) >= MAX_STREAMS:
                return False
            inbox = queue.Queue(QUEUE_SIZE)
            self._subscribers.add(inbox)
            return inbox

    def unsubscribe(self, inbox):
        with self._lock:
            self._subscribers.discard(inbox)

    def publish(self, event_type, data):
        message = (event_type, data)
        with self._lock:
            self.published += 1
            subscribers = list(self._subscribers)
        for inbox in subscribers:
            try:
                inbox.put_nowait(message)
            except queue.Full:  # too slow: drop the stream rather than hold the publisher
                self.unsubscribe(inbox)
                _force(inbox, _CLOSED)

    def close(self):
        with self._lock:
            self.closed = True
            subscribers = list(self._subscribers)
            self._subscribers.clear()
        for inbox in subscribers:
            _force(inbox, _CLOSED)

    def count(self):
        with self._lock:
            return len(self._subscribers)


def _force(inbox, item):
    """Put `item` even into a full queue (dropping the oldest)."""
    while True:
        try:
            inbox.put_nowait(item)
            return
        except queue.Full:
            try:
                inbox.get_nowait()
            except queue.Empty:
                pass


def frame(event_type, data, event_id=None):
    text = jsonutil.encode(data)
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event_type}\ndata: {text}\n\n".encode("utf-8")


def _event_stream(headers):
    return Response(200, None, content_type="text/event-stream; charset=utf-8", headers=headers)


def stream(request):
    """GET /v1/stream: text/event-stream until the client leaves or the server stops."""
    app = request.app
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if request.method == "HEAD":  # headers only: no subscription, no endless body after a HEAD answer
        return _event_stream(headers)
    inbox = app.bus.subscribe()
    if inbox is None:
        raise ServiceUnavailable("The server is shutting down.")
    if inbox is False:
        raise ServiceUnavailable("Too many live streams are open; the dashboard falls back to polling.")
    response = _event_stream(headers)
    response.stream = _Stream(app, inbox, request.customer_scope, request.headers.get("Authorization")).run
    return response


class _Stream:
    """One client's stream: a hello, then a `stats` frame every TICK_SECONDS and
    what the bus publishes (a customer-scoped caller: only what is its own)."""

    def __init__(self, app, inbox, scope, authorization):
        self.app = app
        self.inbox = inbox
        self.scope = scope
        self.authorization = authorization
        self.sent = 0
        self.last_events = 0

    def run(self, handler):
        """Write frames to the handler's connection until the stream ends."""
        connection = handler.connection
        try:
            connection.settimeout(WRITE_TIMEOUT)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.last_events = self.app.stats.events
        try:
            hello = {"streams": self.app.bus.count()} if self.scope is None else {}
            handler.wfile.write(b"retry: 3000\n\n" + frame("hello", hello))
            self._pump(handler.wfile)
        except (OSError, ValueError):
            return  # the client left, or stopped reading for WRITE_TIMEOUT seconds
        except ServiceUnavailable:
            return  # the database closed under a stats tick: the server is stopping
        finally:
            self.app.bus.unsubscribe(self.inbox)
            handler.close_connection = True

    def _pump(self, out):
        next_tick = time.monotonic()
        next_check = next_tick + AUTH_RECHECK_SECONDS
        while True:
            now = time.monotonic()
            if now >= next_check:  # a token signed out or revoked meanwhile ends the stream
                next_check = now + AUTH_RECHECK_SECONDS
                if not self._signed_in():
                    return
            if now >= next_tick:
                next_tick = now + TICK_SECONDS
                out.write(frame("stats", self._stats()))
            try:
                item = self.inbox.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                continue
            if item is _CLOSED:
                return
            event_type, data = item
            if self.scope is not None:
                if _customer_of(data) != self.scope:
                    continue  # a customer's key sees only what is its own
                data = _for_customer(data)
            self.sent += 1
            out.write(frame(event_type, data, self.sent))

    def _signed_in(self):
        try:
            self.app.auth.resolve(self.authorization)
        except ApiError:
            return False
        return True

    def _stats(self):
        events = self.app.stats.events
        payload = {"active_sessions": self.app.active_sessions(self.scope)}
        if self.scope is None:  # the whole server's traffic is for staff only
            payload.update(events_per_second=events - self.last_events, events_total=events)
        self.last_events = events
        return payload


def _for_customer(data):
    """An event as its customer may see it: an invoice without the staff-only fields."""
    invoice = data.get("invoice") if isinstance(data, dict) else None
    if not isinstance(invoice, dict):
        return data
    return {**data, "invoice": {k: v for k, v in invoice.items() if k not in INVOICE_STAFF_ONLY}}


def _customer_of(data):
    for key in ("session", "invoice", "alert"):
        item = data.get(key) if isinstance(data, dict) else None
        if isinstance(item, dict) and "customer_id" in item:
            return item["customer_id"]
    return data.get("customer_id") if isinstance(data, dict) else None
