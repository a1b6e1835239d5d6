"""The invoice run (§7): draft every period that ended by `as_of` once, in
three phases — subscription periods; §6 monthly invoices for the resource
sessions of customers without a subscription; late adjustments of customers
with no draft to carry them — then record and announce the drafts made.

The first draft a customer gets in a run carries its late-event adjustments
(and late sessions) unless it already has a draft not on hold that does.

No stalls (§12): the run never holds the writer for long. It rates a chunk
of drafts on a reader (the reads are most of its work), then writes that
chunk in one short writer transaction, and so on. Inside that transaction
each draft's place is checked again — no invoice for its subscription period
(or month) yet, the customer's carrier draft as the rating assumed — so a
concurrent run, the scheduler or a lifecycle action never doubles a period; a
draft whose assumptions changed is rated again there. Events stored after a
draft was rated are not lost: a draft is re-rated on every read and at
finalize. Runs in one process take turns (a lock), so one of them drafts all
the periods that are due and the others find them drafted."""

import threading
import weakref
from datetime import timedelta
from typing import NamedTuple

from ..domain import periods, times
from ..store.db import named, scalar
from . import adjustments, drafts, history, invoice_rows, rating_rows, rollups
from . import sessions as sessions_api
from . import subscriptions as subscriptions_api
from . import webhooks
from .common import now_micros
from .drafts import Period

CHUNK = 50  # drafts rated, then written in one writer transaction (a few ms of writing)

_locks = weakref.WeakKeyDictionary()  # Database → the lock its runs take turns on
_locks_guard = threading.Lock()


def run_as_of(app, as_of, actor=None, request_id=None, between_chunks=None, chunk=CHUNK):
    """Create the drafts due as of `as_of`, `chunk` drafts per writer
    transaction; returns their ids. `actor` None: the scheduler. Inside a
    caller's transaction it all happens in that transaction.
    `between_chunks(created)`, when given, is called after each chunk is
    committed, with the ids created so far."""
    run = _Run(app, as_of, actor, between_chunks, chunk)
    if app.db.in_transaction():  # the writer is already ours: nothing to take turns on
        return _run(run, request_id)
    with _lock_of(app.db):
        return _run(run, request_id)


def _lock_of(db):
    with _locks_guard:
        return _locks.setdefault(db, threading.Lock())


def _run(run, request_id):
    run.start()
    _subscription_periods(run)
    _monthly_resources(run)
    _late_adjustments(run)
    with run.app.db.transaction() as conn:
        history.audit_run(conn, run.actor, run.as_of, run.created, request_id)
    return run.created


class _Task(NamedTuple):
    """One draft to make: its customer, kind, slot (the subscription period's
    or month's first local day) and what rating it needs."""
    customer_id: int
    kind: str
    subscription_id: object
    slot: str
    args: tuple


class _Run:
    """What one run knows while it drafts: the customers whose adjustments are
    late or already carried, the customer rows read so far, the drafts made."""

    def __init__(self, app, as_of, actor, between_chunks, chunk):
        self.app, self.as_of, self.actor = app, as_of, actor
        self.between_chunks, self.chunk = between_chunks, chunk
        self.carriers, self.late, self._customers, self.created = set(), set(), {}, []
        self.stamp = None
        self.charges, self._periods = {}, {}  # memos of pure functions of a subscription's fields

    def load_customers(self, conn):
        """Read every subscriber's row at once (rather than one by one as they come)."""
        self._customers.update(rating_rows.subscribers(conn))

    def start(self):
        """What the run reads first, once it is this run's turn."""
        self.stamp = now_micros()
        with self.app.db.reader() as conn:
            self.carriers = {r["customer_id"] for r in named(
                conn, "SELECT DISTINCT customer_id FROM invoices WHERE status = 'draft' AND hold = 0")}
            self.late = adjustments.late_customers(conn) | sessions_api.late_customers(conn)

    def customer(self, conn, customer_id):
        found = self._customers.get(customer_id)
        if found is None:
            found = self._customers[customer_id] = rating_rows.customer(conn, customer_id)
        return found

    def carries(self, customer_id):
        """Whether the customer's next draft carries its late adjustments."""
        return customer_id in self.late and customer_id not in self.carriers

    def carries_now(self, conn, customer_id):
        """The same, as the writer sees it now."""
        return customer_id in self.late and drafts.carrier(conn, customer_id) is None

    def billed_periods(self, sub, until):
        """(billed_start, billed_end) of subscriptions_api.billed_periods, the
        same for every subscription with the same dates and anchor."""
        key = (sub["start_date"], sub["end_date"], sub["billing_anchor"], sub["anchor_date"], until)
        found = self._periods.get(key)
        if found is None:
            found = self._periods[key] = [(start, end) for _, _, start, end in
                                          subscriptions_api.billed_periods(sub, until)]
        return found

    def drafted(self, ids):
        self.created += ids
        if self.between_chunks is not None:
            self.between_chunks(list(self.created))


