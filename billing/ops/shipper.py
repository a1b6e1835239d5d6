"""Shipping stored events to ClickHouse (§13) from the outbox
(billing/store/outbox.py): a background thread reads what is not shipped
yet in order — retractions first as tombstones, then events by seq — and
sends up to BATCH rows per INSERT (JSONEachRow). Only after ClickHouse
answered 200 does a short writer transaction move the cursors, so a crash
in between sends the batch again, which the ReplacingMergeTree absorbs.

Ingest wakes the thread; otherwise it looks every IDLE seconds. While
ClickHouse fails it retries with a backoff doubling up to MAX_BACKOFF, and
the log gets one line when shipping stops and one when it works again.
"""

import json
import threading

from ..api.clickhouse import CREATE_DATABASE, CREATE_TABLE, INSERT, TABLE_EXISTS, ClickHouseError
from ..api.common import now_micros
from ..store import outbox

BATCH = 10_000  # rows per INSERT
IDLE = 0.5  # seconds between looks when nothing woke the thread
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 60.0

_text = json.JSONEncoder(ensure_ascii=False).encode


def event_line(row):
    """The JSONEachRow line of a stored event (outbox.events_after's row)."""
    value = row["value"]
    number, counted = (0, _text(value)) if isinstance(value, str) else (value or 0, '""')
    return (f'{{"customer_id":{row["customer_id"]},"event_id":{_text(row["event_id"])},"seq":{row["seq"]},'
            f'"meter_id":{row["meter_id"]},"ts":{row["ts"]},"quantity":{row["quantity"]},"value":{number},'
            f'"value_text":{counted},"matched":{row["matched"]},"properties":{_text(row["properties"] or "")},'
            f'"prop_keys":{row["prop_keys"]},"prop_values":{row["prop_values"]},"late":{row["late"]},'
            f'"received_at":{row["received_at"]},"deleted":0,"version":{outbox.event_version(row)}}}')


def tombstone_line(row):
    """The JSONEachRow line that hides a retracted event (outbox.retractions_after's row)."""
    return (f'{{"customer_id":{row["customer_id"]},"event_id":{_text(row["event_id"])},"seq":{row["seq"]},'
            f'"meter_id":{row["meter_id"]},"ts":{row["ts"]},"deleted":1,'
            f'"version":{outbox.tombstone_version(row)}}}')


class Shipper:
    def __init__(self, app, clickhouse, batch=BATCH):
        self.app = app
        self.db = app.db
        self.clickhouse = clickhouse
        self.batch = batch
        self.prepared = False
        self.shipped = 0  # rows sent since start
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._failing = False

    def prepare(self):
        """The database and table in ClickHouse, and the outbox row for them
        (a table that had to be made starts the outbox again from zero)."""
        client = self.clickhouse.client
        client.execute(client.sql(CREATE_DATABASE))
        existed = client.execute(client.sql(TABLE_EXISTS)).strip() == b"1"
        client.execute(client.sql(CREATE_TABLE))
        with self.db.transaction() as conn:
            outbox.attach(conn, client.target)
            if not existed:
                outbox.restart(conn, client.target)
        self.prepared = True
        self.clickhouse.ready = True

    def ship_once(self):
        """Send one batch of what waits; returns the rows sent (0: nothing waits)."""
        if not self.prepared:
            self.prepare()
        with self.db.snapshot() as conn:
            state = outbox.state(conn)
            seen = outbox.retraction_seen(conn)
            retractions = outbox.retractions_after(conn, state["shipped_retraction"], self.batch)
            events = outbox.events_after(conn, state["shipped_seq"], self.batch - len(retractions))
        if not retractions and not events:
            return 0
        lines = [tombstone_line(row) for row in retractions] + [event_line(row) for row in events]
        client = self.clickhouse.client
        client.execute(client.sql(INSERT), data=("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
        with self.db.transaction() as conn:
            outbox.advance(conn, events[-1]["seq"] if events else None, state["shipped_seq"], seen,
                           retractions[-1]["id"] if retractions else None, now_micros())
        self.shipped += len(lines)
        return len(lines)

    def run_once(self):
        """Ship until nothing waits or ClickHouse fails; returns the rows sent.
        A failure is remembered (and logged once) and raised."""
        sent = 0
        try:
            while (count := self.ship_once()) and not self._stop.is_set():
                sent += count
        except ClickHouseError as exc:
            self.prepared = False  # the table may be gone: make sure again before the next batch
            self.clickhouse.failed(exc, now_micros())
            if not self._failing:
                self.app.log_note("error", f"ClickHouse: shipping events stopped, retrying with backoff: {exc}")
            self._failing = True
            raise
        self.clickhouse.answered()
        if self._failing:
            self.app.log_note("info", "ClickHouse: shipping events again")
            self._failing = False
        return sent

    def wake(self):
        self._wake.set()

    def start(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="clickhouse-shipper", daemon=True)
        self._thread.start()

    def _loop(self):
        backoff = FIRST_BACKOFF
        while not self._stop.is_set():
            try:
                self.run_once()
                backoff, delay = FIRST_BACKOFF, IDLE
            except ClickHouseError:
                delay, backoff = backoff, min(MAX_BACKOFF, backoff * 2)
                self._stop.wait(delay)  # ingest does not wake a backoff
                continue
            except Exception as exc:  # a bug must not end shipping for good
                self.app.log_exception("clickhouse-shipper", exc)
                delay, backoff = backoff, min(MAX_BACKOFF, backoff * 2)
            self._wake.wait(delay)
            self._wake.clear()

    def stop(self):
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
