"""Archived raw events (§13 "Raw event retention"): with
BILLING_EVENT_RETENTION_DAYS set, the scheduler moves raw events of invoiced
periods older than that into gzip NDJSON files under <data dir>/archive/,
and every invoice and usage figure stays what it was."""

import gzip
import hashlib
import json
import os

from decimal import Decimal

import pytest

from billing.ops.archiver import archivable
from billing.store import archive, archive_files
from tests.harness import RunningServer
from tests.http.helpers import RowsPerTransaction, assert_error, pin, table_count, temp_db

# drafts wait for their grace period longer than the tests run: figures change only by archiving
RETENTION = {"BILLING_EVENT_RETENTION_DAYS": "30", "BILLING_MAX_EVENT_AGE_DAYS": "0", "BILLING_GRACE_PERIOD_HOURS": "5000"}
METERS = [{"key": "api_calls", "name": "API calls", "aggregation": "sum", "group_by": ["region"]},
          {"key": "eu_calls", "name": "EU calls", "aggregation": "sum", "filter": {"region": "eu"}},
          {"key": "users", "name": "Users", "aggregation": "unique_count", "value_property": "user"},
          {"key": "seats", "name": "Seats", "aggregation": "latest"},
          {"key": "peak", "name": "Peak", "aggregation": "max"}]
PLAN = {"code": "pro", "name": "Pro", "currency": "USD", "base_fee": "10.00",
        "charges": [{"meter": "api_calls", "model": "graduated",
                     "tiers": [{"up_to": 100, "unit_price": "0.10"}, {"up_to": None, "unit_price": "0.05"}]},
                    {"meter": "eu_calls", "model": "per_unit", "unit_price": "0.01"},
                    {"meter": "users", "model": "per_unit", "unit_price": "1.00"},
                    {"meter": "seats", "model": "per_unit", "unit_price": "2.00"},
                    {"meter": "peak", "model": "per_unit", "unit_price": "0.50"}]}
MONTHS = ["2025-01", "2025-02", "2025-03", "2025-04"]
# instants inside buckets, not on their starts, and across local days of both customers
STAMPS = ["03T00:00:00Z", "05T18:14:59.5Z", "05T18:15:00Z", "11T09:07:30Z", "20T23:59:59.999999Z", "27T12:00:00Z"]


@pytest.fixture
def server(tmp_path):
    running = RunningServer(temp_db(tmp_path), env=RETENTION)
    yield running
    running.stop()


def _events(cid, month, tag):
    """A month's events of one customer: every meter, groups, a property filter, fractions."""
    events = []
    for i, stamp in enumerate(STAMPS):
        ts = f"{month}-{stamp}"
        region = ("eu", "us", None)[i % 3]
        props = {"region": region} if region else {}
        events += [{"id": f"{tag}-{month}-{i}-c", "meter": "api_calls", "quantity": Decimal(f"{7 + i}.125"), "timestamp": ts,
                    "properties": props},
                   {"id": f"{tag}-{month}-{i}-e", "meter": "eu_calls", "quantity": 3 + i, "timestamp": ts,
                    "properties": props},
                   {"id": f"{tag}-{month}-{i}-u", "meter": "users", "timestamp": ts,
                    "properties": {"user": f"u{i % 4}", "n": i}},
                   {"id": f"{tag}-{month}-{i}-s", "meter": "seats", "quantity": 10 - i, "timestamp": ts},
                   {"id": f"{tag}-{month}-{i}-p", "meter": "peak", "quantity": i * 3 % 7, "timestamp": ts}]
    return events


def _send(admin, cid, events):
    reply = admin.post("/v1/events/batch", {"customer_id": cid, "events": events})
    assert reply.status == 200 and reply.json["duplicates"] == 0, reply


def _issue_all(admin, as_of):
    pin(as_of)
    ids = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
    for invoice_id in ids:
        assert admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).status == 200
    return ids


