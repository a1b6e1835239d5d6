"""Subscriptions (§5): a customer on a plan, with monthly periods in the
customer's timezone; and the live estimate of the open period."""

import sqlite3
from datetime import timedelta

from .. import clock, jsonutil
from ..domain import invoicing, money, periods, plans, times
from ..domain.aggregation import aggregate
from ..errors import Conflict, FieldErrors, NotFound, ValidationError
from .responses import created
from . import coupons as coupons_api
from . import plans as plans_api
from . import sessions as sessions_api
from .common import (audit, check_unknown_fields, decode_cursor, int_arg, now_micros, page, page_limit,
                     path_int)

COLUMNS = ("s.id, s.customer_id, p.code, s.status, s.start_date, s.end_date, s.billing_anchor,"
           " s.anchor_date, s.overrides, s.coupon, s.created_at, s.updated_at, s.plan_id")
FROM = "subscriptions s JOIN plans p ON p.id = s.plan_id"
ANCHORS = ("calendar", "anniversary")
_ALLOWANCES = {"free_units", "free_units_per_day", "minimum_charge"}
OVERRIDE_FIELDS = {"per_unit": _ALLOWANCES | {"unit_price"},
                   "graduated": _ALLOWANCES | {"tiers"},
                   "volume": _ALLOWANCES | {"tiers"},
                   "package": _ALLOWANCES | {"package_size", "package_price"}}


def view(row):
    return {"id": row[0], "customer_id": row[1], "plan": row[2], "status": row[3], "start": row[4],
            "end": row[5], "billing_anchor": row[6], "anchor_date": row[7],
            "overrides": jsonutil.decode(row[8]), "coupon": row[9],
            "created_at": times.format_micros(row[10]), "updated_at": times.format_micros(row[11])}


def _load(conn, subscription_id):
    row = conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE s.id = ?", (subscription_id,)).fetchone()
    if row is None:
        raise NotFound(f"Subscription {subscription_id} not found.")
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
    problems = FieldErrors()
    check_unknown_fields(body, ("customer_id", "plan", "start", "billing_anchor", "overrides", "coupon"),
                         problems)
    customer_id = body.get("customer_id")
    customer = None
    if isinstance(customer_id, bool) or not isinstance(customer_id, int):
        problems.add("customer_id", "is required: a customer id")
    else:
        customer = request.app.catalog.customer(customer_id)
        if customer is None:
            problems.add("customer_id", f"unknown customer {customer_id}")
        elif customer.archived:
            problems.add("customer_id", f"customer {customer_id} is archived")
    plan_row = None
    code = body.get("plan")
    if not isinstance(code, str):
        problems.add("plan", "is required: a plan code")
    else:
        plan_row = plans_api.find(db, code)
        if plan_row is None:
            problems.add("plan", f"unknown plan {code!r}")
    if customer and plan_row and plan_row[4] != customer.currency:
        problems.add("plan", f"the plan is in {plan_row[4]} but the customer pays in {customer.currency}")
    anchor = body.get("billing_anchor", "calendar")
    if anchor not in ANCHORS:
        problems.add("billing_anchor", "must be calendar or anniversary")
    coupon = body.get("coupon")
    if coupon is not None:
        coupon_row = db.query_one(f"SELECT {coupons_api.COLUMNS} FROM coupons WHERE code = ?", (coupon,)) \
            if isinstance(coupon, str) else None
        if coupon_row is None:
            problems.add("coupon", f"unknown coupon {coupon!r}")
        elif coupon_row[5] is not None and customer and coupon_row[5] != customer.currency:
            problems.add("coupon", f"the coupon is in {coupon_row[5]} but the customer pays in {customer.currency}")
    zone = times.zone_or_error(customer.timezone) if customer else times.UTC
    start = _local_day(body["start"], zone, "start", problems) if body.get("start") is not None \
        else times.local_date(clock.now(), zone)
    overrides = _check_overrides(body.get("overrides"), jsonutil.decode(plan_row[9]) if plan_row else [],
                                 problems)
    problems.raise_if_any()
    now = now_micros()
    try:
        with db.transaction() as conn:
            later = conn.execute("SELECT id, end_date FROM subscriptions WHERE customer_id = ? AND status != 'active'"
                                 " AND (end_date IS NULL OR end_date > ?)",
                                 (customer.id, start.isoformat())).fetchone()
            if later is not None:
                raise Conflict(f"Subscription {later[0]} of this customer runs until {later[1]}; "
                               "start the new one on or after that day.")
            cur = conn.execute(
                "INSERT INTO subscriptions (customer_id, plan_id, status, start_date, billing_anchor, anchor_date,"
                " overrides, coupon, created_at, updated_at) VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?, ?)",
                (customer.id, plan_row[0], start.isoformat(), anchor, start.isoformat(),
                 jsonutil.encode(overrides), coupon, now, now))
            row = _load(conn, cur.lastrowid)
            audit(conn, request, "subscription.create", "subscription", row[0], after=view(row))
    except sqlite3.IntegrityError:
        raise Conflict(f"Customer {customer.id} already has an active subscription.") from None
    return created(view(row))


