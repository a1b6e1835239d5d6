"""Golden rating examples at, just below and just above every tier boundary.

Plan used throughout (USD):
  graduated: free 100; (0, 1000] at 0.01; (1000, 5000] at 0.008 + flat 2; beyond at 0.005 + flat 3
  volume:    (0, 1000] at 0.01; (1000, 5000] at 0.008 + flat 2; beyond at 0.005 + flat 3
"""

from decimal import Decimal as D

import pytest

from billing.domain.rating import Charge, Tier, price

TIERS = (Tier(D(1000), D("0.01")), Tier(D(5000), D("0.008"), D(2)), Tier(None, D("0.005"), D(3)))
GRADUATED = Charge("m", "graduated", free_units=D(100), tiers=TIERS)
VOLUME = Charge("m", "volume", tiers=TIERS)


@pytest.mark.parametrize("q,expected,why", [
    (0, 0, "nothing billable"),
    (50, 0, "free units larger than usage"),
    (100, 0, "exactly the free units"),
    (1099, 999, "billable 999 × 0.01 = 9.99"),
    (1100, 1000, "billable 1,000 × 0.01 = 10.00: still tier 1, no flat fee"),
    (1101, 1201, "10.00 + 1 × 0.008 + 2 = 12.008 → 12.01"),
    (5099, 4399, "10.00 + 3,999 × 0.008 = 31.992 + 2 = 41.992 → 41.99"),
    (5100, 4400, "10.00 + 4,000 × 0.008 = 32 + 2 = 44.00"),
    (5101, 4701, "44.00 + 1 × 0.005 + 3 = 47.005 → 47.01 (half-up)"),
])
def test_graduated_boundaries(q, expected, why):
    assert price(GRADUATED, D(q), "USD").amount == expected, why


@pytest.mark.parametrize("q,expected,why", [
    (0, 0, "billable 0 → 0, not the first tier's flat fee"),
    (999, 999, "999 × 0.01 = 9.99"),
    (1000, 1000, "1,000 × 0.01 = 10.00 (up_to is inclusive)"),
    (1001, 1001, "1,001 × 0.008 + 2 = 10.008 → 10.01"),
    (4999, 4199, "4,999 × 0.008 + 2 = 41.992 → 41.99"),
    (5000, 4200, "5,000 × 0.008 + 2 = 42.00"),
    (5001, 2801, "5,001 × 0.005 + 3 = 28.005 → 28.01"),
])
def test_volume_boundaries(q, expected, why):
    assert price(VOLUME, D(q), "USD").amount == expected, why


@pytest.mark.parametrize("q,expected", [(0, 0), (1, 25), (999, 25), (1000, 25), (1001, 50), (2000, 50)])
def test_package_boundaries(q, expected):
    """packages of 1,000 at 0.25: ceil(q / 1000) × 0.25."""
    assert price(Charge("m", "package", package_size=1000, package_price=D("0.25")), D(q), "USD").amount == expected


def test_fractional_quantities_split_across_tiers():
    """graduated, no free units: 1000.5 → 1,000 × 0.01 + 0.5 × 0.008 + 2 = 12.004 → 12.00."""
    charge = Charge("m", "graduated", tiers=TIERS)
    priced = price(charge, D("1000.5"), "USD")
    assert priced.amount == 1200
    assert [t.quantity for t in priced.tiers] == [D(1000), D("0.5")]
