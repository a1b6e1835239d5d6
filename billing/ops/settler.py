"""Settling what every ingest commit writes into small hot tables
(billing/store/rollups.py, billing/store/event_ids.py): every few seconds,
with the other background flushes, buckets older than an hour move from the
hot rollup tables to the settled ones, and once the hot dedup table holds
enough entries they move to the settled one in hash order — each chunk in
its own short writer transaction, so the hot tables stay small and no
request waits long for the writer."""

from ..api.common import now_micros
from ..store import event_ids, rollups


class Settler:
    def __init__(self, db, chunk=rollups.SETTLE_CHUNK, ids_at=event_ids.SETTLE_AT, ids_chunk=event_ids.SETTLE_CHUNK):
        self.db = db
        self.chunk = chunk
        self.ids_at, self.ids_chunk = ids_at, ids_chunk

    def flush(self):
        """Settle what is due; returns the rollup rows and ids moved."""
        return self.settle_rollups() + self.settle_ids()

    def settle_rollups(self):
        before = rollups.settle_before(now_micros())
        with self.db.reader() as conn:
            if not rollups.has_settling(conn, before):
                return 0  # nothing due: no write transaction at all
        moved = 0
        while True:
            with self.db.transaction() as conn:
                count = rollups.settle(conn, before, self.chunk)
            moved += count
            if count < self.chunk:
                return moved

    def settle_ids(self, force=False):
        """One pass over the hot dedup entries, when there are enough of them
        (or any, with `force`); entries added behind the pass wait for the next."""
        with self.db.reader() as conn:
            waiting = event_ids.hot_count(conn)
        if not waiting or (waiting < self.ids_at and not force):
            return 0
        key = None
        while True:
            with self.db.transaction() as conn:
                key = event_ids.settle_chunk(conn, key, self.ids_chunk)
            if key is None:
                return waiting