def build(admin, bulk=0):
    """Two customers on Pro since January (UTC, and +05:45), one without a
    subscription; January to April of events (`bulk` more in March); January,
    February and March invoiced, with a late January event and a retracted
    March one; April drafted. Returns the customer ids; the clock on 10 May
    (retention 30 days: before 10 April)."""
    for meter in METERS:
        assert admin.post("/v1/meters", meter).status == 201
    assert admin.post("/v1/plans", PLAN).status == 201
    pin("2025-01-01T00:00:00Z")
    cids = [admin.post("/v1/customers", {"name": name, "email": f"{name}@example.com", "timezone": zone}).json["id"]
            for name, zone in (("utc", "UTC"), ("ktm", "Asia/Kathmandu"), ("none", "UTC"))]
    for cid in cids[:2]:
        assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "pro", "start": "2024-12-01"}).status == 201
    for month, as_of in zip(MONTHS, ["2025-02-02T00:00:00Z", "2025-03-02T00:00:00Z", "2025-04-02T00:00:00Z", None]):
        pin(f"{month}-28T00:00:00Z")
        for cid in cids:
            _send(admin, cid, _events(cid, month, f"c{cid}"))
        if month == "2025-02":  # late: January is issued
            _send(admin, cids[0], [{"id": "late-1", "meter": "api_calls", "quantity": 500, "timestamp": "2025-01-15T10:00:00Z",
                                    "properties": {"region": "eu"}}])
        if month == "2025-03":
            _send(admin, cids[1], [{"id": f"bulk-{i}", "meter": "eu_calls", "timestamp": f"2025-03-{1 + i % 27:02d}T01:00:00Z"}
                                   for i in range(bulk)])
            assert admin.delete(f"/v1/customers/{cids[0]}/events/c{cids[0]}-2025-03-1-c").status == 200
        if as_of:
            _issue_all(admin, as_of)
    pin("2025-05-02T00:00:00Z")
    assert len(admin.post("/v1/invoices/run", {}).json["invoice_ids"]) == 2  # April: drafts
    pin("2025-05-10T00:00:00Z")
    return cids


def figures(admin, cids):
    """Every figure a client can read: invoices (amounts, lines), usage (per
    month, per day, by group), analytics, the upcoming invoice."""
    found = {"invoices": [admin.get(f"/v1/invoices/{i['id']}").json
                          for i in admin.get("/v1/invoices?limit=100").json["data"]]}
    for cid in cids:
        for low, high in (("2024-12-01", "2025-05-01"), ("2025-01-01", "2025-02-01"), ("2025-01-05", "2025-03-17")):
            for query in ("", "&window=day", "&window=month&meter=api_calls&group_by=region"):
                reply = admin.get(f"/v1/customers/{cid}/usage?from={low}&to={high}{query}")
                assert reply.status == 200, reply
                found[f"usage {cid} {low} {high} {query}"] = reply.json
        found[f"upcoming {cid}"] = admin.get(f"/v1/customers/{cid}/upcoming-invoice").json
    for meter in METERS:
        for query in ("interval=month", "interval=day&group_by=customer"):
            reply = admin.get(f"/v1/analytics/usage?meter={meter['key']}&from=2025-01-01&to=2025-05-01&{query}")
            assert reply.status == 200, reply
            found[f"analytics {meter['key']} {query}"] = reply.json
    for query in ("to=2025-05-01&interval=month", "to=2025-05-01&interval=day&timezone=Asia/Kathmandu",
                  "to=2025-01-12&interval=hour", "to=2025-03-17T00:45:00Z&interval=day"):
        # the events chart: every event received, archived or not
        reply = admin.get(f"/v1/analytics/events?from=2025-01-01&{query}")
        assert reply.status == 200, reply
        found[f"events {query}"] = reply.json
    return found


def _stored(server, where="1", params=()):
    with server.app.db.reader() as conn:
        (count,) = conn.execute(f"SELECT count(*) AS n FROM events WHERE {where}", params).fetchone()
    return count


def _folder(server):
    return server.app.config.archive_dir


def _manifest(server):
    with open(os.path.join(_folder(server), "manifest.json"), encoding="utf-8") as reader:
        return json.load(reader)


def _archive(admin):
    reply = admin.post("/v1/jobs/run", {})
    assert reply.status == 200 and reply.json["outcome"] == "ok", reply
    return reply.json["details"]


