"""Billing periods and proration, in local calendar dates (pure).

Periods are monthly, in the customer's timezone:
- calendar: [1st 00:00, next 1st 00:00);
- anniversary: boundaries on min(start day, last day of that month) at 00:00,
  always computed from the original start day, so they never drift
  (31 Jan → 28 Feb → 31 Mar → 30 Apr).
Proration counts local calendar days, never hours, so DST changes do not matter.
"""

import calendar
from datetime import date

from . import times


def days_in_month(year, month):
    _, days = calendar.monthrange(year, month)
    return days


def anniversary(start, months):
    """The boundary `months` months after the local date `start`."""
    y, m = divmod(start.month - 1 + months, 12)
    year, month = start.year + y, m + 1
    return date(year, month, min(start.day, days_in_month(year, month)))


def period_containing(day, anchor, start):
    """[period_start, period_end) local dates of the period holding `day`.

    anchor: 'calendar' | 'anniversary'; `start` is the subscription's first day."""
    if anchor == "calendar":
        first = day.replace(day=1)
        return first, times.add_months(first, 1)
    if anchor != "anniversary":
        raise ValueError(f"unknown billing anchor {anchor!r}")
    months = (day.year - start.year) * 12 + (day.month - start.month)
    boundary = anniversary(start, months)
    if boundary > day:
        months -= 1
    return anniversary(start, months), anniversary(start, months + 1)


def periods_between(start, until, anchor):
    """All periods from the one holding `start` while period_start < `until`."""
    result = []
    day = start
    while day < until:
        period = period_containing(day, anchor, start)
        result.append(period)
        _, day = period
    return result


def prorate_days(period_start, period_end, active_start, active_end):
    """(active_days, days_in_period): the days of [period_start, period_end)
    that fall in [active_start, active_end) (None = open)."""
    total = (period_end - period_start).days
    lo = max(period_start, active_start)
    hi = period_end if active_end is None else min(period_end, active_end)
    return max(0, (hi - lo).days), total


def local_bounds(period_start, period_end, zone):
    """The UTC instants of the local midnights bounding the period."""
    return times.local_midnight(period_start, zone), times.local_midnight(period_end, zone)
