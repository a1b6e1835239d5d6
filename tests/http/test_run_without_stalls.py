"""No stalls behind the invoice run (§12): it writes its drafts in short
chunks, so requests are served between them, and what it drafts while events
keep arriving in the billed period is what a run on a quiet database drafts
from the same events — nothing doubled, nothing missed."""

import os
import sqlite3
import threading

from billing.api import invoice_run
from billing.domain import times
from tests.harness import RunningServer
from tests.http.helpers import list_all, pin

PLAN = {"code": "tiered", "name": "Tiered", "currency": "USD", "base_fee": "20.00",
        "charges": [{"meter": "api_calls", "model": "graduated", "free_units": 10,
                     "tiers": [{"up_to": 100, "unit_price": "0.05"}, {"up_to": None, "unit_price": "0.013"}]}]}
CUSTOMERS = 11
CHUNK = 3  # four chunks
AS_OF = "2025-10-05T00:00:00Z"


def _catalog(admin):
    """The meter, the plan and CUSTOMERS customers on it since 1 September,
    each with a first event; their ids in order."""
    pin("2025-09-20T00:00:00Z")
    assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "aggregation": "sum"}).status == 201
    assert admin.post("/v1/plans", PLAN).status == 201
    ids = []
    for n in range(CUSTOMERS):
        body = {"name": f"Customer {n}", "email": f"c{n}@example.com", "tax_rate": "8" if n % 3 == 0 else "0"}
        cid = admin.post("/v1/customers", body).json["id"]
        assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "tiered", "start": "2025-09-01"}).status == 201
        ids.append(cid)
    return ids


def _event(n, customer_id):
    """The n-th event: into September, the period being drafted."""
    return {"id": f"ev-{n}", "customer_id": customer_id, "meter": "api_calls", "quantity": 7 + n % 40,
            "timestamp": f"2025-09-{1 + n % 29:02d}T12:00:00Z"}


class Ingest:
    """A thread posting single events into the billed period, one after
    another, until stopped; `acked` holds the events the server acknowledged."""

    def __init__(self, server, customer_ids, first):
        self.client = server.client(server.admin.token)
        self.customer_ids, self.n = customer_ids, first
        self.acked, self.errors = [], []
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            event = _event(self.n, self.customer_ids[self.n % len(self.customer_ids)])
            self.n += 1
            reply = self.client.post("/v1/events", event)
            with self.changed:
                if reply.status in (200, 201, 202):
                    self.acked.append(event)
                else:
                    self.errors.append(reply)
                self.changed.notify_all()

    def wait_for_more(self, count, timeout=20):
        """Wait until `count` more events are acknowledged; whether they were."""
        with self.changed:
            wanted = len(self.acked) + count
            return self.changed.wait_for(lambda: len(self.acked) >= wanted, timeout)

    def stop(self):
        self._stop.set()
        self.thread.join(30)
        self.client.close()


def _drafts_seen(server):
    """Drafts committed, as a connection of its own sees them."""
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        return conn.execute("SELECT COUNT(*) FROM invoices").fetchone()[0]
    finally:
        conn.close()


def _invoices(admin):
    """{customer id: the invoice as GET shows it (a draft re-rated)} of every invoice; one per customer."""
    found = {}
    for listed in list_all(admin, "/v1/invoices?limit=100"):
        assert listed["customer_id"] not in found, "two invoices for one customer"
        found[listed["customer_id"]] = admin.get(f"/v1/invoices/{listed['id']}").json
    return found


def _figures(invoice):
    return ({name: invoice[name] for name in ("status", "number", "period_start", "period_end", "subtotal", "tax",
                                              "total", "amount_due")},
            [(line["type"], line["quantity"], line["amount"]) for line in invoice["lines"]])


def _finalize_all(admin, invoices):
    return {cid: admin.post(f"/v1/invoices/{invoice['id']}/finalize", {}).json
            for cid, invoice in sorted(invoices.items())}


def test_ingest_during_the_run_is_billed_as_on_a_quiet_database(server, admin, tmp_path):
    ids = _catalog(admin)
    first = [_event(n, cid) for n, cid in enumerate(ids)]
    assert admin.post("/v1/events/batch", {"events": first}).status == 200
    pin("2025-10-05T00:00:00Z")
    ingest = Ingest(server, ids, len(first))
    ingest.thread.start()
    seen = []

    def between_chunks(created):
        # the chunk is committed (another connection sees it) and requests are served before the next one
        seen.append((len(created), _drafts_seen(server)))
        assert ingest.wait_for_more(3), "no event was stored between two chunks"

    try:
        created = invoice_run.run_as_of(server.app, times.parse_instant(AS_OF), between_chunks=between_chunks,
                                        chunk=CHUNK)
        assert ingest.wait_for_more(3)
    finally:
        ingest.stop()
    assert not ingest.errors, ingest.errors[:3]
    assert len(created) == CUSTOMERS and len(set(created)) == CUSTOMERS
    assert seen == [(n, n) for n in (3, 6, 9, 11)]
    assert admin.post("/v1/invoices/run", {"as_of": AS_OF}).json["created"] == 0
    events = first + ingest.acked
    assert len(ingest.acked) >= 4 * 3 + 3

    quiet = RunningServer(os.path.join(str(tmp_path), "quiet.db"), env={"BILLING_MAX_EVENT_AGE_DAYS": "0"})
    try:
        assert _catalog(quiet.admin) == ids
        pin("2025-10-05T00:00:00Z")
        for start in range(0, len(events), 500):
            assert quiet.admin.post("/v1/events/batch", {"events": events[start:start + 500]}).status == 200
        assert quiet.admin.post("/v1/invoices/run", {"as_of": AS_OF}).json["created"] == CUSTOMERS
        busy_drafts, quiet_drafts = _invoices(admin), _invoices(quiet.admin)
        assert set(busy_drafts) == set(quiet_drafts) == set(ids)
        for cid in ids:  # every event of September on its customer's draft, once
            usage = [line for line in busy_drafts[cid]["lines"] if line["type"] == "usage"]
            assert [line["quantity"] for line in usage] == [sum(e["quantity"] for e in events
                                                                    if e["customer_id"] == cid)]
            assert _figures(busy_drafts[cid]) == _figures(quiet_drafts[cid])
        busy_issued, quiet_issued = _finalize_all(admin, busy_drafts), _finalize_all(quiet.admin, quiet_drafts)
        for cid in ids:
            assert busy_issued[cid]["status"] == "issued"
            assert _figures(busy_issued[cid]) == _figures(quiet_issued[cid])
    finally:
        quiet.stop()

