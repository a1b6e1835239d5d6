"""The archive pass (§13 "Raw event retention"): with
BILLING_EVENT_RETENTION_DAYS set, the scheduler moves raw events of invoiced
periods older than that into the archive files (billing/store/archive_files.py);
every figure stays exact from the rollups (billing/store/archive.py).

Which events move. An event moves when all of these hold:

- it is older than the retention: stamped before the 15-minute bucket that
  holds now − BILLING_EVENT_RETENTION_DAYS;
- its customer's subscription period holding it is invoiced: it lies in the
  whole 15-minute buckets of the period of an invoice `issued` or `paid`, and
  in no period whose invoice is a `draft` or `pending_approval` (a draft may
  still be re-rated, a retraction still allowed). A bucket that a period
  boundary cuts is never moved, so an invoice's range never reads archived
  raw events; events outside every subscription's invoiced periods stay;
- it is not a late event whose adjustment is still owed (the customer's
  pending adjustments are found from its stored late events);
- its meter is not being regrouped (a regroup reads raw events);
- its seq is at most `archive.limit_seq` (the newest event stays, and with
  ClickHouse configured every event not shipped there yet).

How. Events are read in the order of the time index (by 15-minute bucket,
then as stored) on a reader, a batch at a time; each
batch's events of one UTC month are one slice: their buckets are marked
archived (short transactions, which also leave out meters that started a
regroup meanwhile), the slice is appended to the month's file as one gzip
member and fsynced, the manifest records it, and only then are the events
deleted, DELETE_CHUNK per writer transaction, so no request waits on the
pass. A pass first finishes what a crash left (billing/store/archive_files.py)
and forgets archived ids past the lateness window.

Interval runs archive at most once every EVERY_S seconds (a pass re-reads the
old events it keeps), a run started by hand (POST /v1/jobs/run) always; a
pass starts no batch after BUDGET_S seconds (`archive_more` in the job's
details: the next run goes on from the last event it read, so the old events
that stay never hold back the ones after them; a pass that reached the end
starts the next from the beginning).
"""

import bisect
import time

from ..api import adjustments
from ..api.common import now_micros
from ..store import archive, archive_files, event_time
from ..store.db import named
from ..store.rollups import BUCKET_US

DAY_US = 86_400 * 1_000_000
BATCH = 2_000     # events read per batch: a slice holds at most that many
# after each write transaction and each slice's file the pass pauses this long,
# so its Python work comes in short bursts: a thread waiting for the writer
# or for the interpreter never queues behind a long run of it
PAUSE_S = 0.01
PACE_S = 0.002  # between pieces of a batch's Python work (checking, encoding: a few ms each)


def _pace():
    time.sleep(PACE_S)
EVERY_S = 3_600   # interval runs archive at most this often
BUDGET_S = 20     # a pass starts no batch after this many seconds
# in the order of the time index (billing/store/event_time.py: the bucket, then seq, its rowid): a
# batch walks the index on from the last one, reading only its own rows (never sorting the older
# events left); the cutoff is a bucket's start. The place (key, seq) is written out, not as a row
# value: SQLite bounds an index by a row value only when it starts with a column, not an expression.
_READ = (f"SELECT {', '.join(archive_files.COLUMNS)} FROM events WHERE {event_time.BEFORE}"
         f" AND seq <= ? AND {event_time.KEY} >= ? AND ({event_time.KEY} > ? OR seq > ?)"
         f" ORDER BY {event_time.KEY}, seq LIMIT ?")
_PERIODS = ("SELECT customer_id, period_start, period_end, status FROM invoices WHERE subscription_id IS NOT NULL"
            " AND period_start < ? AND status IN ('draft', 'pending_approval', 'issued', 'paid')")


def _floor(us):
    return us - us % BUCKET_US


