"""Exact meter values from partial aggregates (pure): rollup buckets and raw
events combine into the same figure `aggregation.aggregate` gives for the raw
events alone.

A Partial holds what every aggregation needs of a set of events: the count,
the sum of integer micros (a Python int: never overflows), min, max, the
latest (ts, seq, value), and for unique_count the distinct values (JSON text).
"""

from .quantities import SCALE, from_micros


class Partial:
    __slots__ = ("n", "total", "low", "high", "last", "values")

    def __init__(self, n=0, total=0, low=None, high=None, last=None, values=None):
        self.n, self.total, self.low, self.high, self.last = n, total, low, high, last
        self.values = set() if values is None else values

    @classmethod
    def of_event(cls, ts, seq, value):
        """One raw event; `value` is integer micros, or JSON text for a counted value."""
        if type(value) is str:
            return cls(1, 0, None, None, (ts, seq, value), {value})
        return cls(1, value, value, value, (ts, seq, value))

    def merge(self, other):
        """Add `other` into this partial (returns self)."""
        self.n += other.n
        self.total += other.total
        if other.low is not None and (self.low is None or other.low < self.low):
            self.low = other.low
        if other.high is not None and (self.high is None or other.high > self.high):
            self.high = other.high
        if other.last is not None and (self.last is None or other.last[:2] > self.last[:2]):
            self.last = other.last
        if other.values:
            self.values |= other.values
        return self

    def value(self, aggregation):
        """The meter value as an exact number (None where undefined), as `aggregate` gives it."""
        if aggregation == "count":
            return from_micros(self.n * SCALE)
        if aggregation == "unique_count":
            return from_micros(len(self.values) * SCALE)
        if aggregation == "sum":
            return from_micros(self.total)
        if not self.n:
            return None
        if aggregation == "max":
            return from_micros(self.high)
        if aggregation == "min":
            return from_micros(self.low)
        if aggregation == "avg":
            # micros / count rounded half-up (values are never negative)
            return from_micros((2 * self.total + self.n) // (2 * self.n))
        if aggregation == "latest":
            return from_micros(self.last[2])
        raise ValueError(f"unknown aggregation {aggregation!r}")


def combined(partials):
    """One new Partial holding all of `partials`."""
    result = Partial()
    for part in partials:
        result.merge(part)
    return result


def value_of(partials, aggregation):
    """The meter value of `partials` together (combined(partials).value(aggregation)),
    without copying a lone partial or making an empty one."""
    partials = partials if isinstance(partials, (list, tuple)) else list(partials)
    if len(partials) == 1:
        return partials[0].value(aggregation)
    return combined(partials).value(aggregation) if partials else _NOTHING.value(aggregation)


_NOTHING = Partial()  # no events (never changed: value() only reads)
