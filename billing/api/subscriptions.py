"""Subscriptions (§5): a customer on a plan, with monthly periods in the
customer's timezone; and the live estimate of the open period."""

import sqlite3
from datetime import timedelta

from .. import clock, jsonutil
from ..domain import invoicing, money, periods, plans, times
from ..domain.rollup import value_of
from ..errors import Conflict, FieldErrors, NotFound, ValidationError
from ..store.db import named, scalar
from .responses import created
from . import coupons as coupons_api
from . import customers as customers_api
from . import plans as plans_api
from . import rollups
from . import sessions as sessions_api
from .common import (audit, check_unknown_fields, decode_cursor, int_arg, now_micros, one_or_404, page, page_limit,
                     path_int)
from .rows import by_name, names

# the order is the one callers that still read by position rely on; `plan` is the plan's code
COLUMNS = ("s.id, s.customer_id, p.code AS plan, s.status, s.start_date, s.end_date, s.billing_anchor,"
           " s.anchor_date, s.overrides, s.coupon, s.created_at, s.updated_at, s.plan_id")
NAMES = names(COLUMNS)
FROM = "subscriptions s JOIN plans p ON p.id = s.plan_id"
ANCHORS = ("calendar", "anniversary")
CREATE_FIELDS = ("customer_id", "plan", "start", "billing_anchor", "overrides", "coupon")
_ALLOWANCES = {"free_units", "free_units_per_day", "minimum_charge"}
OVERRIDE_FIELDS = {"per_unit": _ALLOWANCES | {"unit_price"},
                   "graduated": _ALLOWANCES | {"tiers"},
                   "volume": _ALLOWANCES | {"tiers"},
                   "package": _ALLOWANCES | {"package_size", "package_price"}}


def view(row):
    return {"id": row["id"], "customer_id": row["customer_id"], "plan": row["plan"], "status": row["status"],
            "start": row["start_date"], "end": row["end_date"], "billing_anchor": row["billing_anchor"],
            "anchor_date": row["anchor_date"], "overrides": jsonutil.decode(row["overrides"]),
            "coupon": row["coupon"], "created_at": times.format_micros(row["created_at"]),
            "updated_at": times.format_micros(row["updated_at"])}


def _load(conn, subscription_id):
    return by_name(one_or_404(conn, f"SELECT {COLUMNS} FROM {FROM} WHERE s.id = ?", (subscription_id,),
                              f"Subscription {subscription_id} not found."), NAMES)


def _load_active(conn, subscription_id, action):
    """The subscription row; 409 unless it is active (`action`: what only an active one can do)."""
    row = _load(conn, subscription_id)
    if row["status"] != "active":
        raise Conflict(f"Subscription {subscription_id} is {row['status']}; only an active one can {action}.")
    return row


def _local_day(value, zone, field, problems):
    """A date ('2025-09-10') as is; an instant as the first local day that
    starts at or after it (a day belongs to the plan in force at its 00:00)."""
    try:
        if isinstance(value, str) and len(value) == 10:
            return times.parse_date(value)
        instant = times.parse_instant(value)
    except times.TimeError as exc:
        problems.add(field, str(exc))
        return None
    day = times.local_date(instant, zone)
    return day if times.local_midnight(day, zone) >= instant else day + timedelta(days=1)


def _check_overrides(raw, charges, problems):
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add("overrides", "must be an object of meter: {field: value}")
        return {}
    by_meter = {c["meter"]: c for c in charges}
    checked = {}
    for meter, fields in raw.items():
        charge = by_meter.get(meter)
        if charge is None:
            problems.add(f"overrides.{meter}", "the plan has no charge for this meter")
            continue
        if not isinstance(fields, dict) or not fields:
            problems.add(f"overrides.{meter}", "must be a non-empty object")
            continue
        bad = set(fields) - OVERRIDE_FIELDS[charge["model"]]
        if bad:
            problems.add(f"overrides.{meter}", f"cannot override {', '.join(sorted(bad))} of a "
                         f"{charge['model']} charge")
            continue
        merged = plans.check_charge({**{k: v for k, v in charge.items() if v is not None}, **fields}, 0,
                                    {meter}, problems)
        if merged is not None:
            checked[meter] = {k: merged[k] for k in fields}
    return checked


