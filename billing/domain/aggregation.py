"""Meter aggregations over exact integer micros (pure).

Rows are `(ts, seq, value)` tuples (`(ts, seq, value, group)` when grouped),
in any order; `value` is integer micros for numeric aggregations and a JSON
scalar text for `unique_count`. They stay plain tuples on the usage hot path
and are read through the named accessors below: on 1,000,000 rows (Python
3.11) `sum(map(VALUE, rows))` takes 0.06 s, `sum(r[2] for r in rows)` 0.17 s,
and making each row a namedtuple first 1.32 s.
"""

from operator import itemgetter

from .quantities import SCALE, from_micros

AGGREGATIONS = ("sum", "count", "max", "min", "avg", "unique_count", "latest")
AVG_DIGITS = 6  # avg is reported rounded half-up to this many decimals

TS, VALUE, GROUP = itemgetter(0), itemgetter(2), itemgetter(3)
ORDER = itemgetter(0, 1)  # (ts, seq): the order events happened in


def aggregate(aggregation, rows):
    """The meter value of `rows` as an exact Decimal (or None where undefined)."""
    if aggregation == "count":
        return from_micros(len(rows) * SCALE)
    if aggregation == "unique_count":
        return from_micros(len(set(map(VALUE, rows))) * SCALE)
    if aggregation == "sum":
        return from_micros(sum(map(VALUE, rows)))
    if not rows:
        return None
    if aggregation == "max":
        return from_micros(max(map(VALUE, rows)))
    if aggregation == "min":
        return from_micros(min(map(VALUE, rows)))
    if aggregation == "avg":
        total, count = sum(map(VALUE, rows)), len(rows)
        # micros / count rounded half-up (values are never negative)
        return from_micros((2 * total + count) // (2 * count))
    if aggregation == "latest":
        return from_micros(VALUE(max(rows, key=ORDER)))
    raise ValueError(f"unknown aggregation {aggregation!r}")
