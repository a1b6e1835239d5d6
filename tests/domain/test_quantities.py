from decimal import Decimal

import pytest

from billing.domain import quantities
from billing.domain.aggregation import aggregate


@pytest.mark.parametrize("value,micros", [
    (0, 0), (1, 1_000_000), (Decimal("0.1"), 100_000), (Decimal("1.123456"), 1_123_456),
    (10 ** 12, 10 ** 18), (Decimal("1E+2"), 100_000_000), (Decimal("2.500000"), 2_500_000),
])
def test_to_micros_exact(value, micros):
    assert quantities.to_micros(value) == micros


@pytest.mark.parametrize("value,message", [
    (-1, "negative"), (Decimal("-0.5"), "negative"), (Decimal("NaN"), "finite"),
    (Decimal("Infinity"), "finite"), (Decimal("1.1234567"), "6 decimal"),
    (10 ** 12 + 1, "exceed"), (Decimal("1e999"), "exceed"), ("5", "number"), (True, "number"),
    (None, "number"),
])
def test_to_micros_rejects(value, message):
    with pytest.raises(quantities.QuantityError, match=message):
        quantities.to_micros(value)


def _by_the_rule(value):
    """A decimal quantity's micros by the rule written out (the slow path's
    checks, in order), or the QuantityError's message."""
    if not value.is_finite():
        return "finite"
    if value < 0:
        return "negative"
    if abs(value) > quantities.MAX_QUANTITY:
        return "exceed"
    if value and value.normalize().as_tuple().exponent < -6:
        return "6 decimal"
    return int(value.scaleb(6))


EDGES = ["0", "-0", "0.0000000", "0E-999999", "0E+5", "1E-6", "1E-7", "0.000001", "0.0000015", "1.0000000",
         "1000000000000", "1000000000000.000000", "1000000000000.0000001", "1000000000000.000001", "1E+12", "1E+13",
         "9.99999999999999999999E+11", "123.4560", "1E-999999", "1E-1000000000", "-1E-7", "-0.5",
         "NaN", "-Infinity", "sNaN"]


@pytest.mark.parametrize("seed", range(4))
def test_decimals_follow_the_rule(seed):
    """The usual decimal is taken at once (`_usual_decimal`); every decimal,
    usual or not, gives what the rule gives, past 28 digits too (where both
    round to the context's precision)."""
    import random
    rng = random.Random(seed)
    values = [Decimal(text) for text in EDGES]
    for _ in range(3000):
        digits = rng.randrange(1, 40)
        text = str(rng.randrange(10 ** digits)).zfill(digits)
        point = rng.randrange(len(text) + 1)
        text = (text[:point] or "0") + "." + (text[point:] or "0")
        values.append(Decimal(("-" if rng.random() < 0.05 else "") + text).scaleb(rng.choice([0, 0, 0, -3, 3, 9])))
    for value in values:
        expected = _by_the_rule(value)
        if isinstance(expected, str):
            with pytest.raises(quantities.QuantityError, match=expected):
                quantities.to_micros(value)
        else:
            assert quantities.to_micros(value) == expected, value
            usual = quantities._usual_decimal(value)
            assert usual is None or usual == expected
    taken = [value for value in values if quantities._usual_decimal(value) is not None]
    assert len(taken) > 500  # the usual ones are taken at once, not left to the rule


@pytest.mark.parametrize("value, micros", [
    ("0.001", 1000), ("4", 4_000_000), ("1E+12", 10 ** 18), ("0.000001", 1), ("2.500000000", 2_500_000),
    ("1E+2", 100_000_000)])
def test_usual_decimals_are_taken_at_once(value, micros):
    assert quantities._usual_decimal(Decimal(value)) == micros


def test_a_decimal_of_many_digits_is_refused_at_once():
    """A request may send a quantity of 200,000 digits: refused (or taken)
    in linear time, not by arithmetic on numbers as long as its digits."""
    import random
    import time
    rng = random.Random(1)
    long_one = Decimal("0." + "".join(rng.choice("0123456789") for _ in range(200_000)) + "1")
    started = time.perf_counter()
    with pytest.raises(quantities.QuantityError, match="6 decimal"):
        quantities.to_micros(long_one)
    assert quantities.to_micros(Decimal("7." + "0" * 200_000)) == 7_000_000
    assert time.perf_counter() - started < 0.5


def test_from_micros_is_exact_and_plain():
    assert quantities.from_micros(1_000_000) == 1
    assert str(quantities.from_micros(100_000)) == "0.1"
    assert str(quantities.from_micros(10 ** 18)) == "1000000000000"


def test_ten_tenths_sum_to_exactly_one():
    rows = [(i, i, quantities.to_micros(Decimal("0.1"))) for i in range(10)]
    assert aggregate("sum", rows) == Decimal(1)
    assert str(aggregate("sum", rows)) == "1"


def test_sum_never_overflows():
    rows = [(i, i, 10 ** 18) for i in range(100)]  # far past 2^63 micros in total
    assert aggregate("sum", rows) == 10 ** 14


@pytest.mark.parametrize("aggregation,expected", [
    ("sum", Decimal("6.5")), ("count", 3), ("max", 4), ("min", Decimal("0.5")),
    ("avg", Decimal("2.166667")), ("latest", 2), ("unique_count", 3),
])
def test_aggregations(aggregation, expected):
    # (ts, seq, value): latest is the highest ts, then the highest seq
    rows = [(10, 1, 4_000_000), (5, 2, 500_000), (10, 3, 2_000_000)]
    assert aggregate(aggregation, rows) == expected


@pytest.mark.parametrize("aggregation,expected", [
    ("sum", 0), ("count", 0), ("unique_count", 0), ("max", None), ("min", None),
    ("avg", None), ("latest", None),
])
def test_aggregations_of_nothing(aggregation, expected):
    assert aggregate(aggregation, []) == expected


def test_avg_rounds_half_up_to_six_decimals():
    # (1 + 0.000001 + 0) micros / 2 → 0.5000005 → 0.500001 (half up)
    rows = [(1, 1, 1_000_001), (2, 2, 0)]
    assert aggregate("avg", rows) == Decimal("0.500001")


def test_from_micros_stays_exact_beyond_28_digits():
    micros = 10 ** 30 + 1  # a sum far beyond any single event
    assert quantities.from_micros(micros) == Decimal("1000000000000000000000000.000001")
    assert quantities.from_micros(-1_500_000) == Decimal("-1.5")
