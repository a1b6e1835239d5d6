"""Shipping stored events to a real ClickHouse (§13): in order, batched, at
least once and seen exactly once; events stored before ClickHouse was
configured; tombstones of retractions; the backlog gauge; ClickHouse down."""

import re

import pytest

from billing.api.clickhouse import ClickHouseError
from billing.ops import shipper as shipper_module
from billing.store import outbox
from tests.clickhouse.helpers import (calls_customer, create_meter, database_of, ingest, live_ids, make_customer,
                                      node_ids, rows, start)


@pytest.fixture
def server(tmp_path, clickhouse):
    running = start(tmp_path, clickhouse)
    yield running
    running.stop()


def backlog_gauge(server):
    reply = server.admin.get("/metrics")
    assert reply.status == 200
    found = re.search(r"^meterline_clickhouse_outbox_backlog (\d+)$", reply.raw.decode(), re.M)
    return int(found.group(1)) if found else None


def raw_count(clickhouse, database):
    ((count,),) = rows(clickhouse, f"SELECT count() FROM {database}.events")
    return int(count)


def test_clickhouse_stopped_then_started_again_receives_every_event_once(server, clickhouse):
    customer = calls_customer(server, 30)
    assert server.app.shipper.run_once() == 30
    clickhouse.stop()
    ingest(server, customer, "calls", 40, start=30)
    with pytest.raises(ClickHouseError):
        server.app.shipper.run_once()
    assert backlog_gauge(server) == 40
    assert server.app.clickhouse.last_error
    # reads answer from the node meanwhile
    reply = server.admin.get("/v1/analytics/usage?meter=calls&from=2025-01-10&to=2025-01-11")
    assert reply.headers["X-Served-By"] == "node" and reply.json["value"] == 210
    clickhouse.start()  # the same data folder and port
    assert server.app.shipper.run_once() == 40
    assert backlog_gauge(server) == 0
    database = database_of(server)
    assert live_ids(clickhouse, database) == node_ids(server)
    assert raw_count(clickhouse, database) == 70  # nothing was sent twice
    reply = server.admin.get("/v1/analytics/usage?meter=calls&from=2025-01-10&to=2025-01-11")
    assert reply.headers["X-Served-By"] == "clickhouse" and reply.json["value"] == 210


def test_a_batch_sent_again_after_a_crash_before_the_cursor_moved_counts_once(server, clickhouse, monkeypatch):
    customer = calls_customer(server, 25)

    def crash(*args):
        raise SystemExit("killed between ClickHouse's answer and the cursor's transaction")

    monkeypatch.setattr(outbox, "advance", crash)
    with pytest.raises(SystemExit):
        server.app.shipper.run_once()
    monkeypatch.undo()
    database = database_of(server)
    assert raw_count(clickhouse, database) == 25
    assert backlog_gauge(server) == 25  # the cursor did not move: all of it is sent again
    restarted = shipper_module.Shipper(server.app, server.app.clickhouse)
    assert restarted.run_once() == 25
    assert raw_count(clickhouse, database) == 50
    assert live_ids(clickhouse, database) == node_ids(server)
    reply = server.admin.get("/v1/analytics/usage?meter=calls&from=2025-01-10&to=2025-01-11&interval=hour")
    assert reply.headers["X-Served-By"] == "clickhouse"
    assert reply.json["value"] == sum(1 + i % 5 for i in range(25))


def test_batches_hold_at_most_the_batch_size_and_ship_in_order(server, clickhouse, monkeypatch):
    customer = calls_customer(server, 23)
    sent = []
    client = server.app.clickhouse.client
    real = client.execute

    def counting(sql, data=None, **kw):
        if data is not None:
            sent.append([int(seq) for seq in re.findall(rb'"seq":(\d+)', data)])
        return real(sql, data, **kw)

    monkeypatch.setattr(client, "execute", counting)
    assert shipper_module.Shipper(server.app, server.app.clickhouse, batch=10).run_once() == 23
    assert [len(batch) for batch in sent] == [10, 10, 3]
    flat = [seq for batch in sent for seq in batch]
    assert flat == sorted(flat)


def test_events_stored_before_clickhouse_was_configured_are_shipped(tmp_path, clickhouse):
    plain = start(tmp_path)
    customer = make_customer(plain.admin)
    create_meter(plain.admin, "calls")
    ingest(plain, customer, "calls", 15)
    assert plain.app.shipper is None
    with plain.app.db.reader() as conn:
        assert outbox.state(conn) is None  # nothing written for ClickHouse while it is not configured
    path = plain.app.config.db_path
    plain.stop()
    shipping = start(tmp_path, clickhouse, db_path=path)
    try:
        assert backlog_gauge(shipping) == 15
        assert shipping.app.shipper.run_once() == 15
        assert live_ids(clickhouse, database_of(shipping)) == node_ids(shipping)
        assert backlog_gauge(shipping) == 0
    finally:
        shipping.stop()


