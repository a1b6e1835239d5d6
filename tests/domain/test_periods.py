from datetime import date

from billing.domain import periods, times


def test_calendar_periods():
    assert periods.period_containing(date(2025, 2, 14), "calendar", date(2025, 1, 10)) == \
        (date(2025, 2, 1), date(2025, 3, 1))
    assert periods.period_containing(date(2024, 12, 31), "calendar", date(2024, 1, 1)) == \
        (date(2024, 12, 1), date(2025, 1, 1))


def test_anniversary_on_the_31st_never_drifts():
    start = date(2025, 1, 31)
    bounds = [periods.anniversary(start, k) for k in range(5)]
    assert bounds == [date(2025, 1, 31), date(2025, 2, 28), date(2025, 3, 31), date(2025, 4, 30),
                      date(2025, 5, 31)]
    assert periods.period_containing(date(2025, 3, 30), "anniversary", start) == (date(2025, 2, 28), date(2025, 3, 31))
    assert periods.period_containing(date(2025, 3, 31), "anniversary", start) == (date(2025, 3, 31), date(2025, 4, 30))


def test_anniversary_leap_year():
    start = date(2024, 1, 30)
    assert periods.anniversary(start, 1) == date(2024, 2, 29)
    assert periods.anniversary(start, 13) == date(2025, 2, 28)
    assert periods.anniversary(date(2024, 2, 29), 12) == date(2025, 2, 28)
    assert periods.anniversary(date(2024, 2, 29), 48) == date(2028, 2, 29)


def test_periods_between():
    assert periods.periods_between(date(2025, 1, 10), date(2025, 3, 5), "calendar") == [
        (date(2025, 1, 1), date(2025, 2, 1)), (date(2025, 2, 1), date(2025, 3, 1)),
        (date(2025, 3, 1), date(2025, 4, 1))]


def test_proration_counts_local_days():
    """Start on the 10th of a 30-day September: 21 of 30 days active."""
    assert periods.prorate_days(date(2025, 9, 1), date(2025, 10, 1), date(2025, 9, 10), None) == (21, 30)
    assert periods.prorate_days(date(2025, 2, 1), date(2025, 3, 1), date(2025, 1, 1), date(2025, 2, 15)) == (14, 28)
    assert periods.prorate_days(date(2025, 2, 1), date(2025, 3, 1), date(2025, 3, 1), None) == (0, 28)


def test_local_bounds_across_dst():
    """New York's March 2025 has a 23-hour day; the period is still 31 local days."""
    ny = times.zone_or_error("America/New_York")
    start, end = periods.local_bounds(date(2025, 3, 1), date(2025, 4, 1), ny)
    assert times.format_instant(start) == "2025-03-01T05:00:00Z"
    assert times.format_instant(end) == "2025-04-01T04:00:00Z"
    assert periods.prorate_days(date(2025, 3, 1), date(2025, 4, 1), date(2025, 3, 9), None) == (23, 31)