def list_subscriptions(request):
    limit = page_limit(request)
    cursor = decode_cursor(request)
    where, params = ["s.id > ?"], [cursor[0] if cursor else 0]
    customer_id = int_arg(request, "customer_id", minimum=1)
    if request.customer_scope is not None:
        customer_id = request.customer_scope if customer_id in (None, request.customer_scope) else -1
    if customer_id is not None:
        where.append("s.customer_id = ?")
        params.append(customer_id)
    status = request.arg("status")
    if status:
        where.append("s.status = ?")
        params.append(status)
    rows = request.app.db.query(f"SELECT {COLUMNS} FROM {FROM} WHERE {' AND '.join(where)} ORDER BY s.id LIMIT ?",
                                (*params, limit + 1))
    return page(rows, limit, view, lambda r: [r[0]])


def get(request, subscription_id):
    with request.app.db.reader() as conn:
        row = _load(conn, path_int(subscription_id, "Subscription"))
    request.check_customer(row[1])
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
        row = _load(conn, subscription_id)
        if row[3] != "active":
            raise Conflict(f"Subscription {subscription_id} is {row[3]}; only an active one can be canceled.")
        zone = _zone_of(app, row[1])
        start = times.parse_date(row[4])
        if body.get("at") is not None:
            end = _local_day(body["at"], zone, "at", problems)
        else:
            today = times.local_date(clock.now(), zone)
            end = periods.period_containing(max(today, start), row[6], times.parse_date(row[7]))[1]
        problems.raise_if_any()
        if end < start:
            raise ValidationError([{"field": "at", "message": f"must not be before the start ({row[4]})"}])
        _check_not_invoiced(conn, subscription_id, end)
        conn.execute("UPDATE subscriptions SET status = 'canceled', end_date = ?, updated_at = ? WHERE id = ?",
                     (end.isoformat(), now_micros(), subscription_id))
        after = _load(conn, subscription_id)
        audit(conn, request, "subscription.cancel", "subscription", subscription_id, view(row), view(after))
    return view(after)


def _check_not_invoiced(conn, subscription_id, day):
    """409 when `day` falls before the end of a period that already has an invoice."""
    last = conn.execute("SELECT max(period_end_date) FROM invoices WHERE subscription_id = ?",
                        (subscription_id,)).fetchone()[0]
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
        row = _load(conn, subscription_id)
        if row[3] != "active":
            raise Conflict(f"Subscription {subscription_id} is {row[3]}; only an active one can change plan.")
        customer = app.catalog.customer(row[1])
        if plan_row[4] != customer.currency:
            raise ValidationError([{"field": "plan", "message":
                                    f"the plan is in {plan_row[4]} but the customer pays in {customer.currency}"}])
        zone = times.zone_or_error(customer.timezone)
        day = _local_day(body["at"], zone, "at", problems)
        overrides = _check_overrides(body.get("overrides"), jsonutil.decode(plan_row[9]), problems)
        problems.raise_if_any()
        if day <= times.parse_date(row[4]):
            raise ValidationError([{"field": "at", "message": f"must be after the start ({row[4]})"}])
        _check_not_invoiced(conn, subscription_id, day)
        now = now_micros()
        conn.execute("UPDATE subscriptions SET status = 'ended', end_date = ?, updated_at = ? WHERE id = ?",
                     (day.isoformat(), now, subscription_id))
        cur = conn.execute(
            "INSERT INTO subscriptions (customer_id, plan_id, status, start_date, billing_anchor, anchor_date,"
            " overrides, coupon, created_at, updated_at) VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?, ?)",
            (row[1], plan_row[0], day.isoformat(), row[6], row[7], jsonutil.encode(overrides), row[9], now, now))
        new = _load(conn, cur.lastrowid)
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


def _usage_quantities(app, conn, customer_id, charges, start_us, end_us):
    usage = {}
    for charge in charges:
        meter = app.catalog.meter(charge.meter)
        if meter is None:
            continue
        rows = conn.execute("SELECT ts, seq, value FROM events WHERE customer_id = ? AND meter_id = ?"
                            " AND ts >= ? AND ts < ? AND matched = 1",
                            (customer_id, meter.id, start_us, end_us)).fetchall()
        rows += app.storage.live_rows(conn, meter, customer_id, start_us, end_us)  # days not closed yet
        usage[charge.meter] = aggregate(meter.aggregation, rows) or 0
    return usage


