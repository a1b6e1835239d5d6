"""An archive pass reads old events a batch at a time along the events' time
index (billing/ops/archiver.py): each batch starts where the last one ended
and reads only its own rows, so a pass over N old events costs N, not N²/batch
(a batch that sorted every old event left took 0.4 s at 1 M events), and
events that share a timestamp, customer and meter are each archived once
whichever batch boundary falls between them."""

import gzip
import json
import os

import pytest

from billing.ops import archiver
from billing.store.db import named
from tests.harness import RunningServer
from tests.http.helpers import pin, temp_db

RETENTION = {"BILLING_EVENT_RETENTION_DAYS": "30", "BILLING_MAX_EVENT_AGE_DAYS": "0", "BILLING_GRACE_PERIOD_HOURS": "5000"}
PLAN = {"code": "calls", "name": "Calls", "currency": "USD", "charges": [
    {"meter": "api_calls", "model": "per_unit", "unit_price": "0.01"},
    {"meter": "jobs", "model": "per_unit", "unit_price": "0.10"}]}
STAMPS = ["2025-01-05T10:00:00Z", "2025-01-05T10:00:00.000001Z", "2025-01-19T23:59:59Z"]


@pytest.fixture
def server(tmp_path):
    running = RunningServer(temp_db(tmp_path), env=RETENTION)
    yield running
    running.stop()


def test_a_batch_read_walks_the_time_index_without_sorting(server):
    with server.app.db.reader() as conn:
        plan = [row["detail"] for row in named(conn, "EXPLAIN QUERY PLAN " + archiver._READ, (0,) * archiver._READ.count("?"))]
    assert any("events_time" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


def _setup(admin):
    for key in ("api_calls", "jobs"):
        assert admin.post("/v1/meters", {"key": key, "name": key, "aggregation": "sum"}).status == 201
    assert admin.post("/v1/plans", PLAN).status == 201
    pin("2025-01-01T00:00:00Z")
    cids = []
    for name in ("a", "b"):
        cid = admin.post("/v1/customers", {"name": name, "email": f"{name}@example.com"}).json["id"]
        assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "calls", "start": "2025-01-01"}).status == 201
        cids.append(cid)
    pin("2025-01-28T00:00:00Z")
    for cid in cids:  # 13 events on each (timestamp, customer, meter): many ties, in no seq order
        events = [{"id": f"e{cid}-{i}", "meter": ("api_calls", "jobs")[i % 2], "quantity": i + 1,
                   "timestamp": STAMPS[i % 3]} for i in range(78)]
        reply = admin.post("/v1/events/batch", {"customer_id": cid, "events": events})
        assert reply.status == 200 and reply.json["duplicates"] == 0, reply
    pin("2025-02-02T00:00:00Z")
    for invoice_id in admin.post("/v1/invoices/run", {}).json["invoice_ids"]:
        assert admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).status == 200
    pin("2025-03-15T00:00:00Z")
    return cids


def test_events_sharing_a_timestamp_are_archived_once_across_batch_boundaries(server, admin, monkeypatch):
    cids = _setup(admin)
    usage = {cid: admin.get(f"/v1/customers/{cid}/usage?from=2025-01-01&to=2025-02-01").json for cid in cids}
    with server.app.db.reader() as conn:
        stored = {row["seq"] for row in named(conn, "SELECT seq FROM events")}
    monkeypatch.setattr(archiver, "BATCH", 5)  # batch boundaries inside every run of ties
    reply = admin.post("/v1/jobs/run", {})
    assert reply.status == 200 and reply.json["outcome"] == "ok", reply
    assert reply.json["details"]["events_archived"] == len(stored) - 1  # the newest event stays
    folder = server.app.config.archive_dir
    with gzip.open(os.path.join(folder, "events-2025-01.ndjson.gz"), "rt") as reader:
        archived = [json.loads(line)["seq"] for line in reader]
    with server.app.db.reader() as conn:
        left = {row["seq"] for row in named(conn, "SELECT seq FROM events")}
    assert len(archived) == len(set(archived)) == len(stored) - 1
    assert set(archived) | left == stored and len(left) == 1
    assert {cid: admin.get(f"/v1/customers/{cid}/usage?from=2025-01-01&to=2025-02-01").json for cid in cids} == usage
