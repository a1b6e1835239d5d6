"""Deduplication in two parts (billing/store/event_ids.py): new ids go to a
small hot table, a settling pass moves them into the settled one in hash
order, chunk by chunk. Whichever part holds an id — or while a pass is half
done, with events arriving between its chunks — a resent id is a duplicate,
across restarts, and a retracted id may be sent again."""

import random
import sqlite3

from billing.store import event_ids
from tests.harness import RunningServer, temp_db
from tests.http.helpers import WriteCounter, create_customer, create_meter, event_count, post_event

ENV = {"BILLING_MAX_EVENT_AGE_DAYS": "0"}


def parts(server):
    """(hot, settled, events) as sets of (id_hash, seq)."""
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        return tuple({tuple(r) for r in conn.execute(f"SELECT id_hash, seq FROM {table}")}
                     for table in ("event_ids_hot", "event_ids", "events"))
    finally:
        conn.close()


def assert_every_event_indexed_once(server):
    hot, settled, stored = parts(server)
    assert not hot & settled
    assert hot | settled == stored


def send(client, cid, ids):
    reply = client.post("/v1/events/batch", {"events": [{"id": i, "customer_id": cid, "meter": "api_calls",
                                                         "timestamp": "2025-09-10T10:00:00Z"} for i in ids]})
    assert reply.status == 200, reply
    return reply.json


def test_a_resent_id_is_a_duplicate_in_either_part_during_a_pass_and_after_a_restart(tmp_path):
    path = temp_db(tmp_path)
    server = RunningServer(path, env=ENV)
    try:
        cid = create_customer(server.admin)["id"]
        create_meter(server.admin)
        settled = [f"s{i}" for i in range(300)]
        assert send(server.admin, cid, settled) == {"accepted": 300, "duplicates": 0}
        assert server.app.settler.settle_ids(force=True) == 300
        hot, done, _ = parts(server)
        assert not hot and len(done) == 300
        fresh = [f"h{i}" for i in range(200)]
        assert send(server.admin, cid, fresh + settled[:50]) == {"accepted": 200, "duplicates": 50}
        # a pass in chunks of 37, with new events and resends arriving between its chunks
        rng, key, arrived = random.Random(3), None, []
        while True:
            with server.app.db.transaction() as conn:
                key = event_ids.settle_chunk(conn, key, 37)
            batch = [f"m{len(arrived) + i}" for i in range(5)]
            again = rng.sample(settled + fresh + arrived, 10)
            assert send(server.admin, cid, batch + again) == {"accepted": 5, "duplicates": 10}
            arrived += batch
            assert_every_event_indexed_once(server)
            if key is None:
                break
        hot, done, _ = parts(server)
        assert hot and done  # what arrived behind the pass waits in the hot part
    finally:
        server.stop()
    again = RunningServer(path, env=ENV)
    try:
        everything = settled + fresh + arrived
        assert send(again.admin, cid, everything) == {"accepted": 0, "duplicates": len(everything)}
        single = post_event(again.admin, id=fresh[0], customer_id=cid, meter="api_calls", quantity=9)
        assert single.status == 200 and single.json["duplicate"] is True
        assert event_count(again) == len(everything)
        assert_every_event_indexed_once(again)
    finally:
        again.stop()


def test_a_retracted_id_may_be_sent_again_from_either_part(server, admin):
    cid = create_customer(admin)["id"]
    create_meter(admin)
    send(admin, cid, ["old"])
    server.app.settler.settle_ids(force=True)
    send(admin, cid, ["new"])
    for event_id in ("old", "new"):
        assert admin.delete(f"/v1/customers/{cid}/events/{event_id}").status == 200
        assert_every_event_indexed_once(server)
        assert send(admin, cid, [event_id]) == {"accepted": 1, "duplicates": 0}
        assert_every_event_indexed_once(server)
    assert event_count(server) == 2


def test_the_background_pass_starts_once_enough_entries_wait(server, admin):
    cid = create_customer(admin)["id"]
    create_meter(admin)
    settler = server.app.settler
    settler.ids_at, settler.ids_chunk = 40, 9
    send(admin, cid, [f"a{i}" for i in range(39)])
    assert settler.settle_ids() == 0  # 39 entries wait
    assert len(parts(server)[0]) == 39
    send(admin, cid, ["a39"])
    settler.flush()  # as the background flusher calls it
    hot, settled, _ = parts(server)
    assert not hot and len(settled) == 40
    assert_every_event_indexed_once(server)


def test_the_settler_writes_nothing_when_nothing_is_due(server, admin):
    """Every few seconds the flusher asks the settler: with no hot bucket older
    than an hour and too few dedup entries waiting, it starts no write."""
    cid = create_customer(admin)["id"]
    create_meter(admin)
    send(admin, cid, ["fresh"])  # its bucket (2025-09-10) is long past: it settles
    assert server.app.settler.flush() > 0
    with WriteCounter(server) as writes:
        assert server.app.settler.flush() == 0
    assert writes == []