def _in_chunks(run, tasks, rate, prepare=None):
    """Rate each chunk of tasks on a reader (`rate(run, conn, task, carries,
    reads)` → (draft, period, taken) or None for nothing to draft), then write
    it in one writer transaction. `prepare(run, conn, chunk)`, when given,
    reads what the chunk's rating needs at once: the `reads` of its tasks."""
    for first in range(0, len(tasks), run.chunk):
        rated = []
        chunk = tasks[first:first + run.chunk]
        with run.app.db.reader() as conn:
            if not conn.in_transaction:
                conn.execute("BEGIN")  # one snapshot for the chunk; the reader rolls it back
            reads = prepare(run, conn, chunk) if prepare is not None else None
            for task in chunk:
                carries = run.carries(task.customer_id)
                made = rate(run, conn, task, carries, reads)
                if made is not None:
                    run.carriers.add(task.customer_id)
                    rated.append((task, carries, made))
        if rated:
            run.drafted(_write_chunk(run, rated, rate))


def _write_chunk(run, rated, rate):
    """Store the rated drafts whose place is still free; ids of those stored."""
    ids, lines, customers = [], [], set()
    with run.app.db.transaction() as conn:
        hooks = webhooks.subscribers(conn, "invoice.created")
        for task, carries, made in rated:
            if _taken(conn, task):
                continue  # drafted meanwhile by someone else
            carries_now = run.carries_now(conn, task.customer_id)
            # its carrier changed meanwhile, or it reads a draft this chunk stored after it was rated
            if carries_now != carries or (task.customer_id in customers and _reads_drafts(task)):
                made = rate(run, conn, task, carries_now)
                if made is None:
                    continue
            ids.append(_store(run, conn, task, made, hooks, lines))
            customers.add(task.customer_id)
        drafts.write_lines(conn, lines)
    return ids


def _reads_drafts(task):
    """Whether rating the task reads the customer's other drafts: the later
    part of a period split by a plan change takes what is left of a fixed
    amount off (subscriptions_api.split_by_change)."""
    if task.kind != "subscription":
        return False
    sub, _plan, billed_start, _end, _resources = task.args
    return subscriptions_api.split_by_change(sub, billed_start)


def _taken(conn, task):
    """Whether the task's place holds an invoice now (any revision, any status)."""
    if task.kind == "subscription":
        return scalar(conn, "SELECT 1 FROM invoices WHERE subscription_id = ? AND period_start_date = ?",
                      (task.subscription_id, task.slot)) is not None
    if task.kind == "monthly":
        return scalar(conn, "SELECT 1 FROM invoices WHERE customer_id = ? AND kind = 'monthly'"
                            " AND period_start_date = ?", (task.customer_id, task.slot)) is not None
    return drafts.carrier(conn, task.customer_id) is not None  # adjustments: a draft carries them now


def _store(run, conn, task, made, hooks, lines):
    """Insert one draft; the rows of its lines go to `lines` (written for the
    whole chunk at once), unless a webhook wants the invoice now."""
    draft, period, taken = made
    invoice_id = drafts.insert(conn, task.customer_id, task.subscription_id, draft, period, run.stamp, task.kind,
                               lines=lines if not hooks else None)
    if taken:  # a new invoice holds no sessions yet
        sessions_api.store_taken(conn, invoice_id, taken)
    history.record(conn, invoice_id, "create", None, "draft", run.actor)
    webhooks.enqueue(conn, "invoice.created", lambda: {"invoice": invoice_rows.load_view(conn, invoice_id)}, hooks)
    return invoice_id


