"""Deduplication through the tail and the runs (billing/store/event_ids.py,
billing/store/event_id_runs.py): new events are the tail, settling passes
turn the tail into runs, merges turn runs into larger ones, a range at a
time. Wherever an id's entry is — or while a merge is half done, with
events arriving between its ranges — a resent id is a duplicate, across
restarts, and a retracted id may be sent again."""

import random
import sqlite3

from billing.store import event_id_runs, event_ids
from tests.harness import RunningServer, temp_db
from tests.http.helpers import WriteCounter, create_customer, create_meter, event_count, post_event

ENV = {"BILLING_MAX_EVENT_AGE_DAYS": "0"}


def index(server):
    """(entries of listed runs, the tail's entries, stored events) as sets of (id_hash, seq)."""
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        mark = event_ids.mark(conn)
        runs = set(conn.execute("SELECT id_hash, seq FROM event_id_runs WHERE run IN"
                                " (SELECT run FROM event_id_run_list)"))
        stored = set(conn.execute("SELECT id_hash, seq FROM events"))
        return runs, {pair for pair in stored if pair[1] > mark}, stored
    finally:
        conn.close()


def assert_every_event_indexed_once(server):
    runs, tail, stored = index(server)
    assert not runs & tail
    assert runs | tail == stored


def send(client, cid, ids):
    reply = client.post("/v1/events/batch", {"events": [{"id": i, "customer_id": cid, "meter": "api_calls",
                                                         "timestamp": "2025-09-10T10:00:00Z"} for i in ids]})
    assert reply.status == 200, reply
    return reply.json


def test_a_resent_id_is_a_duplicate_in_the_tail_a_run_or_a_merge_half_done_and_after_a_restart(tmp_path):
    path = temp_db(tmp_path)
    server = RunningServer(path, env=ENV)
    try:
        cid = create_customer(server.admin)["id"]
        create_meter(server.admin)
        settled = []
        for n in range(4):  # four runs of one tier: a merge is due
            ids = [f"s{n}-{i}" for i in range(75)]
            assert send(server.admin, cid, ids) == {"accepted": 75, "duplicates": 0}
            assert server.app.settler.settle_ids(force=True) == 75
            settled += ids
        runs, tail, _ = index(server)
        assert not tail and len(runs) == 300
        fresh = [f"h{i}" for i in range(200)]
        assert send(server.admin, cid, fresh + settled[:50]) == {"accepted": 200, "duplicates": 50}
        # a merge in ranges of about 37 entries, with new events and resends arriving between them
        rng, arrived, steps = random.Random(3), [], 0
        while True:
            with server.app.db.transaction() as conn:
                if not event_id_runs.merge_step(conn, 37):
                    break
            steps += 1
            batch = [f"m{len(arrived) + i}" for i in range(5)]
            again = rng.sample(settled + fresh + arrived, 10)
            assert send(server.admin, cid, batch + again) == {"accepted": 5, "duplicates": 10}
            arrived += batch
            assert_every_event_indexed_once(server)
        assert steps >= 5
        runs, tail, _ = index(server)
        assert len(runs) == 300 and len(tail) == 200 + len(arrived)  # what arrived meanwhile is the tail
    finally:
        server.stop()
    again = RunningServer(path, env=ENV)
    try:
        everything = settled + fresh + arrived
        assert send(again.admin, cid, everything) == {"accepted": 0, "duplicates": len(everything)}
        single = post_event(again.admin, id=fresh[0], customer_id=cid, meter="api_calls", quantity=9)
        assert single.status == 200 and single.json["duplicate"] is True
        single = post_event(again.admin, id=settled[0], customer_id=cid, meter="api_calls", quantity=9)
        assert single.status == 200 and single.json["duplicate"] is True
        assert event_count(again) == len(everything)
        assert_every_event_indexed_once(again)
    finally:
        again.stop()


def test_a_retracted_id_may_be_sent_again_from_a_run_or_the_tail(server, admin):
    cid = create_customer(admin)["id"]
    create_meter(admin)
    send(admin, cid, ["old"])
    server.app.settler.settle_ids(force=True)
    send(admin, cid, ["new"])
    for event_id in ("old", "new"):
        assert admin.delete(f"/v1/customers/{cid}/events/{event_id}").status == 200
        assert_every_event_indexed_once(server)
        assert send(admin, cid, [event_id]) == {"accepted": 1, "duplicates": 0}
        assert send(admin, cid, [event_id]) == {"accepted": 0, "duplicates": 1}
        assert_every_event_indexed_once(server)
    assert event_count(server) == 2


def test_the_background_pass_starts_once_enough_events_wait_and_merges_follow(server, admin):
    cid = create_customer(admin)["id"]
    create_meter(admin)
    settler = server.app.settler
    settler.ids_at, settler.run_seqs, settler.merge_chunk = 40, 10, 7
    send(admin, cid, [f"a{i}" for i in range(39)])
    assert settler.settle_ids() == 0  # 39 events wait
    assert len(index(server)[1]) == 39
    send(admin, cid, ["a39"])
    settler.flush()  # as the background flusher calls it: four runs of ten, then their merge
    runs, tail, _ = index(server)
    assert not tail and len(runs) == 40
    with server.app.db.reader() as conn:
        assert conn.execute("SELECT entries FROM event_id_run_list WHERE run != 0").fetchall() == [(40,)]
    assert_every_event_indexed_once(server)
    assert send(admin, cid, [f"a{i}" for i in range(40)]) == {"accepted": 0, "duplicates": 40}


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
