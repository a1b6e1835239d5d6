"""Quantities as exact integer millionths ("micros").

A quantity is a JSON number with at most 6 fractional digits, 0 ≤ q ≤ 10¹².
Stored as an integer count of millionths, so sums are exact integer additions.
"""

from decimal import Decimal, InvalidOperation

SCALE = 1_000_000
MAX_QUANTITY = 10 ** 12
MAX_FRACTION_DIGITS = 6


class QuantityError(ValueError):
    pass


def to_micros(value, allow_negative=False):
    """A JSON number (int or Decimal) as integer micros; raises QuantityError."""
    if type(value) is int and 0 <= value <= MAX_QUANTITY:  # the usual quantity, at once (no bool)
        return value * SCALE
    if type(value) is Decimal:
        micros = _usual_decimal(value)
        if micros is not None:
            return micros
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise QuantityError("must be a number")
    if isinstance(value, int):
        if value < 0 and not allow_negative:
            raise QuantityError("must not be negative")
        if abs(value) > MAX_QUANTITY:
            raise QuantityError("must not exceed 10^12")
        return value * SCALE
    if not value.is_finite():
        raise QuantityError("must be a finite number")
    if value < 0 and not allow_negative:
        raise QuantityError("must not be negative")
    if abs(value) > MAX_QUANTITY:
        raise QuantityError("must not exceed 10^12")
    if value and value.normalize().as_tuple().exponent < -MAX_FRACTION_DIGITS:
        raise QuantityError("must have at most 6 decimal places")
    try:
        return int(value.scaleb(MAX_FRACTION_DIGITS))
    except (InvalidOperation, OverflowError):
        raise QuantityError("is not a valid number") from None


def _usual_decimal(value):
    """The micros of a finite Decimal, 0 or from 10⁻⁶ to 10¹², with at most 6
    places, or None (then the rules of `to_micros` decide). Exactly what they give:
    both round to the context's 28 digits (`scaleb`, `normalize`), and a shift
    of the exponent commutes with that rounding; linear in the digits, however
    many a request sends."""
    if value.is_finite() and 0 <= value <= MAX_QUANTITY and value.adjusted() >= -MAX_FRACTION_DIGITS:
        scaled = value.scaleb(MAX_FRACTION_DIGITS)
        micros = int(scaled)
        if micros == scaled:
            return micros
    return None


def from_micros(micros):
    """Integer micros as an exact number: an int when whole, else a Decimal."""
    if micros is None:
        return None
    whole, fraction = divmod(abs(micros), SCALE)
    if fraction == 0:
        return whole if micros >= 0 else -whole
    # built from text, which Decimal takes exactly (arithmetic would round at 28 digits)
    sign = "-" if micros < 0 else ""
    return Decimal(f"{sign}{whole}.{fraction:06d}".rstrip("0"))


def plain(value):
    """A Decimal as plain text without exponent or trailing zeros: 1.50 -> '1.5'."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
