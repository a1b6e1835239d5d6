"""What the ClickHouse tests share: a server shipping to a database of its
own, and direct looks into ClickHouse."""

import contextlib
import json

from tests.http.helpers import RunningServer, create_meter, make_customer, temp_db, unique  # noqa: F401

_databases = [0]


def fresh_database():
    _databases[0] += 1
    return f"meterline_test_{_databases[0]}"


def start(tmp_path, clickhouse=None, database=None, db_path=None, **env):
    """A RunningServer (background threads off: tests ship with run_once),
    shipping to `database` of `clickhouse` (None: no ClickHouse)."""
    env = {"BILLING_MAX_EVENT_AGE_DAYS": "0", **env}
    if clickhouse is not None:
        env["BILLING_CLICKHOUSE_URL"] = clickhouse.url(database or fresh_database())
    return RunningServer(db_path or temp_db(tmp_path), env=env)


def database_of(server):
    return server.app.clickhouse.client.database


def rows(clickhouse, sql):
    """The rows of a query (FORMAT JSONCompact added), 64-bit integers as text."""
    return json.loads(clickhouse.query(sql + " FORMAT JSONCompact"))["data"]


def live_ids(clickhouse, database):
    """[(customer_id, event_id)] of the events ClickHouse reads as stored (FINAL, no tombstones)."""
    return sorted((int(c), e) for c, e in rows(clickhouse, f"SELECT customer_id, event_id FROM (SELECT customer_id,"
                                                            f" event_id, deleted FROM {database}.events FINAL)"
                                                            f" WHERE deleted = 0"))


def node_ids(server):
    return sorted((r["customer_id"], r["event_id"]) for r in server.app.db.rows(
        "SELECT customer_id, event_id FROM events"))


def ingest(server, customer_id, meter, count, start=0, prefix="e", ts="2025-01-10T10:00:00Z", **extra):
    events = [{"id": f"{prefix}{i}", "customer_id": customer_id, "meter": meter, "quantity": 1 + i % 5,
               "timestamp": ts, **extra} for i in range(start, start + count)]
    reply = server.admin.post("/v1/events/batch", {"events": events})
    assert reply.status == 200, reply
    return reply.json


def calls_customer(server, count):
    """A new customer with `count` events of a new sum meter `calls` (ids e0…); its id."""
    customer = make_customer(server.admin)
    create_meter(server.admin, "calls")
    ingest(server, customer, "calls", count)
    return customer


@contextlib.contextmanager
def caught_up(tmp_path, db_path, url):
    """A server on the database at `db_path`, shipping to `url`, with nothing
    left to ship; stopped afterwards."""
    server = start(tmp_path, db_path=db_path, BILLING_CLICKHOUSE_URL=url)
    try:
        server.app.shipper.run_once()
        yield server
    finally:
        server.stop()
