"""GB-days (§8), pure: stored bytes integrated over local days, exactly.

A GB-day is 10⁹ bytes kept for 86,400 s, whatever the day's length; a day's
quantity is its byte-seconds ÷ (10⁹ × 86,400), rounded half-up to 6 decimals.
"""

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from billing.domain import objects as rules
from billing.domain import times
from billing.domain.quantities import from_micros

GB = 10 ** 9


def day_bounds(day, zone_name):
    zone = times.zone_or_error(zone_name)
    start = times.local_midnight(day, zone)
    end = times.local_midnight(day + timedelta(days=1), zone)
    return int(start.timestamp()), int(end.timestamp())


def gb_days(spans, day, zone, now_s=2 ** 40):
    start, end = day_bounds(day, zone)
    return from_micros(rules.gb_day_micros(rules.byte_seconds(spans, start, end, now_s)))


def test_one_gb_for_36_hours_from_local_midnight_is_one_and_a_half_gb_days():
    """1 GB from 2025-09-10 00:00 New York for 36 h:
    day 1: 10⁹ B × 86,400 s ÷ (10⁹ × 86,400) = 1.000000;
    day 2: 10⁹ B × 43,200 s ÷ (10⁹ × 86,400) = 0.500000; total 1.5."""
    start, _ = day_bounds(date(2025, 9, 10), "America/New_York")
    spans = [(GB, start, start + 36 * 3600)]
    first = gb_days(spans, date(2025, 9, 10), "America/New_York")
    second = gb_days(spans, date(2025, 9, 11), "America/New_York")
    assert (first, second) == (Decimal("1"), Decimal("0.5"))
    assert first + second == Decimal("1.5")
    assert gb_days(spans, date(2025, 9, 12), "America/New_York") == 0


def test_one_gb_through_a_25_hour_dst_day():
    """2025-11-02 in New York lasts 25 h (clocks go back): 10⁹ × 90,000 ÷
    (10⁹ × 86,400) = 1.0416666… → 1.041667 (half-up to 6 decimals).
    The spring day 2025-03-09 lasts 23 h: 82,800 ÷ 86,400 = 0.958333…"""
    start, end = day_bounds(date(2025, 11, 2), "America/New_York")
    assert end - start == 25 * 3600
    assert gb_days([(GB, start - 10, None)], date(2025, 11, 2), "America/New_York") == Decimal("1.041667")
    spring_start, _ = day_bounds(date(2025, 3, 9), "America/New_York")
    assert gb_days([(GB, spring_start, None)], date(2025, 3, 9), "America/New_York") == Decimal("0.958333")


def test_an_object_replaced_by_one_twice_its_size_at_noon():
    """1 GB 00:00–12:00 then 2 GB 12:00–24:00 (UTC): (10⁹ × 43,200 + 2×10⁹ ×
    43,200) ÷ (10⁹ × 86,400) = 0.5 + 1.0 = 1.5 GB-days."""
    start, end = day_bounds(date(2025, 9, 10), "UTC")
    noon = start + 43_200
    spans = [(GB, start, noon), (2 * GB, noon, None)]
    assert gb_days(spans, date(2025, 9, 10), "UTC") == Decimal("1.5")


def test_upload_and_delete_within_the_same_second_count_nothing():
    """Instants are whole seconds: a span of 0 s is 0 byte-seconds."""
    start, _ = day_bounds(date(2025, 9, 10), "UTC")
    spans = [(5 * GB, start + 100, start + 100)]
    assert rules.byte_seconds(spans, start, start + 86_400, 2 ** 40) == 0


def test_the_open_day_counts_only_up_to_now():
    """1 GB since local midnight, now 06:00: 21,600 s → 0.25 GB-day so far."""
    start, _ = day_bounds(date(2025, 9, 10), "UTC")
    assert gb_days([(GB, start, None)], date(2025, 9, 10), "UTC", now_s=start + 6 * 3600) == Decimal("0.25")


def test_rounding_is_half_up_and_exact_at_huge_sizes():
    """One byte-second is 1/86,400,000,000,000 GB-day: 43,200,000 byte-seconds
    are exactly half a millionth → rounds up; one less rounds down. A petabyte
    kept all day is exactly 10⁶ GB-days (integers never lose precision)."""
    assert rules.gb_day_micros(43_200_000) == 1
    assert rules.gb_day_micros(43_199_999) == 0
    assert rules.gb_day_micros(10 ** 15 * 86_400) == 10 ** 6 * 10 ** 6


def test_several_spans_and_a_range_in_the_middle():
    """Spans outside the range count nothing; overlaps are clipped."""
    spans = [(100, 0, 50), (100, 40, 200), (7, 300, None)]
    assert rules.byte_seconds(spans, 45, 150, 10 ** 9) == 100 * 5 + 100 * 105
    assert rules.byte_seconds(spans, 250, 350, 320) == 7 * 20


def test_day_bounds_in_a_quarter_hour_zone():
    """Kathmandu (+05:45): the local day starts at 18:15 UTC the day before."""
    start, end = day_bounds(date(2025, 9, 10), "Asia/Kathmandu")
    assert datetime.fromtimestamp(start, timezone.utc) == datetime(2025, 9, 9, 18, 15, tzinfo=timezone.utc)
    assert end - start == 86_400
