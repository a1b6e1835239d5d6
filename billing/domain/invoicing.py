"""Invoice building (pure): priced lines and the §5 totals, in minor units.

Order of the totals (each rounded half-up once to the minor unit):
subtotal = sum of the rounded base, usage, resource, minimum and adjustment lines;
discount = round(subtotal × percent_off / 100) or min(amount_off, subtotal);
tax = round((subtotal − discount) × tax_rate / 100);
total = subtotal − discount + tax (= the sum of all lines);
credits_applied = min(credit balance, total); amount_due = total − credits_applied.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from . import money, rating
from .quantities import plain

HUNDRED = Decimal(100)


def round_minor(amount):
    """An exact Decimal number of minor units, rounded once half-up."""
    return int(amount.quantize(Decimal(1), rounding=money.ROUNDING))


@dataclass
class Proration:
    active_days: int      # days of the period the plan is billed for (trial days excluded)
    days_in_period: int

    @property
    def full(self):
        return self.active_days == self.days_in_period


@dataclass
class Coupon:
    percent_off: Decimal | None = None
    amount_off: int | None = None      # minor units


@dataclass
class InvoiceDraft:
    currency: str
    lines: list = field(default_factory=list)
    subtotal: int = 0
    discount: int = 0
    tax: int = 0
    total: int = 0
    credits_applied: int = 0
    amount_due: int = 0


def _tiers_view(priced, currency):
    return [{"from": t.start, "to": t.end, "quantity": t.quantity, "unit_price": str(t.unit_price),
             "flat_fee": plain(t.flat_fee), "amount": plain(t.amount)} for t in priced.tiers]


def usage_line(charge, quantity, currency, meter_name=None, billed_days=0):
    priced = rating.price(charge, quantity, currency, billed_days)
    unit_price = str(charge.unit_price) if charge.model == "per_unit" else None
    if charge.model == "package":
        unit_price = f"{charge.package_price} per {charge.package_size}"
    description = f"{meter_name or charge.meter} ({charge.model.replace('_', ' ')})"
    if charge.free_units_per_day:
        description += (f", {plain(priced.free)} free ({plain(charge.free_units_per_day)}/day"
                        f" × {billed_days} days" +
                        (f" + {plain(charge.free_units)}" if charge.free_units else "") + ")")
    if priced.minimum_applied:
        description += ", minimum charge"
    return {"type": "usage", "description": description, "meter": charge.meter, "quantity": priced.quantity,
            "unit_price": unit_price, "amount": priced.amount, "tiers": _tiers_view(priced, currency)}


def build(currency, charges, usage, base_fee=0, minimum_commitment=0, proration=None, tax_rate=Decimal(0),
          coupon=None, credit_balance=0, extra_lines=(), meter_names=None, billed_days=0):
    """An invoice draft: base fee, usage lines (one per charge, `usage` maps
    meter → quantity), `extra_lines` (resource/adjustment lines with rounded
    amounts), the minimum-commitment top-up, then discount, tax and credits.
    `billed_days`: local days of the period billed (free_units_per_day)."""
    proration = proration or Proration(1, 1)
    draft = InvoiceDraft(currency)
    lines = draft.lines
    if base_fee and proration.days_in_period:
        amount = round_minor(Decimal(base_fee) * proration.active_days / proration.days_in_period)
        description = "Base fee" if proration.full else \
            f"Base fee ({proration.active_days}/{proration.days_in_period} days)"
        lines.append({"type": "base_fee", "description": description, "meter": None,
                      "quantity": proration.active_days, "unit_price": money.format_minor(base_fee, currency),
                      "amount": amount, "tiers": []})
    for charge in charges:
        lines.append(usage_line(charge, usage.get(charge.meter, 0), currency,
                                (meter_names or {}).get(charge.meter), billed_days))
    lines.extend(dict(line) for line in extra_lines)
    if minimum_commitment:
        commitment = round_minor(Decimal(minimum_commitment) * proration.active_days / proration.days_in_period) \
            if proration.days_in_period else 0
        counted = sum(l["amount"] for l in lines if l["type"] in ("base_fee", "usage", "resource"))
        if counted < commitment:
            lines.append({"type": "minimum", "description": "Minimum commitment top-up", "meter": None,
                          "quantity": None, "unit_price": money.format_minor(commitment, currency),
                          "amount": commitment - counted, "tiers": []})
    draft.subtotal = sum(l["amount"] for l in lines)
    if coupon is not None and draft.subtotal > 0:
        if coupon.percent_off is not None:
            draft.discount = round_minor(Decimal(draft.subtotal) * coupon.percent_off / HUNDRED)
        elif coupon.amount_off is not None:
            draft.discount = min(coupon.amount_off, draft.subtotal)
    if draft.discount:
        lines.append({"type": "discount", "description": "Discount", "meter": None, "quantity": None,
                      "unit_price": None, "amount": -draft.discount, "tiers": []})
    draft.tax = round_minor(Decimal(draft.subtotal - draft.discount) * Decimal(tax_rate) / HUNDRED)
    if draft.tax:
        lines.append({"type": "tax", "description": f"Tax ({tax_rate}%)", "meter": None, "quantity": None,
                      "unit_price": None, "amount": draft.tax, "tiers": []})
    draft.total = draft.subtotal - draft.discount + draft.tax
    assert draft.total == sum(l["amount"] for l in lines)
    draft.credits_applied = max(0, min(credit_balance, draft.total))
    draft.amount_due = max(0, draft.total - draft.credits_applied)
    return draft
