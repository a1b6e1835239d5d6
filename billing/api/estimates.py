"""Estimates (§5): the live upcoming invoice of a customer's open period, and
the what-if price of a plan for hypothetical usage. A customer's own
credential prices only the plans of its own subscriptions (§9: no other
plan's internals); any other code answers 404 exactly as an unknown one."""

from .. import clock, jsonutil
from ..domain import invoicing, money, plans, quantities, times
from ..errors import FieldErrors, NotFound
from ..store.db import scalar
from . import adjustments
from . import coupons as coupons_api
from . import customers as customers_api
from . import invoices as invoices_api
from . import plans as plans_api
from . import sessions as sessions_api
from .common import check_unknown_fields, path_int
from .subscriptions import billed_period, period_coupon, rate_period, subscription_in_force


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
    with app.db.snapshot() as conn:
        draft, subscription_id, start_at, end_at = upcoming(app, conn, customer_row)
    return invoice_view(draft, customer_id, subscription_id, start_at, end_at)


def upcoming(app, conn, customer_row):
    """(draft, subscription id or None, period start, period end) of the
    customer's open period as of now: what its next invoice would be.
    `customer_row`: a sqlite3.Row of customers.COLUMNS."""
    customer_id = customer_row["id"]
    zone = times.zone_or_error(customer_row["timezone"])
    today = times.local_date(clock.now(), zone)
    subscription_row = subscription_in_force(conn, customer_id, today)
    # adjustments for late events not yet on a draft are billed with the next invoice
    carried = invoices_api.carrier(conn, customer_id) is not None
    extra = [] if carried else adjustments.pending(app, conn, customer_id)
    if subscription_row is None:  # the calendar month: its resource sessions, pending adjustments
        start_at, end_at = times.calendar_month_bounds(clock.now(), zone)
        lines = sessions_api.uncovered_lines(conn, customer_id, zone, times.to_micros(start_at),
                                             times.to_micros(end_at), late=not carried)
        draft = invoicing.build(customer_row["currency"], [], {}, extra_lines=lines + extra,
                                tax_rate=money.parse_percent(customer_row["tax_rate"]),
                                credit_balance=coupons_api.balance(conn, customer_id))
        return draft, None, start_at, end_at
    plan_row = plans_api.by_id(conn, subscription_row["plan_id"])
    draft, start_at, end_at = rate_period(app, conn, subscription_row, plan_row, customer_row, today,
                                          extra_lines=extra, late_sessions=not carried)
    return draft, subscription_row["id"], start_at, end_at


def estimate(request):
    """What-if: a full period of a plan (by code or inline) for hypothetical usage."""
    app = request.app
    body = request.json()
    problems = FieldErrors()
    check_unknown_fields(body, ("plan", "usage", "customer_id"), problems)
    if request.customer_scope is not None:
        plan = _own_plan(app, request.customer_scope, body.get("plan"), problems)
    else:
        plan = _plan(app, body.get("plan"), problems)
    usage = _usage(app, body.get("usage", {}), problems)
    customer_id = body.get("customer_id")
    customer_row = _customer(request, customer_id, plan, problems) if customer_id is not None else None
    problems.raise_if_any()
    charges = plans.to_charges(plan["charges"])
    tax_rate = money.parse_percent(customer_row["tax_rate"]) if customer_row else 0
    coupon = _coupon_now(app, customer_row) if customer_row else None
    zone = times.zone_or_error(customer_row["timezone"]) if customer_row else times.UTC
    start_at, end_at = times.calendar_month_bounds(clock.now(), zone)
    days = (times.local_date(end_at, zone) - times.local_date(start_at, zone)).days  # a full period
    draft = invoicing.build(plan["currency"], charges, usage, base_fee=plan["base_fee"],
                            minimum_commitment=plan["minimum_commitment"], tax_rate=tax_rate, coupon=coupon,
                            meter_names={m.key: m.name for m in app.catalog.meters().values()}, billed_days=days)
    return invoice_view(draft, customer_id, None, start_at, end_at)


def _plan(app, raw_plan, problems):
    """The priced parts of the plan to estimate: a stored plan by code, or a plan object checked inline."""
    if isinstance(raw_plan, str):
        row = plans_api.find(app.db, raw_plan)
        if row is None:
            problems.add("plan", f"unknown plan {raw_plan!r}")
            return None
        return {"currency": row["currency"], "base_fee": row["base_fee"],
                "minimum_commitment": row["minimum_commitment"], "charges": jsonutil.decode(row["charges"])}
    if isinstance(raw_plan, dict):
        inline = {"code": "estimate", "name": "Estimate", **raw_plan}
        return plans.check_plan(inline, app.catalog.meters(), problems)
    problems.add("plan", "is required: a plan code or a plan object")
    return None


def _own_plan(app, customer_id, raw_plan, problems):
    """For a customer's credential: a plan of one of its subscriptions, by code;
    NotFound, as for an unknown code, for any other."""
    if not isinstance(raw_plan, str):
        problems.add("plan", "must be the code of your subscription's plan")
        return None
    with app.db.reader() as conn:
        subscribed = scalar(conn, "SELECT 1 FROM subscriptions s JOIN plans p ON p.id = s.plan_id"
                                  " WHERE s.customer_id = ? AND p.code = ? LIMIT 1", (customer_id, raw_plan))
    if subscribed is None:
        raise NotFound(f"Plan {raw_plan!r} not found.")
    return _plan(app, raw_plan, problems)


def _usage(app, usage_raw, problems):
    """{meter key: quantity} of the hypothetical usage."""
    usage = {}
    if not isinstance(usage_raw, dict):
        problems.add("usage", "must be an object of meter: quantity")
        return usage
    meters = app.catalog.meters()
    for key, value in usage_raw.items():
        if key not in meters:
            problems.add(f"usage.{key}", f"unknown meter {key!r}")
            continue
        try:
            usage[key] = quantities.from_micros(quantities.to_micros(value))
        except quantities.QuantityError as exc:
            problems.add(f"usage.{key}", str(exc))
    return usage


def _customer(request, customer_id, plan, problems):
    """The customer row whose tax and coupon apply, in the plan's currency, or None."""
    # a customer-scoped caller naming anyone else gets 404, whether that customer exists or not;
    # the id itself is checked below as given (customer_filter would answer the caller's own for it)
    request.customer_filter(customer_id)
    if isinstance(customer_id, bool) or not isinstance(customer_id, int) \
            or request.app.catalog.customer(customer_id) is None:
        problems.add("customer_id", f"unknown customer {customer_id!r}")
        return None
    customer_row = customers_api.load(request.app.db, customer_id)
    if plan and plan.get("currency") and plan["currency"] != customer_row["currency"]:
        problems.add("plan", f"the plan is in {plan['currency']} but the customer pays in {customer_row['currency']}")
    return customer_row


def _coupon_now(app, customer_row):
    """The coupon of the customer's subscription in force, if it applies to the current period."""
    today = times.local_date(clock.now(), times.zone_or_error(customer_row["timezone"]))
    with app.db.reader() as conn:
        sub = subscription_in_force(conn, customer_row["id"], today)
        if sub is None:
            return None
        period_start, *_ = billed_period(sub, today)
        return period_coupon(conn, sub, period_start)