def test_archiving_moves_invoiced_events_and_changes_no_figure(server, admin):
    cids = build(admin)
    before = figures(admin, cids)
    total = _stored(server)
    details = _archive(admin)
    assert details["archive_files"] == ["events-2025-01.ndjson.gz", "events-2025-02.ndjson.gz",
                                        "events-2025-03.ndjson.gz"]
    # January to March of the two subscribed customers: 3 months × 2 × 30, and the late one, less the retracted one
    assert details["events_archived"] == 3 * 2 * 30
    assert _stored(server) == total - 180
    assert _stored(server, "customer_id IN (?, ?) AND ts < ?", (*cids[:2], 1743465600 * 10 ** 6)) == 0  # before April
    assert _stored(server, "customer_id = ?", (cids[2],)) == 4 * 30  # no subscription: kept
    assert _stored(server, "ts >= ?", (1743465600 * 10 ** 6,)) == 3 * 30  # April: uninvoiced, kept
    assert figures(admin, cids) == before
    manifest = _manifest(server)
    assert [e["events"] for e in manifest["files"]] == [61, 60, 59]  # the late event; the retracted one
    for entry in manifest["files"]:
        path = os.path.join(_folder(server), entry["file"])
        with open(path, "rb") as reader:
            data = reader.read()
        assert (entry["bytes"], entry["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        lines = gzip.decompress(data).decode().splitlines()
        assert len(lines) == entry["events"] and entry["pending_from"] is None
        assert all(json.loads(line)["timestamp"].startswith(entry["month"]) for line in lines)
    listed = admin.get(f"/v1/events?customer_id={cids[0]}&limit=500").json["data"]
    assert {e["timestamp"][:7] for e in listed} == {"2025-04"}  # the list shows stored events only
    again = _archive(admin)  # nothing more to move, nothing moved twice
    assert (again["events_archived"], again["archive_files"]) == (0, [])
    assert _manifest(server) == manifest


def test_a_resent_archived_id_is_a_duplicate_across_restarts(tmp_path):
    path = temp_db(tmp_path)
    server = RunningServer(path, env=RETENTION)
    try:
        cids = build(server.admin)
        original = server.admin.get(f"/v1/events?customer_id={cids[0]}&from=2025-01-11&to=2025-01-12").json["data"]
        _archive(server.admin)
    finally:
        server.stop()
    server = RunningServer(path, env=RETENTION)
    try:
        admin, cid = server.admin, cids[0]
        pin("2025-05-10T00:00:00Z")
        for stored in original:
            resent = {key: stored[key] for key in ("id", "meter", "quantity", "timestamp", "properties")}
            reply = admin.post("/v1/events", {**resent, "customer_id": cid, "quantity": 999})
            assert (reply.status, reply.json["duplicate"]) == (200, True), reply
            assert reply.json["event"] == stored
        batch = admin.post("/v1/events/batch", {"customer_id": cid, "events": [
            {"id": "late-1", "meter": "api_calls", "timestamp": "2025-01-15T10:00:00Z"},
            {"id": f"c{cid}-2025-02-0-c", "meter": "api_calls", "timestamp": "2025-02-03T00:00:00Z"}]})
        assert batch.json == {"accepted": 0, "duplicates": 2}
        assert _stored(server, "ts < ? AND customer_id = ?", (1743465600 * 10 ** 6, cid)) == 0
        # an archived event cannot be retracted
        assert_error(admin.delete(f"/v1/customers/{cid}/events/late-1"), 409, "conflict")
    finally:
        server.stop()


def test_archived_ids_are_forgotten_after_the_lateness_window(tmp_path):
    server = RunningServer(temp_db(tmp_path), env={**RETENTION, "BILLING_MAX_EVENT_AGE_DAYS": "120"})
    try:
        cids = build(server.admin)  # on 10 May the window reaches back to 10 January
        _archive(server.admin)
        # January's events of the 3rd and the 5th (3 instants × 5 meters × 2 customers) are past the window
        assert table_count(server, "archived_events") == 180 - 30
        pin("2025-06-01T00:00:00Z")  # the window: from 1 February
        details = _archive(server.admin)
        assert details["archived_ids_forgotten"] == 30 + 1  # the rest of January, the late event
        assert table_count(server, "archived_events") == 180 - 61
        reply = server.admin.post("/v1/events", {"id": f"c{cids[0]}-2025-02-0-c", "customer_id": cids[0], "meter": "api_calls",
                                                 "timestamp": "2025-02-03T00:00:00Z"})
        assert (reply.status, reply.json["duplicate"]) == (200, True)  # February: still within
    finally:
        server.stop()


def test_a_range_edge_inside_an_archived_bucket_is_refused(server, admin):
    cids = build(admin)
    query = f"/v1/customers/{cids[0]}/usage?from=2025-01-11T09:05:00Z&to=2025-02-01"
    assert admin.get(query).status == 200
    _archive(admin)
    reply = admin.get(query)
    assert_error(reply, 400, "validation_error")
    assert reply.json["error"]["details"][0]["field"] == "from"
    assert "2025-01-11T09:00:00Z" in reply.json["error"]["message"]
    analytics = admin.get("/v1/analytics/usage?meter=api_calls&from=2025-01-01&to=2025-01-11T09:10:00Z&interval=month")
    assert_error(analytics, 400, "validation_error")
    counted = admin.get("/v1/analytics/events?from=2025-01-01&to=2025-01-11T09:10:00Z&interval=month")
    assert_error(counted, 400, "validation_error")
    assert counted.json["error"]["details"][0]["field"] == "to"
    assert "2025-01-11T09:00:00Z" in counted.json["error"]["message"]
    # a bucket with no archived events of that customer and meter reads raw as ever
    assert admin.get(f"/v1/customers/{cids[0]}/usage?from=2025-01-11T09:20:00Z&to=2025-02-01").status == 200


def test_group_by_cannot_grow_while_a_meter_has_archived_events(server, admin):
    build(admin)
    _archive(admin)
    reply = admin.patch("/v1/meters/seats", {"group_by": ["zone"]})
    assert_error(reply, 409, "conflict")
    assert "archived" in reply.json["error"]["message"]
    assert table_count(server, "rollup_regroups") == 0
    assert admin.patch("/v1/meters/seats", {"name": "Seats (renamed)"}).status == 200


def test_archiving_deletes_in_short_transactions(server, admin):
    build(admin, bulk=9_000)
    with RowsPerTransaction(server) as counts:
        details = _archive(admin)
    assert details["events_archived"] == 180 + 9_000
    # a chunk of events: their rows deleted and their ids kept (archived_events), or their buckets marked
    chunk = archive.DELETE_CHUNK
    assert len([count for count in counts if chunk <= count <= 2 * chunk]) >= 9_000 // chunk, counts
    assert max(counts) <= 2 * 2_000, counts  # nothing of the run large (its settling writes about 1,000 rows)


def test_late_events_that_owe_an_adjustment_stay(server, admin):
    cids = build(admin)
    pin("2025-05-09T00:00:00Z")
    _send(admin, cids[1], [{"id": "late-owed", "meter": "api_calls", "quantity": 1, "timestamp": "2025-02-10T00:00:00Z"}])
    _send(admin, cids[2], [{"meter": "api_calls", "timestamp": "2025-05-09T00:00:00Z"}])  # the newest event stays anyway
    pin("2025-05-10T00:00:00Z")
    (draft,) = [i for i in admin.get(f"/v1/invoices?customer_id={cids[1]}").json["data"] if i["status"] == "draft"]
    draft = admin.get(f"/v1/invoices/{draft['id']}").json
    assert [(line["meter"], line["quantity"]) for line in draft["lines"] if line["type"] == "adjustment"] == [("api_calls", 1)]
    _archive(admin)
    # the late event stays until its adjustment is billed; the rest of its period moves
    assert _stored(server, "customer_id = ? AND ts < ?", (cids[1], 1743465600 * 10 ** 6)) == 1
    assert admin.get(f"/v1/invoices/{draft['id']}").json == draft
    issued = admin.post(f"/v1/invoices/{draft['id']}/finalize", {}).json  # re-rated as it is issued
    assert issued["lines"] == draft["lines"]
    _archive(admin)  # billed: the late event moves too
    assert _stored(server, "customer_id = ? AND ts < ?", (cids[1], 1743465600 * 10 ** 6)) == 0


def test_buckets_cut_by_a_period_boundary_are_kept(server, admin):
    """Invoice periods end on local midnights, which are bucket starts; a
    boundary inside a bucket (as any other period could have) keeps it."""
    for meter in METERS:
        assert admin.post("/v1/meters", meter).status == 201
    assert admin.post("/v1/plans", PLAN).status == 201
    cid = admin.post("/v1/customers", {"name": "cut", "email": "cut@example.com"}).json["id"]
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "pro", "start": "2024-12-01"}).status == 201
    db = server.app.db
    with db.transaction() as conn:
        for status, start, end in (("issued", 1_000, 10 * 900), ("paid", 10 * 900, 20 * 900 + 450),
                                   ("draft", 30 * 900 - 1, 40 * 900), ("issued", 25 * 900, 45 * 900)):
            conn.execute("INSERT INTO invoices (customer_id, subscription_id, status, currency, period_start, period_end,"
                         " period_start_date, period_end_date, subtotal, discount, tax, total, credits_applied,"
                         " amount_due, created_at, updated_at) VALUES (?, 1, ?, 'USD', ?, ?, ?, 'b', 0, 0, 0, 0, 0, 0,"
                         " 0, 0)", (cid, status, start * 10 ** 6, end * 10 ** 6, f"2024-01-{start % 28 + 1:02d}"))
    with db.reader() as conn:
        ranges = archivable(conn, 44 * 900 * 10 ** 6)
    bucket = 900 * 10 ** 6
    # [1000 s, 9000 s) loses its first (cut) bucket, [9000 s, 18450 s) its last; the draft's buckets
    # (widened to whole ones) stay; the cutoff ends the last
    assert ranges == {cid: [(2 * bucket, 20 * bucket), (25 * bucket, 29 * bucket), (40 * bucket, 44 * bucket)]}


