"""Archiving beside ClickHouse (§13): an archive pass never deletes an event
ClickHouse has not received, and ClickHouse keeps the archived events."""

import pytest

from tests.clickhouse.helpers import database_of, live_ids, start
from tests.http.helpers import assert_error, pin
from tests.http.test_archive import RETENTION, _archive, _stored, build, figures

from billing.api.clickhouse import ClickHouseError


def test_an_archive_pass_waits_for_shipping_and_clickhouse_keeps_the_history(tmp_path, clickhouse):
    server = start(tmp_path, clickhouse, **RETENTION)
    try:
        clickhouse.stop()  # nothing can be shipped
        cids = build(server.admin)
        before = figures(server.admin, cids)
        total = _stored(server)
        with pytest.raises(ClickHouseError):
            server.app.shipper.run_once()
        details = _archive(server.admin)
        assert details["events_archived"] == 0 and _stored(server) == total  # all of it waits to be shipped
        clickhouse.start()
        assert server.app.shipper.run_once() == total + 1  # every event and the one retraction's tombstone
        shipped = live_ids(clickhouse, database_of(server))
        assert len(shipped) == total
        details = _archive(server.admin)
        assert details["events_archived"] == 3 * 2 * 30 and _stored(server) == total - 180
        assert live_ids(clickhouse, database_of(server)) == shipped  # ClickHouse keeps the archived events
        assert figures(server.admin, cids) == before
        assert server.app.shipper.run_once() == 0  # archiving ships nothing: no tombstones for archived events
        # an edge inside a bucket with archived events: refused as the node refuses it, whoever would answer
        cut = server.admin.get("/v1/analytics/usage?meter=api_calls&from=2025-01-01&to=2025-01-11T09:10:00Z")
        assert_error(cut, 400, "validation_error")
        assert cut.json["error"]["details"][0]["field"] == "to"
    finally:
        server.stop()


def test_a_new_clickhouse_table_without_the_archived_events_does_not_answer_for_them(tmp_path, clickhouse):
    """Events archived before ClickHouse got its table (a new database, a lost
    table) are in no table there: usage over their time is the node's, and
    usage after them reads ClickHouse again."""
    path = tmp_path / "billing.db"
    server = start(tmp_path, clickhouse, db_path=str(path), **RETENTION)
    try:
        cids = build(server.admin)
        server.app.shipper.run_once()
        before = figures(server.admin, cids)
        assert _archive(server.admin)["events_archived"] == 180
    finally:
        server.stop()
    server = start(tmp_path, clickhouse, db_path=str(path), **RETENTION)  # another database: shipped again
    try:
        pin("2025-05-10T00:00:00Z")
        server.app.shipper.run_once()
        assert len(live_ids(clickhouse, database_of(server))) == _stored(server)
        assert figures(server.admin, cids) == before
        archived = server.admin.get("/v1/analytics/usage?meter=api_calls&from=2025-01-01&to=2025-05-01&interval=month")
        assert archived.headers["X-Served-By"] == "node"
        after = server.admin.get("/v1/analytics/usage?meter=api_calls&from=2025-04-01&to=2025-05-01&interval=month")
        assert after.headers["X-Served-By"] == "clickhouse"
    finally:
        server.stop()
