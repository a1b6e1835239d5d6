"""Settling what ingest leaves to later (billing/store/rollups.py,
billing/store/event_ids.py, billing/store/event_id_runs.py): every few
seconds, with the other background flushes, buckets older than an hour move
from the hot rollup tables to the settled ones; once the dedup index's tail
holds enough events, it becomes new runs; and runs due for a merge are
merged, at most MERGE_STEPS ranges a flush (a merge goes on at the next) —
each chunk in its own short writer transaction, so no request waits long
for the writer."""

from ..api.common import now_micros
from ..store import event_id_runs, rollups

SETTLE_IDS_AT = 50_000  # events in the dedup tail that start a settling pass
MERGE_STEPS = 300       # merge ranges per flush: about 1.5 M entries, a few seconds of writer time at most


class Settler:
    def __init__(self, db, chunk=rollups.SETTLE_CHUNK, ids_at=SETTLE_IDS_AT, run_seqs=event_id_runs.RUN_SEQS,
                 merge_chunk=event_id_runs.MERGE_CHUNK, merge_steps=MERGE_STEPS):
        self.db = db
        self.chunk = chunk
        self.ids_at, self.run_seqs = ids_at, run_seqs
        self.merge_chunk, self.merge_steps = merge_chunk, merge_steps

    def flush(self):
        """Settle and merge what is due; returns the rollup rows and tail
        seqs moved and the merge ranges done. A step that fails keeps none of
        the others from running (the dedup tail in memory shrinks only when
        a pass settles it); the first failure is raised afterwards."""
        done, failure = 0, None
        for step in (self.settle_rollups, self.settle_ids, self.merge_runs):
            try:
                done += step()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return done

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
        """Turn the dedup tail into runs of `run_seqs` seqs, once it holds
        `ids_at` events; returns the seqs moved. Only whole runs (but with
        `force`): the rest waits for the next flush, so that the runs a
        merge takes are full and the merged run moves up a tier (a short
        last run would keep a merge of four in the tier below, to be merged
        again)."""
        with self.db.reader() as conn:
            waiting = event_id_runs.tail_size(conn)
        if not waiting or (waiting < self.ids_at and not force):
            return 0
        settled = 0
        while force or waiting >= self.run_seqs:
            with self.db.transaction() as conn:
                moved = event_id_runs.settle(conn, self.run_seqs)
            settled += moved
            if moved < self.run_seqs:
                break
            with self.db.reader() as conn:
                waiting = event_id_runs.tail_size(conn)
        return settled

    def merge_runs(self):
        """Up to `merge_steps` ranges of the due merges; returns how many were done."""
        with self.db.reader() as conn:
            if not event_id_runs.merge_due(conn):
                return 0  # no write transaction at all
        for step in range(self.merge_steps):
            with self.db.transaction() as conn:
                if not event_id_runs.merge_step(conn, self.merge_chunk):
                    return step
        return self.merge_steps
