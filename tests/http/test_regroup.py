"""No stalls behind a regroup (§12, §13): adding a group_by key to a meter
that has events regroups its rollups in short writer transactions of a
bounded number of rows, while events keep arriving, and every usage figure
(with and without group_by, in windows, across customers) equals the raw
events before, during and after."""

import random
import sqlite3
import threading
import time

from billing.store import regroup as store_regroup, rollups
from tests.http.helpers import RowsPerTransaction, pin
from tests.http.test_rollups import (HOT, METERS, ZONES, check_analytics, check_usage, iso, make_meters,
                                     random_bound, random_event, reference, stored)

# keys added to meters with and without group_by, of every aggregation kind
ADDED = {"r_sum": ["region", "zone"], "r_count": ["region"], "r_users": ["region", "zone"],
         "r_latest": ["region", "tier"], "r_min": ["tier"]}
CHUNK = 40  # events per regroup transaction in these tests


def _group_by():
    return {m["key"]: m.get("group_by", []) for m in METERS} | ADDED


def _customers(admin):
    return [admin.post("/v1/customers", {"name": zone, "email": f"g{i}@example.com", "timezone": zone}).json["id"]
            for i, zone in enumerate(ZONES)]


def _load(admin, rng, cids, batches, size):
    for _ in range(batches):
        batch = [random_event(rng, rng.choice(cids), []) for _ in range(size)]
        for event in batch:  # crowded buckets from September to late November
            event["timestamp"] = iso(random_bound(rng))
        assert admin.post("/v1/events/batch", {"events": batch}).status == 200


def _check_some(admin, db_path, rng, cids, group_by, count):
    """`count` random usage figures (and one analytics figure) against the raw events."""
    for _ in range(count):
        cid, key = rng.choice(cids), rng.choice(sorted(group_by))
        low, high = sorted([random_bound(rng), random_bound(rng)])
        if low == high:
            continue
        window = rng.choice([None, "day", "month"] + (["hour"] if high - low < 4 * 86_400 * 10 ** 6 else []))
        query = f"from={iso(low)}&to={iso(high)}" + (f"&window={window}" if window else "")
        check_usage(admin, db_path, cid, key, query, rng.choice([None, *group_by[key]]))
    key = rng.choice(sorted(group_by))
    check_analytics(admin, db_path, key, "from=2025-09-01T00:00:00Z&to=2025-11-25T00:00:00Z&interval=day"
                    f"&timezone={rng.choice(ZONES)}", rng.choice([None, "customer", *group_by[key]]))


class Ingest:
    """A thread posting random single events until stopped; holding `paused`
    keeps it between two posts."""

    def __init__(self, server, cids):
        self.client = server.client(server.admin.token)
        self.rng, self.cids = random.Random(99), cids
        self.acked, self.errors = 0, []
        self.paused = threading.Lock()
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self._stop.is_set():
            with self.paused:
                event = random_event(self.rng, self.rng.choice(self.cids), [])
                event["timestamp"] = iso(random_bound(self.rng))
                reply = self.client.post("/v1/events", event)
            with self.changed:
                if reply.status in (200, 201):
                    self.acked += 1
                else:
                    self.errors.append(reply)
                self.changed.notify_all()

    def wait_for_more(self, count, timeout=20):
        with self.changed:
            wanted = self.acked + count
            return self.changed.wait_for(lambda: self.acked >= wanted, timeout)

    def stop(self):
        self._stop.set()
        self.thread.join(30)
        self.client.close()


def _regrouping(db_path):
    conn = sqlite3.connect(db_path)
    try:
        return {meter_id for (meter_id,) in conn.execute("SELECT meter_id FROM rollup_regroups")}
    finally:
        conn.close()


def _generations(db_path):
    """{meter key: generation} of the meters regrouped past their first generation."""
    conn = sqlite3.connect(db_path)
    try:
        return dict(conn.execute("SELECT m.key, r.generation FROM rollup_regroups r JOIN meters m ON m.id = r.meter_id"
                                 " WHERE r.generation > 1"))
    finally:
        conn.close()


def test_usage_stays_exact_while_meters_are_regrouped_under_ingest(server, admin):
    rng = random.Random(1415)
    pin("2025-11-25T00:00:00Z")
    make_meters(admin)
    cids = _customers(admin)
    _load(admin, rng, cids, 6, 250)
    db_path = server.app.config.db_path
    for key, keys in ADDED.items():
        reply = admin.patch(f"/v1/meters/{key}", {"group_by": keys})
        assert reply.status == 200 and reply.json["group_by"] == keys, reply
    assert len(_regrouping(db_path)) == len(ADDED)
    group_by = _group_by()
    _check_some(admin, db_path, rng, cids, group_by, 12)  # before the first chunk: new keys read raw

    ingest = Ingest(server, cids)
    chunks = []

    def between_chunks():
        chunks.append(len(_regrouping(db_path)))
        with ingest.paused:  # a still moment: each figure against the raw events
            _check_some(admin, db_path, rng, cids, group_by, 2)
            if len(chunks) == 2:  # a key added while the meter is regrouped: it starts over
                assert admin.patch("/v1/meters/r_sum", {"group_by": ["region", "zone", "tier"]}).status == 200
                group_by["r_sum"] = ["region", "zone", "tier"]
                assert _generations(db_path) == {"r_sum": 2}
        assert ingest.wait_for_more(2), "no event was stored between two chunks"

    try:
        done = store_regroup.regroup(server.app.db, chunk=CHUNK, between_chunks=between_chunks)
        assert ingest.wait_for_more(3)
    finally:
        ingest.stop()
    assert not ingest.errors, ingest.errors[:3]
    assert done == len(chunks) > 20 and chunks[-1] == 0 and _regrouping(db_path) == set()
    assert ingest.acked >= 2 * len(chunks)
    assert stored(db_path) == reference(db_path)  # every bucket as if the keys had always been there
    _check_some(admin, db_path, rng, cids, group_by, 20)


