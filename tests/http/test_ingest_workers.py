"""Ingest worker processes (billing/api/ingest_pool.py): a large batch is
validated in a worker process, and what it answers — stored rows, problems,
400s — is exactly what the request thread answers for the same body. A
worker that dies costs no request; the workers end with the server, also
when it is killed."""

import json
import os
import signal
import sqlite3
import sys
import time
from datetime import datetime, timezone

import pytest

from billing import clock
from billing.api import ingest_pool, ingest_worker
from tests.harness import ADMIN_KEY, Client, RunningServer, make_key, temp_db
from tests.helpers import wait_for
from tests.http.helpers import create_customer, create_meter, post_raw
from tests.http.test_metrics import parse
from tests.http.test_events import _cases
from tests.test_server_process import start

NOW = datetime(2030, 6, 15, 12, 0, 0, tzinfo=timezone.utc)
ROW_COLUMNS = ("customer_id, event_id, meter_id, ts, quantity, value, matched, properties, late, received_at,"
               " id_hash")


def _server(tmp_path, name, workers):
    os.makedirs(tmp_path / name)
    server = RunningServer(temp_db(tmp_path / name), env={"BILLING_MAX_EVENT_AGE_DAYS": "30",
                                                          "BILLING_INGEST_WORKERS": str(workers)})
    admin = server.admin
    create_customer(admin, name="One", external_id="ext-1")
    create_customer(admin, name="Two", external_id="ext-2")
    create_meter(admin, key="api_calls", aggregation="sum")
    create_meter(admin, key="bytes", aggregation="sum", value_property="size")
    create_meter(admin, key="users", aggregation="unique_count", value_property="user")
    create_meter(admin, key="eu_calls", aggregation="count", filter={"region": ["eu", "uk"]})
    return server


@pytest.fixture
def pair(tmp_path):
    """Two servers with the same catalog: one sends every batch to its worker
    processes (started, no size threshold), the other has none."""
    workers, plain = _server(tmp_path, "workers", 2), _server(tmp_path, "plain", 0)
    workers.app.ingest_pool.min_bytes = 1
    workers.app.ingest_pool.start()
    assert len(workers.app.ingest_pool.pids()) == 2
    yield workers, plain
    for server in (workers, plain):
        server.stop()