def create(request):
    body = request.json()
    db = request.app.db
    customer, plan_row, start, anchor, overrides, coupon = _check_new(request.app, body)
    try:
        with db.transaction() as conn:
            _check_after_ended(conn, customer.id, start)
            subscription_id = _insert(conn, customer.id, plan_row["id"], start.isoformat(), anchor,
                                      start.isoformat(), overrides, coupon, now_micros())
            row = _load(conn, subscription_id)
            audit(conn, request, "subscription.create", "subscription", row["id"], after=view(row))
    except sqlite3.IntegrityError:
        raise Conflict(f"Customer {customer.id} already has an active subscription.") from None
    return created(view(row))


def _check_new(app, body):
    """(customer, plan row, start day, anchor, overrides, coupon code) of a
    new subscription; raises ValidationError."""
    problems = FieldErrors()
    check_unknown_fields(body, CREATE_FIELDS, problems)
    customer = _check_customer(app, body.get("customer_id"), problems)
    plan_row = _check_plan(app.db, body.get("plan"), customer, problems)
    anchor = body.get("billing_anchor", "calendar")
    if anchor not in ANCHORS:
        problems.add("billing_anchor", "must be calendar or anniversary")
    coupon = body.get("coupon")
    _check_coupon(app.db, coupon, customer, problems)
    zone = times.zone_or_error(customer.timezone) if customer else times.UTC
    start = _local_day(body["start"], zone, "start", problems) if body.get("start") is not None \
        else times.local_date(clock.now(), zone)
    overrides = _check_overrides(body.get("overrides"), jsonutil.decode(plan_row["charges"]) if plan_row else [],
                                 problems)
    problems.raise_if_any()
    return customer, plan_row, start, anchor, overrides, coupon


def _check_customer(app, customer_id, problems):
    """The catalog's customer (also when archived, for the checks that follow), or None."""
    if isinstance(customer_id, bool) or not isinstance(customer_id, int):
        problems.add("customer_id", "is required: a customer id")
        return None
    customer = app.catalog.customer(customer_id)
    if customer is None:
        problems.add("customer_id", f"unknown customer {customer_id}")
    elif customer.archived:
        problems.add("customer_id", f"customer {customer_id} is archived")
    return customer


def _check_plan(db, code, customer, problems):
    """The plan row by code, in the customer's currency, or None."""
    if not isinstance(code, str):
        problems.add("plan", "is required: a plan code")
        return None
    plan_row = plans_api.find(db, code)
    if plan_row is None:
        problems.add("plan", f"unknown plan {code!r}")
    elif customer and plan_row["currency"] != customer.currency:
        problems.add("plan", f"the plan is in {plan_row['currency']} but the customer pays in {customer.currency}")
    return plan_row


def _check_coupon(db, code, customer, problems):
    """An existing coupon code, in the customer's currency when it has one."""
    if code is None:
        return
    coupon = db.row("SELECT currency FROM coupons WHERE code = ?", (code,)) if isinstance(code, str) else None
    if coupon is None:
        problems.add("coupon", f"unknown coupon {code!r}")
    elif coupon["currency"] is not None and customer and coupon["currency"] != customer.currency:
        problems.add("coupon", f"the coupon is in {coupon['currency']} but the customer pays in {customer.currency}")


def _check_after_ended(conn, customer_id, start):
    """409 when a canceled subscription of the customer still runs on `start`."""
    later = named(conn, "SELECT id, end_date FROM subscriptions WHERE customer_id = ? AND status != 'active'"
                        " AND (end_date IS NULL OR end_date > ?)", (customer_id, start.isoformat())).fetchone()
    if later is not None:
        raise Conflict(f"Subscription {later['id']} of this customer runs until {later['end_date']}; "
                       "start the new one on or after that day.")


def _insert(conn, customer_id, plan_id, start_date, anchor, anchor_date, overrides, coupon, now):
    """Store an active subscription; returns its id."""
    return conn.execute(
        "INSERT INTO subscriptions (customer_id, plan_id, status, start_date, billing_anchor, anchor_date,"
        " overrides, coupon, created_at, updated_at) VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?, ?)",
        (customer_id, plan_id, start_date, anchor, anchor_date, jsonutil.encode(overrides), coupon, now,
         now)).lastrowid


