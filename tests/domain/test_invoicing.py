"""Golden invoices worked out by hand (SPEC §5 totals order)."""

from decimal import Decimal as D

from billing.domain.invoicing import Coupon, Proration, build
from billing.domain.rating import Charge, Tier

API = Charge("api_calls", "graduated", free_units=D(1000),
             tiers=(Tier(D(10000), D("0.002")), Tier(None, D("0.001"), D(5))))


def test_full_period_with_tax():
    """base 49.00 + usage 26.00 (q 12,000) = 75.00; commitment 100.00 → minimum 25.00;
    subtotal 100.00; tax 18% = 18.00; total 118.00."""
    draft = build("USD", [API], {"api_calls": D(12000)}, base_fee=4900, minimum_commitment=10000,
                  tax_rate=D(18))
    assert [(l["type"], l["amount"]) for l in draft.lines] == [
        ("base_fee", 4900), ("usage", 2600), ("minimum", 2500), ("tax", 1800)]
    assert (draft.subtotal, draft.discount, draft.tax, draft.total, draft.amount_due) == (10000, 0, 1800, 11800, 11800)


def test_proration_started_on_the_10th_of_september():
    """21 of 30 days: base 49.00 × 21/30 = 34.30; commitment 100 × 21/30 = 70.00;
    usage 0 → minimum 70.00 − 34.30 = 35.70; subtotal 70.00."""
    draft = build("USD", [API], {}, base_fee=4900, minimum_commitment=10000, proration=Proration(21, 30))
    assert [(l["type"], l["amount"]) for l in draft.lines] == [("base_fee", 3430), ("usage", 0), ("minimum", 3570)]
    assert draft.total == 7000


def test_proration_rounds_half_up_once():
    """base 10.00 × 1/8 = 1.25 exactly; 10.00 × 1/16 = 0.625 → 0.63 (half up)."""
    assert build("USD", [], {}, base_fee=1000, proration=Proration(1, 8)).total == 125
    assert build("USD", [], {}, base_fee=1000, proration=Proration(1, 16)).total == 63


def test_coupon_tax_and_credits_together():
    """base 100.00; 20% off → discount 20.00; tax 10% of 80.00 = 8.00; total 88.00;
    credit balance 50.00 → credits 50.00, due 38.00."""
    draft = build("USD", [], {}, base_fee=10000, tax_rate=D(10), coupon=Coupon(percent_off=D(20)),
                  credit_balance=5000)
    assert [(l["type"], l["amount"]) for l in draft.lines] == [("base_fee", 10000), ("discount", -2000), ("tax", 800)]
    assert (draft.subtotal, draft.discount, draft.tax, draft.total) == (10000, 2000, 800, 8800)
    assert (draft.credits_applied, draft.amount_due) == (5000, 3800)


def test_amount_off_never_exceeds_the_subtotal():
    draft = build("USD", [], {}, base_fee=500, coupon=Coupon(amount_off=1000))
    assert (draft.discount, draft.total) == (500, 0)


def test_jpy_and_kwd():
    """JPY: 1,234 units × 1.5 = 1,851 yen exactly. KWD: 3 × 0.5005 = 1.5015 → 1.502 (half up)."""
    yen = build("JPY", [Charge("x", "per_unit", unit_price=D("1.5"))], {"x": D(1234)})
    assert yen.total == 1851
    kwd = build("KWD", [Charge("x", "per_unit", unit_price=D("0.5005"))], {"x": D(3)})
    assert kwd.total == 1502


def test_tax_rounding_half_up():
    """subtotal 0.05, tax 10% = 0.005 → 0.01."""
    draft = build("USD", [Charge("x", "per_unit", unit_price=D("0.05"))], {"x": 1}, tax_rate=D(10))
    assert (draft.subtotal, draft.tax, draft.total) == (5, 1, 6)