# -- subscription periods ------------------------------------------------------------

def _subscription_periods(run):
    tasks = []
    with run.app.db.reader() as conn:
        existing = {(r["subscription_id"], r["period_start_date"]) for r in named(
            conn, "SELECT subscription_id, period_start_date FROM invoices WHERE subscription_id IS NOT NULL")}
        with_sessions = {r["customer_id"] for r in named(
            conn, "SELECT DISTINCT customer_id FROM sessions WHERE invoice_id IS NULL AND ended_at IS NOT NULL")}
        plans = rating_rows.plans(conn)
        run.load_customers(conn)
        for sub in rating_rows.subscriptions(conn):
            for billed_start, billed_end in _due_periods(run, conn, sub, existing):
                tasks.append(_Task(sub["customer_id"], "subscription", sub["id"], billed_start.isoformat(),
                                   (sub, plans[sub["plan_id"]], billed_start, billed_end,
                                    sub["customer_id"] in with_sessions)))
    _in_chunks(run, tasks, _rate_period, _ChunkReads)


def _due_periods(run, conn, sub, existing):
    """(first local day, end) of the subscription's periods that ended by
    `as_of` and have no invoice yet."""
    zone = times.zone_or_error(run.customer(conn, sub["customer_id"])["timezone"])
    until = times.local_date(run.as_of, zone) + timedelta(days=1)
    for billed_start, billed_end in run.billed_periods(sub, until):
        if (sub["id"], billed_start.isoformat()) in existing:
            continue
        if times.local_midnight(billed_end, zone) > run.as_of:
            break  # this period (and every later one) has not ended yet
        yield billed_start, billed_end


def _rate_period(run, conn, task, carries, reads=None):
    sub, plan, billed_start, billed_end, resources = task.args
    customer_id = task.customer_id
    extra = adjustments.pending(run.app, conn, customer_id) if carries else ()
    taken = []
    draft, start_at, end_at = subscriptions_api.rate_period(run.app, conn, sub, plan, run.customer(conn, customer_id),
                                                            billed_start, extra_lines=extra, resources=resources,
                                                            late_sessions=carries, taken=taken,
                                                            reads=reads or subscriptions_api.READS)
    return draft, Period(start_at, end_at, billed_start.isoformat(), billed_end.isoformat()), taken


class _ChunkReads(subscriptions_api.Reads):
    """What rating a chunk of subscription periods reads besides its rows,
    read for the whole chunk at once on the chunk's snapshot: the rollups of
    every charged meter of every period in one statement, the credit balances
    in another. Charges are parsed once per run, meter names once per chunk;
    anything not read ahead is read as Reads reads it."""

    def __init__(self, run, conn, tasks):
        self.run = run
        self.names = super().meter_names(run.app)
        asks = []
        for task in tasks:
            sub, plan, billed_start, billed_end, _ = task.args
            zone = times.zone_or_error(run.customer(conn, task.customer_id)["timezone"])
            start_at, end_at = periods.local_bounds(billed_start, billed_end, zone)
            for charge in self.charges(plan, sub):
                meter = run.app.catalog.meter(charge.meter)
                if meter is not None:
                    asks.append((task.customer_id, meter, times.to_micros(start_at), times.to_micros(end_at)))
        self.found = rollups.many_pieces(conn, asks)
        self.balances = rating_rows.balances(conn, sorted({task.customer_id for task in tasks}))

    def charges(self, plan, sub):
        key = (plan["charges"], sub["overrides"])
        found = self.run.charges.get(key)
        if found is None:
            found = self.run.charges[key] = super().charges(plan, sub)
        return found

    def pieces(self, conn, meter, customer_id, start_us, end_us):
        found = self.found.get((customer_id, meter.id, start_us, end_us))
        return list(found) if found is not None else super().pieces(conn, meter, customer_id, start_us, end_us)

    def balance(self, conn, customer_id):
        found = self.balances.get(customer_id)
        return found if found is not None else super().balance(conn, customer_id)

    def meter_names(self, app):
        return self.names


