from datetime import date, datetime, timezone

import pytest

from billing.domain import times


def test_parse_instant_requires_offset():
    assert times.parse_instant("2025-09-16T21:05:00Z") == datetime(2025, 9, 16, 21, 5, tzinfo=timezone.utc)
    assert times.parse_instant("2025-09-16T23:05:00+02:00") == datetime(2025, 9, 16, 21, 5, tzinfo=timezone.utc)
    with pytest.raises(times.TimeError, match="offset"):
        times.parse_instant("2025-09-16T21:05:00")
    for bad in ("2025-13-01T00:00:00Z", "yesterday", 5, "2025-09-16"):
        with pytest.raises(times.TimeError):
            times.parse_instant(bad)


def test_micros_round_trip_and_format():
    instant = times.parse_instant("2025-09-16T21:05:00.25Z")
    assert times.format_micros(times.to_micros(instant)) == "2025-09-16T21:05:00.25Z"
    assert times.format_instant(times.parse_instant("2025-09-16T21:05:00Z")) == "2025-09-16T21:05:00Z"


def test_date_bound_is_local_midnight():
    ny = times.zone_or_error("America/New_York")
    assert times.format_instant(times.parse_bound("2025-10-01", ny)) == "2025-10-01T04:00:00Z"


def test_unknown_zone():
    for bad in ("Mars/Olympus", "", "../etc/passwd", None):
        with pytest.raises(times.TimeError):
            times.zone_or_error(bad)


def test_day_windows_across_dst_are_23_and_25_hours():
    berlin = times.zone_or_error("Europe/Berlin")
    start = times.local_midnight(date(2025, 3, 29), berlin)
    end = times.local_midnight(date(2025, 4, 1), berlin)
    hours = [(b - a).total_seconds() / 3600 for a, b in times.windows(start, end, "day", berlin)]
    assert hours == [24, 23, 24]
    start = times.local_midnight(date(2025, 10, 25), berlin)
    end = times.local_midnight(date(2025, 10, 27), berlin)
    hours = [(b - a).total_seconds() / 3600 for a, b in times.windows(start, end, "day", berlin)]
    assert hours == [24, 25]


def test_hour_windows_on_dst_day():
    berlin = times.zone_or_error("Europe/Berlin")
    start = times.local_midnight(date(2025, 3, 30), berlin)
    end = times.local_midnight(date(2025, 3, 31), berlin)
    assert len(times.windows(start, end, "hour", berlin)) == 23


def test_month_windows_clip_to_range():
    utc = times.UTC
    start = times.parse_instant("2025-01-15T00:00:00Z")
    end = times.parse_instant("2025-03-10T00:00:00Z")
    spans = [(times.format_instant(a), times.format_instant(b)) for a, b in times.windows(start, end, "month", utc)]
    assert spans == [("2025-01-15T00:00:00Z", "2025-02-01T00:00:00Z"),
                     ("2025-02-01T00:00:00Z", "2025-03-01T00:00:00Z"),
                     ("2025-03-01T00:00:00Z", "2025-03-10T00:00:00Z")]


def test_half_hour_zone_hour_windows():
    kolkata = times.zone_or_error("Asia/Kolkata")
    start = times.parse_instant("2025-01-01T00:00:00+05:30")
    end = times.parse_instant("2025-01-01T03:00:00+05:30")
    starts = [times.format_instant(a) for a, _ in times.windows(start, end, "hour", kolkata)]
    assert starts == ["2024-12-31T18:30:00Z", "2024-12-31T19:30:00Z", "2024-12-31T20:30:00Z"]


def test_calendar_month_bounds_in_zone():
    ny = times.zone_or_error("America/New_York")
    start, end = times.calendar_month_bounds(times.parse_instant("2025-09-16T12:00:00Z"), ny)
    assert (times.format_instant(start), times.format_instant(end)) == ("2025-09-01T04:00:00Z", "2025-10-01T04:00:00Z")


def test_midnight_skipped_by_dst():
    # America/Santiago springs forward at 00:00 → the day starts at 01:00 local
    zone = times.zone_or_error("America/Santiago")
    start = times.local_midnight(date(2024, 9, 8), zone)
    assert start.astimezone(zone).date() == date(2024, 9, 8)
    assert start.astimezone(zone).hour == 1
