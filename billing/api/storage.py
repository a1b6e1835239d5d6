"""Storage metering (§8): the two automatic meters and how they are fed.

- `storage_api_calls` (count, grouped by `operation`): one event per object
  request a tenant makes with its own credentials, whatever its 2xx/3xx/4xx
  outcome (5xx excluded). A write that changes something records its event in
  the same transaction as the change; every other outcome (reads, refusals)
  is counted in memory and written by `flush()` — by the background flusher
  (`ops.flusher`) every 5 s, at each scheduler run and at shutdown — so a
  GET never writes.
- `storage_gb_days` (sum): stored bytes integrated over time. Each local day
  of a customer closes into one event `storage-<customer>-<YYYY-MM-DD>` (the
  scheduler, catching up after downtime; the id makes it idempotent). Until a
  day is closed, `live_rows` gives the same rows computed up to now, so usage,
  the upcoming invoice and drafts include the open day.
"""

import threading
import uuid
from datetime import timedelta
from typing import NamedTuple

from .. import clock
from ..domain import objects as rules
from ..domain import times
from . import events as events_api
from ..store.db import named, scalar
from .common import now_micros

CALLS_METER = "storage_api_calls"
GB_DAYS_METER = "storage_gb_days"
METERS = (
    (CALLS_METER, "Storage API calls", "call", "count", '["operation"]'),
    (GB_DAYS_METER, "Object storage", "GB-day", "sum", "[]"),
)
DAYS_PER_TRANSACTION = 31  # a long catch-up is written in short transactions


def _meter(app, key, aggregation):
    """The meter to feed, or None when the key holds a meter of another kind."""
    meter = app.catalog.meter(key)
    return meter if meter is not None and meter.aggregation == aggregation else None


class _PendingCall(NamedTuple):
    """An API call counted in memory, not yet written."""
    customer_id: int
    operation: str
    ts_us: int


