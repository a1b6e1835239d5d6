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
from ..errors import ApiError
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


def stream(request):
    """GET /v1/stream: text/event-stream until the client leaves or the server stops."""
    from ..errors import ServiceUnavailable
    app = request.app
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if request.method == "HEAD":  # headers only: no subscription, no endless body after a HEAD answer
        return Response(200, None, content_type="text/event-stream; charset=utf-8", headers=headers)
    inbox = app.bus.subscribe()
    if inbox is None:
        raise ServiceUnavailable("The server is shutting down.")
    if inbox is False:
        raise ServiceUnavailable("Too many live streams are open; the dashboard falls back to polling.")
    scope = request.customer_scope
    authorization = request.headers.get("Authorization")

    def run(handler):
        connection = handler.connection
        try:
            connection.settimeout(WRITE_TIMEOUT)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        sent = 0
        last_events = app.stats.events
        next_tick = time.monotonic()
        next_check = next_tick + AUTH_RECHECK_SECONDS
        try:
            hello = {"streams": app.bus.count()} if scope is None else {}
            handler.wfile.write(b"retry: 3000\n\n" + frame("hello", hello))
            while True:
                now = time.monotonic()
                if now >= next_check:  # a token signed out or revoked meanwhile ends the stream
                    next_check = now + AUTH_RECHECK_SECONDS
                    try:
                        app.auth.resolve(authorization)
                    except ApiError:
                        return
                if now >= next_tick:
                    events = app.stats.events
                    payload = {"active_sessions": app.active_sessions(scope)}
                    if scope is None:  # the whole server's traffic is for staff only
                        payload.update(events_per_second=events - last_events, events_total=events)
                    last_events = events
                    next_tick = now + TICK_SECONDS
                    handler.wfile.write(frame("stats", payload))
                try:
                    item = inbox.get(timeout=max(0.0, next_tick - time.monotonic()))
                except queue.Empty:
                    continue
                if item is _CLOSED:
                    return
                event_type, data = item
                if scope is not None and _customer_of(data) != scope:
                    continue  # a customer's key sees only what is its own
                sent += 1
                handler.wfile.write(frame(event_type, data, sent))
        except (OSError, ValueError):
            return  # the client left, or stopped reading for WRITE_TIMEOUT seconds
        except ServiceUnavailable:
            return  # the database closed under a stats tick: the server is stopping
        finally:
            app.bus.unsubscribe(inbox)
            handler.close_connection = True

    response = Response(200, None, content_type="text/event-stream; charset=utf-8", headers=headers)
    response.stream = run
    return response


def _customer_of(data):
    for key in ("session", "invoice", "alert"):
        item = data.get(key) if isinstance(data, dict) else None
        if isinstance(item, dict) and "customer_id" in item:
            return item["customer_id"]
    return data.get("customer_id") if isinstance(data, dict) else None