def test_a_crash_between_the_file_and_the_deletion_loses_and_duplicates_nothing(server, admin):
    cids = build(admin)
    before = figures(admin, cids)
    archiver = server.app.scheduler.archiver
    real_delete = archiver._delete
    archiver._delete = lambda seqs: (_ for _ in ()).throw(OSError("killed"))
    reply = admin.post("/v1/jobs/run", {})
    assert reply.json["outcome"] == "error"
    (entry,) = _manifest(server)["files"]
    assert entry["pending_from"] == 0 and entry["events"] > 0
    # and a member a crash wrote past what the manifest records
    with open(os.path.join(_folder(server), entry["file"]), "ab") as out:
        out.write(gzip.compress(b'{"seq": 1}\n'))
    archiver._delete = real_delete
    details = _archive(admin)
    assert details["events_recovered"] == entry["events"]
    assert details["events_archived"] == 180 - entry["events"]
    assert sum(e["events"] for e in _manifest(server)["files"]) == 180
    assert all(archive_files.verify_entry(_folder(server), e) is None for e in _manifest(server)["files"])
    assert figures(admin, cids) == before


def test_an_event_of_a_bucket_with_archived_events_cannot_be_retracted(server, admin):
    """A retraction rebuilds its bucket from the raw events: after January's
    invoice is voided, an event added to an archived January bucket stays."""
    cids = build(admin)
    _archive(admin)
    (january,) = [i for i in admin.get(f"/v1/invoices?customer_id={cids[0]}&limit=100").json["data"]
                  if i["period_start"].startswith("2025-01-01")]
    assert admin.post(f"/v1/invoices/{january['id']}/void", {"reason": "wrong address"}).status == 200
    _send(admin, cids[0], [{"id": "into-archived", "meter": "api_calls", "quantity": 1, "timestamp": "2025-01-11T09:08:00Z"}])
    before = figures(admin, cids)
    reply = admin.delete(f"/v1/customers/{cids[0]}/events/into-archived")
    assert_error(reply, 409, "conflict")
    assert "2025-01-11T09:00:00Z" in reply.json["error"]["message"]
    assert figures(admin, cids) == before