class StorageMeter:
    def __init__(self, app):
        self.app = app
        self._lock = threading.Lock()
        self._calls = []  # _PendingCall

    # -- API calls ---------------------------------------------------------
    def call_row(self, customer_id, operation, ts_us=None):
        """The event row of one API call (None when the meter is not there)."""
        meter = _meter(self.app, CALLS_METER, "count")
        if meter is None:
            return None
        ts_us = now_micros() if ts_us is None else ts_us
        return events_api.system_row(meter, customer_id, "sc-" + uuid.uuid4().hex, ts_us, 1_000_000,
                                     {"operation": operation}, ts_us)

    def record_in(self, conn, customer_id, operation):
        """Record a write's call inside the transaction that makes the change."""
        row = self.call_row(customer_id, operation)
        if row is not None:
            events_api.store_new(conn, [row], self.app.lateness.through)

    def count(self, customer_id, operation):
        """Count a call that changed nothing; written by the next flush."""
        with self._lock:
            self._calls.append(_PendingCall(customer_id, operation, now_micros()))

    def pending(self):
        with self._lock:
            return len(self._calls)

    def flush(self):
        """Write the counted calls as events; returns how many."""
        with self._lock:
            calls, self._calls = self._calls, []
        if not calls:
            return 0
        archived = {call.customer_id for call in calls
                    if (self.app.catalog.customer(call.customer_id) or _Gone).archived}
        calls = [call for call in calls if call.customer_id not in archived]
        rows = [row for row in (self.call_row(*call) for call in calls) if row is not None]
        if rows:
            try:
                self.app.db.submit(lambda conn: events_api.store_new(conn, rows, self.app.lateness.through))
            except Exception:
                with self._lock:  # try again with the next flush
                    self._calls[:0] = calls
                raise
            self.app.stats.events_ingested(len(rows))
        return len(rows)

    # -- GB-days -----------------------------------------------------------
    def close_days(self, now=None):
        """Write the storage_gb_days event of every ended local day not yet
        written, for every customer that ever stored bytes; returns the count."""
        meter = _meter(self.app, GB_DAYS_METER, "sum")
        if meter is None:
            return 0
        now = now or clock.now()
        written = 0
        for row in self.app.db.rows("SELECT customer_id, min(start_s) AS first_s FROM storage_spans"
                                    " GROUP BY customer_id"):
            customer = self.app.catalog.customer(row["customer_id"])
            if customer is None:
                continue
            zone = times.zone_or_error(customer.timezone)
            today = times.local_date(now, zone)
            while True:
                days = self._open_days(customer.id, row["first_s"], zone, today)[:DAYS_PER_TRANSACTION]
                if not days:
                    break
                written += self._close(meter, customer, zone, days, today)
        return written

    def _open_days(self, customer_id, first_s, zone, until):
        """Local days from the first not yet closed up to (not including) `until`."""
        closed = self.app.db.row("SELECT closed_through FROM storage_days WHERE customer_id = ?", (customer_id,))
        day = times.parse_date(closed["closed_through"]) + timedelta(days=1) if closed else \
            times.local_date(times.from_micros(first_s * 1_000_000), zone)
        days = []
        while day < until:
            days.append(day)
            day += timedelta(days=1)
        return days

    def _close(self, meter, customer, zone, days, today):
        bounds = [_day_seconds(day, zone) for day in days]
        now_s = times.to_micros(clock.now()) // 1_000_000
        with self.app.db.reader() as conn:
            spans = _spans(conn, customer.id, bounds[0][0], bounds[-1][1])
        rows = []
        for day, (start_s, end_s) in zip(days, bounds):
            micros = rules.gb_day_micros(rules.byte_seconds(spans, start_s, end_s, now_s))
            if micros and not customer.archived:
                ts = start_s * 1_000_000
                rows.append(events_api.system_row(meter, customer.id, f"storage-{customer.id}-{day.isoformat()}",
                                                  ts, micros, None, now_micros()))

        def write(conn):
            stored = events_api.store_new(conn, rows, self.app.lateness.through) if rows else []
            conn.execute("INSERT INTO storage_days (customer_id, closed_through) VALUES (?, ?)"
                         " ON CONFLICT (customer_id) DO UPDATE SET closed_through = excluded.closed_through"
                         " WHERE excluded.closed_through > storage_days.closed_through",
                         (customer.id, days[-1].isoformat()))
            return len(stored)
        return self.app.db.submit(write)

    def live_rows(self, conn, meter, customer_id, start_us, end_us, with_group=False):
        """Rows `(ts, seq, value)` (plus a null group) of the storage_gb_days
        events not written yet whose day starts in [start_us, end_us): the
        open day up to now, and ended days the scheduler has not closed."""
        if meter.key != GB_DAYS_METER or meter.aggregation != "sum":
            return []
        first = scalar(conn, "SELECT min(start_s) FROM storage_spans WHERE customer_id = ?", (customer_id,))
        if first is None:
            return []
        customer = self.app.catalog.customer(customer_id)
        zone = times.zone_or_error(customer.timezone)
        now = clock.now()
        closed = scalar(conn, "SELECT closed_through FROM storage_days WHERE customer_id = ?", (customer_id,))
        day = times.parse_date(closed) + timedelta(days=1) if closed else \
            times.local_date(times.from_micros(first * 1_000_000), zone)
        today = times.local_date(now, zone)
        days = []
        while day <= today:
            start_s, end_s = _day_seconds(day, zone)
            if start_us <= start_s * 1_000_000 < end_us:
                days.append((start_s, end_s))
            day += timedelta(days=1)
        if not days:
            return []
        now_s = times.to_micros(now) // 1_000_000
        spans = _spans(conn, customer_id, days[0][0], days[-1][1])
        rows = []
        for start_s, end_s in days:
            micros = rules.gb_day_micros(rules.byte_seconds(spans, start_s, end_s, now_s))
            if micros:
                rows.append((start_s * 1_000_000, 0, micros, "null") if with_group else
                            (start_s * 1_000_000, 0, micros))
        return rows


class _Gone:
    archived = True


def _day_seconds(day, zone):
    start = times.local_midnight(day, zone)
    end = times.local_midnight(day + timedelta(days=1), zone)
    return times.to_micros(start) // 1_000_000, times.to_micros(end) // 1_000_000


def _spans(conn, customer_id, start_s, end_s):
    """(size, start_s, end_s) of the customer's stored versions overlapping the range."""
    return [(r["size"], r["start_s"], r["end_s"]) for r in named(
        conn, "SELECT size, start_s, end_s FROM storage_spans WHERE customer_id = ? AND start_s < ?"
              " AND (end_s IS NULL OR end_s > ?)", (customer_id, end_s, start_s))]


def stored_bytes(conn, customer_id):
    return scalar(conn, "SELECT coalesce(sum(size), 0) FROM objects WHERE customer_id = ?", (customer_id,))