def billed_period(subscription_row, day):
    """(period_start, period_end, billed_start, billed_end): local dates of the
    regular period holding `day`, and that period clipped to the subscription."""
    anchor, anchor_date = subscription_row[6], times.parse_date(subscription_row[7])
    period_start, period_end = periods.period_containing(day, anchor, anchor_date)
    start = times.parse_date(subscription_row[4])
    end = times.parse_date(subscription_row[5]) if subscription_row[5] else None
    return period_start, period_end, max(period_start, start), min(period_end, end) if end else period_end


def billed_periods(subscription_row, until):
    """The billed periods of a subscription whose first day is before local date `until`."""
    start = times.parse_date(subscription_row[4])
    end = times.parse_date(subscription_row[5]) if subscription_row[5] else None
    result, day = [], start
    while day < until and (end is None or day < end):
        bounds = billed_period(subscription_row, day)
        result.append(bounds)
        day = bounds[3]
    return result


def rate_period(app, conn, subscription_row, plan_row, customer_row, day, extra_lines=(), resources=True,
                late_sessions=False, taken=None, billed_too=False):
    """The priced draft of the subscription period holding local `day`, with its
    UTC bounds: (draft, start_at, end_at). `extra_lines`: adjustment lines;
    `late_sessions`: also bill sessions of periods already invoiced; `taken`
    collects the ids of the sessions billed."""
    zone = times.zone_or_error(customer_row[4])
    period_start, period_end, billed_start, billed_end = billed_period(subscription_row, day)
    # the trial runs from the first day of the customer's subscription (the anchor a plan change keeps)
    trial_end = times.parse_date(subscription_row[7]) + timedelta(days=plan_row[8])
    active, days_in_period = periods.prorate_days(period_start, period_end, max(billed_start, trial_end), billed_end)
    start_at, end_at = periods.local_bounds(billed_start, billed_end, zone)
    charges = _charges_with_overrides(jsonutil.decode(plan_row[9]), jsonutil.decode(subscription_row[8]))
    usage = _usage_quantities(app, conn, customer_row[0], charges, times.to_micros(start_at),
                              times.to_micros(end_at))
    if resources:  # the invoice run says False for customers who never had a session
        extra_lines = sessions_api.resource_lines(conn, customer_row[0], times.to_micros(start_at),
                                                  times.to_micros(end_at), late_sessions, taken,
                                                  billed_too) + list(extra_lines)
    period_index = len(periods.periods_between(times.parse_date(subscription_row[7]), period_start,
                                               subscription_row[6]))
    draft = invoicing.build(plan_row[4], charges, usage, base_fee=plan_row[6], minimum_commitment=plan_row[7],
                            proration=invoicing.Proration(active, days_in_period),
                            tax_rate=money.parse_percent(customer_row[8]),
                            coupon=_split_coupon(conn, _coupon(conn, subscription_row[9], period_index),
                                                 subscription_row, period_start, period_end, billed_start),
                            credit_balance=coupons_api.balance(conn, customer_row[0]),
                            extra_lines=extra_lines,
                            meter_names={m.key: m.name for m in app.catalog.meters().values()},
                            billed_days=(billed_end - billed_start).days)
    return draft, start_at, end_at


def subscription_in_force(conn, customer_id, day):
    """The subscription row covering local date `day`, or None."""
    return conn.execute(
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


def _split_coupon(conn, coupon, subscription_row, period_start, period_end, billed_start):
    """A fixed amount off is for the whole period: when a plan change splits the
    period between two subscriptions, the later part gets what the earlier did not."""
    if coupon is None or coupon.amount_off is None or billed_start <= period_start:
        return coupon
    given = conn.execute(
        "SELECT coalesce(sum(discount), 0) FROM invoices WHERE customer_id = ? AND subscription_id != ?"
        " AND status != 'void' AND period_start_date >= ? AND period_end_date <= ?",
        (subscription_row[1], subscription_row[0], period_start.isoformat(), period_end.isoformat())).fetchone()[0]
    return invoicing.Coupon(amount_off=max(0, coupon.amount_off - given))


def _coupon(conn, code, period_index):
    """The subscription's coupon as invoicing.Coupon if it applies to that period."""
    if not code:
        return None
    row = coupons_api.load(conn, code)
    if not coupons_api.applies(row, period_index):
        return None
    if row[3] is not None:
        return invoicing.Coupon(percent_off=money.parse_percent(row[3]))
    return invoicing.Coupon(amount_off=row[4])