def _rows(server):
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        return conn.execute(f"SELECT {ROW_COLUMNS} FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


def _bodies(cid):
    """Batch bodies (bytes): valid ones in every spelling, one per invalid
    event of test_events, broken envelopes and broken JSON."""
    good = f'{{"customer_id": {cid}, "meter": "api_calls", "quantity": 2}}'
    valid = [
        {"events": [{"id": "a1", "customer_id": cid, "meter": "api_calls", "quantity": 3,
                     "timestamp": "2030-06-15T11:00:00Z", "properties": {"region": "eu", "n": 3}},
                    {"id": "a2", "customer": "ext-2", "feature": "api_calls", "ts": "2030-06-15T11:30:00.123456Z"},
                    {"id": "a1", "customer_id": cid, "meter": "api_calls", "quantity": 9},  # the first wins
                    {"id": "a3", "customer_id": cid, "meter": "bytes", "properties": {"size": 1024}},
                    {"id": "a4", "customer_id": cid, "meter": "users", "properties": {"user": "u-1"}},
                    {"id": "a5", "customer_id": cid, "meter": "eu_calls", "properties": {"region": "us"}},
                    {"id": "a6", "customer_id": cid, "meter": "eu_calls", "properties": {"region": "uk"}},
                    {"id": "ü-7", "customer_id": cid, "meter": "api_calls", "properties": {"note": "naïve ✓"}}]},
        {"customer_id": cid, "events": [{"id": "d1", "meter": "api_calls"}, {"id": "d2", "meter": "bytes",
                                                                             "properties": {"size": 0.25}}]},
        {"events": [{"id": "a2", "customer": "ext-2", "meter": "api_calls"}]},  # a duplicate across batches
        {"events": []},
        {"events": [{"id": f"m{i}", "customer_id": cid, "meter": "api_calls", "quantity": i} for i in range(500)]},
    ]
    bodies = [json.dumps(body).encode() for body in valid]
    bodies.append(f'{{"events": [{{"id": "q1", "customer_id": {cid}, "meter": "api_calls", "quantity": 1.5}}]}}'.encode())
    bodies += [f'{{"events": [{good}, {text}, {good}]}}'.encode() for text, _field in _cases(cid)]
    bodies += [b'{"events": {}}', b'{"events": [], "extra": 1}', b'{"customer_id": "1", "events": []}',
               b'{"customer_id": true, "events": [{"meter": "api_calls"}]}', b'{"events": [5, "x", null]}',
               b'[1, 2]', b'"text"', b'{"events": [', b'{"events": [] } trailing', b'\xff\xfe{}',
               b'{"events": [{"customer_id": 1, "meter": "api_calls", "quantity": NaN}]}',
               json.dumps({"events": [{"customer_id": cid, "meter": "api_calls"}] * 10_001}).encode()]
    # what a worker takes; what only a request thread takes; past both (on Python 3.11)
    bodies += [_nested(cid, ingest_worker.RECURSION_LIMIT - 100), _nested(cid, 850), _nested(cid, 980)]
    return bodies


def _nested(cid, depth):
    """A batch whose one event's properties nest `depth` lists deep."""
    return (f'{{"events": [{{"id": "deep{depth}", "customer_id": {cid}, "meter": "api_calls", "properties": {{"p": '
            + "[" * depth + "]" * depth + "}}]}").encode()


def test_workers_answer_what_the_request_thread_answers(pair):
    workers, plain = pair
    clock.pin(NOW)
    bodies = _bodies(1)
    answers = []
    for body in bodies:
        a = post_raw(workers.admin, "/v1/events/batch", body)
        b = post_raw(plain.admin, "/v1/events/batch", body)
        assert (a.status, a.json) == (b.status, b.json), body[:200]
        answers.append((a.status, a.error_code if a.status != 200 else None))
    assert answers[:6] == [(200, None)] * 6 and {status for status, _ in answers[6:-3]} == {400}, answers
    # every body but those that are not JSON (worded by the request thread) and the one nested
    # past the worker's limit (850 levels: the request thread decides) was answered by a worker
    handed_back = sum(code == "bad_request" for _, code in answers) + 1
    if sys.version_info < (3, 12):  # from 3.12 JSON's C code has a limit of its own (ingest_worker's docstring)
        assert answers[-3:] == [(200, None), (200, None), (400, "bad_request")], answers[-3:]
        assert workers.app.ingest_pool.served == len(bodies) - handed_back
    too_many = b'{"events": [' + b"1," * 600_000 + b'1]}'  # past MAX_JSON_VALUES: 413 before any decoding
    a, b = (post_raw(server.admin, "/v1/events/batch", too_many) for server in pair)
    assert a.status == 413 and (a.status, a.json) == (b.status, b.json)
    rows = _rows(workers)
    assert rows == _rows(plain) and (len(rows) == 512 or sys.version_info >= (3, 12))


def test_metrics_show_the_workers(pair):
    workers, plain = pair
    body = {"events": [{"id": "g1", "customer_id": 1, "meter": "api_calls"}]}
    assert workers.admin.post("/v1/events/batch", body).status == 200
    families = parse(workers.admin.get("/metrics").raw.decode("utf-8"))
    assert families["meterline_ingest_workers"]["samples"][0][2] == 2
    assert families["meterline_ingest_workers_resident_memory_bytes"]["samples"][0][2] > 2 * 10 ** 6
    assert families["meterline_ingest_worker_batches_total"]["type"] == "counter"
    assert families["meterline_ingest_worker_batches_total"]["samples"][0][2] == 1
    assert "meterline_ingest_workers" not in parse(plain.admin.get("/metrics").raw.decode("utf-8"))


def test_a_customer_scoped_key_through_a_worker(pair):
    workers, plain = pair
    clock.pin(NOW)
    for body in ('{"events": [{"id": "s1", "meter": "api_calls"}]}',
                 '{"events": [{"id": "s2", "customer_id": 2, "meter": "api_calls"}]}',
                 '{"events": [{"id": "s3", "customer": "ext-1", "meter": "api_calls"}]}'):
        answers = [post_raw(Client(server.port, make_key(server, customer_id=1)), "/v1/events/batch", body)
                   for server in pair]
        assert (answers[0].status, answers[0].json) == (answers[1].status, answers[1].json)
    assert answers[0].status == 200 and workers.app.ingest_pool.served == 3
    assert _rows(workers) == _rows(plain) and len(_rows(plain)) == 2


def test_workers_see_catalog_changes(pair):
    workers, _plain = pair
    admin = workers.admin
    batch = {"events": [{"id": "c1", "customer_id": 1, "meter": "later"}]}
    assert admin.post("/v1/events/batch", batch).status == 400  # no such meter yet
    create_meter(admin, key="later", aggregation="sum")
    assert admin.post("/v1/events/batch", batch).json == {"accepted": 1, "duplicates": 0}
    third = create_customer(admin, name="Three", external_id="ext-3")
    named = {"events": [{"id": "c2", "customer": "ext-3", "meter": "later"}]}
    assert admin.post("/v1/events/batch", named).json == {"accepted": 1, "duplicates": 0}
    assert admin.patch(f"/v1/customers/{third['id']}", {"archived": True}).status == 200
    refused = admin.post("/v1/events/batch", {"events": [{"id": "c3", "customer_id": third["id"], "meter": "later"}]})
    assert refused.status == 400 and "archived" in refused.json["error"]["message"], refused
    assert workers.app.ingest_pool.served == 4


def test_a_killed_worker_costs_no_request(pair, monkeypatch):
    workers, plain = pair
    pool = workers.app.ingest_pool
    monkeypatch.setattr(ingest_pool, "RETRY_SECONDS", 0)  # replaced at once
    victim = pool.pids()[0]
    os.kill(victim, signal.SIGKILL)
    for n in range(4):  # whichever worker each batch gets, the dead one included
        body = {"events": [{"id": f"k{n}", "customer_id": 1, "meter": "api_calls"}]}
        assert workers.admin.post("/v1/events/batch", body).json == {"accepted": 1, "duplicates": 0}
    assert pool.served == 3  # the batch the dead one held was validated by the request thread
    pids = wait_for(lambda: len(pool.pids()) == 2 and pool.pids(), timeout=ingest_pool.START_SECONDS + 5,
                    message="a worker in the dead one's place")
    assert victim not in pids


def test_a_hung_worker_is_given_up_on(pair, monkeypatch):
    workers, _plain = pair
    pool = workers.app.ingest_pool
    monkeypatch.setattr(ingest_pool, "ANSWER_SECONDS", 0.5)
    monkeypatch.setattr(ingest_pool, "RETRY_SECONDS", 0)
    stuck = pool.pids()
    for pid in stuck:
        os.kill(pid, signal.SIGSTOP)  # alive, answering nothing
    try:
        # a body larger than a pipe holds: the write blocks on the stopped worker until it is killed
        large = {"events": [{"id": f"h0-{i}", "customer_id": 1, "meter": "api_calls"} for i in range(3000)]}
        assert len(json.dumps(large)) > 128 * 1024
        assert workers.admin.post("/v1/events/batch", large).json == {"accepted": 3000, "duplicates": 0}
        small = {"events": [{"id": "h1", "customer_id": 1, "meter": "api_calls"}]}
        assert workers.admin.post("/v1/events/batch", small).json == {"accepted": 1, "duplicates": 0}
        assert pool.served == 0  # both validated by their request threads, after half a second each
        fresh = wait_for(lambda: len(pool.pids()) == 2 and pool.pids(), timeout=ingest_pool.START_SECONDS + 5,
                         message="two workers in their place")
        assert not set(fresh) & set(stuck)
        monkeypatch.setattr(ingest_pool, "ANSWER_SECONDS", 30)  # a fresh worker's first exchange, on a slow machine
        body = {"events": [{"id": "h2", "customer_id": 1, "meter": "api_calls"}]}
        assert workers.admin.post("/v1/events/batch", body).json == {"accepted": 1, "duplicates": 0}
        assert pool.served == 1
    finally:
        for pid in stuck:
            if not _ended(pid, 0):
                os.kill(pid, signal.SIGKILL)
    assert all(_ended(pid, 5) for pid in stuck)


def test_the_first_large_batch_starts_the_workers(tmp_path):
    server = _server(tmp_path, "lazy", 1)
    try:
        pool = server.app.ingest_pool
        assert pool.pids() == []  # none until a batch is large enough
        events = [{"id": f"l{i}", "customer_id": 1, "meter": "api_calls"} for i in range(1000)]
        body = {"events": events}
        assert len(json.dumps(body)) >= pool.min_bytes
        small = server.admin.post("/v1/events/batch", {"events": events[:10]})
        assert small.json == {"accepted": 10, "duplicates": 0} and pool.pids() == []
        assert server.admin.post("/v1/events/batch", body).json == {"accepted": 990, "duplicates": 10}
        pool.start()  # the batch above started them; it was validated by its own thread
        assert pool.served == 0 and len(pool.pids()) == 1
        body["events"] = [dict(e, id="n" + e["id"]) for e in events]
        assert server.admin.post("/v1/events/batch", body).json == {"accepted": 1000, "duplicates": 0}
        assert pool.served == 1
        pids = pool.pids()
    finally:
        server.stop()
    for pid in pids:  # close() ended them
        assert _ended(pid, 5)


def test_by_default_the_server_stays_one_process(tmp_path):
    server = _server(tmp_path, "default", 0)
    try:
        events = [{"id": f"o{i}", "customer_id": 1, "meter": "api_calls"} for i in range(1000)]
        for _ in range(2):
            assert server.admin.post("/v1/events/batch", {"events": events}).status == 200
        assert server.app.ingest_pool.pids() == [] and server.app.ingest_pool.served == 0
    finally:
        server.stop()


def _ended(pid, seconds):
    """Whether the process has exited (gone, or a zombie nothing reaped yet), within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_workers_end_when_the_server_is_killed(tmp_path):
    proc, port, _lines = start(["--db", temp_db(tmp_path)], {"BILLING_ADMIN_KEY": ADMIN_KEY,
                                                             "BILLING_INGEST_WORKERS": "2"})
    try:
        admin = Client(port, ADMIN_KEY)
        customer = create_customer(admin, name="One")
        create_meter(admin, key="api_calls", aggregation="sum")
        events = [{"customer_id": customer["id"], "meter": "api_calls"} for _ in range(1000)]
        children = []
        deadline = time.monotonic() + 30
        while len(children) < 2 and time.monotonic() < deadline:
            assert admin.post("/v1/events/batch", {"events": events}).status == 200
            children = _children(proc.pid)
        assert len(children) == 2
        admin.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    for pid in children:
        assert _ended(pid, 10), pid


def _children(pid):
    """The processes whose parent is `pid` (from each process's stat line)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found
