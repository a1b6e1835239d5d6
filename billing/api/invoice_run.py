"""The invoice run (§7): draft every period that ended by `as_of` once, in
three phases — subscription periods; §6 monthly invoices for the resource
sessions of customers without a subscription; late adjustments of customers
with no draft to carry them — then record and announce the drafts made.

The first draft a customer gets in a run carries its late-event adjustments
(and late sessions) unless it already has a draft not on hold that does."""

from datetime import timedelta

from ..domain import times
from ..store.db import named, scalar
from . import adjustments, drafts, history, invoice_rows, rating_rows
from . import sessions as sessions_api
from . import subscriptions as subscriptions_api
from . import webhooks
from .common import now_micros
from .drafts import Period


def run_as_of(app, conn, as_of, actor=None, request_id=None):
    """Create the drafts due as of `as_of` inside the caller's transaction; returns their ids.
    `actor` None: the scheduler."""
    run = _Run(app, conn, as_of)
    _subscription_periods(run)
    _monthly_resources(run)
    _late_adjustments(run)
    _announce(conn, run.created, actor)
    history.audit_run(conn, actor, as_of, run.created, request_id)
    return run.created


class _Run:
    """What one run knows while it drafts: the customers whose adjustments are
    late or already carried, the customer rows read so far, the drafts made."""

    def __init__(self, app, conn, as_of):
        self.app, self.conn, self.as_of = app, conn, as_of
        self.stamp = now_micros()
        self.carriers = {r["customer_id"] for r in named(
            conn, "SELECT DISTINCT customer_id FROM invoices WHERE status = 'draft' AND hold = 0")}
        self.late = adjustments.late_customers(conn) | sessions_api.late_customers(conn)
        self._customers = {}
        self.created = []

    def customer(self, customer_id):
        found = self._customers.get(customer_id)
        if found is None:
            found = self._customers[customer_id] = rating_rows.customer(self.conn, customer_id)
        return found

    def carries(self, customer_id):
        """Whether the customer's next draft carries its late adjustments."""
        return customer_id in self.late and customer_id not in self.carriers

    def store(self, customer_id, subscription_id, draft, period, taken, kind="subscription"):
        invoice_id = drafts.insert(self.conn, customer_id, subscription_id, draft, period, self.stamp, kind)
        sessions_api.store_taken(self.conn, invoice_id, taken)
        self.created.append(invoice_id)
        self.carriers.add(customer_id)


# -- subscription periods ------------------------------------------------------------

def _subscription_periods(run):
    conn = run.conn
    existing = {(r["subscription_id"], r["period_start_date"]) for r in named(
        conn, "SELECT subscription_id, period_start_date FROM invoices WHERE subscription_id IS NOT NULL")}
    with_sessions = {r["customer_id"] for r in named(
        conn, "SELECT DISTINCT customer_id FROM sessions WHERE invoice_id IS NULL AND ended_at IS NOT NULL")}
    plans = rating_rows.plans(conn)
    for sub in rating_rows.subscriptions(conn):
        for billed_start, billed_end in _due_periods(run, sub, existing):
            _draft_period(run, sub, plans[sub["plan_id"]], billed_start, billed_end,
                          resources=sub["customer_id"] in with_sessions)


def _due_periods(run, sub, existing):
    """(first local day, end) of the subscription's periods that ended by
    `as_of` and have no invoice yet."""
    zone = times.zone_or_error(run.customer(sub["customer_id"])["timezone"])
    until = times.local_date(run.as_of, zone) + timedelta(days=1)
    for _, _, billed_start, billed_end in subscriptions_api.billed_periods(sub, until):
        if (sub["id"], billed_start.isoformat()) in existing:
            continue
        if times.local_midnight(billed_end, zone) > run.as_of:
            break  # this period (and every later one) has not ended yet
        yield billed_start, billed_end


def _draft_period(run, sub, plan, billed_start, billed_end, resources):
    customer_id = sub["customer_id"]
    carries = run.carries(customer_id)
    extra = adjustments.pending(run.app, run.conn, customer_id) if carries else ()
    taken = []
    draft, start_at, end_at = subscriptions_api.rate_period(run.app, run.conn, sub, plan, run.customer(customer_id),
                                                            billed_start, extra_lines=extra, resources=resources,
                                                            late_sessions=carries, taken=taken)
    period = Period(start_at, end_at, billed_start.isoformat(), billed_end.isoformat())
    run.store(customer_id, sub["id"], draft, period, taken)


# -- §6: monthly invoices for the resource sessions of customers without a subscription --

def _monthly_resources(run):
    months, zones = sessions_api.months_to_invoice(run.conn, run.as_of)
    for customer_id, starts in sorted(months.items()):
        for month in starts:
            _draft_month(run, customer_id, month, zones[customer_id])


def _draft_month(run, customer_id, month, zone):
    start_at, end_at = sessions_api.month_bounds(month, zone)
    carries = run.carries(customer_id)
    taken = []
    lines = sessions_api.uncovered_lines(run.conn, customer_id, zone, times.to_micros(start_at),
                                         times.to_micros(end_at), late=carries, taken=taken)
    if not lines:
        return
    if carries:
        lines += adjustments.pending(run.app, run.conn, customer_id)
    draft = drafts.build_plain(run.conn, run.customer(customer_id), lines)
    period = Period(start_at, end_at, month.isoformat(), times.add_months(month, 1).isoformat())
    run.store(customer_id, None, draft, period, taken, kind="monthly")


# -- late adjustments of customers with no draft to carry them and no subscription in force --

def _late_adjustments(run):
    voided = {r["customer_id"] for r in named(  # a voided adjustment invoice comes back only by reissue
        run.conn, "SELECT customer_id FROM invoices i WHERE kind = 'adjustments' AND status = 'void'"
                  " AND id = (SELECT max(id) FROM invoices j WHERE j.customer_id = i.customer_id"
                  " AND j.kind = 'adjustments')")}
    for customer_id in sorted(run.late - run.carriers - voided):
        _draft_adjustments(run, customer_id)


def _draft_adjustments(run, customer_id):
    customer = run.customer(customer_id)
    zone = times.zone_or_error(customer["timezone"])
    if subscriptions_api.subscription_in_force(run.conn, customer_id, times.local_date(run.as_of, zone)):
        return  # the next period's draft will carry them
    taken = []
    lines = sessions_api.late_lines(run.conn, customer_id, taken) + adjustments.pending(run.app, run.conn, customer_id)
    if not lines:
        return
    draft = drafts.build_plain(run.conn, customer, lines)
    run.store(customer_id, None, draft, _adjustments_period(run.conn, customer_id, lines, zone), taken,
              kind="adjustments")


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


# -- record and announce -------------------------------------------------------------------

def _announce(conn, created, actor):
    hooks = webhooks.subscribers(conn, "invoice.created")
    for invoice_id in created:
        history.record(conn, invoice_id, "create", None, "draft", actor)
        webhooks.enqueue(conn, "invoice.created", lambda: {"invoice": invoice_rows.load_view(conn, invoice_id)}, hooks)
