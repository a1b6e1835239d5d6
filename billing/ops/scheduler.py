"""The scheduler (§10): a thread in the server process that, every
BILLING_SCHEDULER_INTERVAL seconds, stops sessions past their resource's
maximum duration, drafts the periods that ended, issues the drafts whose
grace period has passed (to pending_approval when the customer requires
approval), evaluates alerts (budgets, rules, spikes, storage quotas), sends due
webhooks and e-mails, purges expired idempotency keys and the object files
deleted more than the grace period ago, and wakes the thread that regroups
the rollups of a meter that gained a group_by key (`store.regroup`), and,
with BILLING_EVENT_RETENTION_DAYS set, archives the raw events of invoiced
periods older than that (`ops.archiver`). Each run is recorded in the jobs table (`GET /v1/jobs`).

Runs never overlap inside the process (a second one is recorded as skipped),
and each step is safe against any other writer anyway: the invoice run checks
each draft's period again in the short transaction that writes it (over a
unique index), each issue re-reads the invoice's status inside its own
transaction, and each regroup chunk checks its place in its own. No step
holds the writer for long (§12): each writes in short transactions.
"""

import threading
from datetime import timedelta

from .. import clock, jsonutil
from ..api import alert_eval, invoices, jobs, lifecycle, sessions
from ..api.common import idempotency_horizon, now_micros
from ..domain import times
from ..errors import Conflict
from ..store import regroup
from ..store.db import named
from .archiver import Archiver



class Scheduler:
    def __init__(self, app):
        self.app = app
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._regrouper = None
        self._regroup_wake = threading.Event()
        self.archiver = Archiver(app)
        self.last_success = None  # unix seconds of the last run that ended "ok"

    def start(self):
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()
        self._regrouper = threading.Thread(target=self._regroup_loop, name="regroup", daemon=True)
        self._regrouper.start()

    def stop(self):
        self._stop.set()
        self._regroup_wake.set()
        for thread in (self._thread, self._regrouper):
            if thread is not None:
                thread.join(timeout=30)

    def _regroup_loop(self):
        """Regroup on a thread of its own, so a long regroup (minutes at 10 M
        events) holds back no run; each run wakes it."""
        while not self._stop.is_set():  # first: a regroup a restart interrupted goes on
            try:
                regroup.regroup(self.app.db, stop=self._stop.is_set)
            except Exception as exc:  # the next wake tries again from where it stopped
                self.app.log_exception("regroup", exc)
            self._regroup_wake.wait(self.app.config.scheduler_interval)
            self._regroup_wake.clear()

    def regroup(self):
        """The rollups of meters that gained a group_by key, regrouped in short
        transactions: by the regroup thread when it runs (woken), else here."""
        if self._regrouper is not None and self._regrouper.is_alive():
            self._regroup_wake.set()
            return {"regroup": "woken"}
        return {"regroup_chunks": regroup.regroup(self.app.db, stop=self._stop.is_set)}

    def _loop(self):
        while not self._stop.wait(self.app.config.scheduler_interval):
            try:
                self.run_once()
            except Exception as exc:  # recorded in the job; the next run tries again
                self.app.log_exception("scheduler", exc)

    def run_once(self, trigger="interval"):
        """One run; returns the job as JSON."""
        db = self.app.db
        started = now_micros()
        if not self._lock.acquire(blocking=False):
            return self._record(started, "skipped", {"trigger": trigger, "reason": "a run is in progress"})
        try:
            details = {"trigger": trigger}
            outcome = "ok"
            try:
                # first: a session stopped at its limit may end in a period about to be drafted
                details["sessions_stopped"] = sessions.stop_overdue(self.app)
                # and the storage days that ended, so their GB-days are on the drafts
                details["storage_days_closed"] = self.app.storage.close_days()
                written = self.app.flusher.flush()
                details["storage_calls_written"] = written.get("StorageMeter", 0)
                details["requests_written"] = written.get("RequestMeter", 0)
                details["rollups_settled"] = written.get("Settler", 0)
                created = invoices.run_as_of(self.app, clock.now())  # in short chunks
                details["drafts_created"] = len(created)
                if created:
                    self.app.publish("invoice.created", {"invoice_ids": created})
                details.update(self.issue_due())
                details["alerts"] = alert_eval.evaluate(self.app)
                if self.app.dispatcher.running():
                    self.app.dispatcher.wake()  # it sends on its own thread: a slow endpoint never holds a run
                    details["dispatcher"] = "woken"
                else:
                    details.update(self.app.dispatcher.run_once())
                with db.transaction() as conn:
                    details["idempotency_keys_purged"] = conn.execute(
                        "DELETE FROM idempotency_keys WHERE created_at < ?", (idempotency_horizon(),)).rowcount
                details["object_files_purged"] = self.app.files.purge_trash()  # deleted past their grace
                details.update(self.regroup())  # a meter that gained a group_by key
                # raw events of invoiced periods past the retention (by hand: always)
                details.update(self.archiver.run(manual=trigger != "interval"))
            except Exception as exc:
                outcome = "error"
                details["error"] = f"{type(exc).__name__}: {exc}"
                self.app.log_exception("scheduler", exc)
            if outcome == "ok":
                self.last_success = now_micros() / 1_000_000
            return self._record(started, outcome, details)
        finally:
            self._lock.release()

    def issue_due(self):
        """Issue every draft (not on hold) whose period ended a grace period ago.
        Adjustment-only drafts wait a grace period from their creation."""
        cutoff = times.to_micros(clock.now() - timedelta(hours=self.app.config.grace_period_hours))
        due = [r["id"] for r in self.app.db.rows(
            "SELECT id FROM invoices WHERE status = 'draft' AND hold = 0 AND period_end <= ?"
            " AND (kind != 'adjustments' OR created_at <= ?) ORDER BY period_end, id", (cutoff, cutoff))]
        counts = {"issued": 0, "pending_approval": 0}
        for invoice_id in due:
            try:
                with self.app.db.transaction() as conn:
                    view = lifecycle.finalize_row(self.app, conn, invoice_id, None, automatic=True)
            except Conflict:
                continue  # someone else moved it meanwhile
            except Exception as exc:  # one bad invoice must not hold back the others
                self.app.log_exception("scheduler", exc)
                counts.setdefault("failed", []).append(invoice_id)
                continue
            counts["pending_approval" if view["status"] == "pending_approval" else "issued"] += 1
            self.app.publish(f"invoice.{view['status']}", {"invoice": view})
        return counts

    def _record(self, started, outcome, details):
        with self.app.db.transaction() as conn:
            cur = conn.execute("INSERT INTO jobs (name, started_at, finished_at, outcome, details)"
                               " VALUES ('billing', ?, ?, ?, ?)", (started, now_micros(), outcome,
                                                                   jsonutil.encode(details)))
            return jobs.job_view(named(conn, f"SELECT {jobs.COLUMNS} FROM jobs WHERE id = ?",
                                       (cur.lastrowid,)).fetchone())
