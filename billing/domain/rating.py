"""Rating: one charge, one period's quantity → an exact, once-rounded amount.

Pure: plain values in, plain values out; no SQL, no HTTP, no clock. Follows
SPEC §5 to the letter:

1. billable = max(0, q − free), free = free_units + free_units_per_day × the
   local days billed in the period; tiers count billable units.
2. per_unit: billable × unit_price.
   graduated: tier i covers (up_to[i−1], up_to[i]] (None = ∞); each unit is
   priced at its own tier's unit_price; a tier's flat_fee is added once if any
   unit falls in it.
   volume: the single first tier with up_to ≥ billable (inclusive) prices all
   units: billable × unit_price + flat_fee; billable 0 → 0.
   package: ceil(billable / package_size) × package_price.
3. minimum_charge: when billable > 0 and the amount is below it, raise it.
4. Round once, half-up, to the currency's minor unit; keep the tier breakdown.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from . import money

MODELS = ("per_unit", "graduated", "volume", "package")
ZERO = Decimal(0)


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None
    unit_price: Decimal
    flat_fee: Decimal = ZERO


@dataclass(frozen=True)
class Charge:
    meter: str
    model: str
    free_units: Decimal = ZERO
    unit_price: Decimal = ZERO
    tiers: tuple = ()
    package_size: int = 1
    package_price: Decimal = ZERO
    minimum_charge: Decimal = ZERO
    free_units_per_day: Decimal = ZERO

    def allowance(self, billed_days):
        """The free units of a period of `billed_days` local days."""
        return self.free_units + self.free_units_per_day * billed_days


@dataclass(frozen=True)
class TierLine:
    start: Decimal           # exclusive lower bound, in billable units
    end: Decimal | None      # inclusive upper bound (None = ∞)
    quantity: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    amount: Decimal          # exact, unrounded


@dataclass(frozen=True)
class Priced:
    quantity: Decimal
    billable: Decimal
    exact: Decimal            # before rounding, after the minimum charge
    amount: int               # minor units, rounded once
    minimum_applied: bool = False
    tiers: tuple = field(default=())
    free: Decimal = ZERO      # the allowance deducted


def _ceil_div(a, b):
    """ceil(a / b) for Decimal a ≥ 0 and int b ≥ 1, exactly."""
    whole = a // b
    return whole + 1 if whole * b < a else whole


def price(charge, quantity, currency, billed_days=0):
    """Price `quantity` (exact Decimal, the meter's aggregate) for one charge
    over a period of `billed_days` local days (for `free_units_per_day`)."""
    quantity = Decimal(quantity or 0)
    free = charge.allowance(billed_days)
    billable = max(ZERO, quantity - free)
    breakdown = []
    if charge.model == "per_unit":
        exact = billable * charge.unit_price
    elif charge.model == "graduated":
        exact = ZERO
        start = ZERO
        for tier in charge.tiers:
            end = tier.up_to
            upper = billable if end is None else min(billable, end)
            units = max(ZERO, upper - start)
            amount = units * tier.unit_price + (tier.flat_fee if units > 0 else ZERO)
            breakdown.append(TierLine(start, end, units, tier.unit_price,
                                      tier.flat_fee if units > 0 else ZERO, amount))
            exact += amount
            if end is None or billable <= end:
                break
            start = end
    elif charge.model == "volume":
        exact = ZERO
        if billable > 0:
            start = ZERO
            for tier in charge.tiers:
                if tier.up_to is None or billable <= tier.up_to:
                    exact = billable * tier.unit_price + tier.flat_fee
                    breakdown.append(TierLine(start, tier.up_to, billable, tier.unit_price,
                                              tier.flat_fee, exact))
                    break
                start = tier.up_to
    elif charge.model == "package":
        packages = _ceil_div(billable, charge.package_size)
        exact = packages * charge.package_price
    else:
        raise ValueError(f"unknown pricing model {charge.model!r}")
    minimum_applied = False
    if billable > 0 and charge.minimum_charge and exact < charge.minimum_charge:
        exact = charge.minimum_charge
        minimum_applied = True
    return Priced(quantity, billable, exact, money.to_minor(exact, currency), minimum_applied,
                  tuple(breakdown), free)
