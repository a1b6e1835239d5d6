"""A real `server.py` killed with SIGKILL while it ingests and ships (§13):
after a restart every acknowledged event is in ClickHouse exactly once as
seen through FINAL, whatever moment the kill hit (resends are harmless)."""

import re
import signal
import sqlite3
import threading
import time
import urllib.request

from tests.clickhouse.helpers import fresh_database, live_ids, rows
from tests.test_server_process import call, start

KEY = "mk_ship_key_0123456789abcdef0123456789"


def _backlog(port):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        text = reply.read().decode()
    return int(re.search(r"^meterline_clickhouse_outbox_backlog (\d+)$", text, re.M).group(1))


def _ingest_until_killed(port, acknowledged, stop):
    for n in range(60):
        if stop.is_set():
            return
        batch = {"customer_id": 1, "events": [{"id": f"b{n}-{i}", "meter": "calls", "quantity": 1,
                                               "timestamp": "2025-06-01T10:00:00Z"} for i in range(500)]}
        try:
            status, _ = call(port, "POST", "/v1/events/batch", batch, KEY)
        except OSError:
            return  # the server is gone
        if status == 200:
            acknowledged.update(e["id"] for e in batch["events"])


def test_events_survive_a_kill_9_while_shipping_and_arrive_once(tmp_path, clickhouse):
    database = fresh_database()
    env = {"BILLING_DB": str(tmp_path / "billing.db"), "BILLING_ADMIN_KEY": KEY, "BILLING_MAX_EVENT_AGE_DAYS": "0",
           "BILLING_CLICKHOUSE_URL": clickhouse.url(database)}
    proc, port, _ = start([], env)
    acknowledged, stop = set(), threading.Event()
    try:
        assert call(port, "POST", "/v1/meters", {"key": "calls", "name": "Calls", "aggregation": "sum"}, KEY)[0] == 201
        assert call(port, "POST", "/v1/customers", {"name": "K", "email": "k@example.com"}, KEY)[0] == 201
        sender = threading.Thread(target=_ingest_until_killed, args=(port, acknowledged, stop))
        sender.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 5_000 and time.monotonic() < deadline:  # shipping has begun meanwhile
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        stop.set()
        sender.join(timeout=30)
    assert len(acknowledged) >= 5_000
    proc, port, _ = start([], env)
    try:
        deadline = time.monotonic() + 60
        while _backlog(port) and time.monotonic() < deadline:  # the restarted shipper catches up
            time.sleep(0.05)
        assert _backlog(port) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    with sqlite3.connect(env["BILLING_DB"]) as conn:
        stored = sorted(conn.execute("SELECT customer_id, event_id FROM events"))
    shipped = live_ids(clickhouse, database)
    assert shipped == stored  # what the node stored, each once
    assert {event_id for _, event_id in shipped} >= acknowledged  # every acknowledged event among them
    (raw,) = rows(clickhouse, f"SELECT count() FROM {database}.events")[0]
    assert int(raw) >= len(shipped)
