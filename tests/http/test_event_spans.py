"""Events are indexed by time only (§12 ingest); `event_spans` keeps, per
customer and meter, the count and the first and last timestamps of the
stored events. It answers "has events" (a meter's aggregation is frozen, a
customer cannot be deleted) and bounds the filtered event list — so these
must stay exactly right through batches, late inserts and retractions."""

import random
import sqlite3
from datetime import datetime, timedelta, timezone

from tests.http.helpers import assert_error, create_customer, create_meter, list_all

DAY_US = 86_400 * 1_000_000
START_US = 1_756_684_800_000_000  # 2025-09-01T00:00:00Z


def iso(us):
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


def spans(server):
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        stored = conn.execute("SELECT customer_id, meter_id, n, first_ts, last_ts FROM event_spans"
                              " ORDER BY 1, 2").fetchall()
        truth = conn.execute("SELECT customer_id, meter_id, count(*), min(ts), max(ts) FROM events"
                             " GROUP BY customer_id, meter_id ORDER BY 1, 2").fetchall()
    finally:
        conn.close()
    return stored, truth


def test_spans_follow_every_batch_and_the_filtered_list_matches_a_full_scan(server, admin):
    rng = random.Random(5)
    customers = [create_customer(admin, name=f"C{i}")["id"] for i in range(3)]
    for key in ("m_a", "m_b"):
        create_meter(admin, key=key, aggregation="sum", filter={"tier": "hot"})
    for batch in range(6):
        events = [{"id": f"b{batch}-{i}", "customer_id": rng.choice(customers), "meter": rng.choice(["m_a", "m_b"]),
                   "timestamp": iso(START_US + rng.randrange(40 * DAY_US)),
                   "properties": {"tier": rng.choice(["hot", "cold"])}} for i in range(rng.randrange(1, 40))]
        events += events[:2]  # resent within the batch: duplicates add nothing
        assert admin.post("/v1/events/batch", {"events": events}).status == 200
        stored, truth = spans(server)
        assert stored == truth
    everything = list_all(admin, "/v1/events?limit=7")
    for cid in customers:
        for query in (f"customer_id={cid}", f"customer_id={cid}&meter=m_a", "meter=m_b"):
            listed = list_all(admin, f"/v1/events?{query}&limit=5")
            want = [e for e in everything
                    if ("customer_id" not in query or e["customer_id"] == cid)
                    and ("meter=" not in query or e["meter"] == query.rsplit("=", 1)[1])]
            assert [e["id"] for e in listed] == [e["id"] for e in want]
    newcomer = create_customer(admin, name="Quiet")["id"]
    assert admin.get(f"/v1/events?customer_id={newcomer}").json["data"] == []


def test_retracting_every_event_frees_the_meter_and_the_customer(server, admin):
    cid = create_customer(admin, name="Once")["id"]
    create_meter(admin, key="gone", aggregation="sum")
    for i, day in enumerate((3, 9)):
        reply = admin.post("/v1/events", {"id": f"e{i}", "customer_id": cid, "meter": "gone",
                                          "timestamp": iso(START_US + day * DAY_US)})
        assert reply.status == 201, reply
    assert_error(admin.patch("/v1/meters/gone", {"aggregation": "max"}), 409, "conflict")
    assert admin.delete(f"/v1/customers/{cid}/events/e0").status == 200
    stored, truth = spans(server)
    ((_, _, count, _, last_ts),), ((_, _, _, _, true_last_ts),) = stored, truth
    assert count == 1 and last_ts == true_last_ts  # the earlier event went; the later one is the last
    assert_error(admin.delete(f"/v1/customers/{cid}"), 409, "conflict")  # one event is left
    assert admin.delete(f"/v1/customers/{cid}/events/e1").status == 200
    assert spans(server) == ([], [])
    assert admin.patch("/v1/meters/gone", {"aggregation": "max"}).status == 200
    assert admin.delete(f"/v1/customers/{cid}").status in (200, 204)
