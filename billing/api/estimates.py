"""Estimates (§5): the live upcoming invoice of a customer's open period, and
the what-if price of a plan for hypothetical usage."""

from .. import clock, jsonutil
from ..domain import invoicing, money, periods, plans, quantities, times
from ..errors import FieldErrors, NotFound
from . import adjustments
from . import coupons as coupons_api
from . import customers as customers_api
from . import invoices as invoices_api
from . import plans as plans_api
from . import sessions as sessions_api
from .common import check_unknown_fields, path_int
from .subscriptions import _coupon, billed_period, rate_period, subscription_in_force


def invoice_view(draft, customer_id, subscription_id, start_at, end_at, status="estimate"):
    currency = draft.currency
    fmt = lambda minor: money.format_minor(minor, currency)  # noqa: E731
    lines = [{key: value for key, value in line.items() if not key.startswith("adjusts_") and key != "resource_id"}
             | {"amount": fmt(line["amount"])} for line in draft.lines]
    return {"id": None, "number": None, "status": status, "customer_id": customer_id,
            "subscription_id": subscription_id, "currency": currency,
            "period_start": times.format_instant(start_at), "period_end": times.format_instant(end_at),
            "lines": lines, "subtotal": fmt(draft.subtotal), "discount": fmt(draft.discount),
            "tax": fmt(draft.tax), "total": fmt(draft.total), "credits_applied": fmt(draft.credits_applied),
            "amount_due": fmt(draft.amount_due), "amount_paid": fmt(0), "payment_status": "unpaid",
            "overdue": False, "issued_at": None, "due_at": None}


def upcoming_invoice(request, customer_id):
    customer_id = path_int(customer_id, "Customer")
    request.check_customer(customer_id)
    app = request.app
    customer_row = customers_api.load(app.db, customer_id)
    with app.db.reader() as conn:
        draft, subscription_id, start_at, end_at = upcoming(app, conn, customer_row)
    return invoice_view(draft, customer_id, subscription_id, start_at, end_at)


def upcoming(app, conn, customer_row):
    """(draft, subscription id or None, period start, period end) of the
    customer's open period as of now: what its next invoice would be."""
    customer_id = customer_row[0]
    zone = times.zone_or_error(customer_row[4])
    today = times.local_date(clock.now(), zone)
    subscription_row = subscription_in_force(conn, customer_id, today)
    # adjustments for late events not yet on a draft are billed with the next invoice
    carried = invoices_api.carrier(conn, customer_id) is not None
    extra = [] if carried else adjustments.pending(app, conn, customer_id)
    if subscription_row is None:  # the calendar month: its resource sessions, pending adjustments
        start_at, end_at = times.calendar_month_bounds(clock.now(), zone)
        lines = sessions_api.uncovered_lines(conn, customer_id, zone, times.to_micros(start_at),
                                             times.to_micros(end_at), late=not carried)
        draft = invoicing.build(customer_row[5], [], {}, extra_lines=lines + extra,
                                tax_rate=money.parse_percent(customer_row[8]),
                                credit_balance=coupons_api.balance(conn, customer_id))
        return draft, None, start_at, end_at
    plan_row = conn.execute(f"SELECT {plans_api.COLUMNS} FROM plans WHERE id = ?",
                            (subscription_row[12],)).fetchone()
    draft, start_at, end_at = rate_period(app, conn, subscription_row, plan_row, customer_row, today,
                                          extra_lines=extra, late_sessions=not carried)
    return draft, subscription_row[0], start_at, end_at


def estimate(request):
    """What-if: a full period of a plan (by code or inline) for hypothetical usage."""
    app = request.app
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, ("plan", "usage", "customer_id"), problems)
    raw_plan = body.get("plan")
    plan = None
    if isinstance(raw_plan, str):
        row = plans_api.find(app.db, raw_plan)
        if row is None:
            problems.add("plan", f"unknown plan {raw_plan!r}")
        else:
            plan = {"currency": row[4], "base_fee": row[6], "minimum_commitment": row[7],
                    "charges": jsonutil.decode(row[9])}
    elif isinstance(raw_plan, dict):
        inline = {"code": "estimate", "name": "Estimate", **raw_plan}
        plan = plans.check_plan(inline, app.catalog.meters(), problems)
    else:
        problems.add("plan", "is required: a plan code or a plan object")
    usage_raw = body.get("usage", {})
    usage = {}
    if not isinstance(usage_raw, dict):
        problems.add("usage", "must be an object of meter: quantity")
    else:
        meters = app.catalog.meters()
        for key, value in usage_raw.items():
            if key not in meters:
                problems.add(f"usage.{key}", f"unknown meter {key!r}")
                continue
            try:
                usage[key] = quantities.from_micros(quantities.to_micros(value))
            except quantities.QuantityError as exc:
                problems.add(f"usage.{key}", str(exc))
    customer_row = None
    customer_id = body.get("customer_id")
    if customer_id is not None:
        if request.customer_scope is not None and customer_id != request.customer_scope:
            raise NotFound("Customer not found.")  # the same answer whether it exists or not
        if isinstance(customer_id, bool) or not isinstance(customer_id, int) or app.catalog.customer(customer_id) is None:
            problems.add("customer_id", f"unknown customer {customer_id!r}")
        else:
            customer_row = customers_api.load(app.db, customer_id)
            if plan and plan.get("currency") and plan["currency"] != customer_row[5]:
                problems.add("plan", f"the plan is in {plan['currency']} but the customer pays in {customer_row[5]}")
    problems.raise_if_any()
    charges = plans.to_charges(plan["charges"])
    tax_rate = money.parse_percent(customer_row[8]) if customer_row else 0
    coupon = None
    if customer_row:  # the coupon of the subscription in force, if it applies to the current period
        today = times.local_date(clock.now(), times.zone_or_error(customer_row[4]))
        with app.db.reader() as conn:
            sub = subscription_in_force(conn, customer_id, today)
            if sub is not None and sub[9]:
                period_start = billed_period(sub, today)[0]
                index = len(periods.periods_between(times.parse_date(sub[7]), period_start, sub[6]))
                coupon = _coupon(conn, sub[9], index)
    zone = times.zone_or_error(customer_row[4]) if customer_row else times.UTC
    start_at, end_at = times.calendar_month_bounds(clock.now(), zone)
    days = (times.local_date(end_at, zone) - times.local_date(start_at, zone)).days  # a full period
    draft = invoicing.build(plan["currency"], charges, usage, base_fee=plan["base_fee"],
                            minimum_commitment=plan["minimum_commitment"], tax_rate=tax_rate, coupon=coupon,
                            meter_names={m.key: m.name for m in app.catalog.meters().values()}, billed_days=days)
    return invoice_view(draft, customer_id, None, start_at, end_at)