def list_subscriptions(request):
    limit = page_limit(request)
    cursor = decode_cursor(request)
    where, params = ["s.id > ?"], [cursor[0] if cursor else 0]
    customer_id = request.customer_filter(int_arg(request, "customer_id", minimum=1))
    if customer_id is not None:
        where.append("s.customer_id = ?")
        params.append(customer_id)
    status = request.arg("status")
    if status:
        where.append("s.status = ?")
        params.append(status)
    rows = request.app.db.rows(f"SELECT {COLUMNS} FROM {FROM} WHERE {' AND '.join(where)} ORDER BY s.id LIMIT ?",
                               (*params, limit + 1))
    return page(rows, limit, view, lambda row: [row["id"]])


def get(request, subscription_id):
    subscription_id = path_int(subscription_id, "Subscription")
    with request.app.db.reader() as conn:
        row = _load(conn, subscription_id)
    if request.customer_scope not in (None, row["customer_id"]):  # as for a missing one
        raise NotFound(f"Subscription {subscription_id} not found.")
    return view(row)


def _zone_of(app, customer_id):
    return times.zone_or_error(app.catalog.customer(customer_id).timezone)


def cancel(request, subscription_id):
    """End the subscription at `at` (default: the end of the current period)."""
    app = request.app
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, ("at",), problems)
    subscription_id = path_int(subscription_id, "Subscription")
    with app.db.transaction() as conn:
        row = _load_active(conn, subscription_id, "be canceled")
        zone = _zone_of(app, row["customer_id"])
        start = times.parse_date(row["start_date"])
        if body.get("at") is not None:
            end = _local_day(body["at"], zone, "at", problems)
        else:
            today = times.local_date(clock.now(), zone)
            _, end = periods.period_containing(max(today, start), row["billing_anchor"],
                                               times.parse_date(row["anchor_date"]))
        problems.raise_if_any()
        if end < start:
            raise ValidationError([{"field": "at", "message": f"must not be before the start ({row['start_date']})"}])
        _check_not_invoiced(conn, subscription_id, end)
        conn.execute("UPDATE subscriptions SET status = 'canceled', end_date = ?, updated_at = ? WHERE id = ?",
                     (end.isoformat(), now_micros(), subscription_id))
        after = _load(conn, subscription_id)
        audit(conn, request, "subscription.cancel", "subscription", subscription_id, view(row), view(after))
    return view(after)


def _check_not_invoiced(conn, subscription_id, day):
    """409 when `day` falls before the end of a period that already has an invoice."""
    last = scalar(conn, "SELECT max(period_end_date) FROM invoices WHERE subscription_id = ?", (subscription_id,))
    if last is not None and day.isoformat() < last:
        raise Conflict(f"Subscription {subscription_id} is invoiced up to {last}; it cannot end or change earlier.")


def change_plan(request, subscription_id):
    """Close the current subscription at `at` (its last period prorated on the
    old plan) and open one on the new plan from that day, keeping the anchor."""
    app = request.app
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, ("plan", "at", "overrides"), problems)
    subscription_id = path_int(subscription_id, "Subscription")
    code = body.get("plan")
    plan_row = plans_api.find(app.db, code)
    if plan_row is None:
        problems.add("plan", f"unknown plan {code!r}")
    if body.get("at") is None:
        problems.add("at", "is required: the date (or instant) the new plan starts")
    problems.raise_if_any()
    with app.db.transaction() as conn:
        row = _load_active(conn, subscription_id, "change plan")
        customer = app.catalog.customer(row["customer_id"])
        if plan_row["currency"] != customer.currency:
            raise ValidationError([{"field": "plan", "message": f"the plan is in {plan_row['currency']} but the "
                                                                f"customer pays in {customer.currency}"}])
        day = _local_day(body["at"], times.zone_or_error(customer.timezone), "at", problems)
        overrides = _check_overrides(body.get("overrides"), jsonutil.decode(plan_row["charges"]), problems)
        problems.raise_if_any()
        if day <= times.parse_date(row["start_date"]):
            raise ValidationError([{"field": "at", "message": f"must be after the start ({row['start_date']})"}])
        _check_not_invoiced(conn, subscription_id, day)
        now = now_micros()
        conn.execute("UPDATE subscriptions SET status = 'ended', end_date = ?, updated_at = ? WHERE id = ?",
                     (day.isoformat(), now, subscription_id))
        new_id = _insert(conn, row["customer_id"], plan_row["id"], day.isoformat(), row["billing_anchor"],
                         row["anchor_date"], overrides, row["coupon"], now)
        new = _load(conn, new_id)
        audit(conn, request, "subscription.change_plan", "subscription", subscription_id, view(row), view(new))
    return {"previous": view(_load_reader(app, subscription_id)), "subscription": view(new)}