def test_no_transaction_of_a_regroup_changes_more_than_its_chunk(server, admin):
    """Thousands of events over many buckets: the PATCH marks the meter only,
    and each regroup transaction changes at most 4 rows per event of its chunk
    (a bucket row and a counted value deleted, then written again) — while a
    regroup stopped halfway resumes where it stopped."""
    rng = random.Random(7)
    pin("2025-11-25T00:00:00Z")
    assert admin.post("/v1/meters", {"key": "users", "name": "Users", "aggregation": "unique_count",
                                     "value_property": "user"}).status == 201
    cids = _customers(admin)[:2]
    events = [{"customer_id": rng.choice(cids), "meter": "users", "timestamp": iso(rng.choice(HOT) + n % 900),
               "properties": {"user": f"u{n % 97}", "region": rng.choice(["eu", "us", "ap"])}} for n in range(3000)]
    assert admin.post("/v1/events/batch", {"events": events}).status == 200
    db, db_path = server.app.db, server.app.config.db_path
    with RowsPerTransaction(server) as counts:
        assert admin.patch("/v1/meters/users", {"group_by": ["region"]}).status == 200
        patch = list(counts)
        assert max(patch) <= 3  # the meter, its regroup mark, the audit entry
        halves = []
        assert store_regroup.regroup(db, chunk=CHUNK, stop=lambda: len(halves) >= 10,
                               between_chunks=lambda: halves.append(1)) == 10
        assert _regrouping(db_path)  # stopped: the place is kept
        rest = store_regroup.regroup(db, chunk=CHUNK)
    regroup = counts[len(patch):]
    assert len(regroup) == 10 + rest and rest > 3000 // CHUNK // 2
    assert max(regroup) <= 4 * CHUNK + 1, max(regroup)
    assert sum(regroup) > 3000  # every event regrouped
    assert _regrouping(db_path) == set() and stored(db_path) == reference(db_path)


def _place(db_path):
    """The bucket the regroup of the only meter regrouping has reached (None: finished)."""
    conn = sqlite3.connect(db_path)
    try:
        found = conn.execute("SELECT bucket FROM rollup_regroups").fetchall()
        return next((bucket for (bucket,) in found), None)
    finally:
        conn.close()


def _events_between(db_path, low, high):
    conn = sqlite3.connect(db_path)
    try:
        (count,) = conn.execute("SELECT count(*) FROM events WHERE ts >= ? AND ts < ?", (low, high)).fetchone()
        return count
    finally:
        conn.close()


def test_a_bucket_fuller_than_a_chunk_is_regrouped_alone(server, admin):
    """One customer's bucket holding more events than a chunk is the smallest
    unit: it takes a transaction of its own, and the ranges around it hold at
    most a chunk of events each."""
    pin("2025-11-25T00:00:00Z")
    assert admin.post("/v1/meters", {"key": "r_max", "name": "Calls", "aggregation": "max"}).status == 201
    cid = _customers(admin)[0]
    full = [{"customer_id": cid, "meter": "r_max", "quantity": n, "timestamp": iso(HOT[5] + n),
             "properties": {"route": f"/r{n % 3}"}} for n in range(3 * CHUNK)]
    around = [{"customer_id": cid, "meter": "r_max", "quantity": n, "timestamp": iso(HOT[(n % 10) * 4]),
               "properties": {"route": f"/r{n % 5}"}} for n in range(2 * CHUNK)]
    assert admin.post("/v1/events/batch", {"events": full + around}).status == 200
    assert admin.patch("/v1/meters/r_max", {"group_by": ["route"]}).status == 200
    db_path = server.app.config.db_path
    places = [store_regroup.FIRST]
    assert store_regroup.regroup(server.app.db, chunk=CHUNK, between_chunks=lambda: places.append(_place(db_path))) == 4
    places[-1] = store_regroup.PAST
    chunks = [_events_between(db_path, low, high) for low, high in zip(places, places[1:])]
    assert chunks == [16, 3 * CHUNK, CHUNK, 24] and places[2] - places[1] == rollups.BUCKET_US
    assert stored(db_path) == reference(db_path)
    check_usage(admin, db_path, cid, "r_max", "from=2025-09-01&to=2025-11-25&window=day", "route")


def test_a_running_scheduler_regroups_on_a_thread_of_its_own(server, admin):
    """With the scheduler running, a run wakes the regroup thread and returns
    (a long regroup holds back no run); the thread regroups to the end."""
    rng = random.Random(3)
    pin("2025-11-25T00:00:00Z")
    make_meters(admin)
    cids = _customers(admin)
    _load(admin, rng, cids, 2, 200)
    assert admin.patch("/v1/meters/r_sum", {"group_by": ["region", "zone"]}).status == 200
    db_path = server.app.config.db_path
    scheduler = server.app.scheduler
    scheduler.start()
    try:
        run = admin.post("/v1/jobs/run", {}).json
        assert run["outcome"] == "ok" and run["details"]["regroup"] == "woken"
        for _ in range(2000):  # the thread's progress, polled (no fixed wait)
            if not _regrouping(db_path):
                break
            time.sleep(0.01)
        assert _regrouping(db_path) == set()
    finally:
        scheduler.stop()
    assert stored(db_path) == reference(db_path)
    check_usage(admin, db_path, cids[0], "r_sum", "from=2025-09-01&to=2025-11-25&window=day", "zone")
