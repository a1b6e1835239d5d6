"""In-memory views of customers and meters for the ingest hot path.

Loaded lazily from SQLite and dropped whenever a customer or meter changes
(every change goes through this process, so the views are never stale).
"""

import json
import threading
from dataclasses import dataclass

from .event_rows import IngestView


@dataclass(frozen=True)
class MeterInfo:
    id: int
    key: str
    name: str
    unit: str
    aggregation: str
    value_property: str | None
    filter: dict | None
    group_by: tuple


@dataclass(frozen=True)
class CustomerInfo:
    id: int
    external_id: str | None
    timezone: str
    currency: str
    archived: bool


def by_external_id(customers):
    """CustomerInfo by external id, of those that have one."""
    return {c.external_id: c for c in customers.values() if c.external_id is not None}


def _meter_info(row):
    return MeterInfo(row["id"], row["key"], row["name"], row["unit"], row["aggregation"], row["value_property"],
                     json.loads(row["filter"]) if row["filter"] else None, tuple(json.loads(row["group_by"])))


class Catalog:
    def __init__(self, db):
        self.db = db
        self._lock = threading.Lock()
        self._meters = None
        self._customers = None
        self._external = None
        self._generation = 0  # a load started before an invalidation is not kept
        self._view = None  # (meters, customers, their IngestView)

    def invalidate_meters(self):
        """Call after the change has committed."""
        with self._lock:
            self._generation += 1
            self._meters = None

    def invalidate_customers(self):
        """Call after the change has committed."""
        with self._lock:
            self._generation += 1
            self._customers = None
            self._external = None

    def meters(self):
        meters = self._meters
        if meters is None:
            generation = self._generation
            rows = self.db.rows(
                "SELECT id, key, name, unit, aggregation, value_property, filter, group_by FROM meters")
            meters = {r["key"]: _meter_info(r) for r in rows}
            with self._lock:
                if self._generation == generation:
                    self._meters = meters
        return meters

    def meter(self, key):
        return self.meters().get(key)

    def meter_by_id(self, meter_id):
        for meter in self.meters().values():
            if meter.id == meter_id:
                return meter
        return None

    def _load_customers(self):
        generation = self._generation
        rows = self.db.rows("SELECT id, external_id, timezone, currency, archived FROM customers")
        customers = {r["id"]: CustomerInfo(r["id"], r["external_id"], r["timezone"], r["currency"], bool(r["archived"]))
                     for r in rows}
        external = by_external_id(customers)
        with self._lock:
            if self._generation == generation:
                self._customers, self._external = customers, external
        return customers, external

    def customer(self, customer_id):
        customers = self._customers
        if customers is None:
            customers, _ = self._load_customers()
        return customers.get(customer_id)

    def customer_by_external(self, external_id):
        external = self._external
        if external is None:
            _, external = self._load_customers()
        return external.get(external_id)

    def ingest_view(self):
        """The IngestView of the meters and customers as loaded now, made once per load."""
        meters = self.meters()
        customers = self._customers
        if customers is None:
            customers, _ = self._load_customers()
        view = self._view
        if view is None or view[0] is not meters or view[1] is not customers:
            view = (meters, customers, IngestView.of(meters, customers))
            self._view = view
        return view[2]

    def snapshot(self):
        """(generation, meters by key, customers by id): maps loaded after the
        generation's last invalidation (read with it under the lock, which an
        invalidation holds while it moves the generation and drops the maps) —
        what an ingest worker is sent."""
        while True:
            with self._lock:
                generation, meters, customers = self._generation, self._meters, self._customers
            if meters is not None and customers is not None:
                return generation, meters, customers
            if meters is None:
                self.meters()
            if customers is None:
                self._load_customers()
