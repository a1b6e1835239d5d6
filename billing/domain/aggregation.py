"""Meter aggregations over exact integer micros (pure).

Rows are `(ts, seq, value)` tuples, in any order; `value` is integer micros for
numeric aggregations and a JSON scalar text for `unique_count`.
"""

from .quantities import SCALE, from_micros

AGGREGATIONS = ("sum", "count", "max", "min", "avg", "unique_count", "latest")
AVG_DIGITS = 6  # avg is reported rounded half-up to this many decimals


def aggregate(aggregation, rows):
    """The meter value of `rows` as an exact Decimal (or None where undefined)."""
    if aggregation == "count":
        return from_micros(len(rows) * SCALE)
    if aggregation == "unique_count":
        return from_micros(len({r[2] for r in rows}) * SCALE)
    if aggregation == "sum":
        return from_micros(sum(r[2] for r in rows))
    if not rows:
        return None
    if aggregation == "max":
        return from_micros(max(r[2] for r in rows))
    if aggregation == "min":
        return from_micros(min(r[2] for r in rows))
    if aggregation == "avg":
        total, count = sum(r[2] for r in rows), len(rows)
        # micros / count rounded half-up (values are never negative)
        return from_micros((2 * total + count) // (2 * count))
    if aggregation == "latest":
        return from_micros(max(rows, key=lambda r: (r[0], r[1]))[2])
    raise ValueError(f"unknown aggregation {aggregation!r}")
