"""Self-metering (§10): the server meters its own API for the customers who
call it. Every request authenticated as a customer (a customer-scoped key or
a `customer` user) is counted in memory per (customer, route pattern, status
class, minute); `flush()` writes what was counted since the previous flush as
new events of two meters — `api_requests` (requests) and `api_request_ms`
(response milliseconds) — so flushes within the same minute all count. No
request ever adds a write transaction; a `kill -9` loses at most what the
last flush had not written.
"""

import secrets
import threading

from . import events as events_api
from .common import now_micros

REQUESTS_METER = "api_requests"
MS_METER = "api_request_ms"
METERS = (
    (REQUESTS_METER, "API requests", "request", "sum", '["route", "status"]'),
    (MS_METER, "API response time", "ms", "sum", '["route", "status"]'),
)
MINUTE_US = 60 * 1_000_000


class _Tally:
    """Requests counted for one (customer, route, status class, minute), and their µs."""
    __slots__ = ("requests", "micros")

    def __init__(self):
        self.requests = 0
        self.micros = 0

    def add(self, requests, micros):
        self.requests += requests
        self.micros += micros


class RequestMeter:
    def __init__(self, app):
        self.app = app
        self._lock = threading.Lock()
        self._counts = {}  # (customer, route, status class, minute µs) -> _Tally
        self._boot = secrets.token_hex(4)  # event ids are unique per process start …
        self._flushes = 0                  # … and per flush

    def record(self, customer_id, route, status, duration_ms):
        """Count one request (called after the response is sent)."""
        key = (customer_id, route or "(no route)", f"{status // 100}xx", now_micros() // MINUTE_US * MINUTE_US)
        micros = max(0, int(duration_ms * 1000))  # a measurement: whole microseconds
        with self._lock:
            tally = self._counts.get(key)
            if tally is None:
                tally = self._counts[key] = _Tally()
            tally.add(1, micros)

    def pending(self):
        with self._lock:
            return sum(tally.requests for tally in self._counts.values())

    def flush(self):
        """Write the counts gathered since the last flush; returns the requests written."""
        with self._lock:
            counts, self._counts = self._counts, {}
            self._flushes += 1
            flush = self._flushes
        if not counts:
            return 0
        requests_meter = self.app.catalog.meter(REQUESTS_METER)
        ms_meter = self.app.catalog.meter(MS_METER)
        rows, written = [], 0
        received = now_micros()
        for (customer_id, route, status, minute), tally in counts.items():
            requests, micros = tally.requests, tally.micros
            customer = self.app.catalog.customer(customer_id)
            if customer is None or customer.archived:
                continue
            written += requests
            properties = {"route": route, "status": status}
            stem = f"self-{self._boot}-{flush}-{customer_id}-{route}-{status}-{minute // MINUTE_US}"
            if requests_meter is not None:
                rows.append(events_api.system_row(requests_meter, customer_id, f"{stem}-n", minute,
                                                  requests * 1_000_000, properties, received))
            if ms_meter is not None:  # milliseconds with 3 decimals, as integer millionths
                rows.append(events_api.system_row(ms_meter, customer_id, f"{stem}-ms", minute, micros * 1000,
                                                  properties, received))
        if rows:
            try:
                self.app.db.submit(lambda conn: events_api.store_new(conn, rows, self.app.lateness.through))
            except Exception:
                with self._lock:  # counted again by the next flush (new ids, nothing was stored)
                    for key, tally in counts.items():
                        self._counts.setdefault(key, _Tally()).add(tally.requests, tally.micros)
                raise
            self.app.stats.events_ingested(len(rows))
        return written