def _load_reader(app, subscription_id):
    with app.db.reader() as conn:
        return _load(conn, subscription_id)


# -- estimates ---------------------------------------------------------------

def _charges_with_overrides(plan_charges, overrides):
    merged = []
    for charge in plan_charges:
        merged.append({**charge, **overrides.get(charge["meter"], {})})
    return plans.to_charges(merged)


def usage_quantities(app, conn, customer_id, charges, start_us, end_us, pieces=rollups.pieces):
    """{meter key: quantity} of the charged meters over [start_us, end_us);
    `pieces` reads a meter's rollup pieces (as rollups.pieces)."""
    usage = {}
    for charge in charges:
        meter = app.catalog.meter(charge.meter)
        if meter is None:
            continue
        # whole buckets from the rollups, cut ones from the raw events, storage days not closed yet live
        found = pieces(conn, meter, customer_id, start_us, end_us)
        found += rollups.live_pieces(app.storage.live_rows(conn, meter, customer_id, start_us, end_us), None)
        usage[charge.meter] = value_of([part for _, _, part in found], meter.aggregation) or 0
    return usage


class Reads:
    """What rating a period reads besides its own rows, each read when asked
    for. The invoice run passes its own, which reads them for a chunk of
    periods at once and gives the same values."""

    def charges(self, plan, sub):
        return _charges_with_overrides(jsonutil.decode(plan["charges"]), jsonutil.decode(sub["overrides"]))

    def usage(self, app, conn, customer_id, charges, start_us, end_us):
        return usage_quantities(app, conn, customer_id, charges, start_us, end_us, self.pieces)

    def pieces(self, conn, meter, customer_id, start_us, end_us):
        return rollups.pieces(conn, meter, customer_id, start_us, end_us)

    def balance(self, conn, customer_id):
        return coupons_api.balance(conn, customer_id)

    def meter_names(self, app):
        return {m.key: m.name for m in app.catalog.meters().values()}


READS = Reads()


def billed_period(subscription_row, day):
    """(period_start, period_end, billed_start, billed_end): local dates of the
    regular period holding `day`, and that period clipped to the subscription."""
    sub = by_name(subscription_row, NAMES)
    period_start, period_end = periods.period_containing(day, sub["billing_anchor"],
                                                         times.parse_date(sub["anchor_date"]))
    start = times.parse_date(sub["start_date"])
    end = times.parse_date(sub["end_date"]) if sub["end_date"] else None
    return period_start, period_end, max(period_start, start), min(period_end, end) if end else period_end


def billed_periods(subscription_row, until):
    """The billed periods of a subscription whose first day is before local date `until`."""
    sub = by_name(subscription_row, NAMES)
    start = times.parse_date(sub["start_date"])
    end = times.parse_date(sub["end_date"]) if sub["end_date"] else None
    result, day = [], start
    while day < until and (end is None or day < end):
        bounds = billed_period(sub, day)
        result.append(bounds)
        _, _, _, day = bounds
    return result