def test_a_retraction_ships_a_tombstone_that_reads_exclude(server, clickhouse):
    customer = calls_customer(server, 5)
    server.app.shipper.run_once()
    assert server.admin.delete(f"/v1/customers/{customer}/events/e2").status == 200
    assert backlog_gauge(server) == 1
    assert server.app.shipper.run_once() == 1
    database = database_of(server)
    assert (customer, "e2") not in live_ids(clickhouse, database)
    assert live_ids(clickhouse, database) == node_ids(server)
    listed = server.admin.get("/v1/events?limit=100")
    assert listed.headers["X-Served-By"] == "clickhouse"
    assert sorted(e["id"] for e in listed.json["data"]) == ["e0", "e1", "e3", "e4"]
    usage = server.admin.get("/v1/analytics/usage?meter=calls&from=2025-01-10&to=2025-01-11")
    assert usage.headers["X-Served-By"] == "clickhouse" and usage.json["value"] == 1 + 2 + 4 + 5
    # sent again after its retraction, the id is an event again
    reply = server.admin.post("/v1/events", {"id": "e2", "customer_id": customer, "meter": "calls",
                                             "quantity": 7, "timestamp": "2025-01-10T11:00:00Z"})
    assert reply.status == 201
    server.app.shipper.run_once()
    assert live_ids(clickhouse, database) == node_ids(server)
    usage = server.admin.get("/v1/analytics/usage?meter=calls&from=2025-01-10&to=2025-01-11")
    assert usage.headers["X-Served-By"] == "clickhouse" and usage.json["value"] == 1 + 2 + 4 + 5 + 7


def test_the_newest_event_retracted_after_shipping_leaves_no_later_event_behind(server, clickhouse):
    # SQLite gives the next event the seq of a deleted newest one: it must still ship
    customer = calls_customer(server, 3)
    server.app.shipper.run_once()
    assert server.admin.delete(f"/v1/customers/{customer}/events/e2").status == 200
    ingest(server, customer, "calls", 2, start=10)
    assert backlog_gauge(server) == 3  # the tombstone and two events
    server.app.shipper.run_once()
    assert live_ids(clickhouse, database_of(server)) == node_ids(server) == [
        (customer, "e0"), (customer, "e1"), (customer, "e10"), (customer, "e11")]


def test_a_retraction_while_its_batch_is_in_flight_sends_the_batch_again(server, clickhouse, monkeypatch):
    customer = calls_customer(server, 4)
    client = server.app.clickhouse.client
    real = client.execute
    done = []

    def retract_meanwhile(sql, data=None, **kw):
        answer = real(sql, data, **kw)
        if data is not None and not done:
            done.append(True)
            assert server.admin.delete(f"/v1/customers/{customer}/events/e3").status == 200
            ingest(server, customer, "calls", 1, start=20)  # takes the seq e3 had
        return answer

    monkeypatch.setattr(client, "execute", retract_meanwhile)
    server.app.shipper.run_once()
    monkeypatch.undo()
    server.app.shipper.run_once()
    assert live_ids(clickhouse, database_of(server)) == node_ids(server)
    assert (customer, "e20") in node_ids(server)


def test_the_backlog_gauge_counts_what_waits(server, clickhouse):
    customer = make_customer(server.admin)
    create_meter(server.admin, "calls")
    assert backlog_gauge(server) == 0
    ingest(server, customer, "calls", 12)
    assert backlog_gauge(server) == 12
    server.app.shipper.run_once()
    assert backlog_gauge(server) == 0


def test_without_clickhouse_nothing_of_it_shows(tmp_path):
    plain = start(tmp_path)
    try:
        customer = make_customer(plain.admin)
        create_meter(plain.admin, "calls")
        ingest(plain, customer, "calls", 3)
        metrics = plain.admin.get("/metrics").raw.decode()
        assert "clickhouse" not in metrics
        reply = plain.admin.get("/v1/events")
        assert "X-Served-By" not in reply.headers
        assert "clickhouse" not in plain.admin.get("/v1/jobs").json
        assert plain.admin.delete(f"/v1/customers/{customer}/events/e1").status == 200
        with plain.app.db.reader() as conn:
            assert outbox.state(conn) is None
    finally:
        plain.stop()


def test_the_jobs_list_shows_shipping(server, clickhouse):
    customer = calls_customer(server, 2)
    status = server.admin.get("/v1/jobs").json["clickhouse"]
    assert status["backlog"] == 2 and status["last_shipped_at"] is None and status["last_error"] is None
    server.app.shipper.run_once()
    status = server.admin.get("/v1/jobs").json["clickhouse"]
    assert status["backlog"] == 0 and status["last_shipped_at"] and status["shipped_through_seq"] >= 2


def test_a_user_and_password_in_the_url_sign_in_and_never_show(tmp_path, clickhouse):
    """http://user:password@host:8123/…: ClickHouse gets them as HTTP basic
    authentication; errors (the log, GET /v1/jobs) never show the password."""
    signed_in = start(tmp_path, BILLING_CLICKHOUSE_URL=clickhouse.url("meterline_basic").replace(
        "http://", "http://default:@"))
    try:
        calls_customer(signed_in, 3)
        assert signed_in.app.shipper.run_once() == 3
        assert len(live_ids(clickhouse, "meterline_basic")) == 3
    finally:
        signed_in.stop()
    (tmp_path / "wrong").mkdir()
    wrong = start(tmp_path / "wrong", BILLING_CLICKHOUSE_URL=clickhouse.url("meterline_basic").replace(
        "http://", "http://default:n0t-th1s%40one@"))
    try:
        with pytest.raises(ClickHouseError):
            wrong.app.shipper.run_once()
        error = wrong.admin.get("/v1/jobs").json["clickhouse"]["last_error"]
        assert error.startswith("HTTP ") and "n0t-th1s" not in error, error
    finally:
        wrong.stop()
