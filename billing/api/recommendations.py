"""Recommendations (§10): computed from stored data with the rating engine,
each with the inputs in `evidence`, so a person can redo the arithmetic.

- `cheaper_plan`: the customer's last (up to 3) invoiced periods re-rated
  under every other plan of its currency (base fee, commitment and usage
  charges on the same usage); the cheapest, when cheaper on average than
  what was billed (subtotals before discounts and tax).
- `unused_commitment`: a minimum-commitment true-up in each of the last 2
  invoiced periods; the average true-up.
- `scale_down` (one per service): a collected service whose CPU use ÷ allocated CPU was under
  30 % in every hour of the last 7 days that has data: cores needed =
  ceil(highest hourly use in cores × 1.3); savings = (allocated − needed)
  cores × 720 hours at the customer's price per allocated core-hour.
"""

import math
from decimal import Decimal

from .. import clock, jsonutil
from ..domain import invoicing, money, plans, times
from ..errors import NotFound, ValidationError
from ..store import event_time
from ..store.db import named
from ..store.rollups import SPLIT, TABLES
from .common import int_arg
from .subscriptions import usage_quantities

CPU_USED, CPU_ALLOCATED = "cpu_core_seconds", "cpu_allocated_core_seconds"
SCALE_DOWN_BELOW = Decimal("0.30")
HEADROOM = Decimal("1.3")
HOURS_PER_MONTH = 720
PERIODS_COMPARED = 3


def recommendations(request):
    """GET /v1/analytics/recommendations?customer_id (a customer: its own)."""
    customer_id = request.customer_filter(int_arg(request, "customer_id", minimum=1))
    if customer_id is None:
        raise ValidationError([{"field": "customer_id", "message": "is required: whose recommendations"}])
    app = request.app
    customer = app.catalog.customer(customer_id)
    if customer is None:
        raise NotFound(f"Customer {customer_id} not found.")
    with app.db.snapshot() as conn:
        found = [cheaper_plan(app, conn, customer), unused_commitment(conn, customer),
                 *scale_down(app, conn, customer)]
    return {"customer_id": customer_id, "data": [r for r in found if r is not None]}


def _invoiced_periods(conn, customer_id, limit):
    return named(conn, "SELECT i.id, i.currency, i.period_start, i.period_end, i.period_start_date, i.period_end_date,"
                       " i.subtotal, p.code AS plan FROM invoices i JOIN subscriptions s ON s.id = i.subscription_id"
                       " JOIN plans p ON p.id = s.plan_id WHERE i.customer_id = ? AND i.status IN ('issued', 'paid')"
                       " AND i.kind = 'subscription' ORDER BY i.period_start DESC, i.id DESC LIMIT ?",
                 (customer_id, limit)).fetchall()


def _rate(app, conn, customer, plan, period):
    """The subtotal (minor units) of `plan` for the usage of an invoiced period."""
    charges = plans.to_charges(jsonutil.decode(plan["charges"]))
    usage = usage_quantities(app, conn, customer.id, charges, period["period_start"], period["period_end"])
    days = (times.parse_date(period["period_end_date"]) - times.parse_date(period["period_start_date"])).days
    draft = invoicing.build(plan["currency"], charges, usage, base_fee=plan["base_fee"],
                            minimum_commitment=plan["minimum_commitment"], billed_days=days)
    return draft.subtotal


def cheaper_plan(app, conn, customer):
    periods = _invoiced_periods(conn, customer.id, PERIODS_COMPARED)
    if not periods:
        return None
    current = periods[0]["plan"]  # the newest period's
    alternatives = named(conn, "SELECT code, currency, base_fee, minimum_commitment, charges FROM plans"
                               " WHERE currency = ? AND code != ? ORDER BY code", (customer.currency, current)).fetchall()
    if not alternatives:
        return None
    rows, sums = [], {plan["code"]: 0 for plan in alternatives}
    for period in periods:
        priced = {plan["code"]: _rate(app, conn, customer, plan, period) for plan in alternatives}
        for code, amount in priced.items():
            sums[code] += amount
        rows.append({"invoice_id": period["id"], "period_start": period["period_start_date"],
                     "period_end": period["period_end_date"], "billed_subtotal": _fmt(period["subtotal"], customer),
                     "alternatives": {code: _fmt(amount, customer) for code, amount in priced.items()}})
    billed = sum(p["subtotal"] for p in periods)
    best = min(sums, key=lambda code: (sums[code], code))
    count = len(periods)
    saving = Decimal(billed - sums[best]) / count
    if saving <= 0:
        return None
    saving_minor = invoicing.round_minor(saving)
    return {"type": "cheaper_plan",
            "message": f"On plan {best} the last {count} period{'s' if count > 1 else ''} would have cost "
                       f"{_fmt(invoicing.round_minor(Decimal(sums[best]) / count), customer)} {customer.currency} "
                       f"a period on average instead of {_fmt(invoicing.round_minor(Decimal(billed) / count), customer)}.",
            "estimated_monthly_savings": {customer.currency: _fmt(saving_minor, customer)},
            "evidence": {"current_plan": current, "cheapest_plan": best, "periods": rows,
                         "average_billed": _fmt(invoicing.round_minor(Decimal(billed) / count), customer),
                         "average_on_cheapest": _fmt(invoicing.round_minor(Decimal(sums[best]) / count), customer)}}


