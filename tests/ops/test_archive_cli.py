"""The archive command (§13): `python3 -m billing.archive list|verify|restore
FILE`, run as its own process against the database of a stopped server."""

import os
import subprocess
import sys

import pytest

from tests.harness import RunningServer
from tests.http.helpers import pin, table_count, temp_db
from tests.http.test_archive import RETENTION, _stored, build, figures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JANUARY, FEBRUARY = "events-2025-01.ndjson.gz", "events-2025-02.ndjson.gz"


def archive_cli(db_path, *args):
    env = {key: value for key, value in os.environ.items() if not key.startswith("BILLING_")}
    return subprocess.run([sys.executable, "-m", "billing.archive", "--db", db_path, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _run(server):
    reply = server.admin.post("/v1/jobs/run", {})
    assert reply.status == 200 and reply.json["outcome"] == "ok", reply
    return reply.json["details"]


@pytest.fixture
def archived(tmp_path):
    """A database whose January to March events are archived, the server
    stopped; (path, customer ids, the figures before archiving)."""
    path = temp_db(tmp_path)
    server = RunningServer(path, env=RETENTION)
    try:
        cids = build(server.admin)
        before = figures(server.admin, cids)
        assert _run(server)["events_archived"] == 180
        assert figures(server.admin, cids) == before
    finally:
        server.stop()
    return path, cids, before


def test_list_and_verify(archived):
    path, _, _ = archived
    listed = archive_cli(path, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == [JANUARY, FEBRUARY, "events-2025-03.ndjson.gz"]
    assert "61 events" in lines[0] and "2025-01-03T00:00:00Z" in lines[0] and lines[-1] == "3 files, 180 events"
    verified = archive_cli(path, "verify")
    assert (verified.returncode, verified.stderr) == (0, ""), verified.stderr


def test_verify_names_a_corrupt_file_and_restore_refuses_it(archived):
    path, _, _ = archived
    target = os.path.join(os.path.dirname(path), "archive", FEBRUARY)
    with open(target, "r+b") as out:
        out.seek(30)
        byte = out.read(1)
        out.seek(30)
        out.write(bytes([byte[0] ^ 0xFF]))
    verified = archive_cli(path, "verify")
    assert verified.returncode == 1
    assert FEBRUARY in verified.stderr and "corrupt" in verified.stderr and JANUARY not in verified.stderr
    refused = archive_cli(path, "restore", FEBRUARY)
    assert refused.returncode == 1 and FEBRUARY in refused.stderr
    server = RunningServer(path, env={"BILLING_MAX_EVENT_AGE_DAYS": "0"})
    try:
        assert _stored(server, "ts >= ? AND ts < ?", (1738368000 * 10 ** 6, 1740787200 * 10 ** 6)) == 30  # none came back
    finally:
        server.stop()


def test_restore_puts_events_back_and_changes_no_figure(archived):
    path, cids, before = archived
    restored = archive_cli(path, "restore", JANUARY)
    assert restored.returncode == 0, restored.stderr
    assert "restored 61 events of 61" in restored.stdout
    again = archive_cli(path, "restore", JANUARY)
    assert again.returncode == 2 and "already restored" in again.stderr
    listed = archive_cli(path, "list").stdout
    assert listed.splitlines()[0].split("  ")[-1].startswith("restored ")
    server = RunningServer(path, env={"BILLING_MAX_EVENT_AGE_DAYS": "0"})  # retention off: they stay
    try:
        admin = server.admin
        pin("2025-05-10T00:00:00Z")
        assert figures(admin, cids) == before
        assert _stored(server, "customer_id IN (?, ?) AND ts < ?", (*cids[:2], 1738368000 * 10 ** 6)) == 61
        assert table_count(server, "archived_events") == 180 - 61
        # January reads raw events again at a cut edge; February's are still archived
        assert admin.get(f"/v1/customers/{cids[0]}/usage?from=2025-01-11T09:05:00Z&to=2025-02-01").status == 200
        assert admin.get(f"/v1/customers/{cids[0]}/usage?from=2025-02-11T09:05:00Z&to=2025-03-01").status == 400
        reply = admin.post("/v1/events", {"id": f"c{cids[0]}-2025-01-3-c", "customer_id": cids[0], "meter": "api_calls",
                                          "timestamp": "2025-01-11T09:07:30Z"})
        assert (reply.status, reply.json["duplicate"]) == (200, True)
        listed = admin.get(f"/v1/events?customer_id={cids[0]}&from=2025-01-01&to=2025-02-01&limit=100").json["data"]
        assert len(listed) == 31
    finally:
        server.stop()
    # with the retention on again, the next pass archives January into a new file
    server = RunningServer(path, env=RETENTION)
    try:
        pin("2025-05-10T00:00:00Z")
        details = _run(server)
        assert (details["archive_files"], details["events_archived"]) == (["events-2025-01.2.ndjson.gz"], 61)
        assert figures(server.admin, cids) == before
    finally:
        server.stop()
    assert archive_cli(path, "verify").returncode == 0


def test_usage_errors(tmp_path):
    missing = archive_cli(temp_db(tmp_path), "restore", JANUARY)
    assert missing.returncode == 2 and JANUARY in missing.stderr
    no_file = archive_cli(temp_db(tmp_path), "restore")
    assert no_file.returncode == 2 and "FILE" in no_file.stderr
    empty = archive_cli(temp_db(tmp_path), "list")
    assert (empty.returncode, empty.stdout) == (0, "0 files, 0 events\n")


def test_restore_keeps_an_event_stored_under_the_seq_of_a_retracted_one(tmp_path):
    """SQLite hands the seq of a retracted newest event to the next one: a
    restore must not take that later event for the retracted one."""
    path = temp_db(tmp_path)
    server = RunningServer(path, env=RETENTION)
    try:
        admin = server.admin
        assert admin.post("/v1/meters", {"key": "calls", "name": "Calls", "aggregation": "sum"}).status == 201
        assert admin.post("/v1/plans", {"code": "p", "name": "P", "currency": "USD", "base_fee": "1.00", "charges": [
            {"meter": "calls", "model": "per_unit", "unit_price": "0.10"}]}).status == 201
        pin("2025-01-28T00:00:00Z")
        cid = admin.post("/v1/customers", {"name": "c", "email": "c@example.com"}).json["id"]
        assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "p", "start": "2025-01-01"}).status == 201
        wrong = admin.post("/v1/events", {"id": "wrong", "customer_id": cid, "meter": "calls", "quantity": 9,
                                          "timestamp": "2025-01-10T10:00:00Z"})
        assert wrong.status == 201
        assert admin.delete(f"/v1/customers/{cid}/events/wrong").status == 200
        for event_id, stamp in (("right", "2025-01-10T10:00:00Z"), ("other", "2025-01-12T10:00:00Z")):
            assert admin.post("/v1/events", {"id": event_id, "customer_id": cid, "meter": "calls", "quantity": 2,
                                             "timestamp": stamp}).status == 201
        with server.app.db.reader() as conn:  # the retracted event's seq went to the next one
            (reused,) = conn.execute("SELECT count(*) FROM events e JOIN retracted_events r ON r.seq = e.seq"
                                     ).fetchone()
            assert reused == 1
        pin("2025-02-02T00:00:00Z")
        (january,) = admin.post("/v1/invoices/run", {}).json["invoice_ids"]
        assert admin.post(f"/v1/invoices/{january}/finalize", {}).status == 200
        pin("2025-03-10T00:00:00Z")
        assert admin.post("/v1/events", {"customer_id": cid, "meter": "calls"}).status == 201  # the newest stays
        assert _run(server)["events_archived"] == 2
        before = admin.get(f"/v1/customers/{cid}/usage?from=2025-01-01&to=2025-02-01").json
    finally:
        server.stop()
    restored = archive_cli(path, "restore", JANUARY)
    assert restored.returncode == 0, restored.stderr
    assert "restored 2 events of 2" in restored.stdout
    server = RunningServer(path, env={"BILLING_MAX_EVENT_AGE_DAYS": "0"})
    try:
        pin("2025-03-10T00:00:00Z")
        listed = server.admin.get(f"/v1/events?customer_id={cid}&from=2025-01-01&to=2025-02-01").json["data"]
        assert sorted(e["id"] for e in listed) == ["other", "right"]
        assert server.admin.get(f"/v1/customers/{cid}/usage?from=2025-01-01&to=2025-02-01").json == before
    finally:
        server.stop()