def _ceil(us):
    return -(-us // BUCKET_US) * BUCKET_US


def _union(spans):
    merged = []
    for low, high in sorted(s for s in spans if s[0] < s[1]):
        if merged and low <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return merged


def _subtract(spans, holes):
    """The parts of the sorted disjoint `spans` outside the sorted disjoint `holes`."""
    found = []
    for low, high in spans:
        for hole_low, hole_high in holes:
            if hole_high <= low or hole_low >= high:
                continue
            if hole_low > low:
                found.append((low, hole_low))
            low = max(low, hole_high)
        if low < high:
            found.append((low, high))
    return found


def archivable(conn, cutoff):
    """{customer id: sorted disjoint [(low, high)]}: the whole buckets before
    `cutoff` of periods invoiced (issued, paid), outside every period whose
    invoice is a draft or pending approval."""
    covered, blocked = {}, {}
    for row in named(conn, _PERIODS, (cutoff,)):
        start, end = row["period_start"], row["period_end"]
        if row["status"] in ("issued", "paid"):
            covered.setdefault(row["customer_id"], []).append((_ceil(start), min(_floor(end), cutoff)))
        else:
            blocked.setdefault(row["customer_id"], []).append((_floor(start), _ceil(end)))
    ranges = {}
    for customer_id, spans in covered.items():
        kept = _subtract(_union(spans), _union(blocked.get(customer_id, [])))
        if kept:
            ranges[customer_id] = kept
    return ranges


class Archiver:
    def __init__(self, app):
        self.app = app
        self.folder = app.config.archive_dir
        self._last = None  # time.monotonic() of the last pass that reached the end
        self._resume = None  # (time key, seq) read last by a pass out of time: the next one reads on from there

    def run(self, manual=False):
        """One pass (when due); returns what it did for the job's details."""
        if self.app.config.event_retention_days is None:
            return {}
        if not manual and self._last is not None and time.monotonic() - self._last < EVERY_S:
            return {"archive": "not due"}
        deadline = time.monotonic() + BUDGET_S
        manifest = archive_files.load_manifest(self.folder)
        details = {"archive_files": [], "events_archived": 0,
                   "events_recovered": self._recover(manifest), "archived_ids_forgotten": self._prune()}
        finished = self._archive(manifest, details, deadline)
        if finished:
            self._last = time.monotonic()
        else:
            details["archive_more"] = True  # the next run goes on
        return details

    def _write(self, fn, *args):
        """fn(conn, *args) in one short writer transaction, then a pause (PAUSE_S)."""
        with self.app.db.transaction() as conn:
            result = fn(conn, *args)
        time.sleep(PAUSE_S)
        return result

    def _remember_from(self):
        """Archived ids stamped from then on are kept for dedup (None: all, no lateness limit)."""
        age = self.app.config.max_event_age_days
        return now_micros() - age * DAY_US if age else None

    def _recover(self, manifest):
        """Finish the deletions a crash interrupted; returns the events deleted."""
        deleted = 0
        for entry in archive_files.recover(self.folder, manifest):
            seqs = [record["seq"] for record in archive_files.read_events(self.folder, entry, entry["pending_from"])]
            deleted += self._delete(seqs)
            archive_files.settled(self.folder, manifest, entry)
        return deleted

    def _prune(self):
        before, forgotten = self._remember_from(), 0
        if before is None:
            return 0
        while True:
            done = self._write(archive.prune, before)
            forgotten += done
            if done < archive.PRUNE_CHUNK:
                return forgotten

    def _delete(self, seqs):
        deleted, remember_from = 0, self._remember_from()
        for start in range(0, len(seqs), archive.DELETE_CHUNK):
            deleted += self._write(archive.delete_chunk, seqs[start:start + archive.DELETE_CHUNK], remember_from)
        return deleted

    def _archive(self, manifest, details, deadline):
        """Archive batch after batch; True when the pass reached the end."""
        now = now_micros()
        cutoff = _floor(now - self.app.config.event_retention_days * DAY_US)
        with self.app.db.snapshot() as conn:
            ranges = archivable(conn, cutoff)
            limit = archive.limit_seq(conn, shipping=self.app.clickhouse is not None)
        if not ranges:
            self._resume = None
            return True
        place = self._resume or (event_time.key(min(spans[0][0] for spans in ranges.values())), 0)
        owes = {}  # customer id → whether it owes an adjustment (its late events stay)
        while time.monotonic() < deadline:
            with self.app.db.snapshot() as conn:
                rows = named(conn, _READ, (*event_time.before_params(cutoff), limit, place[0], *place,
                                           BATCH)).fetchall()
                chosen = []
                for start in range(0, len(rows), archive_files.PACE_ROWS):
                    chosen += [row for row in rows[start:start + archive_files.PACE_ROWS]
                               if self._eligible(conn, row, ranges, owes)]
                    _pace()
            if not rows:
                self._resume = None  # the next pass starts again from the first archivable bucket
                return True
            last = rows[-1]
            place = (event_time.key(last["ts"]), last["seq"])
            months = {}
            for row in chosen:
                months.setdefault(archive_files.month_of(row["ts"]), []).append(row)
            for month, slice_rows in sorted(months.items()):
                self._slice(manifest, month, slice_rows, details, now)
            self._resume = place
        return False

    def _eligible(self, conn, row, ranges, owes):
        spans = ranges.get(row["customer_id"])
        if spans is None:
            return False
        index = bisect.bisect_right(spans, (row["ts"], 2 ** 63)) - 1
        if index < 0 or row["ts"] >= spans[index][1]:
            return False
        if row["late"]:
            customer_id = row["customer_id"]
            if customer_id not in owes:
                owes[customer_id] = bool(adjustments.pending(self.app, conn, customer_id))
            return not owes[customer_id]
        return True

    def _slice(self, manifest, month, rows, details, now):
        """Mark, write, record, delete: one slice of one month."""
        kept = []
        for start in range(0, len(rows), archive.DELETE_CHUNK):
            kept += self._write(archive.mark, rows[start:start + archive.DELETE_CHUNK])
        if not kept:
            return
        entry = archive_files.append(self.folder, manifest, month, kept, now, pace=_pace)
        time.sleep(PAUSE_S)
        details["events_archived"] += self._delete([row["seq"] for row in kept])
        archive_files.settled(self.folder, manifest, entry)
        if entry["file"] not in details["archive_files"]:
            details["archive_files"].append(entry["file"])