def unused_commitment(conn, customer):
    periods = _invoiced_periods(conn, customer.id, 2)
    if len(periods) < 2:
        return None
    true_ups = []
    for period in periods:
        line = named(conn, "SELECT amount FROM invoice_lines WHERE invoice_id = ? AND type = 'minimum'",
                     (period["id"],)).fetchone()
        if line is None:
            return None
        true_ups.append((period, line["amount"]))
    average = invoicing.round_minor(Decimal(sum(amount for _, amount in true_ups)) / len(true_ups))
    return {"type": "unused_commitment",
            "message": f"The minimum commitment was topped up in each of the last 2 periods, by "
                       f"{_fmt(average, customer)} {customer.currency} on average: a lower commitment would save it.",
            "estimated_monthly_savings": {customer.currency: _fmt(average, customer)},
            "evidence": {"periods": [{"invoice_id": p["id"], "period_start": p["period_start_date"],
                                      "period_end": p["period_end_date"], "true_up": _fmt(amount, customer)}
                                     for p, amount in true_ups],
                         "average_true_up": _fmt(average, customer)}}


# whole hours are whole rollup buckets; the collector's meters are grouped by service
_HOURLY_ROLLUPS = " UNION ALL ".join(
    f"SELECT bucket AS ts, json_extract(grp, '$.service') AS service, total_hi, total_lo"
    f" FROM {table} WHERE customer_id = ? AND meter_id = ? AND bucket >= ? AND bucket < ?" for table in TABLES)
# a meter set up by hand without that group: its events, one by one
_HOURLY_EVENTS = ("SELECT ts, json_extract(properties, '$.service') AS service, 0 AS total_hi, value AS total_lo"
                  f" FROM events WHERE {event_time.RANGE} AND customer_id = ? AND meter_id = ? AND matched = 1")


def _hourly(app, conn, customer_id, meter_key, start_us, end_us):
    """{service: {hour start µs: micros}} of a collector meter."""
    meter = app.catalog.meter(meter_key)
    if meter is None:
        return {}
    if "service" in meter.group_by:
        rows = named(conn, _HOURLY_ROLLUPS, (customer_id, meter.id, start_us, end_us) * len(TABLES))
    else:
        rows = named(conn, _HOURLY_EVENTS, (*event_time.range_params(start_us, end_us), customer_id, meter.id))
    result = {}
    for row in rows:
        hour = row["ts"] // 3_600_000_000 * 3_600_000_000
        hours = result.setdefault(row["service"], {})
        hours[hour] = hours.get(hour, 0) + row["total_hi"] * SPLIT + row["total_lo"]
    return result


def _core_hour_price(app, conn, customer):
    """The customer's per-unit price of an allocated core-second, × 3,600."""
    row = named(conn, "SELECT p.charges, s.overrides FROM subscriptions s JOIN plans p ON p.id = s.plan_id"
                      " WHERE s.customer_id = ? AND s.status = 'active'", (customer.id,)).fetchone()
    if row is None:
        return None
    overrides = jsonutil.decode(row["overrides"])
    for charge in jsonutil.decode(row["charges"]):
        if charge["meter"] == CPU_ALLOCATED and charge["model"] == "per_unit":
            price = overrides.get(CPU_ALLOCATED, {}).get("unit_price", charge["unit_price"])
            return Decimal(str(price)) * 3600
    return None


def scale_down(app, conn, customer):
    now = clock.now()
    end_us = times.to_micros(now) // 3_600_000_000 * 3_600_000_000  # whole hours only
    start_us = end_us - 7 * 24 * 3_600_000_000
    used = _hourly(app, conn, customer.id, CPU_USED, start_us, end_us)
    allocated = _hourly(app, conn, customer.id, CPU_ALLOCATED, start_us, end_us)
    price = _core_hour_price(app, conn, customer)
    if price is None:
        return []
    found = []
    for service in sorted(allocated, key=str):
        hours = allocated[service]
        if service is None or not hours:
            continue
        use = used.get(service, {})
        ratios = [Decimal(use.get(hour, 0)) / Decimal(alloc) for hour, alloc in hours.items() if alloc > 0]
        if not ratios or max(ratios) >= SCALE_DOWN_BELOW:
            continue
        allocated_cores = math.ceil(max(hours.values()) / 3_600_000_000)  # core-seconds (µ) in an hour → cores
        peak_cores = Decimal(max(use.values(), default=0)) / 3_600_000_000
        needed = max(1, math.ceil(peak_cores * HEADROOM))
        if needed >= allocated_cores:
            continue
        saving = money.to_minor((allocated_cores - needed) * HOURS_PER_MONTH * price, customer.currency)
        found.append({"type": "scale_down",
                     "message": f"Service {service} used under {int(SCALE_DOWN_BELOW * 100)} % of its "
                                f"{allocated_cores} allocated cores in every hour of the last 7 days; "
                                f"{needed} would do.",
                     "estimated_monthly_savings": {customer.currency: _fmt(saving, customer)},
                     "evidence": {"service": service, "hours": len(ratios),
                                  "highest_hourly_use_percent": str((max(ratios) * 100).quantize(Decimal("0.01"))),
                                  "highest_hourly_use_cores": str(peak_cores.quantize(Decimal("0.000001"))),
                                  "allocated_cores": allocated_cores, "cores_needed": needed,
                                  "price_per_core_hour": str(price.normalize()), "hours_per_month": HOURS_PER_MONTH}})
    return found


def _fmt(minor, customer):
    return money.format_minor(minor, customer.currency)