def rate_period(app, conn, subscription_row, plan_row, customer_row, day, extra_lines=(), resources=True,
                late_sessions=False, taken=None, billed_too=False, reads=READS):
    """The priced draft of the subscription period holding local `day`, with its
    UTC bounds: (draft, start_at, end_at). `extra_lines`: adjustment lines;
    `late_sessions`: also bill sessions of periods already invoiced; `taken`
    collects the ids of the sessions billed. The rows may be sqlite3.Row or
    plain tuples of COLUMNS, plans.COLUMNS and customers.COLUMNS. `reads`: see Reads."""
    sub, plan = by_name(subscription_row, NAMES), by_name(plan_row, plans_api.NAMES)
    customer = by_name(customer_row, customers_api.NAMES)
    zone = times.zone_or_error(customer["timezone"])
    period_start, period_end, billed_start, billed_end = billed_period(sub, day)
    # the trial runs from the first day of the customer's subscription (the anchor a plan change keeps)
    trial_end = times.parse_date(sub["anchor_date"]) + timedelta(days=plan["trial_days"])
    active, days_in_period = periods.prorate_days(period_start, period_end, max(billed_start, trial_end), billed_end)
    start_at, end_at = periods.local_bounds(billed_start, billed_end, zone)
    start_us, end_us = times.to_micros(start_at), times.to_micros(end_at)
    charges = reads.charges(plan, sub)
    usage = reads.usage(app, conn, customer["id"], charges, start_us, end_us)
    if resources:  # the invoice run says False for customers who never had a session
        extra_lines = sessions_api.resource_lines(conn, customer["id"], start_us, end_us, late_sessions, taken,
                                                  billed_too) + list(extra_lines)
    coupon = _split_coupon(conn, period_coupon(conn, sub, period_start), sub, period_start, period_end, billed_start)
    draft = invoicing.build(plan["currency"], charges, usage, base_fee=plan["base_fee"],
                            minimum_commitment=plan["minimum_commitment"],
                            proration=invoicing.Proration(active, days_in_period),
                            tax_rate=money.parse_percent(customer["tax_rate"]), coupon=coupon,
                            credit_balance=reads.balance(conn, customer["id"]),
                            extra_lines=extra_lines,
                            meter_names=reads.meter_names(app),
                            billed_days=(billed_end - billed_start).days)
    return draft, start_at, end_at


def subscription_in_force(conn, customer_id, day):
    """The subscription row (sqlite3.Row) covering local date `day`, or None."""
    return named(conn,
                 f"SELECT {COLUMNS} FROM {FROM} WHERE s.customer_id = ? AND s.start_date <= ?"
                 " AND (s.end_date IS NULL OR s.end_date > ?) ORDER BY s.start_date DESC LIMIT 1",
                 (customer_id, day.isoformat(), day.isoformat())).fetchone()


def current_period(app, customer_id, zone, now):
    """UTC bounds of the customer's open billing period, or None without a subscription."""
    today = times.local_date(now, zone)
    with app.db.reader() as conn:
        row = subscription_in_force(conn, customer_id, today)
    if row is None:
        return None
    _, _, billed_start, billed_end = billed_period(row, today)
    return periods.local_bounds(billed_start, billed_end, zone)


def split_by_change(sub, day):
    """Whether the period of the subscription holding local `day` has a
    coupon and starts after its regular period does: the later part of a
    period a plan change split, whose fixed amount off depends on the
    invoices of the part before (`_split_coupon`)."""
    sub = by_name(sub, NAMES)
    if not sub["coupon"]:
        return False
    period_start, _, billed_start, _ = billed_period(sub, day)
    return billed_start > period_start


def _split_coupon(conn, coupon, sub, period_start, period_end, billed_start):
    """A fixed amount off is for the whole period: when a plan change splits the
    period between two subscriptions, the later part gets what the earlier did not."""
    if coupon is None or coupon.amount_off is None or billed_start <= period_start:
        return coupon
    given = scalar(conn,
                   "SELECT coalesce(sum(discount), 0) FROM invoices WHERE customer_id = ? AND subscription_id != ?"
                   " AND status != 'void' AND period_start_date >= ? AND period_end_date <= ?",
                   (sub["customer_id"], sub["id"], period_start.isoformat(), period_end.isoformat()))
    return invoicing.Coupon(amount_off=max(0, coupon.amount_off - given))


def period_coupon(conn, sub, period_start):
    """The subscription's coupon as invoicing.Coupon if it applies to its
    period starting on `period_start`, else None."""
    code = sub["coupon"]
    if not code:
        return None
    period_index = len(periods.periods_between(times.parse_date(sub["anchor_date"]), period_start,
                                               sub["billing_anchor"]))
    row = coupons_api.load(conn, code)
    if not coupons_api.applies(row, period_index):
        return None
    if row["percent_off"] is not None:
        return invoicing.Coupon(percent_off=money.parse_percent(row["percent_off"]))
    return invoicing.Coupon(amount_off=row["amount_off"])
