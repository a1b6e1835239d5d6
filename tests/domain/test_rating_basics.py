"""Hand-worked rating examples (SPEC §5)."""

from decimal import Decimal as D

from billing.domain.rating import Charge, Tier, price


def graduated():
    return Charge("api_calls", "graduated", free_units=D(1000),
                  tiers=(Tier(D(10000), D("0.002")), Tier(None, D("0.001"), D(5))))


def test_spec_graduated_example():
    """q = 12,000, 1,000 free → billable 11,000: 10,000 × 0.002 = 20 in tier 1,
    1,000 × 0.001 = 1 plus the flat fee 5 in tier 2 → 26.00."""
    priced = price(graduated(), D(12000), "USD")
    assert priced.amount == 2600
    assert [(t.quantity, t.amount) for t in priced.tiers] == [(D(10000), D(20)), (D(1000), D(6))]


def test_graduated_at_and_around_the_boundary():
    """billable 10,000 → all in tier 1: 20.00 (no flat fee, tier 2 untouched);
    billable 9,999 → 19.998 → 20.00 half-up; billable 10,001 → 20 + 0.001 + 5 = 25.001 → 25.00."""
    assert price(graduated(), D(11000), "USD").amount == 2000
    assert len(price(graduated(), D(11000), "USD").tiers) == 1
    assert price(graduated(), D(10999), "USD").amount == 2000
    assert price(graduated(), D(11001), "USD").amount == 2500


def test_volume_inclusive_boundaries():
    """seats: up to 10 at 10, beyond at 8. 10 seats → 100; 11 seats → 88; 0 → 0."""
    seats = Charge("seats", "volume", tiers=(Tier(D(10), D(10)), Tier(None, D(8))))
    assert price(seats, D(10), "USD").amount == 10000
    assert price(seats, D(11), "USD").amount == 8800
    assert price(seats, D(9), "USD").amount == 9000
    assert price(seats, D(0), "USD").amount == 0


def test_package_ceiling_after_free_units():
    """10,001 requests with 10,000 free → 1 billable → 1 package of 1,000 → 0.01."""
    requests = Charge("requests", "package", free_units=D(10000), package_size=1000, package_price=D("0.01"))
    assert price(requests, D(10001), "USD").amount == 1
    assert price(requests, D(10000), "USD").amount == 0
    assert price(requests, D(12000), "USD").amount == 2
    assert price(requests, D(12001), "USD").amount == 3


def test_minimum_charge_only_when_billable():
    """cpu: 0.0001 per second, minimum 0.01. 0 s → 0 (nothing billable);
    1 s → 0.0001 raised to 0.01; 1,000 s → 0.10 above the minimum."""
    cpu = Charge("cpu_seconds", "per_unit", unit_price=D("0.0001"), minimum_charge=D("0.01"))
    assert price(cpu, D(0), "USD").amount == 0
    assert price(cpu, D(1), "USD").amount == 1
    assert price(cpu, D(1000), "USD").amount == 10
    free = Charge("cpu_seconds", "per_unit", free_units=D(100), unit_price=D("0.0001"), minimum_charge=D("0.01"))
    assert price(free, D(50), "USD").amount == 0   # inside the free units


def test_half_up_and_currency_digits():
    """0.005 USD → 0.01 (ties away from zero); JPY 0.5 → 1 yen; KWD 0.0005 → 0.001."""
    unit = Charge("x", "per_unit", unit_price=D("0.005"))
    assert price(unit, D(1), "USD").amount == 1
    assert price(Charge("x", "per_unit", unit_price=D("0.5")), D(1), "JPY").amount == 1
    assert price(Charge("x", "per_unit", unit_price=D("0.0005")), D(1), "KWD").amount == 1
    assert price(Charge("x", "per_unit", unit_price=D("0.0049")), D(1), "USD").amount == 0