class _Budget:
    """The archive pass's clock: each look moves it 15 s, so a pass (budget
    20 s) reads one batch and leaves the rest to the next run."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        self.now += 15.0
        return self.now

    def sleep(self, seconds):
        """The pass's pauses between transactions take no time here."""


def test_a_pass_out_of_time_goes_on_where_it_stopped(server, admin, monkeypatch):
    """Old events that stay (a customer without a subscription) must not hold
    back the ones after them: the next run reads on from where the last
    stopped, and a pass that reached the end starts again from the beginning."""
    from billing.ops import archiver

    cids = build(admin)
    before = figures(admin, cids)
    old = _stored(server, "ts < ?", (1744243200 * 10 ** 6,))  # before the cutoff, 10 April: read by the passes
    monkeypatch.setattr(archiver, "time", _Budget())
    monkeypatch.setattr(archiver, "BATCH", 40)
    archived, runs = 0, 0
    while True:
        details = _archive(admin)
        archived, runs = archived + details["events_archived"], runs + 1
        if "archive_more" not in details or runs == 30:
            break
    # a batch of 40 per run, then one run that finds none left
    assert (archived, runs) == (180, -(-old // 40) + 1)
    assert _stored(server, "customer_id = ?", (cids[2],)) == 4 * 30
    assert figures(admin, cids) == before
