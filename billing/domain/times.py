"""Instants, local dates and windows. Instants are integer microseconds since the
Unix epoch (UTC) at rest; RFC 3339 with an explicit offset at the edges."""

import functools
import operator
import re
from datetime import date, datetime, time, timedelta, timezone
from itertools import repeat
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


MIN_YEAR, MAX_YEAR = 1970, 9998  # keeps every instant ± a timezone inside datetime's range


_fromisoformat = datetime.fromisoformat


class TimeError(ValueError):
    pass


_ONE_US = timedelta(microseconds=1)


def to_micros(instant):
    return (instant - EPOCH) // _ONE_US


def all_to_micros(instants):
    """`to_micros` of each instant, by calls into C over all of them (a batch's events)."""
    return list(map(operator.floordiv, map(operator.sub, instants, repeat(EPOCH)), repeat(_ONE_US)))


def from_micros(micros):
    return EPOCH + timedelta(microseconds=micros)


def format_instant(instant):
    """UTC RFC 3339: 2025-09-16T21:05:00Z (fraction only when there is one)."""
    t = instant.astimezone(UTC)
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


@functools.lru_cache(maxsize=4096)
def format_micros(micros):
    """format_instant of µs (remembered: usage and analytics format the same window bounds for every meter)."""
    return None if micros is None else format_instant(from_micros(micros))


def parse_instant(text):
    """RFC 3339 with an explicit offset → aware UTC datetime; raises TimeError."""
    if not isinstance(text, str):
        raise TimeError("must be an RFC 3339 timestamp string")
    if len(text) in (20, 24) and text[-1] == "Z" and text[10] == "T" and text[4] == text[7] == "-" \
            and text[19] in "Z.":
        # fast path for the common shapes 2025-09-16T21:05:00Z and …:00.123Z
        try:
            instant = _fromisoformat(text)
        except ValueError:
            instant = None
        if instant is not None and MIN_YEAR <= instant.year <= MAX_YEAR:
            return instant
    if not _RFC3339.match(text):
        if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$", text):
            raise TimeError("must include a UTC offset, e.g. 'Z' or '+02:00'")
        raise TimeError("must be an RFC 3339 timestamp like 2025-09-16T21:05:00Z")
    fraction = re.search(r"\.(\d+)", text)
    if fraction and len(fraction.group(1)) > 6:  # fromisoformat takes at most 6
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6])
    try:
        instant = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T")).astimezone(UTC)
    except (ValueError, OverflowError):
        raise TimeError("is not a valid date and time") from None
    if not MIN_YEAR <= instant.year <= MAX_YEAR:
        raise TimeError(f"must lie between the years {MIN_YEAR} and {MAX_YEAR}")
    return instant


def parse_date(text):
    if not isinstance(text, str) or not _DATE.match(text):
        raise TimeError("must be a date like 2025-09-01")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise TimeError("is not a valid calendar date") from None
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise TimeError(f"must lie between the years {MIN_YEAR} and {MAX_YEAR}")
    return day


def parse_bound(text, zone):
    """A range bound: an RFC 3339 instant, or a date meaning local 00:00 in `zone`."""
    if isinstance(text, str) and _DATE.match(text):
        return local_midnight(parse_date(text), zone)
    return parse_instant(text)


def zone_or_error(name):
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name:
        raise TimeError("must be an IANA timezone like 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TimeError(f"unknown timezone '{name}'") from None


@functools.lru_cache(maxsize=8192)
def local_midnight(day, zone):
    """The instant of 00:00 local time on `day` (the first instant of the day,
    even where a DST change skips midnight). Remembered: an invoice run asks
    for the same few (day, zone) pairs for every customer."""
    naive = datetime.combine(day, time(0))
    local = naive.replace(tzinfo=zone)
    # A gap at midnight: fold semantics pick an offset; normalise through UTC and
    # step forward to the first real instant of that local day.
    utc = local.astimezone(UTC)
    back = utc.astimezone(zone)
    if back.date() < day:
        utc = utc + timedelta(hours=1)
    return utc


def local_date(instant, zone):
    return instant.astimezone(zone).date()


def month_start(day):
    return day.replace(day=1)


def add_months(day, months):
    y, m = divmod(day.month - 1 + months, 12)
    return day.replace(year=day.year + y, month=m + 1, day=1)


def calendar_month_bounds(instant, zone):
    """[start, end) of the local calendar month holding `instant`, as UTC instants."""
    first = month_start(local_date(instant, zone))
    return local_midnight(first, zone), local_midnight(add_months(first, 1), zone)


def windows(start, end, size, zone):
    """Consecutive [start, end) windows aligned on local boundaries of `zone`,
    clipped to the range. size: 'hour' | 'day' | 'month'."""
    result = []
    if start >= end:
        return result
    if size == "hour":
        # Hours are aligned in UTC terms of the local clock; stepping through UTC
        # keeps DST days at 23 or 25 windows.
        local = start.astimezone(zone)
        cursor = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        step = lambda t: t + timedelta(hours=1)  # noqa: E731
    elif size == "day":
        cursor = local_midnight(local_date(start, zone), zone)
        step = lambda t: local_midnight(local_date(t, zone) + timedelta(days=1), zone)  # noqa: E731
    elif size == "month":
        cursor = local_midnight(month_start(local_date(start, zone)), zone)
        step = lambda t: local_midnight(add_months(local_date(t, zone), 1), zone)  # noqa: E731
    else:
        raise ValueError(size)
    while cursor < end:
        nxt = step(cursor)
        result.append((max(cursor, start), min(nxt, end)))
        cursor = nxt
    return result
