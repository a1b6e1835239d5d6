"""A figure made of several rollup reads (usage, analytics) is read from one
snapshot: a bucket that the settler moves from the hot tables to the settled
ones between two of those reads is counted once, never missed and never twice."""

from decimal import Decimal

from billing import clock
from billing.store import rollups
from billing.domain import times
from tests.http.helpers import pin
from tests.http.test_usage import meter, send, setup_customer


class SettlesMidRead:
    """A reader connection that, right after its first read of the day rows,
    lets the settler move every hot bucket (committed on the writer)."""

    def __init__(self, conn, app):
        self._conn, self._app = conn, app
        self.settled = 0

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def execute(self, sql, params=()):
        cursor = self._conn.execute(sql, params)
        if "rollup_days" in sql and not self.settled:
            rows = cursor.fetchall()  # this read is done; the next ones come after the settle
            self.settled = self._app.settler.settle_rollups()
            return iter(rows) if "json_each" in sql else _Rows(rows)
        return cursor


class _Rows(list):
    def fetchone(self):
        return self[0] if self else None

    def fetchall(self):
        return list(self)


def settling_readers(app):
    """Swap every pooled reader for a SettlesMidRead around it."""
    wrapped = []
    while not app.db._readers.empty():
        wrapped.append(SettlesMidRead(app.db._readers.get_nowait(), app))
    for conn in wrapped:
        app.db._readers.put(conn)
    return wrapped


def test_a_bucket_settled_between_two_reads_of_one_figure_is_counted_once(server, admin):
    pin("2025-11-25T00:00:00Z")
    customer_id = setup_customer(admin)
    meter(admin, "calls", "sum")
    readers = settling_readers(server.app)
    total = 0
    for number, query in enumerate((f"/v1/customers/{customer_id}/usage?meter=calls&from=2025-11-20&to=2025-11-21",
                                    f"/v1/customers/{customer_id}/usage?meter=calls&from=2025-11-01&to=2025-11-25&window=day",
                                    "/v1/analytics/usage?meter=calls&from=2025-11-01&to=2025-11-25&interval=day")):
        # two more events in buckets old enough to settle: hot until the read below settles them
        send(admin, customer_id, [{"meter": "calls", "quantity": 3, "timestamp": f"2025-11-20T1{number}:00:00Z"},
                                  {"meter": "calls", "quantity": 4, "timestamp": f"2025-11-20T1{number}:30:00Z"}])
        total += 7
        with server.app.db.reader() as conn:
            assert rollups.has_settling(conn, rollups.settle_before(times.to_micros(clock.now())))
        for reader in readers:
            reader.settled = 0
        reply = admin.get(query)
        assert reply.status == 200, reply
        if "analytics" in query:
            assert reply.json["value"] == Decimal(total), query
        else:
            (usage,) = reply.json["usage"]
            assert usage["value"] == Decimal(total), query
            if "window" in query:
                assert [w["value"] for w in usage["windows"] if w["value"]] == [Decimal(total)]
        assert sum(reader.settled for reader in readers) > 0, "nothing was settled between the reads"
        with server.app.db.reader() as conn:
            assert not rollups.has_settling(conn, rollups.settle_before(times.to_micros(clock.now())))