# -- §6: monthly invoices for the resource sessions of customers without a subscription --

def _monthly_resources(run):
    with run.app.db.reader() as conn:
        months, zones = sessions_api.months_to_invoice(conn, run.as_of)
    tasks = [_Task(customer_id, "monthly", None, month.isoformat(), (month, zones[customer_id]))
             for customer_id, starts in sorted(months.items()) for month in starts]
    _in_chunks(run, tasks, _rate_month)


def _rate_month(run, conn, task, carries, reads=None):
    month, zone = task.args
    customer_id = task.customer_id
    start_at, end_at = sessions_api.month_bounds(month, zone)
    taken = []
    lines = sessions_api.uncovered_lines(conn, customer_id, zone, times.to_micros(start_at),
                                         times.to_micros(end_at), late=carries, taken=taken)
    if not lines:
        return None
    if carries:
        lines += adjustments.pending(run.app, conn, customer_id)
    draft = drafts.build_plain(conn, run.customer(conn, customer_id), lines)
    return draft, Period(start_at, end_at, month.isoformat(), times.add_months(month, 1).isoformat()), taken


# -- late adjustments of customers with no draft to carry them and no subscription in force --

def _late_adjustments(run):
    with run.app.db.reader() as conn:
        voided = {r["customer_id"] for r in named(  # a voided adjustment invoice comes back only by reissue
            conn, "SELECT customer_id FROM invoices i WHERE kind = 'adjustments' AND status = 'void'"
                  " AND id = (SELECT max(id) FROM invoices j WHERE j.customer_id = i.customer_id"
                  " AND j.kind = 'adjustments')")}
    tasks = [_Task(customer_id, "adjustments", None, "", ()) for customer_id in sorted(run.late - run.carriers - voided)]
    _in_chunks(run, tasks, _rate_adjustments)


def _rate_adjustments(run, conn, task, carries, reads=None):
    customer_id = task.customer_id
    customer = run.customer(conn, customer_id)
    zone = times.zone_or_error(customer["timezone"])
    if not carries or subscriptions_api.subscription_in_force(conn, customer_id, times.local_date(run.as_of, zone)):
        return None  # the next period's draft will carry them
    taken = []
    lines = sessions_api.late_lines(conn, customer_id, taken) + adjustments.pending(run.app, conn, customer_id)
    if not lines:
        return None
    draft = drafts.build_plain(conn, customer, lines)
    return draft, _adjustments_period(conn, customer_id, lines, zone), taken


def _adjustments_period(conn, customer_id, lines, zone):
    """From the first to the last invoiced period the lines correct; for late
    sessions only, the invoiced periods they ended in."""
    periods = [line["adjusts_period"] for line in lines if line.get("adjusts_period")]
    if periods:
        first_date, last_date = min(periods), max(periods)
        end_date = scalar(conn, "SELECT max(period_end_date) FROM invoices WHERE subscription_id IS NOT NULL"
                                " AND customer_id = ? AND period_start_date = ?", (customer_id, last_date))
        return Period(times.local_midnight(times.parse_date(first_date), zone),
                      times.local_midnight(times.parse_date(end_date), zone), first_date, end_date)
    span = named(conn, "SELECT min(i.period_start) AS first_start, max(i.period_end) AS last_end FROM invoices i"
                       " JOIN sessions s ON s.customer_id = i.customer_id AND s.ended_at >= i.period_start"
                       " AND s.ended_at < i.period_end WHERE i.customer_id = ?"
                       " AND i.status IN ('pending_approval', 'issued', 'paid') AND s.invoice_id IS NULL",
                 (customer_id,)).fetchone()
    start_at, end_at = times.from_micros(span["first_start"]), times.from_micros(span["last_end"])
    return Period(start_at, end_at, times.local_date(start_at, zone).isoformat(),
                  times.local_date(end_at, zone).isoformat())
